"""Prep (real dataset layouts -> one prepared directory) and the prepared dataset the Task reads.

Sources:
    fusar        FUSAR-Ship v1.0: ``Category/Subcategory/Ship_CxxSyyNzzzz.tiff`` + ``meta.csv`` whose
                 ``path`` column holds the chip's folder with a backslash (``Cargo\\AggregatesCarrier``)
    opensarship  scene folders with ``Patch`` / ``Patch_Uint8`` / ``Patch_Cal``; class = the file
                 name's prefix before the first ``_``, polarisation = the ``_vv`` / ``_vh`` suffix
    imagefolder  any ``<class>/<image>`` tree
    synthetic    SAR-like chips drawn by synth.py in the FUSAR-Ship layout, then read as ``fusar``

A prepared directory (built under a temp name and renamed into place; ``prep.json`` written last):
    prep.json        source, classes, normalisation, split rule and seed, shots, label noise (with the
                     flipped chips), per-split class counts, train mean/std, fingerprint
    chips.npy        (N, C, S, S) float32 in [0, 1] (C = 1, or 2 for OpenSARShip VV+VH)
    labels.npy       (N,) int64 training labels (noisy where --label-noise flipped them)
    clean_labels.npy (N,) int64 labels as read
    split.npy        (N,) int8: 0 train, 1 val, 2 test
    index.jsonl      one row per chip: file(s), id, class, split, noisy, metadata (FUSAR meta.csv)
    skipped.jsonl    chips left out and why (corrupt, no meta.csv row, not in the split file, ...)
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..engine.errors import SkdError
from ..engine.io import atomic_write_json, atomic_write_jsonl, read_json, read_jsonl, staged_dir
from .chips import IMAGE_SUFFIXES, NormSpec, normalise, read_chip

SOURCES = ("fusar", "opensarship", "imagefolder", "synthetic")
SPLITS = ("train", "val", "test")
OPENSARSHIP_VARIANTS = {"patch": "Patch", "patch_uint8": "Patch_Uint8", "patch_cal": "Patch_Cal"}
POLARISATIONS = ("vv", "vh", "vv+vh")
# class = prefix before the first "_", polarisation = the last "_" token (third-party loaders; README §3)
OPENSARSHIP_NAME = r"^(?P<cls>[^_]+)_(?P<stem>.*)_(?P<pol>vv|vh)$"


@dataclass
class RawChip:
    files: list[Path]  # one per channel
    label: str
    chip_id: str
    meta: dict = field(default_factory=dict)


# -- discovery ----------------------------------------------------------------------------------------------
def _read_meta_csv(path: Path) -> list[dict]:
    raw = path.read_bytes()
    for encoding in ("utf-8-sig", "gb18030", "latin-1"):  # the official meta is exported from Excel
        try:
            text = raw.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    rows = list(csv.DictReader(text.splitlines()))
    missing = [c for c in ("id", "path") if rows and c not in rows[0]]
    if not rows:
        raise SkdError("meta.csv has no rows", path)
    if missing:
        raise SkdError(f"meta.csv lacks column(s) {missing}; has {list(rows[0])}", path)
    return rows


def discover_fusar(raw: Path, label_level: str) -> tuple[list[RawChip], list[dict]]:
    """Chips of the FUSAR tree that have a meta.csv row (and rows that have a chip); the rest is skipped."""
    if label_level not in ("category", "subcategory"):
        raise SkdError(f"--label-level must be category or subcategory, got '{label_level}'")
    metas = sorted(raw.rglob("meta.csv"))
    if not metas:
        hint = " (meta.xls is not read: export it to meta.csv)" if any(raw.rglob("meta.xls")) else ""
        raise SkdError(f"no meta.csv under this FUSAR-Ship root{hint}; --source imagefolder reads a bare tree", raw)
    meta_path = metas[0]
    base = meta_path.parent
    rows = {}
    skipped = []
    for row in _read_meta_csv(meta_path):
        chip_id = (row.get("id") or "").strip()
        if chip_id:
            rows[chip_id] = row
    files = {}
    for p in sorted(base.rglob("*")):
        if p.suffix.lower() in (".tif", ".tiff") and p.is_file():
            files.setdefault(p.stem, p)
    chips = []
    for chip_id, row in rows.items():
        folder = PathLikeBackslash(row["path"])
        if chip_id not in files:
            skipped.append(
                {
                    "file": str(base / Path(*folder.parts) / f"{chip_id}.tiff"),
                    "id": chip_id,
                    "reason": "meta.csv row has no chip file",
                }
            )
            continue
        path = files[chip_id]
        rel = path.parent.relative_to(base).parts
        if tuple(rel[-len(folder.parts) :]) != folder.parts:
            skipped.append(
                {
                    "file": str(path),
                    "id": chip_id,
                    "reason": f"chip is in {'/'.join(rel)} but meta.csv says {row['path']}",
                }
            )
            continue
        label = folder.parts[0] if label_level == "category" else folder.parts[-1]
        meta = {k: v for k, v in row.items() if k not in ("id", "path") and k}
        chips.append(RawChip([path], label, chip_id, meta))
    for chip_id, path in files.items():
        if chip_id not in rows:
            skipped.append({"file": str(path), "id": chip_id, "reason": "chip has no meta.csv row"})
    return chips, skipped


class PathLikeBackslash:
    """meta.csv's ``path`` column (``Cargo\\AggregatesCarrier``): Windows separators, maybe forward ones."""

    def __init__(self, text: str):
        self.parts = tuple(p for p in re.split(r"[\\/]+", text.strip()) if p)
        if not self.parts:
            raise SkdError(f"empty path in meta.csv row ({text!r})")


def discover_opensarship(raw: Path, variant: str, pol: str, name_regex: str) -> tuple[list[RawChip], list[dict]]:
    if variant not in OPENSARSHIP_VARIANTS:
        raise SkdError(f"--variant must be one of {', '.join(OPENSARSHIP_VARIANTS)}, got '{variant}'")
    if pol not in POLARISATIONS:
        raise SkdError(f"--pol must be one of {', '.join(POLARISATIONS)}, got '{pol}'")
    try:
        pattern = re.compile(name_regex, re.IGNORECASE)
    except re.error as exc:
        raise SkdError(f"--name-regex is not a valid regular expression: {exc}") from exc
    if not {"cls", "pol"} <= set(pattern.groupindex):
        raise SkdError("--name-regex needs the named groups (?P<cls>...) and (?P<pol>...)")
    folder = OPENSARSHIP_VARIANTS[variant]
    dirs = sorted(d for d in raw.rglob("*") if d.is_dir() and d.name.lower() == folder.lower())
    if not dirs:
        raise SkdError(f"no {folder}/ folder under this OpenSARShip root", raw)
    groups: dict[tuple[str, str], dict[str, Path]] = {}
    labels: dict[tuple[str, str], str] = {}
    skipped = []
    for d in dirs:
        for p in sorted(d.iterdir()):
            if p.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            m = pattern.match(p.stem)
            if not m:
                skipped.append({"file": str(p), "reason": f"file name does not match --name-regex {name_regex}"})
                continue
            key = (str(d), m.group("cls") + "_" + (m.groupdict().get("stem") or ""))
            groups.setdefault(key, {})[m.group("pol").lower()] = p
            labels[key] = m.group("cls")
    wanted = ["vv", "vh"] if pol == "vv+vh" else [pol]
    chips = []
    for key, by_pol in sorted(groups.items()):
        missing = [w for w in wanted if w not in by_pol]
        if missing:
            for p in by_pol.values():
                if pol == "vv+vh" or p.stem.lower().endswith(pol):
                    skipped.append({"file": str(p), "reason": f"no {'/'.join(missing).upper()} chip beside it"})
            continue
        first = by_pol[wanted[0]]
        scene = first.parent.parent.name
        chips.append(RawChip([by_pol[w] for w in wanted], labels[key], f"{scene}/{first.stem}", {"scene": scene}))
    return chips, skipped


def discover_imagefolder(raw: Path) -> tuple[list[RawChip], list[dict]]:
    classes = sorted(d for d in raw.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise SkdError("no class folders (expected <class>/<image> files)", raw)
    chips, skipped = [], []
    for d in classes:
        for p in sorted(d.rglob("*")):
            if p.is_file():
                if p.suffix.lower() in IMAGE_SUFFIXES:
                    chips.append(RawChip([p], d.name, f"{d.name}/{p.relative_to(d).with_suffix('')}"))
                elif not p.name.startswith("."):
                    skipped.append({"file": str(p), "reason": "not an image file"})
    return chips, skipped


# -- splits, shots, noise -----------------------------------------------------------------------------------------
def parse_split_ratio(text: str) -> tuple[float, float, float]:
    try:
        parts = [float(x) for x in text.split(",")]
    except ValueError as exc:
        raise SkdError(f"--split expects train,val,test fractions like 0.6,0.2,0.2 or a file, got '{text}'") from exc
    if len(parts) == 2:
        parts.append(max(0.0, 1.0 - sum(parts)))
    if len(parts) != 3 or any(p < 0 for p in parts) or abs(sum(parts) - 1.0) > 1e-6 or parts[0] == 0:
        raise SkdError(f"--split fractions must be 3 non-negative numbers summing to 1 with train > 0, got '{text}'")
    return parts[0], parts[1], parts[2]


def ratio_split(labels: np.ndarray, ratio: tuple[float, float, float], seed: int) -> np.ndarray:
    """Stratified: each class's chips shuffled with (seed, class) and cut by the fractions (rounded),
    so adding a class never moves another class's chips."""
    split = np.zeros(len(labels), dtype=np.int8)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        perm = idx[np.random.default_rng([seed, int(c)]).permutation(len(idx))]
        n_val, n_test = round(ratio[1] * len(idx)), round(ratio[2] * len(idx))
        n_train = len(idx) - n_val - n_test
        split[perm[n_train : n_train + n_val]] = 1
        split[perm[n_train + n_val :]] = 2
    return split


def read_split_file(path: Path) -> dict[str, str]:
    """``id,split`` rows (CSV or TSV, header optional); id = the chip id or its file stem."""
    if not path.is_file():
        raise SkdError("split file not found", path)
    out = {}
    text = path.read_text(encoding="utf-8-sig")
    dialect = "excel-tab" if "\t" in text.splitlines()[0] else "excel"
    for i, row in enumerate(csv.reader(text.splitlines(), dialect=dialect), 1):
        if not row or not row[0].strip() or (i == 1 and row[-1].strip().lower() == "split"):
            continue
        if len(row) < 2 or row[1].strip() not in SPLITS:
            raise SkdError(f"line {i}: expected 'id,split' with split in {'/'.join(SPLITS)}, got {row}", path)
        out[row[0].strip()] = row[1].strip()
    return out


def take_shots(labels: np.ndarray, split: np.ndarray, shots: int, seed: int, classes: list[str]) -> np.ndarray:
    """Keep ``shots`` train chips per class (seeded); the others leave the dataset (split = -1)."""
    split = split.copy()
    for c in range(len(classes)):
        idx = np.flatnonzero((labels == c) & (split == 0))
        drop = idx[np.random.default_rng([seed, 7, c]).permutation(len(idx))][shots:]
        split[drop] = -1
    return split


def add_label_noise(labels: np.ndarray, split: np.ndarray, rate: float, num_classes: int, seed: int) -> np.ndarray:
    """Symmetric noise on the train split: each label flips with probability ``rate`` to one of the
    OTHER classes, uniformly. Validation and test labels stay clean (README §3)."""
    noisy = labels.copy()
    rng = np.random.default_rng([seed, 11])
    train = np.flatnonzero(split == 0)
    flip = train[rng.random(len(train)) < rate]
    shift = rng.integers(1, num_classes, len(flip))
    noisy[flip] = (labels[flip] + shift) % num_classes
    return noisy


# -- prep --------------------------------------------------------------------------------------------------------
@dataclass
class PrepOptions:
    classes: str | None = None  # comma-separated subset (in this order); default: all, sorted
    label_level: str = "subcategory"  # fusar
    variant: str = "patch_uint8"  # opensarship
    pol: str = "vv"  # opensarship
    name_regex: str = OPENSARSHIP_NAME  # opensarship
    split: str = "0.6,0.2,0.2"  # fractions or a split file
    seed: int = 0
    shots: int = 0  # 0 = every train chip
    label_noise: float = 0.0
    norm: NormSpec = field(default_factory=NormSpec)
    synthetic_per_class: int = 80
    synthetic_chip_size: int = 96


def _discover(source: str, raw: Path, opts: PrepOptions) -> tuple[list[RawChip], list[dict]]:
    if source in ("fusar", "synthetic"):
        return discover_fusar(raw, opts.label_level)
    if source == "opensarship":
        return discover_opensarship(raw, opts.variant, opts.pol, opts.name_regex)
    return discover_imagefolder(raw)


def prepare_dataset(
    source: str,
    raw: str | Path | None,
    out: str | Path,
    opts: PrepOptions | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    opts = opts or PrepOptions()
    if source not in SOURCES:
        raise SkdError(f"--source must be one of {', '.join(SOURCES)}, got '{source}'")
    opts.norm.validate()
    if opts.shots < 0:
        raise SkdError(f"--shots must be >= 0, got {opts.shots}")
    if not 0 <= opts.label_noise < 1:
        raise SkdError(f"--label-noise must be in [0, 1), got {opts.label_noise}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SkdError("exists and is not a directory; cannot write the prepared dataset here", out)
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        what = "a prepared dataset" if (out / "prep.json").exists() else "files"
        raise SkdError(f"already holds {what}; pass --overwrite to replace it", out)
    with staged_dir(out) as tmp:
        if source == "synthetic":
            from .synth import write_fusar_like

            raw_path = write_fusar_like(
                tmp / "raw", per_class=opts.synthetic_per_class, size=opts.synthetic_chip_size, seed=opts.seed
            )
            final_raw = out / "raw"
        else:
            if not raw:
                raise SkdError(f"--source {source} needs --raw DIR")
            raw_path = final_raw = Path(raw)
            if not raw_path.is_dir():
                raise SkdError("raw dataset directory not found", raw_path)
        info = _prepare_into(
            source,
            raw_path,
            tmp,
            opts,
            progress,
            rename=(str(raw_path), str(final_raw)) if source == "synthetic" else None,
        )
        info["raw"] = str(final_raw.resolve()) if source != "synthetic" else str(final_raw)
        atomic_write_json(tmp / "prep.json", info)
    return {
        "out": str(out),
        **{
            k: info[k]
            for k in (
                "source",
                "chips",
                "classes",
                "split_counts",
                "skipped",
                "label_noise",
                "shots",
                "size",
                "channels",
            )
        },
    }


def _prepare_into(
    source: str, raw: Path, out: Path, opts: PrepOptions, progress, rename: tuple[str, str] | None = None
) -> dict:
    """``rename`` (old, new): path prefix of files that are moved with the output (synthetic raw/)."""
    chips, skipped = _discover(source, raw, opts)
    if not chips:
        raise SkdError(
            "no chips found" + (f" ({len(skipped)} skipped, see the reasons with --json)" if skipped else ""), raw
        )
    available = sorted({c.label for c in chips})
    if opts.classes:
        classes = [c.strip() for c in opts.classes.split(",") if c.strip()]
        unknown = [c for c in classes if c not in available]
        if unknown:
            raise SkdError(f"--classes: {unknown} not found; classes here: {', '.join(available)}", raw)
        for c in chips:
            if c.label not in classes:
                skipped.append(
                    {"file": str(c.files[0]), "id": c.chip_id, "reason": f"class {c.label} not in --classes"}
                )
        chips = [c for c in chips if c.label in classes]
    else:
        classes = available
    if len(classes) < 2:
        raise SkdError(f"need at least 2 classes, found {classes}", raw)

    arrays, kept, rgb_converted = [], [], []
    for i, chip in enumerate(chips):
        try:
            channels = []
            for f in chip.files:
                read = read_chip(f)
                if read.was_rgb:
                    rgb_converted.append(str(f))
                channels.append(normalise(read, opts.norm))
        except SkdError as exc:
            skipped.append({"file": str(chip.files[0]), "id": chip.chip_id, "reason": exc.message})
            continue
        arrays.append(np.stack(channels))
        kept.append(chip)
        if progress:
            progress(i + 1, len(chips))
    if not kept:
        raise SkdError(f"every chip was skipped ({len(skipped)}); first reason: {skipped[0]['reason']}", raw)
    x = np.stack(arrays).astype(np.float32)
    clean = np.array([classes.index(c.label) for c in kept], dtype=np.int64)

    split_rule: dict
    if Path(opts.split).is_file() or not re.fullmatch(r"[\d.,\s]+", opts.split):
        table = read_split_file(Path(opts.split))
        split = np.full(len(kept), -1, dtype=np.int8)
        for i, c in enumerate(kept):
            s = table.get(c.chip_id) or table.get(c.files[0].stem) or table.get(c.files[0].name)
            if s is None:
                skipped.append({"file": str(c.files[0]), "id": c.chip_id, "reason": "not in the split file"})
            else:
                split[i] = SPLITS.index(s)
        split_rule = {
            "file": str(Path(opts.split).resolve()),
            "sha256": hashlib.sha256(Path(opts.split).read_bytes()).hexdigest(),
        }
    else:
        ratio = parse_split_ratio(opts.split)
        split = ratio_split(clean, ratio, opts.seed)
        split_rule = {"fractions": list(ratio), "seed": opts.seed, "stratified": True}
    if opts.shots:
        split = take_shots(clean, split, opts.shots, opts.seed, classes)
    counts = {
        s: {classes[c]: int(((split == k) & (clean == c)).sum()) for c in range(len(classes))}
        for k, s in enumerate(SPLITS)
    }
    empty = [c for c, n in counts["train"].items() if n == 0]
    if empty:
        after = f" after --shots {opts.shots}" if opts.shots else ""
        raise SkdError(f"class(es) {empty} have 0 training chips{after}; check --classes/--split", raw)
    short = {c: n for c, n in counts["train"].items() if opts.shots and n < opts.shots}
    noisy = (
        add_label_noise(clean, split, opts.label_noise, len(classes), opts.seed) if opts.label_noise else clean.copy()
    )

    keep = split >= 0
    x, clean, noisy, split = x[keep], clean[keep], noisy[keep], split[keep]
    kept = [c for c, k in zip(kept, keep) if k]
    train = x[split == 0]
    mean, std = float(train.mean()), float(train.std() + 1e-6)
    np.save(out / "chips.npy", x)
    np.save(out / "labels.npy", noisy)
    np.save(out / "clean_labels.npy", clean)
    np.save(out / "split.npy", split)

    def shown(f: Path) -> str:
        return str(f).replace(rename[0], rename[1], 1) if rename else str(f)

    for row in skipped:
        row["file"] = shown(Path(row["file"]))
    rows = [
        {
            "i": i,
            "id": c.chip_id,
            "files": [shown(f) for f in c.files],
            "class": classes[int(clean[i])],
            "split": SPLITS[int(split[i])],
            "noisy": bool(noisy[i] != clean[i]),
            **({"label": classes[int(noisy[i])]} if noisy[i] != clean[i] else {}),
            "meta": c.meta,
        }
        for i, c in enumerate(kept)
    ]
    atomic_write_jsonl(out / "index.jsonl", rows)
    atomic_write_jsonl(out / "skipped.jsonl", skipped)
    digest = hashlib.sha256()
    for name in ("chips.npy", "labels.npy", "split.npy"):
        digest.update((out / name).read_bytes())
    flipped = np.flatnonzero(noisy != clean)
    return {
        "source": source,
        "chips": int(len(x)),
        "classes": classes,
        "channels": int(x.shape[1]),
        "size": int(x.shape[-1]),
        "normalisation": opts.norm.to_dict(),
        "train_mean": mean,
        "train_std": std,
        "options": {
            "label_level": opts.label_level,
            "variant": opts.variant,
            "pol": opts.pol,
            "name_regex": opts.name_regex,
        }
        if source == "opensarship"
        else ({"label_level": opts.label_level} if source in ("fusar", "synthetic") else {}),
        "split": split_rule,
        "split_counts": counts,
        "shots": opts.shots,
        "shots_short": short,
        "label_noise": {
            "rate": opts.label_noise,
            "kind": "symmetric (to another class, uniformly)",
            "seed": opts.seed,
            "flipped": int(len(flipped)),
            "flipped_ids": [kept[i].chip_id for i in flipped],
        },
        "rgb_converted": rgb_converted,
        "skipped": len(skipped),
        "fingerprint": digest.hexdigest()[:16],
    }


class PreparedSar:
    """A prepared directory, validated, with its arrays loaded."""

    FILES = ("prep.json", "chips.npy", "labels.npy", "clean_labels.npy", "split.npy")

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise SkdError("prepared dataset not found (run `skd sar prep` first)", self.path)
        for name in self.FILES:
            if not (self.path / name).is_file():
                raise SkdError(f"not a prepared sar dataset (no {name})", self.path)
        self.info = read_json(self.path / "prep.json")
        try:
            self.x = np.load(self.path / "chips.npy")
            self.labels = np.load(self.path / "labels.npy")
            self.clean_labels = np.load(self.path / "clean_labels.npy")
            self.split = np.load(self.path / "split.npy")
        except (ValueError, OSError) as exc:
            raise SkdError(f"cannot read the prepared arrays ({exc})", self.path) from exc
        n = len(self.x)
        if not (len(self.labels) == len(self.clean_labels) == len(self.split) == n) or self.x.ndim != 4:
            raise SkdError("prepared arrays disagree in length or shape (re-run prep with --overwrite)", self.path)
        self.classes: list[str] = list(self.info["classes"])
        self.mean, self.std = float(self.info["train_mean"]), float(self.info["train_std"])

    def indices(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.split == SPLITS.index(split))

    def index_rows(self) -> list[dict]:
        return read_jsonl(self.path / "index.jsonl")


def dataset_summary(info: dict) -> str:
    return json.dumps({k: info[k] for k in ("source", "chips", "classes", "split_counts")})
