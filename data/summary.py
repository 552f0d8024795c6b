"""Per-institution counts of a ``kaggle_3m`` folder: ``python -m data.summary DIR``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from tqdm.auto import tqdm

from data.kaggle3m import DatasetError, PatientRecord, scan_dataset, tumour_pixels


@dataclass
class Counts:
    """Patients, slices and tumour of one institution (or of all, as "all")."""

    institution: str
    patients: int = 0
    slices: int = 0
    tumour_slices: int = 0
    tumour_pixels: int = 0

    def add(self, other: Counts) -> None:
        self.patients += other.patients
        self.slices += other.slices
        self.tumour_slices += other.tumour_slices
        self.tumour_pixels += other.tumour_pixels


def summarize(patients: Sequence[PatientRecord], *, progress: bool = False) -> list[Counts]:
    """One row per institution (sorted), then a total row "all". Decodes every mask once."""
    rows: dict[str, Counts] = {}
    for patient in tqdm(patients, desc="reading masks", unit="patient", disable=not progress):
        pixels = tumour_pixels(patient)
        row = Counts(
            patient.institution,
            patients=1,
            slices=len(patient.slices),
            tumour_slices=int((pixels > 0).sum()),
            tumour_pixels=int(pixels.sum()),
        )
        rows.setdefault(patient.institution, Counts(patient.institution)).add(row)
    total = Counts("all")
    for row in rows.values():
        total.add(row)
    return [rows[k] for k in sorted(rows)] + [total]


def format_table(rows: Sequence[Counts]) -> str:
    lines = [
        f"{'institution':<12}{'patients':>9}{'slices':>8}{'tumour slices':>15}{'tumour pixels':>15}"
    ]
    for r in rows:
        lines.append(
            f"{r.institution:<12}{r.patients:>9}{r.slices:>8}{r.tumour_slices:>15}"
            f"{r.tumour_pixels:>15}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m data.summary",
        description="Check a kaggle_3m folder and print patients, slices and slices with tumour "
        "per institution (TCGA_<institution>_...). Exit code 0 when the folder is usable.",
    )
    parser.add_argument("dir", metavar="DIR", help="the kaggle_3m folder (holds TCGA_* folders)")
    parser.add_argument(
        "--skip-bad",
        action="store_true",
        help="skip unusable files with a warning instead of failing on them",
    )
    args = parser.parse_args(argv)
    try:
        patients = scan_dataset(args.dir, skip_bad=args.skip_bad)
        rows = summarize(patients, progress=sys.stderr.isatty())
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(format_table(rows))
    total = rows[-1]
    print(
        f"{args.dir}: {total.patients} patients, {total.slices} slices, "
        f"{total.tumour_slices} with tumour"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
