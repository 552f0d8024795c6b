"""A small synthetic DICOM MR study written with pydicom (no downloads): one series per
sequence, slices shuffled on disk and numbered backwards, so readers must sort by position."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)


@dataclass(frozen=True)
class Geometry:
    """Where the slices lie: row and column direction cosines, spacing (row, column) in mm,
    slice step in mm along the normal, and the first slice's position (patient LPS, mm)."""

    row_cosines: tuple[float, float, float] = (1.0, 0.0, 0.0)
    column_cosines: tuple[float, float, float] = (0.0, 1.0, 0.0)
    pixel_spacing: tuple[float, float] = (0.9, 0.8)
    slice_step: float = 3.0
    origin: tuple[float, float, float] = (-100.0, -120.0, 40.0)

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.row_cosines, self.column_cosines)

    def position(self, k: int) -> list[float]:
        return [float(v) for v in np.asarray(self.origin) + k * self.slice_step * self.normal]

    def affine_lps(self) -> np.ndarray:
        """Array index (row, column, slice) -> patient LPS mm."""
        affine = np.eye(4)
        affine[:3, 0] = np.asarray(self.column_cosines) * self.pixel_spacing[0]
        affine[:3, 1] = np.asarray(self.row_cosines) * self.pixel_spacing[1]
        affine[:3, 2] = self.normal * self.slice_step
        affine[:3, 3] = self.origin
        return affine


OBLIQUE = Geometry(
    row_cosines=(np.cos(0.3), np.sin(0.3), 0.0),
    column_cosines=(-np.sin(0.3) * np.cos(0.2), np.cos(0.3) * np.cos(0.2), np.sin(0.2)),
)


@dataclass
class Study:
    folder: Path
    study_uid: str
    frame_uid: str
    series: dict[str, str]
    """SeriesDescription -> SeriesInstanceUID."""


def write_series(
    folder: Path,
    stored: np.ndarray,
    description: str,
    *,
    study_uid: str,
    frame_uid: str,
    series_number: int,
    geometry: Geometry = Geometry(),
    slope: float = 1.0,
    intercept: float = 0.0,
    seed: int = 0,
) -> str:
    """Write ``stored`` (H x W x Z uint16, the stored values) as one series; returns its UID."""
    series_uid = generate_uid()
    height, width, depth = stored.shape
    order = np.random.default_rng(seed).permutation(depth)  # file names say nothing
    for k in range(depth):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.Modality = "MR"
        ds.PatientName = "Synthetic^Case"
        ds.PatientID = "SYN001"
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "O"
        ds.StudyDate = "20240101"
        ds.StudyTime = "120000"
        ds.StudyID = "1"
        ds.AccessionNumber = "A1"
        ds.ReferringPhysicianName = ""
        ds.Manufacturer = "synthetic"
        ds.SeriesDescription = description
        ds.SeriesNumber = series_number
        ds.InstanceNumber = depth - k  # backwards: sorting must follow the position
        ds.ImagePositionPatient = geometry.position(k)
        ds.ImageOrientationPatient = [*map(float, geometry.row_cosines),
                                      *map(float, geometry.column_cosines)]
        ds.PixelSpacing = list(geometry.pixel_spacing)
        ds.SliceThickness = abs(geometry.slice_step)
        ds.Rows, ds.Columns = height, width
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept
        ds.PixelData = np.ascontiguousarray(stored[:, :, k], dtype="<u2").tobytes()
        ds.save_as(folder / f"IM{int(order[k]):04d}_{series_number}", enforce_file_format=True)
    return series_uid


def write_study(
    folder: Path,
    sequences: Sequence[tuple[str, np.ndarray]],
    geometry: Geometry = Geometry(),
    slope: float = 1.0,
    intercept: float = 0.0,
) -> Study:
    """One series per (SeriesDescription, stored H x W x Z values), all in one folder."""
    folder.mkdir(parents=True, exist_ok=True)
    study_uid, frame_uid = generate_uid(), generate_uid()
    series = {
        description: write_series(
            folder, stored, description, study_uid=study_uid, frame_uid=frame_uid,
            series_number=n + 1, geometry=geometry, slope=slope, intercept=intercept, seed=n,
        )  # fmt: skip
        for n, (description, stored) in enumerate(sequences)
    }
    return Study(folder, study_uid, frame_uid, series)
