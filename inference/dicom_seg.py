"""The predicted mask as a DICOM Segmentation (SEG), for a case read from a DICOM study.

Written with highdicom: a binary SEG with one segment ("Tumor", SNOMED CT 108369006, in the
category Morphologically Abnormal Structure), algorithm type AUTOMATIC, identified by the model
version. Its frames lie on the FLAIR series' slices (``source_images``: each frame references
its FLAIR slice and carries that slice's position and orientation); the pre- and post-contrast
series are recorded as further source images, so the SEG's ReferencedSeriesSequence names all
three. Patient and study attributes are copied from the source images, so a PACS files the SEG
with its study. Slices without tumour are left out of the frames (highdicom's default; all are
kept when there is no tumour at all); readers (highdicom, 3D Slicer, OHIF) restore them empty.
"""

from __future__ import annotations

import io

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from data.dicom import SeriesVolume

SEGMENT_LABEL = "tumour (FLAIR abnormality)"
SERIES_DESCRIPTION = "lggseg tumour mask (research use only)"


def mask_to_dicom_seg(
    mask: np.ndarray,
    flair: SeriesVolume,
    further: list[SeriesVolume],
    model_version: str,
) -> Dataset:
    """``H x W x Z`` mask (non-zero = tumour) on the FLAIR series' grid -> a SEG dataset.

    ``mask[:, :, k]`` is the FLAIR's slice ``flair.datasets[k]`` (``data.dicom.read_series``
    order). ``further`` are the other sequences' series.
    """
    rows, columns = int(flair.datasets[0].Rows), int(flair.datasets[0].Columns)
    if mask.shape != (rows, columns, len(flair.datasets)):
        raise ValueError(f"the mask has shape {mask.shape}; the FLAIR series is "
                         f"{rows} x {columns} x {len(flair.datasets)}")
    algorithm = hd.AlgorithmIdentificationSequence(
        name="lggseg", version=model_version, family=codes.cid7162.ArtificialIntelligence
    )
    segment = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=SEGMENT_LABEL,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Tumor,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
    )
    numbers = [int(s.series.number) for s in (flair, *further) if s.series.number is not None]
    return hd.seg.Segmentation(
        source_images=flair.datasets,
        pixel_array=np.moveaxis(np.asarray(mask) != 0, 2, 0),  # frames in the FLAIR's order
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment],
        series_instance_uid=hd.UID(),
        series_number=max(numbers, default=0) + 1,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="lggseg",
        manufacturer_model_name="lggseg ResNet-50-UNet",
        software_versions=model_version[:64],
        device_serial_number="none",
        series_description=SERIES_DESCRIPTION,
        further_source_images=[ds for s in further for ds in s.datasets],
        omit_empty_frames=bool(np.any(mask)),  # an all-empty SEG keeps its frames
    )


def dicom_bytes(dataset: Dataset) -> bytes:
    """A dataset as a DICOM Part-10 file's bytes."""
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
