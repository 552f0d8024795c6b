"""Tumour shape features of one binary volume (``H x W x Z``, slice ``k`` = ``[:, :, k]``).

The three features of the radiogenomics study of this dataset (M. Buda, A. Saha,
M. A. Mazurowski, "Association of genomic subtypes of lower-grade gliomas with shape features
automatically extracted by a deep learning algorithm", Comput. Biol. Med. 109, 2019,
arXiv:1906.03720), defined in K. Czarnek et al., "Algorithmic three-dimensional analysis of
tumor shape in MRI improves prognosis of survival in glioblastoma: a multi-institutional
study", J. Neurooncol. 132, 2017. The papers describe the features in words and leave choices
open (the enclosing-ellipsoid algorithm, the number of angular bins, the smoothing window);
this module follows those descriptions, and states each choice made. What is implemented,
exactly:

``bevr`` (bounding ellipsoid volume ratio, 3-D)
    tumour volume / volume of the **minimum-volume enclosing ellipsoid** (MVEE) of the tumour
    voxel centres: all tumour voxels of the volume, every component; the MVEE is computed on
    their convex-hull vertices (same ellipsoid) by Khachiyan's algorithm with Todd-Yildirim
    away steps to a relative tolerance of 1e-5, then scaled just enough to enclose every point.
    The tumour volume is the voxel count, in the same voxel units. An ellipsoid gives ~1;
    irregular, bent or multi-focal tumours less. The ratio is invariant under any affine map,
    so the voxel spacing (unknown for kaggle_3m) does not change it. NaN when the voxels are
    flat (all in one slice, or on one plane): no 3-D ellipsoid exists.

The 2-D features use the **largest slice** (the slice with most tumour pixels; the first on a
tie) and on it the **largest 8-connected tumour region**, holes filled. Its outer contour is
traced at the 0.5 iso-line (``skimage.measure.find_contours``, sub-pixel) and resampled to
``CONTOUR_SAMPLES`` = 360 points equally spaced along its length. The radial distance
``r_i`` of each point from the region's centroid, divided by the mean of ``r`` (so both
features are dimensionless and size-free), gives ``rho_i``; ``theta_i`` is its angle.

``asd`` (angular standard deviation)
    the angle range is cut into ``ANGULAR_BINS`` = 10 equal bins of 36 degrees; ASD is the mean,
    over the bins that hold at least two points, of the standard deviation (population, ddof 0)
    of ``rho`` in the bin. A disc gives ~0; a margin whose radius changes within a bin (lobes,
    spikes) gives more. (The global standard deviation of ``rho`` would also grow for a smooth
    ellipse; the per-bin one measures irregularity at the scale of the bins.)

``mf`` (margin fluctuation)
    the standard deviation (ddof 0) of ``rho - smooth(rho)``, where ``smooth`` is a circular
    moving average over ``SMOOTHING_WINDOW`` = 36 consecutive contour samples (a tenth of the
    perimeter). A disc gives ~0; fluctuations of the margin shorter than the window give more.

``extent``, ``solidity``, ``eccentricity``
    ``skimage.measure.regionprops`` of the same largest region on the largest slice: area /
    bounding-box area, area / convex-hull area, eccentricity of the ellipse with the same second
    moments (0 for a disc).

``voxels`` is the count of tumour voxels in the whole volume (every component); ``ml`` is
``voxels`` times the voxel volume, only when a spacing is given: kaggle_3m TIFFs carry no voxel
spacing, so the cohort report gives voxels only unless the user passes one.

An empty volume gives 0 voxels and NaN for every shape feature.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError
from skimage import measure

FEATURES = ("voxels", "bevr", "asd", "mf", "extent", "solidity", "eccentricity")
"""Every per-mask feature, in column order (``ml`` is added when a spacing is known)."""
SHAPE_FEATURES = FEATURES[1:]
CONTOUR_SAMPLES = 360
ANGULAR_BINS = 10
SMOOTHING_WINDOW = 36
MVEE_TOLERANCE = 1e-5
MVEE_MAX_ITERATIONS = 100_000


# ---------------------------------------------------------------------------- 3-D


def min_volume_ellipsoid(
    points: np.ndarray, tolerance: float = MVEE_TOLERANCE
) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-volume enclosing ellipsoid ``{x : (x - c)^T A (x - c) <= 1}`` of ``N x d`` points.

    Khachiyan's algorithm with Todd-Yildirim away steps, until no point lies further than
    ``1 + tolerance`` (in the lifted norm) outside the current ellipsoid and every supporting
    point lies within ``1 - tolerance`` of its surface; the result is then scaled so that
    every point lies inside it. Returns
    ``(A, c)``. Raises ``ValueError`` when the points do not span ``d`` dimensions.
    """
    points = np.asarray(points, dtype=np.float64)
    n, d = points.shape
    if n <= d or np.linalg.matrix_rank(points - points.mean(axis=0)) < d:
        raise ValueError(f"{n} points that do not span {d} dimensions have no enclosing ellipsoid")
    lifted = d + 1.0
    q = np.vstack([points.T, np.ones(n)])  # (d + 1) x n
    u = np.full(n, 1.0 / n)
    for _ in range(MVEE_MAX_ITERATIONS):
        m = np.einsum("ij,ji->i", q.T, np.linalg.solve((q * u) @ q.T, q))
        j = int(np.argmax(m))
        support = np.flatnonzero(u > 0)
        k = int(support[np.argmin(m[support])])
        toward, away = m[j] / lifted - 1.0, 1.0 - m[k] / lifted
        if max(toward, away) < tolerance:
            break
        if toward >= away:  # Khachiyan's step towards the farthest point
            step = (m[j] - lifted) / (lifted * (m[j] - 1.0))
            u = (1.0 - step) * u
            u[j] += step
        else:  # Todd-Yildirim away step: weight off the closest supporting point
            step = min((lifted - m[k]) / (lifted * (m[k] - 1.0)), u[k] / (1.0 - u[k]))
            u = (1.0 + step) * u
            u[k] -= step
            u[k] = max(u[k], 0.0)
    centre = points.T @ u
    scatter = (points.T * u) @ points - np.outer(centre, centre)
    a = np.linalg.inv(scatter) / d
    offsets = points - centre
    reach = float(np.max(np.einsum("ij,jk,ik->i", offsets, a, offsets)))
    return a / max(reach, 1.0), centre


def ellipsoid_volume(a: np.ndarray) -> float:
    """Volume of ``{x : x^T A x <= 1}`` in ``d`` dimensions."""
    d = a.shape[0]
    unit_ball = math.pi ** (d / 2) / math.gamma(d / 2 + 1)
    return float(unit_ball / math.sqrt(np.linalg.det(a)))


def bevr(volume: np.ndarray) -> float:
    """Tumour voxels / volume of their minimum-volume enclosing ellipsoid (NaN if flat/empty)."""
    coords = np.argwhere(np.asarray(volume) != 0).astype(np.float64)
    if len(coords) < 4:
        return math.nan
    try:
        hull = ConvexHull(coords)
        a, _ = min_volume_ellipsoid(coords[hull.vertices])
    except (QhullError, ValueError):  # coplanar voxels: no 3-D hull, no 3-D ellipsoid
        return math.nan
    return len(coords) / ellipsoid_volume(a)


# ---------------------------------------------------------------------------- 2-D


def largest_slice(volume: np.ndarray) -> int | None:
    """Index of the slice with most tumour pixels (first on a tie); None for an empty volume."""
    areas = np.count_nonzero(np.asarray(volume), axis=(0, 1))
    return int(np.argmax(areas)) if areas.any() else None


def largest_region(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected region of a 2-D mask, holes filled (bool)."""
    labels = measure.label(np.asarray(mask) != 0, connectivity=2)
    if labels.max() == 0:
        return np.zeros(labels.shape, dtype=bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return np.asarray(ndimage.binary_fill_holes(labels == int(np.argmax(sizes))), dtype=bool)


def radial_profile(region: np.ndarray, samples: int = CONTOUR_SAMPLES) -> tuple[np.ndarray, ...]:
    """``(theta, rho)`` of ``samples`` points equally spaced along the region's outer contour:
    the angle around the centroid and the radial distance divided by its mean."""
    padded = np.pad(region.astype(np.float64), 1)
    contours = measure.find_contours(padded, 0.5)
    contour = max(contours, key=len) - 1.0  # the outer boundary is the longest closed contour
    if not np.allclose(contour[0], contour[-1]):
        contour = np.vstack([contour, contour[:1]])
    steps = np.linalg.norm(np.diff(contour, axis=0), axis=1)
    along = np.concatenate([[0.0], np.cumsum(steps)])
    where = np.linspace(0.0, along[-1], samples, endpoint=False)
    points = np.column_stack([np.interp(where, along, contour[:, i]) for i in (0, 1)])
    centroid = np.argwhere(region).mean(axis=0)
    offsets = points - centroid
    radius = np.hypot(offsets[:, 0], offsets[:, 1])
    theta = np.arctan2(offsets[:, 0], offsets[:, 1])
    return theta, radius / radius.mean()


def angular_std(theta: np.ndarray, rho: np.ndarray, bins: int = ANGULAR_BINS) -> float:
    """Mean over angular bins (with >= 2 points) of the std of ``rho`` in the bin."""
    which = np.minimum(((theta + math.pi) / (2 * math.pi) * bins).astype(int), bins - 1)
    stds = [float(rho[which == b].std()) for b in range(bins) if np.count_nonzero(which == b) > 1]
    return float(np.mean(stds)) if stds else math.nan


def margin_fluctuation(rho: np.ndarray, window: int = SMOOTHING_WINDOW) -> float:
    """Std of ``rho`` minus its circular moving average over ``window`` samples."""
    kernel = np.ones(window) / window
    smooth = ndimage.convolve1d(rho, kernel, mode="wrap")
    return float(np.std(rho - smooth))


def slice_features(mask: np.ndarray) -> dict[str, float]:
    """ASD, MF and the region properties of the largest region of one 2-D mask."""
    region = largest_region(mask)
    if not region.any():
        return dict.fromkeys(("asd", "mf", "extent", "solidity", "eccentricity"), math.nan)
    theta, rho = radial_profile(region)
    props = measure.regionprops(region.astype(np.uint8))[0]
    return {
        "asd": angular_std(theta, rho),
        "mf": margin_fluctuation(rho),
        "extent": float(props.extent),
        "solidity": float(props.solidity),
        "eccentricity": float(props.eccentricity),
    }


# ---------------------------------------------------------------------------- per volume


def shape_features(
    volume: np.ndarray, spacing_mm: Sequence[float] | None = None
) -> dict[str, float]:
    """Every feature of :data:`FEATURES` for one ``H x W x Z`` binary volume (non-zero =
    tumour), plus ``ml`` when the voxel spacing (mm, in array-axis order) is given."""
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"a tumour volume must be H x W x Z; got shape {volume.shape}")
    voxels = int(np.count_nonzero(volume))
    features: dict[str, float] = {"voxels": voxels}
    if spacing_mm is not None:
        features["ml"] = voxels * float(np.prod(spacing_mm)) / 1000.0
    k = largest_slice(volume)
    features["bevr"] = bevr(volume) if voxels else math.nan
    features.update(slice_features(volume[:, :, 0 if k is None else k]))
    return features
