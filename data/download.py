"""Fetch the full LGG dataset from Kaggle and check it: ``python -m data.download --dest DIR``.

The dataset is "mateuszbuda/lgg-mri-segmentation" (110 patients, about 0.7 GB zipped). Downloading
needs the optional ``kaggle`` package and a Kaggle API token; ``--verify-only DIR`` checks a folder
that is already there, without network.
"""

from __future__ import annotations

import argparse
import io
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

from data.kaggle3m import DatasetError, find_kaggle3m, scan_dataset
from data.summary import format_table, summarize

DATASET = "mateuszbuda/lgg-mri-segmentation"

INSTALL_HELP = (
    "the Kaggle client is not installed. Install the download extra:\n"
    "    pip install -c constraints.txt -e '.[download]'"
)
CONFIG_HELP = (
    "the Kaggle client is not configured. Create an API token at "
    'https://www.kaggle.com/settings ("API" section) and save it as ~/.kaggle/kaggle.json '
    "(chmod 600 ~/.kaggle/kaggle.json), or set KAGGLE_USERNAME and KAGGLE_KEY. "
    "Then run this command again."
)


class DownloadError(RuntimeError):
    """The dataset could not be fetched; the message says what to do."""


def kaggle_api() -> Any:
    """An authenticated ``KaggleApi``; raises DownloadError with setup instructions."""
    quiet = io.StringIO()
    try:
        # Importing kaggle tries to authenticate and prints help when it cannot: keep it quiet.
        with redirect_stdout(quiet), redirect_stderr(quiet):
            from kaggle.api.kaggle_api_extended import KaggleApi
    except ImportError as exc:
        if exc.name in ("kaggle", "kaggle.api", "kaggle.api.kaggle_api_extended"):
            raise DownloadError(INSTALL_HELP) from exc
        raise DownloadError(
            f"the Kaggle client is installed but cannot be imported ({exc}). Reinstall the "
            "download extra, which also brings what the client needs:\n"
            "    pip install -c constraints.txt -e '.[download]'"
        ) from exc
    api = KaggleApi()
    try:
        with redirect_stdout(quiet), redirect_stderr(quiet):
            api.authenticate()
    except (Exception, SystemExit) as exc:  # the client calls exit(1) when no token is found
        raise DownloadError(CONFIG_HELP) from exc
    return api


def download(dest: Path) -> Path:
    """Download and unzip the dataset into ``dest``; returns the kaggle_3m folder found there."""
    api = kaggle_api()
    dest.mkdir(parents=True, exist_ok=True)
    print(f"downloading {DATASET} into {dest} (about 0.7 GB) ...", flush=True)
    try:
        api.dataset_download_files(DATASET, path=str(dest), unzip=True, quiet=False)
    except Exception as exc:  # network, HTTP and zip errors from the client
        raise DownloadError(f"download of {DATASET} failed: {exc}") from exc
    found = find_kaggle3m(dest)
    if found is None:
        raise DownloadError(f"no kaggle_3m folder with TCGA_* patient folders found in {dest}")
    return found


def verify(folder: Path, *, skip_bad: bool = False) -> int:
    """Scan ``folder`` and print the per-institution summary; returns the number of patients."""
    patients = scan_dataset(folder, skip_bad=skip_bad)
    rows = summarize(patients, progress=sys.stderr.isatty())
    print(format_table(rows))
    total = rows[-1]
    print(
        f"verified {folder}: {total.patients} patients, {total.slices} slices, "
        f"{total.tumour_slices} with tumour"
    )
    return total.patients


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m data.download",
        description=f"Download the LGG MRI segmentation dataset ({DATASET}) from Kaggle, locate "
        "its kaggle_3m folder and check every patient and slice. Exit code 0 on success.",
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument(
        "--dest",
        metavar="DIR",
        type=Path,
        help="folder to download and unzip into (created if needed). If it already holds a "
        "kaggle_3m folder, that folder is verified and nothing is downloaded (see --force).",
    )
    mode.add_argument(
        "--verify-only",
        metavar="DIR",
        type=Path,
        help="do not download: check an existing kaggle_3m folder (or a folder containing one) "
        "and print its summary",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="with --dest: download again even if DIR already holds a kaggle_3m folder",
    )
    parser.add_argument(
        "--skip-bad",
        action="store_true",
        help="when checking, skip unusable files with a warning instead of failing",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.verify_only is not None:
            folder = find_kaggle3m(args.verify_only) or args.verify_only
        else:
            existing = None if args.force else find_kaggle3m(args.dest)
            if existing is not None:
                print(f"{existing} already exists; checking it (use --force to download again)")
                folder = existing
            else:
                folder = download(args.dest)
        verify(folder, skip_bad=args.skip_bad)
    except (DownloadError, DatasetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
