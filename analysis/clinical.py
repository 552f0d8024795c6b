"""The clinical and genomic table of a kaggle_3m cohort (``data.csv``) and its join to the
patient folders.

``data.csv`` has one row per TCGA patient, keyed by ``Patient`` (``TCGA_CS_4942``); a patient
folder is ``TCGA_CS_4942_19970222`` (the scan date appended), so folders join on
``PatientRecord.subject_id``. Cells are numeric codes (clusters 1..k, grade, sex...) or empty.
Nothing is dropped here: a folder without a row gets empty variables, and the join reports
which folders had no row and which rows had no folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from data.kaggle3m import PatientRecord

ID_COLUMN = "Patient"


class ClinicalError(ValueError):
    """The clinical table cannot be used; the message says what to fix."""


@dataclass(frozen=True)
class Join:
    """Variables by patient folder, and what did not match."""

    table: pd.DataFrame
    """One row per patient folder (index: the folder name), one column per variable."""
    subjects: dict[str, str]
    """Folder name -> data.csv ID."""
    without_row: list[str] = field(default_factory=list)
    """Folders whose patient has no row in the table."""
    without_folder: list[str] = field(default_factory=list)
    """Rows of the table with no patient folder."""


def read_clinical(path: str | Path, variables: Sequence[str] | None = None) -> pd.DataFrame:
    """``data.csv`` indexed by ``Patient``, with every other column (or ``variables``) numeric.

    Raises ClinicalError for a missing file, a missing ``Patient`` column, duplicate patients,
    an unknown requested variable or a non-numeric cell.
    """
    path = Path(path)
    if not path.is_file():
        raise ClinicalError(f"clinical table not found: {path} (kaggle_3m ships it as data.csv)")
    try:
        frame = pd.read_csv(path, dtype={ID_COLUMN: str})
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise ClinicalError(f"cannot read {path} as CSV: {exc}") from exc
    if ID_COLUMN not in frame.columns:
        raise ClinicalError(f"{path} has no {ID_COLUMN!r} column (TCGA_<inst>_<patient>); "
                            f"its columns are {list(frame.columns)}")
    frame[ID_COLUMN] = frame[ID_COLUMN].str.strip()
    duplicated = sorted(set(frame.loc[frame[ID_COLUMN].duplicated(), ID_COLUMN]))
    if duplicated:
        raise ClinicalError(f"{path} lists these patients more than once: {duplicated}")
    frame = frame.set_index(ID_COLUMN)
    if variables is not None:
        unknown = [v for v in variables if v not in frame.columns]
        if unknown:
            raise ClinicalError(f"{path} has no column(s) {unknown}; it has {list(frame.columns)}")
        frame = frame[list(variables)]
    for column in frame.columns:
        numeric = pd.to_numeric(frame[column], errors="coerce")
        bad = frame[column].notna() & numeric.isna()
        if bad.any():
            raise ClinicalError(f"{path}: column {column!r} holds non-numeric values "
                                f"{sorted(set(frame.loc[bad, column].astype(str)))[:5]}; "
                                "code categories as numbers or leave the cell empty")
        frame[column] = numeric.astype("float64")
    return frame


def join(patients: Sequence[PatientRecord], clinical: pd.DataFrame) -> Join:
    """Variables of each patient folder (NaN where the patient has no row)."""
    subjects = {p.patient_id: p.subject_id for p in patients}
    table = clinical.reindex(list(subjects.values()))
    table.index = pd.Index(list(subjects), name="patient")
    without_row = [pid for pid, sid in subjects.items() if sid not in clinical.index]
    without_folder = sorted(set(clinical.index) - set(subjects.values()))
    return Join(table, subjects, without_row, without_folder)
