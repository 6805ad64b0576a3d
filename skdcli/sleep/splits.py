"""Which nights train, which select the best checkpoint (dev) and which are held out (test): always
whole SUBJECTS, never nights. Sleep-EDF cassette subjects have two nights and SHHS subjects up to two
visits (shhs1-ID, shhs2-ID); a dev or test night whose twin was trained on would measure
generalisation to a known sleeper, not to a new one.

- dev: subjects ranked by a hash of their id, taken until `dev_fraction` of the recordings is
  reached (at least one subject when dev_fraction > 0, never all of them). A pure function of the
  subject ids, so a run, its resume and `eval` agree.
- folds (`data.folds` = K >= 2, `data.fold` = k): subjects in sorted order cut into K contiguous
  groups, group k is the test set, dev is taken from the other subjects by the rule above. The
  DeepSleepNet lineage's subject-wise K-fold protocol (SeriesSleepNet folds over sorted files too).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np

from ..engine.errors import SkdError

SHHS_ID = re.compile(r"^shhs\d+-(\d+)$", re.IGNORECASE)
SLEEP_EDF_ID = re.compile(r"^(S[CT][47]\d\d)\d", re.IGNORECASE)


def subject_of(recording_id: str) -> str:
    """SHHS `shhs1-200001` and `shhs2-200001` -> `200001`; Sleep-EDF `SC4001E0` / `SC4002E0` -> `SC400`
    (`SC4ssN`: ss = subject, N = night). Anything else is its own subject."""
    m = SHHS_ID.match(recording_id)
    if m:
        return m.group(1)
    m = SLEEP_EDF_ID.match(recording_id)
    return m.group(1).upper() if m else recording_id


class HasSubject(Protocol):
    id: str
    subject: str


@dataclass
class Partition:
    train: list = field(default_factory=list)
    dev: list = field(default_factory=list)
    test: list = field(default_factory=list)
    test_subjects: list[str] = field(default_factory=list)


def _by_subject(nights: Sequence[HasSubject]) -> dict[str, list]:
    groups: dict[str, list] = {}
    for night in nights:
        groups.setdefault(night.subject, []).append(night)
    return groups


def dev_subjects(nights: Sequence[HasSubject], dev_fraction: float) -> set[str]:
    groups = _by_subject(nights)
    if dev_fraction <= 0 or len(groups) < 2:
        return set()
    ranked = sorted(groups, key=lambda s: hashlib.sha256(s.encode()).hexdigest())
    target = max(1, int(round(dev_fraction * len(nights))))
    chosen, count = set(), 0
    for subject in ranked[:-1]:  # never every subject
        if count >= target:
            break
        chosen.add(subject)
        count += len(groups[subject])
    return chosen


def fold_subjects(subjects: Sequence[str], folds: int) -> list[list[str]]:
    """Sorted subjects cut into `folds` contiguous groups (sizes differ by at most one)."""
    ordered = sorted(set(subjects))
    if folds > len(ordered):
        raise SkdError(f"data.folds={folds} needs at least {folds} subjects; the dataset has {len(ordered)}")
    return [list(g) for g in np.array_split(np.array(ordered, dtype=object), folds)]


def partition(nights: Sequence[HasSubject], dev_fraction: float, folds: int = 0, fold: int = 0) -> Partition:
    test_subjects: list[str] = []
    if folds:
        test_subjects = fold_subjects([n.subject for n in nights], folds)[fold]
    rest = [n for n in nights if n.subject not in set(test_subjects)]
    dev = dev_subjects(rest, dev_fraction)
    return Partition(
        train=[n for n in rest if n.subject not in dev],
        dev=[n for n in rest if n.subject in dev],
        test=[n for n in nights if n.subject in set(test_subjects)],
        test_subjects=test_subjects,
    )
