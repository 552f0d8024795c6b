"""Turn uploaded bytes into arrays: one 2-D slice, or one volume. Nothing touches the disk.

The format is sniffed from the bytes (magic numbers), never from a file name or a declared
content type. Every size is checked against :class:`DecodeLimits` *before* pixels are decoded
(Pillow ``.size`` before ``.load()``, the TIFF page shape, the NIfTI header, a capped gunzip),
so a small file declaring a huge image is refused in milliseconds with bounded memory.

Errors:

- :class:`UnsupportedFormat` (the API answers 415): GIF, BMP, PDF, SVG, ZIP where a slice is
  expected, gzip that is not NIfTI, unknown bytes.
- :class:`DecodeError` (422): truncated or corrupt data, multi-frame images, sizes over the
  limits, extreme aspect ratios, NaN/Inf values, unsupported pixel or voxel types, and
  :class:`WrongKind` when a volume arrives where a slice is expected, or the reverse.

Deterministic conversions (no intensity is ever clipped or rescaled here; the shared
preprocessing z-scores each channel, so the scale of the numbers does not matter):

- Grey (``L``, 16-bit ``I;16``, 32-bit ``I``, float ``F``) stays one channel, ``H x W``, in its
  own numeric type (16-bit stays ``uint16``, signed stays signed, float stays float).
- ``1`` (bilevel) becomes ``uint8`` 0/255. ``P``/``PA`` (palette) are expanded through the palette
  to RGB. ``LA`` and ``RGBA`` lose their alpha channel. ``CMYK`` and ``YCbCr`` JPEGs are
  converted to RGB by Pillow. Colour stays ``H x W x 3`` in the file's channel order.
- 16-bit colour PNG is refused (Pillow would silently reduce it to 8 bits): send TIFF or NIfTI.
- TIFF: one page only, ``YX``, ``YXS`` or ``SYX`` with 1, 3 or 4 samples (4: alpha dropped),
  any integer or float type (``float16`` widened to ``float32``); read by tifffile with
  imagecodecs' compiled codecs (deflate, LZW, JPEG, ZSTD, ...), or by Pillow for a compression
  they lack; none reads it: a 422 naming the compression.
- NIfTI (single-file ``.nii``, optionally gzipped): array axes are taken as they are stored,
  axis 0 = image rows, axis 1 = columns, axis 2 = slices, an optional axis 3 = 1 or 3 channels
  (pre-contrast, FLAIR, post-contrast). No reorientation: the output mask shares the input's
  voxel grid and affine. Scaling follows the NIfTI-1 standard: ``scl_slope`` 0 or NaN means
  "unscaled" (nibabel itself writes NaN); a slope of 0/NaN with a non-zero ``scl_inter`` is
  ambiguous and refused, as are infinite slopes or intercepts and results that overflow.
- EXIF orientation tags are ignored: the raw pixel grid is used.
"""

from __future__ import annotations

import gzip
import io
import re
import warnings
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import nibabel as nib
import numpy as np
import tifffile
from nibabel.volumeutils import apply_read_scaling
from PIL import Image

from data.naming import is_mask_name, is_prediction_name
from inference.outputs import validate_nifti_geometry

Kind = Literal["slice", "volume"]


class DecodeProblem(ValueError):
    """Base of the decoding errors; the message is safe to show to the uploader."""


class UnsupportedFormat(DecodeProblem):
    """The bytes are not a format this endpoint accepts (API: 415)."""


class DecodeError(DecodeProblem):
    """The bytes are a supported format but cannot be used (API: 422)."""


class WrongKind(DecodeError):
    """A volume where a slice is expected, or a slice where a volume is expected (API: 422)."""

    def __init__(self, got: Kind, detail: str) -> None:
        self.got: Kind = got
        super().__init__(detail)


@dataclass(frozen=True)
class DecodeLimits:
    """Caps applied before decoding. Far below Pillow's default of ~89 megapixels."""

    max_pixels: int = 2048 * 2048
    """Largest slice, in pixels (height x width)."""
    max_aspect_ratio: float = 8.0
    """Largest long side / short side of a slice."""
    max_volume_values: int = 2**25
    """Largest volume, in values (height x width x slices x channels)."""
    max_slices: int = 1024
    max_decompressed_bytes: int = 512 * 2**20
    """Largest gunzipped NIfTI, and the total inflated size of a zip of slices."""


@dataclass(frozen=True)
class Volume:
    """A decoded volume: ``H x W x Z`` or ``H x W x Z x C`` plus its geometry.

    ``affine`` is the NIfTI voxel-to-world matrix (identity for a zip of slices, which has no
    geometry); ``zooms`` the voxel spacing in mm for the first three axes.
    """

    data: np.ndarray
    affine: np.ndarray = field(default_factory=lambda: np.eye(4))
    zooms: tuple[float, float, float] = (1.0, 1.0, 1.0)
    source: Literal["nifti", "zip"] = "nifti"
    """How the geometry is carried: a NIfTI header (a NIfTI file, or one built from a DICOM
    series by ``data.dicom``), or none (a zip of slices)."""
    header: nib.Nifti1Header | None = None


# --------------------------------------------------------------------------- sniffing

_PNG = b"\x89PNG\r\n\x1a\n"
_UNSUPPORTED_MAGIC: list[tuple[bytes, str]] = [
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"%PDF", "PDF"),
    (b"RIFF", "RIFF (WebP/AVI/WAV)"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"8BPS", "PSD"),
    (b"\x42\x5a\x68", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"7z\xbc\xaf\x27\x1c", "7z"),
    (b"Rar!", "RAR"),
]

Format = Literal["png", "jpeg", "tiff", "nifti", "gzip", "zip"]


def sniff(data: bytes) -> Format:
    """Name the format from the leading bytes; :class:`UnsupportedFormat` for anything else."""
    if not data:
        raise DecodeError("the upload is empty (0 bytes)")
    if data.startswith(_PNG):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if data.startswith(b"\x1f\x8b"):
        return "gzip"
    if data[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if _is_nifti1(data):
        return "nifti"
    if data[128:132] == b"DICM":
        raise UnsupportedFormat(
            "a DICOM file is read as part of its study: run `python -m inference.predict` on the "
            "study folder, or convert the series to NIfTI"
        )
    if len(data) >= 8 and data[4:7] == b"n+2":
        raise UnsupportedFormat("NIfTI-2 is not supported; save the image as NIfTI-1")
    for magic, name in _UNSUPPORTED_MAGIC:
        if data.startswith(magic):
            raise UnsupportedFormat(f"{name} is not supported; send PNG, TIFF, JPEG or NIfTI")
    head = data[:256].lstrip().lower()
    if head.startswith((b"<?xml", b"<svg", b"<!doctype", b"<html")):
        raise UnsupportedFormat("SVG/XML/HTML is not supported; send PNG, TIFF, JPEG or NIfTI")
    raise UnsupportedFormat("unrecognised file format; send PNG, TIFF, JPEG or NIfTI")


def _is_nifti1(data: bytes) -> bool:
    if len(data) < 348:
        return False
    sizeof_hdr_le = int.from_bytes(data[:4], "little")
    sizeof_hdr_be = int.from_bytes(data[:4], "big")
    return 348 in (sizeof_hdr_le, sizeof_hdr_be) and data[344:347] in (b"n+1", b"ni1")


# --------------------------------------------------------------------------- checks


def check_geometry(height: int, width: int, limits: DecodeLimits) -> None:
    """Refuse empty, too large or too elongated slices (before any pixel is decoded)."""
    if height < 1 or width < 1:
        raise DecodeError(f"the image has no pixels ({height} x {width})")
    if height * width > limits.max_pixels:
        raise DecodeError(
            f"the image declares {height} x {width} = {height * width} pixels; "
            f"the limit is {limits.max_pixels}"
        )
    ratio = max(height, width) / min(height, width)
    if ratio > limits.max_aspect_ratio:
        raise DecodeError(
            f"the image is {height} x {width}, an aspect ratio of {ratio:.1f}; "
            f"the limit is {limits.max_aspect_ratio:g}"
        )


def _check_values(arr: np.ndarray) -> np.ndarray:
    """Numbers only, finite only, and representable as float32 (the model's input type)."""
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.complexfloating) or not (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    ):
        raise DecodeError(f"unsupported pixel type {arr.dtype}; expected integers or floats")
    if np.issubdtype(arr.dtype, np.floating):
        if arr.dtype == np.float16:
            arr = arr.astype(np.float32)
        with np.errstate(over="ignore"):
            finite = np.isfinite(arr.astype(np.float32, copy=False))
        if not finite.all():
            raise DecodeError(
                "the image contains NaN or infinite values (or values too large for float32)"
            )
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr


def _drop_alpha(arr: np.ndarray) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[2] == 4:
        return arr[:, :, :3]
    if arr.ndim == 3 and arr.shape[2] == 2:  # grey + alpha
        return arr[:, :, 0]
    if arr.ndim == 3 and arr.shape[2] == 1:
        return arr[:, :, 0]
    return arr


# --------------------------------------------------------------------------- 2-D formats

_PIL_DIRECT = {"L", "I;16", "I;16L", "I;16B", "I;16N", "I", "F", "RGB", "RGBA", "LA"}
_PIL_CONVERT = {"P": "RGB", "PA": "RGB", "CMYK": "RGB", "YCbCr": "RGB", "1": "L"}


def _png_is_16bit_colour(data: bytes) -> bool:
    # IHDR is the first chunk: 8 signature + 4 length + 4 type, then width, height, depth, type.
    if len(data) < 26 or data[12:16] != b"IHDR":
        return False
    bit_depth, colour_type = data[24], data[25]
    return bit_depth == 16 and colour_type in (2, 4, 6)


def _decode_pillow(
    data: bytes, fmt: Format, limits: DecodeLimits, failure: str | None = None
) -> np.ndarray:
    """Decode with Pillow; ``failure`` replaces the message for data Pillow cannot decode."""
    if fmt == "png" and _png_is_16bit_colour(data):
        raise DecodeError(
            "16-bit colour PNG is not supported (it would lose precision); "
            "send a 16-bit TIFF or NIfTI, or 16-bit greyscale PNG"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image: Image.Image = Image.open(io.BytesIO(data))
            width, height = image.size  # header only: nothing decoded yet
            check_geometry(height, width, limits)
            frames = getattr(image, "n_frames", 1)
            if frames != 1:
                raise DecodeError(
                    f"the image has {frames} frames (animated or multi-page); send a single frame"
                )
            mode = image.mode
            if mode in _PIL_CONVERT:
                image = image.convert(_PIL_CONVERT[mode])
            elif mode not in _PIL_DIRECT:
                raise DecodeError(f"unsupported pixel mode {mode!r}")
            image.load()
            arr = np.asarray(image)
    except DecodeProblem:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DecodeError(
            f"the {fmt.upper()} declares more pixels than the limit of {limits.max_pixels}"
        ) from exc
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoder failure is the upload's fault: 422
        raise DecodeError(failure or f"the {fmt.upper()} data is truncated or corrupt") from exc
    return _check_values(_drop_alpha(arr))


def _decode_tiff(data: bytes, limits: DecodeLimits) -> np.ndarray:
    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            pages = tif.pages
            if len(pages) == 0:
                raise DecodeError("the TIFF data is truncated or corrupt: no image in it")
            if len(pages) != 1:
                raise DecodeError(
                    f"the TIFF has {len(pages)} pages; send a single-page TIFF "
                    "(or a volume as NIfTI or a zip of slices)"
                )
            page = pages.first
            axes, shape = page.axes, page.shape
            if axes == "YX":
                height, width, samples = shape[0], shape[1], 1
            elif axes == "YXS":
                height, width, samples = shape[0], shape[1], shape[2]
            elif axes == "SYX":
                height, width, samples = shape[1], shape[2], shape[0]
            else:
                raise DecodeError(f"unsupported TIFF layout {axes!r} {shape}; expected one slice")
            check_geometry(height, width, limits)
            if samples not in (1, 2, 3, 4):
                raise DecodeError(f"the TIFF has {samples} samples per pixel; expected 1, 3 or 4")
            ends = [o + n for o, n in zip(page.dataoffsets, page.databytecounts, strict=False)]
            if not ends or max(ends) > len(data):
                raise DecodeError("the TIFF data is truncated")
            compression = _tiff_compression_name(page)
            try:
                arr = page.asarray()
            except (ImportError, KeyError, ValueError) as exc:
                if not _missing_codec(exc):
                    raise
                # a compression imagecodecs lacks (or imagecodecs missing): Pillow reads some
                return _decode_tiff_with_pillow(data, compression, limits)
    except DecodeProblem:
        raise
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoder failure is the upload's fault: 422
        raise DecodeError("the TIFF data is truncated or corrupt") from exc
    if axes == "SYX":
        arr = np.moveaxis(arr, 0, -1)
    return _check_values(_drop_alpha(np.asarray(arr)))


def _tiff_compression_name(page: tifffile.TiffPage) -> str:
    compression = getattr(page, "compression", None)
    if compression is None:
        return "unknown"
    return str(getattr(compression, "name", compression))  # an int tifffile has no name for


def _missing_codec(exc: Exception) -> bool:
    """tifffile's ways of saying "I have no decoder for this compression" (no codec installed,
    "<COMPRESSION.JBIG_BW: 9> not supported", "12345 is not a known COMPRESSION")."""
    text = str(exc)
    return (
        isinstance(exc, (ImportError, KeyError))
        or "imagecodecs" in text
        or (isinstance(exc, ValueError) and ("not supported" in text or "COMPRESSION" in text))
    )


def _decode_tiff_with_pillow(data: bytes, compression: str, limits: DecodeLimits) -> np.ndarray:
    failure = (
        f"the TIFF's compression ({compression}) cannot be decoded here, or its data is "
        "corrupt; save it uncompressed or with deflate, LZW or PackBits"
    )
    return _decode_pillow(data, "tiff", limits, failure=failure)


# --------------------------------------------------------------------------- NIfTI

# NIfTI-1 datatype codes this service reads (others: binary, complex, RGB, float128 -> 422).
_NIFTI_TYPES = {
    2: np.uint8,
    4: np.int16,
    8: np.int32,
    16: np.float32,
    64: np.float64,
    256: np.int8,
    512: np.uint16,
    768: np.uint32,
    1024: np.int64,
    1280: np.uint64,
}


def _nifti_header(raw: bytes) -> nib.Nifti1Header:
    try:
        return nib.Nifti1Header.from_fileobj(io.BytesIO(raw[:348]), check=False)
    except Exception as exc:  # nibabel raises several types for a broken header
        raise DecodeError(f"the NIfTI header is corrupt: {type(exc).__name__}") from exc


def _nifti_layout(hdr: nib.Nifti1Header, limits: DecodeLimits) -> tuple[tuple[int, ...], int]:
    """Validated shape and data end offset, from the header alone (no voxel is read)."""
    if np.asarray(hdr["magic"]).item() != b"n+1":
        raise DecodeError("a header-only NIfTI pair (.hdr/.img) is not supported; send one .nii")
    dim = [int(d) for d in hdr["dim"]]
    ndim = dim[0]
    if not 1 <= ndim <= 7:
        raise DecodeError(f"the NIfTI header declares {ndim} dimensions")
    shape = tuple(dim[1 : ndim + 1])
    if any(d < 1 for d in shape):
        raise DecodeError(f"the NIfTI header declares an empty or negative shape {shape}")
    code = int(hdr["datatype"])
    if code not in _NIFTI_TYPES:
        raise DecodeError(
            f"NIfTI datatype code {code} is not supported; use an integer or float type"
        )
    n_values = int(np.prod(shape, dtype=object))
    if n_values > limits.max_volume_values:
        raise DecodeError(
            f"the NIfTI header declares {shape} = {n_values} values; "
            f"the limit is {limits.max_volume_values}"
        )
    raw_offset = float(hdr["vox_offset"])
    if not np.isfinite(raw_offset) or raw_offset < 348:
        raise DecodeError("the NIfTI header's vox_offset is invalid (not a number >= 348)")
    offset = int(raw_offset)
    end = offset + n_values * np.dtype(_NIFTI_TYPES[code]).itemsize
    if end > limits.max_decompressed_bytes:
        raise DecodeError(
            f"the NIfTI image would need {end} bytes; the limit is {limits.max_decompressed_bytes}"
        )
    _check_scaling(hdr)
    _check_geometry_fields(hdr, ndim)
    return shape, end


_SPACE_UNITS_MM = {0: 1.0, 1: 1000.0, 2: 1.0, 3: 0.001}  # unknown (taken as mm), m, mm, micron
_TIME_UNITS = {0, 8, 16, 24, 32, 40, 48}  # unknown, s, ms, us, Hz, ppm, rad/s
SPACING_RANGE_MM = (0.01, 100.0)
"""Voxel spacings outside this range give a volume in voxels only (no ml)."""


def _finite(hdr: nib.Nifti1Header, *keys: str) -> bool:
    return all(np.isfinite(np.asarray(hdr[key], dtype=np.float64)).all() for key in keys)


def _check_geometry_fields(hdr: nib.Nifti1Header, ndim: int) -> None:
    """Refuse non-finite or impossible geometry before any voxel is read.

    Messages name the field, never its value (header values are not logged or echoed).
    """
    units = int(hdr["xyzt_units"])
    if units & 0x07 not in _SPACE_UNITS_MM or units & 0x38 not in _TIME_UNITS or units & 0xC0:
        raise DecodeError("the NIfTI header's xyzt_units is not a valid NIfTI-1 unit code")
    pixdim = np.asarray(hdr["pixdim"], dtype=np.float64)
    if not np.isfinite(pixdim[: 1 + min(ndim, 3)]).all():
        raise DecodeError("the NIfTI header's voxel sizes (pixdim) are not finite numbers")
    qcode, scode = int(hdr["qform_code"]), int(hdr["sform_code"])
    if not (0 <= qcode <= 4 and 0 <= scode <= 4):
        raise DecodeError("the NIfTI header's qform_code or sform_code is not a valid code")
    if qcode > 0:
        if not _finite(hdr, "quatern_b", "quatern_c", "quatern_d", "qoffset_x", "qoffset_y",
                       "qoffset_z"):  # fmt: skip
            raise DecodeError("the NIfTI header's qform (quatern_*, qoffset_*) is not finite")
        b, c, d = (float(hdr[k]) for k in ("quatern_b", "quatern_c", "quatern_d"))
        if b * b + c * c + d * d > 1.0 + 1e-6:
            raise DecodeError("the NIfTI header's qform quaternion is not a rotation")
    if scode > 0:
        if not _finite(hdr, "srow_x", "srow_y", "srow_z"):
            raise DecodeError("the NIfTI header's sform (srow_*) is not finite")
        rows = np.stack([np.asarray(hdr[k], dtype=np.float64)[:3] for k in ("srow_x", "srow_y",
                                                                             "srow_z")])
        if abs(np.linalg.det(rows)) < 1e-12:
            raise DecodeError("the NIfTI header's sform is singular (for example all zero)")


def _check_scaling(hdr: nib.Nifti1Header) -> None:
    slope, inter = float(hdr["scl_slope"]), float(hdr["scl_inter"])
    if np.isinf(slope) or np.isinf(inter):
        raise DecodeError("the NIfTI scaling (scl_slope/scl_inter) is infinite")
    unscaled = slope == 0 or np.isnan(slope)
    if unscaled and not (inter == 0 or np.isnan(inter)):
        raise DecodeError(
            f"the NIfTI scaling is ambiguous: scl_slope={slope} with scl_inter={inter}"
        )


_INFLATE_PIECE = 2**20


def _gunzip_capped(data: bytes, limits: DecodeLimits) -> bytearray:
    """Inflate a gzip stream: first the header only, then exactly the bytes it declares
    (into one buffer of that size: no second copy)."""
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as gz:
            head = gz.read(348)
            if not _is_nifti1(head):
                raise UnsupportedFormat("the gzip archive does not hold a NIfTI-1 image")
            _, end = _nifti_layout(_nifti_header(head), limits)
            raw = bytearray(end)
            raw[: len(head)] = head
            view = memoryview(raw)
            filled = len(head)
            while filled < end:  # in pieces: zlib's output buffer stays small
                got = gz.readinto(view[filled : filled + _INFLATE_PIECE])
                if not got:
                    break
                filled += got
            view.release()
    except DecodeProblem:
        raise
    except (OSError, EOFError, zlib.error) as exc:
        raise DecodeError("the gzip stream is truncated or corrupt") from exc
    if filled < end:
        raise DecodeError(f"the NIfTI data is truncated ({filled} of {end} bytes)")
    return raw


def _read_nifti(data: bytes, fmt: Format, limits: DecodeLimits) -> Volume:
    raw = _gunzip_capped(data, limits) if fmt == "gzip" else data
    hdr = _nifti_header(bytes(raw[:348]))
    shape, end = _nifti_layout(hdr, limits)
    if len(raw) < end:
        raise DecodeError(f"the NIfTI data is truncated ({len(raw)} of {end} bytes)")
    n_values = int(np.prod(shape))
    try:
        # A view of the bytes (no copy), in the file's (Fortran) order and byte order.
        stored = np.frombuffer(
            raw, dtype=hdr.get_data_dtype(), count=n_values, offset=int(hdr["vox_offset"])
        ).reshape(shape, order="F")
        slope, inter = hdr.get_slope_inter()
        values = apply_read_scaling(stored, slope, inter)
        affine = np.asarray(hdr.get_best_affine(), dtype=np.float64)
        zooms = tuple(float(z) for z in (list(hdr.get_zooms()) + [1.0, 1.0])[:3])
        validate_nifti_geometry(affine, hdr)
    except Exception as exc:  # noqa: BLE001 - nibabel raises several types for bad headers
        raise DecodeError(
            f"the NIfTI header's geometry or data is unusable ({type(exc).__name__}); "
            "check its qform/sform and voxel sizes"
        ) from exc
    values = _check_values(np.asarray(values))
    return Volume(
        data=values,
        affine=affine,
        zooms=(zooms[0], zooms[1], zooms[2]),
        source="nifti",
        header=hdr,
    )


def _nifti_as_kind(vol: Volume) -> tuple[Kind, np.ndarray]:
    """Classify a NIfTI array as one slice (H x W [x C]) or a volume (H x W x Z [x C])."""
    arr = vol.data
    while arr.ndim > 4 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 4 and arr.shape[3] == 1:
        arr = arr[..., 0]
    if arr.ndim == 1:
        raise DecodeError(f"the NIfTI image is 1-D {arr.shape}; expected a slice or a volume")
    if arr.ndim == 2:
        return "slice", arr
    if arr.ndim == 3:
        return ("slice", arr[:, :, 0]) if arr.shape[2] == 1 else ("volume", arr)
    if arr.ndim == 4:
        if arr.shape[3] != 3:
            raise DecodeError(
                f"the NIfTI image has shape {arr.shape}; a 4th axis must hold 1 or 3 channels "
                "(pre-contrast, FLAIR, post-contrast); time series are not supported"
            )
        return ("slice", arr[:, :, 0, :]) if arr.shape[2] == 1 else ("volume", arr)
    raise DecodeError(f"the NIfTI image has {arr.ndim} dimensions; expected at most 4")


# --------------------------------------------------------------------------- zip of slices

_NUMBER = re.compile(r"(\d+)")


def _natural_key(name: str) -> list[object]:
    return [int(t) if t.isdigit() else t.lower() for t in _NUMBER.split(name)]


ZIP_READ_ERRORS = (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError,
                   zlib.error)  # fmt: skip
"""What reading a (hostile) zip's entries can raise: corrupt data, unknown compression, ..."""


def zip_base_name(info: zipfile.ZipInfo) -> str:
    """The entry's file name without its folders (either slash)."""
    return info.filename.replace("\\", "/").rsplit("/", 1)[-1]


def zip_content_entries(infos: Iterable[zipfile.ZipInfo]) -> list[zipfile.ZipInfo]:
    """The entries that hold content: not folders, macOS resource forks or hidden dot files."""
    return [info for info in infos
            if not (info.is_dir() or info.filename.startswith("__MACOSX/")
                    or zip_base_name(info).startswith("."))]  # fmt: skip


def _zip_slice_entries(zf: zipfile.ZipFile, limits: DecodeLimits) -> list[zipfile.ZipInfo]:
    entries = [
        info for info in zip_content_entries(zf.infolist())
        # kaggle_3m layout: ground truth (and earlier predictions) beside the slices
        if not (is_mask_name(zip_base_name(info)) or is_prediction_name(zip_base_name(info)))
    ]  # fmt: skip
    if not entries:
        raise DecodeError("the zip holds no slice images")
    if len(entries) > limits.max_slices:
        raise DecodeError(f"the zip holds {len(entries)} slices; the limit is {limits.max_slices}")
    declared = sum(i.file_size for i in entries)
    if declared > limits.max_decompressed_bytes:
        raise DecodeError(
            f"the zip inflates to {declared} bytes; the limit is {limits.max_decompressed_bytes}"
        )
    if any(i.flag_bits & 0x1 for i in entries):
        raise DecodeError("the zip is encrypted")
    return sorted(entries, key=lambda i: _natural_key(i.filename))


def _read_zip(data: bytes, limits: DecodeLimits) -> Volume:
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise DecodeError("the zip archive is truncated or corrupt") from exc
    slices: list[np.ndarray] = []
    values = 0
    with zf:
        for index, info in enumerate(_zip_slice_entries(zf, limits)):
            try:
                blob = zf.read(info)  # ZipExtFile stops at the declared size and checks the CRC
            except ZIP_READ_ERRORS as exc:
                raise DecodeError(f"slice {index} of the zip cannot be extracted") from exc
            try:
                fmt = sniff(blob)
                if fmt in ("zip", "gzip", "nifti"):
                    raise UnsupportedFormat(f"{fmt} inside the zip; expected PNG, TIFF or JPEG")
                arr = _decode_2d(blob, fmt, limits)
            except DecodeProblem as exc:
                raise DecodeError(f"slice {index} of the zip: {exc}") from exc
            if slices and arr.shape != slices[0].shape:
                raise DecodeError(
                    f"slice {index} of the zip has shape {arr.shape}, the first has "
                    f"{slices[0].shape}; all slices must match"
                )
            values += arr.size
            if values > limits.max_volume_values:
                raise DecodeError(
                    f"the zip's slices hold over {limits.max_volume_values} values (the limit)"
                )
            slices.append(arr)
    return Volume(data=np.stack(slices, axis=2), source="zip")


# --------------------------------------------------------------------------- public API


def _decode_2d(data: bytes, fmt: Format, limits: DecodeLimits) -> np.ndarray:
    if fmt in ("png", "jpeg"):
        return _decode_pillow(data, fmt, limits)
    return _decode_tiff(data, limits)


def decode_slice(data: bytes, limits: DecodeLimits | None = None) -> np.ndarray:
    """Decode one 2-D slice: PNG, JPEG, TIFF or a one-slice NIfTI.

    Returns ``H x W`` (grey) or ``H x W x 3`` in the file's numeric type (see module docs).
    """
    limits = limits or DecodeLimits()
    fmt = sniff(data)
    if fmt == "zip":
        raise UnsupportedFormat(
            "a zip archive is not a slice; send a zip of slices to the volume endpoint"
        )
    if fmt in ("nifti", "gzip"):
        kind, arr = _nifti_as_kind(_read_nifti(data, fmt, limits))
        if kind == "volume":
            raise WrongKind("volume", f"the NIfTI image is a volume of shape {arr.shape}")
        check_geometry(arr.shape[0], arr.shape[1], limits)
        return arr
    return _decode_2d(data, fmt, limits)


def decode_volume(data: bytes, limits: DecodeLimits | None = None) -> Volume:
    """Decode a volume: a NIfTI (``.nii``/``.nii.gz``) or a zip of 2-D slices.

    The zip's slices are ordered by natural sort of their names (``..._2.tif`` before
    ``..._10.tif``); ``*_mask.*`` and ``*_pred.*`` files (``data.naming``), folders and hidden
    files are skipped.
    The returned ``data`` is ``H x W x Z`` or ``H x W x Z x 3``.
    """
    limits = limits or DecodeLimits()
    fmt = sniff(data)
    if fmt == "zip":
        vol = _read_zip(data, limits)
    elif fmt in ("nifti", "gzip"):
        vol = _read_nifti(data, fmt, limits)
        kind, arr = _nifti_as_kind(vol)
        if kind == "slice":
            raise WrongKind("slice", f"the NIfTI image is a single slice of shape {arr.shape}")
        vol = Volume(arr, vol.affine, vol.zooms, "nifti", vol.header)
    else:
        raise UnsupportedFormat(
            f"a single {fmt.upper()} image is not a volume; send a NIfTI volume or a zip of "
            "slices (single slices go to the slice endpoint)"
        )
    height, width, depth = vol.data.shape[:3]
    check_geometry(height, width, limits)
    if depth > limits.max_slices:
        raise DecodeError(f"the volume has {depth} slices; the limit is {limits.max_slices}")
    return vol


def decode_nifti(data: bytes, limits: DecodeLimits | None = None) -> Volume:
    """Decode any NIfTI (a slice or a volume) as a volume ``H x W x Z [x 3]`` (a slice: Z = 1).

    For tools that take both, such as the ``inference.predict`` CLI.
    """
    limits = limits or DecodeLimits()
    fmt = sniff(data)
    if fmt not in ("nifti", "gzip"):
        raise UnsupportedFormat(f"expected NIfTI (.nii or .nii.gz), got {fmt.upper()}")
    vol = _read_nifti(data, fmt, limits)
    kind, arr = _nifti_as_kind(vol)
    if kind == "slice":
        arr = arr[:, :, None] if arr.ndim == 2 else arr[:, :, None, :]
    check_geometry(arr.shape[0], arr.shape[1], limits)
    return Volume(arr, vol.affine, vol.zooms, "nifti", vol.header)


# --------------------------------------------------------------------------- sizes, from headers


@dataclass(frozen=True)
class DecodedSize:
    """What decoding an upload will hold, read from its header(s) alone (no pixel decoded).

    ``values`` (height x width x slices x channels as stored) of ``itemsize`` bytes each;
    ``inflated`` bytes of gzip/zip content held while decoding; ``pixels`` of one slice.
    """

    values: int
    itemsize: int
    pixels: int
    slices: int = 1
    inflated: int = 0
    copies: int = 1
    """Arrays of ``values x itemsize`` bytes held besides the upload and the inflated bytes."""


_PIL_ITEMSIZE = {"I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2, "I": 4, "F": 4}
_PROBE_HEAD = 64 * 1024


def decoded_size(data: bytes, limits: DecodeLimits | None = None) -> DecodedSize:
    """Bound the memory a decode will need from the file's header(s), before decoding.

    Refuses (like the decoders) what the header already shows to be over the limits. For a
    zip, each entry's header is read from its first 64 KiB; an entry whose header lies further
    in (a TIFF with its IFD at the end) counts as the largest slice the limits allow.
    """
    limits = limits or DecodeLimits()
    fmt = sniff(data)
    if fmt in ("nifti", "gzip"):
        return _nifti_size(data, fmt, limits)
    if fmt == "zip":
        return _zip_size(data, limits)
    size = _image_size(data, fmt, limits)
    if size is None:
        # An unreadable header: the decoder fails on it too, before allocating, and names why.
        _decode_2d(data, fmt, limits)
        return _worst_slice(limits)
    return size


def _worst_slice(limits: DecodeLimits) -> DecodedSize:
    return DecodedSize(values=limits.max_pixels * 4, itemsize=8, pixels=limits.max_pixels)


def _image_size(data: bytes, fmt: Format, limits: DecodeLimits) -> DecodedSize | None:
    """A 2-D image's decoded size from its header; None when the header cannot be read."""
    try:
        if fmt == "tiff":
            with tifffile.TiffFile(io.BytesIO(data)) as tif:
                page = tif.pages.first
                shape = tuple(int(d) for d in page.shape)
                itemsize = page.dtype.itemsize if page.dtype is not None else 8
            if len(shape) == 2:
                height, width, channels = shape[0], shape[1], 1
            elif len(shape) == 3:
                planar = shape[0] in (1, 2, 3, 4) and shape[2] not in (1, 2, 3, 4)
                height, width = (shape[1], shape[2]) if planar else (shape[0], shape[1])
                channels = shape[0] if planar else shape[2]
            else:
                raise DecodeError(f"unsupported TIFF layout {shape}; expected one slice")
            # a missing codec falls back to Pillow, which holds 4 bytes a pixel
            itemsize = max(itemsize, 4 // max(channels, 1))
        else:
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                channels = 3 if image.mode in _PIL_CONVERT else len(image.getbands())
                itemsize = _PIL_ITEMSIZE.get(image.mode, 1)
                channels = max(channels, 4 // itemsize)  # Pillow's own buffer: 4 bytes a pixel
    except DecodeProblem:
        raise
    except MemoryError:
        raise
    except Exception:  # noqa: BLE001 - an unreadable header: the decoder gives the 422
        return None
    check_geometry(height, width, limits)
    pixels = height * width
    return DecodedSize(values=pixels * channels, itemsize=int(itemsize), pixels=pixels)


def _nifti_size(data: bytes, fmt: Format, limits: DecodeLimits) -> DecodedSize:
    if fmt == "gzip":
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as gz:
                head = gz.read(348)
        except (OSError, EOFError, zlib.error) as exc:
            raise DecodeError("the gzip stream is truncated or corrupt") from exc
        if not _is_nifti1(head):
            raise UnsupportedFormat("the gzip archive does not hold a NIfTI-1 image")
    else:
        head = data[:348]
    hdr = _nifti_header(head)
    shape, end = _nifti_layout(hdr, limits)
    values = int(np.prod(shape, dtype=np.int64))
    itemsize = np.dtype(_NIFTI_TYPES[int(hdr["datatype"])]).itemsize
    height, width = shape[0], shape[1] if len(shape) > 1 else 1
    slices = shape[2] if len(shape) > 2 else 1
    # The voxels are a view of the (inflated) bytes; scaling or a byte swap makes one copy.
    scaled = float(hdr["scl_slope"]) not in (0.0, 1.0) or float(hdr["scl_inter"]) != 0.0
    swapped = not hdr.get_data_dtype().isnative
    return DecodedSize(
        values=values,
        itemsize=8 if scaled else itemsize,
        pixels=height * width,
        slices=slices,
        inflated=end if fmt == "gzip" else 0,
        copies=1 if scaled or swapped else 0,
    )


def _zip_size(data: bytes, limits: DecodeLimits) -> DecodedSize:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            entries = _zip_slice_entries(zf, limits)
            sizes = [_zip_entry_size(zf, info, limits) for info in entries]
    except DecodeProblem:
        raise
    except ZIP_READ_ERRORS as exc:
        raise DecodeError("the zip archive is truncated or corrupt") from exc
    known = [size if size is not None else _worst_slice(limits) for size in sizes]
    values = min(sum(s.values for s in known), limits.max_volume_values)
    return DecodedSize(
        values=values,
        itemsize=max(s.itemsize for s in known),
        pixels=max(s.pixels for s in known),
        slices=len(known),
        inflated=max(info.file_size for info in entries),
        copies=2,  # the list of slices, then their stack
    )


def _zip_entry_size(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, limits: DecodeLimits
) -> DecodedSize | None:
    with zf.open(info) as entry:
        head = entry.read(_PROBE_HEAD)
    try:
        fmt = sniff(head)
    except DecodeProblem:
        return None  # the decoder names the problem
    if fmt not in ("png", "jpeg", "tiff"):
        return None
    return _image_size(head, fmt, limits)


MM3_PER_ML = 1000.0


def voxel_spacing_mm(volume: Volume) -> tuple[tuple[float, float, float] | None, str | None]:
    """The voxel spacing in mm along the array's three axes, from the NIfTI's zooms and units;
    or ``None`` with the reason when it is not usable (outside ``SPACING_RANGE_MM``, or a zip).

    The one rule for physical units: areas (mm² = spacing[0] x spacing[1]), volumes (ml) and
    distances (HD95 in mm) all come from it; without it they are counted in pixels/voxels.
    """
    if volume.source == "zip" or volume.header is None:
        return None, "a zip of slices carries no voxel spacing"
    space_code = int(volume.header["xyzt_units"]) & 0x07
    spacing = [abs(z) * _SPACE_UNITS_MM[space_code] for z in volume.zooms]
    low, high = SPACING_RANGE_MM
    if not all(np.isfinite(s) and low <= s <= high for s in spacing):
        return None, (
            f"the NIfTI's voxel spacing is outside {low:g}-{high:g} mm, so no volume in ml "
            "is given; the tumour is counted in voxels only"
        )
    return (float(spacing[0]), float(spacing[1]), float(spacing[2])), None


def voxel_volume_mm3(volume: Volume) -> tuple[float | None, str | None]:
    """The volume of one voxel in mm³ (see :func:`voxel_spacing_mm`), or ``None`` and why."""
    spacing, reason = voxel_spacing_mm(volume)
    return (None, reason) if spacing is None else (float(np.prod(spacing)), None)


JPEG_WARNING = (
    "JPEG is lossy: its compression changed this slice's pixels, and the segmentation with "
    "them (the model was trained on lossless TIFF); send PNG, TIFF or NIfTI for a faithful answer"
)


def lossy_warning(data: bytes) -> str | None:
    """A warning for the user when ``data`` (already decoded fine) is a JPEG or a zip holding
    one, else None: the one rule for the CLI, the API and the viewer."""
    fmt = sniff(data)
    if fmt == "zip":
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for entry in archive.infolist():
                if not entry.is_dir():
                    with archive.open(entry) as member:
                        if member.read(3) == b"\xff\xd8\xff":
                            return JPEG_WARNING
        return None
    return JPEG_WARNING if fmt == "jpeg" else None
