"""Patient-level train/val/test split, seeded and stratified; never at slice level.

Slices of one patient are strongly correlated, so splitting slices would put near-copies of
test slices into training and inflate every score. Patients are split instead:

1. patients are grouped by TCGA subject (a subject scanned twice stays in one part);
2. groups are ordered by institution, then by tumour-burden tertile (over all patients), and
   shuffled with the seed inside each (institution, tertile) stratum;
3. the ordered list is dealt into train/val/test by an evenly spaced pattern with exactly the
   target counts, started at a seeded offset.

Step 3 spreads each part over every stratum in proportion, and small strata (an institution with
one patient) need no special case: they simply take the next places in the pattern. With the
default fractions every institution with at least 3 patients gets a patient in train.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from data.atomic import atomic_write_json
from data.kaggle3m import DatasetError, PatientRecord, tumour_volumes

FORMAT = "lggseg-split/1"
PARTS = ("train", "val", "test")


@dataclass
class Split:
    """Patient ids of each part, with the seed and fractions that produced them."""

    train: list[str]
    val: list[str]
    test: list[str]
    seed: int
    fractions: tuple[float, float, float] = field(default=(0.7, 0.15, 0.15))

    def __post_init__(self) -> None:
        seen: dict[str, str] = {}
        for part in PARTS:
            for pid in getattr(self, part):
                if pid in seen:
                    raise ValueError(f"patient {pid} is in both {seen[pid]} and {part}")
                seen[pid] = part

    def part(self, name: str) -> list[str]:
        """The patient ids of ``name`` ("train", "val" or "test")."""
        if name not in PARTS:
            raise ValueError(f"unknown split part {name!r}; expected one of {PARTS}")
        ids: list[str] = getattr(self, name)
        return ids

    def select(self, patients: Sequence[PatientRecord], name: str) -> list[PatientRecord]:
        """The records of part ``name``; raises DatasetError if a split patient is missing."""
        by_id = {p.patient_id: p for p in patients}
        ids = self.part(name)
        missing = [pid for pid in ids if pid not in by_id]
        if missing:
            shown = ", ".join(missing[:10]) + (
                f" and {len(missing) - 10} more" if len(missing) > 10 else ""
            )
            raise DatasetError(
                f"{len(missing)} patient(s) of the {name} split are not in the dataset: {shown}"
            )
        return [by_id[pid] for pid in ids]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "seed": self.seed,
            "fractions": list(self.fractions),
            "train": list(self.train),
            "val": list(self.val),
            "test": list(self.test),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Split:
        """Rebuild a split; raises ValueError naming what is missing or malformed."""
        if data.get("format", FORMAT) != FORMAT:
            raise ValueError(f"not a {FORMAT} split (format {data.get('format')!r})")
        missing = [k for k in ("seed", "fractions", *PARTS) if k not in data]
        if missing:
            raise ValueError(f"split is missing {', '.join(missing)}")
        for part in PARTS:
            ids = data[part]
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                raise ValueError(f"split '{part}' must be a list of patient ids")
        fractions = tuple(float(f) for f in data["fractions"])
        if len(fractions) != 3:
            raise ValueError(f"split fractions must have 3 values, got {len(fractions)}")
        return cls(
            train=list(data["train"]),
            val=list(data["val"]),
            test=list(data["test"]),
            seed=int(data["seed"]),
            fractions=(fractions[0], fractions[1], fractions[2]),
        )

    def to_json(self, path: str | Path) -> None:
        """Write atomically (temp file, fsync, rename)."""
        atomic_write_json(path, self.to_dict())

    @classmethod
    def from_json(cls, path: str | Path) -> Split:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read split file {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError(f"split file {path} does not hold a JSON object")
        return cls.from_dict(data)


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    values = tuple(float(f) for f in fractions)
    if len(values) != 3:
        raise ValueError(f"fractions must be (train, val, test), got {fractions!r}")
    if any(not math.isfinite(f) or f < 0 for f in values) or values[0] <= 0:
        raise ValueError(f"fractions must be >= 0 with train > 0, got {fractions!r}")
    if abs(sum(values) - 1.0) > 1e-6:
        raise ValueError(f"fractions must sum to 1, got {fractions!r} (sum {sum(values)})")
    return values[0], values[1], values[2]


def target_counts(n: int, fractions: tuple[float, float, float]) -> tuple[int, int, int]:
    """Patients per part by largest remainders (ties go to train, then val).

    Then every part with a positive fraction gets at least one patient while another part can
    spare one: all three are non-empty from ``n = 3``; with 2 patients val is filled first.
    """
    quotas = [n * f for f in fractions]
    counts = [math.floor(q) for q in quotas]
    by_remainder = sorted(range(3), key=lambda k: (counts[k] - quotas[k], k))
    for k in by_remainder[: n - sum(counts)]:
        counts[k] += 1
    for k in (1, 2):
        if fractions[k] > 0 and counts[k] == 0:
            donor = max(range(3), key=lambda j: (counts[j], -j))
            if counts[donor] > 1:
                counts[donor] -= 1
                counts[k] += 1
    return counts[0], counts[1], counts[2]


def _deal(counts: Sequence[int]) -> list[int]:
    """An evenly spaced sequence of part indices with exactly ``counts[k]`` of part ``k``."""
    n = sum(counts)
    dealt = [0] * len(counts)
    pattern = []
    for step in range(1, n + 1):
        deficits = [
            step * c / n - d if d < c else -math.inf for c, d in zip(counts, dealt, strict=True)
        ]
        part = int(np.argmax(deficits))
        dealt[part] += 1
        pattern.append(part)
    return pattern


def _tertile(volume: float, edges: np.ndarray) -> int:
    return int(np.searchsorted(edges, volume, side="right"))


def make_split(
    patients: list[PatientRecord],
    *,
    seed: int = 0,
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    volumes: Mapping[str, int] | None = None,
) -> Split:
    """Split ``patients`` into train/val/test, stratified by institution and tumour burden.

    Deterministic for a given seed and set of patients (their order does not matter).
    ``volumes`` (tumour pixels per patient id) avoids decoding the masks again when known.
    """
    fracs = _check_fractions(fractions)
    if not patients:
        raise ValueError("cannot split an empty list of patients")
    ids = [p.patient_id for p in patients]
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate patient ids in the list to split")
    if volumes is None:
        volumes = tumour_volumes(patients)

    # Subjects (usually one folder each) are the units that are dealt out.
    groups: dict[str, list[PatientRecord]] = {}
    for p in sorted(patients, key=lambda p: p.patient_id):
        groups.setdefault(p.subject_id, []).append(p)
    group_volume = {s: sum(volumes[p.patient_id] for p in g) for s, g in groups.items()}
    edges = np.quantile(np.array(list(group_volume.values()), dtype=np.float64), [1 / 3, 2 / 3])

    rng = np.random.default_rng(seed)
    strata: dict[tuple[str, int], list[str]] = {}
    for subject, members in groups.items():
        key = (members[0].institution, _tertile(group_volume[subject], edges))
        strata.setdefault(key, []).append(subject)
    order: list[str] = []
    for key in sorted(strata):
        subjects = strata[key]
        order.extend(subjects[i] for i in rng.permutation(len(subjects)))

    pattern = _deal(target_counts(len(order), fracs))
    offset = int(rng.integers(len(pattern)))
    pattern = pattern[offset:] + pattern[:offset]
    parts: list[list[str]] = [[], [], []]
    for subject, part in zip(order, pattern, strict=True):
        parts[part].extend(p.patient_id for p in groups[subject])
    return Split(
        train=sorted(parts[0]),
        val=sorted(parts[1]),
        test=sorted(parts[2]),
        seed=seed,
        fractions=fracs,
    )
