"""Prep (real dataset layouts -> one prepared directory) and the prepared dataset in memory.

A prepared dataset directory:
    train.safetensors   images uint8 (N, C, H, W), labels int64 (N,)
    test.safetensors    the same for the real test split (only ever used for the final top-1)
    prep.json           written last: source, classes, image shape, counts per class, the
                        classifier normalisation (mean/std per channel), fingerprint
Prep builds the directory under a temporary name and swaps it in, so a kill (or a failing
--overwrite) leaves the previous dataset whole.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..engine.errors import SkdError
from ..engine.io import atomic_write, atomic_write_json, read_json, staged_dir
from .formats import read_cifar_binary, read_cifar_names, read_cifar_python, read_idx_pair, read_image_folder

SOURCES = ("mnist", "fashion-mnist", "cifar10", "cifar100", "imagefolder", "digits", "synthetic")
NEEDS_RAW = ("mnist", "fashion-mnist", "cifar10", "cifar100", "imagefolder")
# Classifier-input normalisation of DiM (pool_match.py / validate.py transform_test); others are
# computed on the prepared train split.
DIM_NORMALIZATION = {
    "cifar10": ([0.491, 0.482, 0.447], [0.202, 0.199, 0.201]),
    "mnist": ([0.131], [0.308]),
    "fashion-mnist": ([0.286], [0.353]),
}
FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]


# -- reading one source ------------------------------------------------------------------------------------
@dataclass
class RawSplits:
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: list[str]
    files: list[str]


def _find_one(raw: Path, names: tuple[str, ...], what: str) -> Path:
    """The first of ``names`` found at or below ``raw`` (uncompressed preferred to .gz by order)."""
    for name in names:
        hits = sorted(raw.rglob(name)) if raw.is_dir() else []
        if hits:
            return hits[0]
    raise SkdError(f"no {what} ({' or '.join(names)}) at or below this directory", raw)


def read_idx_source(raw: Path, classes: list[str]) -> RawSplits:
    def pair(prefix: str) -> tuple[Path, Path]:
        images = _find_one(
            raw,
            (f"{prefix}-images-idx3-ubyte", f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-images.idx3-ubyte"),
            f"{prefix} images IDX file",
        )
        labels = _find_one(
            raw,
            (f"{prefix}-labels-idx1-ubyte", f"{prefix}-labels-idx1-ubyte.gz", f"{prefix}-labels.idx1-ubyte"),
            f"{prefix} labels IDX file",
        )
        return images, labels

    (tri, trl), (tei, tel) = pair("train"), pair("t10k")
    train_x, train_y = read_idx_pair(tri, trl, len(classes))
    test_x, test_y = read_idx_pair(tei, tel, len(classes))
    if train_x.shape[1:] != test_x.shape[1:]:
        raise SkdError(
            f"test images are {test_x.shape[2]}x{test_x.shape[3]}, train images {train_x.shape[2]}x{train_x.shape[3]}",
            tei,
        )
    return RawSplits(train_x, train_y, test_x, test_y, classes, [str(p) for p in (tri, trl, tei, tel)])


def _cifar_dir(raw: Path, names: tuple[str, ...]) -> Path:
    for name in names:
        if raw.name == name and raw.is_dir():
            return raw
        if (raw / name).is_dir():
            return raw / name
    raise SkdError(f"no {' or '.join(names)} directory here (extract the official archive first)", raw)


def read_cifar10_source(raw: Path) -> RawSplits:
    folder = _cifar_dir(raw, ("cifar-10-batches-py", "cifar-10-batches-bin"))
    binary = folder.name.endswith("-bin")
    ext = ".bin" if binary else ""
    train_files = [folder / f"data_batch_{i}{ext}" for i in range(1, 6)]
    test_file = folder / f"test_batch{ext}"
    for f in train_files + [test_file]:
        if not f.is_file():
            raise SkdError("CIFAR-10 batch file missing", f)
    read = read_cifar_binary if binary else read_cifar_python
    parts = [read(f) for f in train_files]
    test_x, test_y = read(test_file)
    classes = [f"class{i}" for i in range(10)]
    if binary and (folder / "batches.meta.txt").is_file():
        classes = [n for n in (folder / "batches.meta.txt").read_text().split() if n][:10]
    elif not binary and (folder / "batches.meta").is_file():
        classes = read_cifar_names(folder / "batches.meta", "label_names")
    return RawSplits(
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
        test_x,
        test_y,
        classes,
        [str(f) for f in train_files + [test_file]],
    )


def read_cifar100_source(raw: Path) -> RawSplits:
    folder = _cifar_dir(raw, ("cifar-100-python", "cifar-100-binary"))
    binary = folder.name.endswith("-binary")
    files = [folder / ("train.bin" if binary else "train"), folder / ("test.bin" if binary else "test")]
    for f in files:
        if not f.is_file():
            raise SkdError("CIFAR-100 batch file missing", f)
    if binary:
        (train_x, train_y), (test_x, test_y) = (read_cifar_binary(f, 2, 1, 100) for f in files)
    else:
        (train_x, train_y), (test_x, test_y) = (read_cifar_python(f, "fine_labels", 100) for f in files)
    classes = [f"class{i}" for i in range(100)]
    if binary and (folder / "fine_label_names.txt").is_file():
        classes = [n for n in (folder / "fine_label_names.txt").read_text().split() if n][:100]
    elif not binary and (folder / "meta").is_file():
        classes = read_cifar_names(folder / "meta", "fine_label_names")
    return RawSplits(train_x, train_y, test_x, test_y, classes, [str(f) for f in files])


def _stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(keep, held_out) index arrays; each class gives round(fraction * n_c) (at least 1 if fraction > 0)."""
    rng = np.random.default_rng(seed)
    keep, held = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n = max(1, int(round(fraction * len(idx)))) if fraction > 0 else 0
        n = min(n, len(idx) - 1)
        held.append(idx[:n])
        keep.append(idx[n:])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(held))


def read_imagefolder_source(raw: Path, test_fraction: float, seed: int) -> RawSplits:
    if (raw / "train").is_dir() and (raw / "test").is_dir():
        train_x, train_y, classes = read_image_folder(raw / "train")
        test_x, test_y, _ = read_image_folder(raw / "test", classes)
        if train_x.shape[1:] != test_x.shape[1:]:
            raise SkdError(
                f"test images are {tuple(test_x.shape[1:])} (C, H, W), train images {tuple(train_x.shape[1:])}",
                raw / "test",
            )
        return RawSplits(train_x, train_y, test_x, test_y, classes, [str(raw / "train"), str(raw / "test")])
    x, y, classes = read_image_folder(raw)
    keep, held = _stratified_split(y, test_fraction, seed)
    return RawSplits(x[keep], y[keep], x[held], y[held], classes, [str(raw)])


def read_digits_source(test_fraction: float, seed: int) -> RawSplits:
    """scikit-learn's bundled UCI handwritten digits (1,797 8x8 images, values 0..16), scaled to 0..255."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = np.clip(np.rint(digits.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)[:, None]
    y = digits.target.astype(np.int64)
    keep, held = _stratified_split(y, test_fraction, seed)
    return RawSplits(x[keep], y[keep], x[held], y[held], [str(c) for c in range(10)], ["sklearn.datasets.load_digits"])


def read_source(source: str, raw: Path | None, test_fraction: float, seed: int) -> RawSplits:
    if source in ("mnist", "fashion-mnist"):
        return read_idx_source(raw, FASHION_CLASSES if source == "fashion-mnist" else [str(c) for c in range(10)])
    if source == "cifar10":
        return read_cifar10_source(raw)
    if source == "cifar100":
        return read_cifar100_source(raw)
    if source == "imagefolder":
        return read_imagefolder_source(raw, test_fraction, seed)
    return read_digits_source(test_fraction, seed)


# -- prep ---------------------------------------------------------------------------------------------------------
def _save_split(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    tensors = {"images": torch.from_numpy(np.ascontiguousarray(x)), "labels": torch.from_numpy(y.astype(np.int64))}
    atomic_write(path, lambda p: save_file(tensors, str(p)))


def prepare_dataset(
    source: str,
    raw: str | Path | None,
    out: str | Path,
    *,
    overwrite: bool = False,
    test_fraction: float = 0.2,
    seed: int = 0,
    synthetic_size: int = 8,
) -> dict:
    """Read ``source`` from ``raw`` into the prepared layout at ``out``; return what ``prep.json`` holds."""
    if source not in SOURCES:
        raise SkdError(f"--source must be one of {', '.join(SOURCES)}, got '{source}'")
    if source in NEEDS_RAW and not raw:
        raise SkdError(f"--source {source} needs --raw DIR (the extracted download)")
    if not 0 < test_fraction < 1:
        raise SkdError(f"--test-fraction must be in (0, 1), got {test_fraction}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SkdError("exists and is not a directory; cannot write a prepared dataset here", out)
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        what = "a prepared dataset" if (out / "prep.json").exists() else "files"
        raise SkdError(f"already holds {what}; pass --overwrite to replace it", out)
    raw_path = Path(raw) if raw else None
    if raw_path is not None and source != "synthetic" and not raw_path.exists():
        raise SkdError("raw data directory not found", raw_path)

    with tempfile.TemporaryDirectory() as scratch:
        if source == "synthetic":  # real ImageFolder PNGs first, then the real reader
            from .synth import write_synthetic_image_folder

            raw_path = raw_path or Path(scratch) / "synthetic"
            if raw_path.exists() and any(raw_path.iterdir()):
                raise SkdError(
                    "synthetic --raw must be a new or empty directory (the PNGs are written there)", raw_path
                )
            write_synthetic_image_folder(raw_path, size=synthetic_size, seed=seed)
            splits = read_imagefolder_source(raw_path, test_fraction, seed)
        else:
            splits = read_source(source, raw_path, test_fraction, seed)

    num_classes = len(splits.classes)
    for name, y in (("train", splits.train_y), ("test", splits.test_y)):
        missing = sorted(set(range(num_classes)) - set(np.unique(y).tolist()))
        if missing:
            raise SkdError(f"the {name} split has no image of class(es) {missing[:10]}", raw_path or source)
    if source in DIM_NORMALIZATION:
        mean, std = DIM_NORMALIZATION[source]
    else:
        scaled = splits.train_x.astype(np.float64) / 255.0
        mean = scaled.mean(axis=(0, 2, 3)).round(4).tolist()
        std = np.maximum(scaled.std(axis=(0, 2, 3)), 1e-3).round(4).tolist()

    with staged_dir(out) as tmp:
        _save_split(tmp / "train.safetensors", splits.train_x, splits.train_y)
        _save_split(tmp / "test.safetensors", splits.test_x, splits.test_y)
        digest = hashlib.sha256()
        for name in ("train.safetensors", "test.safetensors"):
            digest.update((tmp / name).read_bytes())
        _, c, h, w = splits.train_x.shape
        info = {
            "source": source,
            "raw": str(raw_path) if raw_path else None,
            "files": splits.files,
            "num_classes": num_classes,
            "classes": splits.classes,
            "channels": int(c),
            "height": int(h),
            "width": int(w),
            "train": int(len(splits.train_y)),
            "test": int(len(splits.test_y)),
            "train_per_class": np.bincount(splits.train_y, minlength=num_classes).tolist(),
            "test_per_class": np.bincount(splits.test_y, minlength=num_classes).tolist(),
            "mean": [float(v) for v in mean],
            "std": [float(v) for v in std],
            "test_fraction": test_fraction if source in ("imagefolder", "digits", "synthetic") else None,
            "seed": seed,
            "fingerprint": digest.hexdigest()[:16],
        }
        atomic_write_json(tmp / "prep.json", info)  # last: marks the directory finished
    return {"out": str(out), **info}


# -- the prepared dataset ---------------------------------------------------------------------------------------------
class PreparedImages:
    """A prepared directory in memory: uint8 tensors, labels, and the prep.json facts."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not (self.path / "prep.json").is_file():
            raise SkdError("not a prepared dataset (no prep.json; run `skd dataset-distill prep` first)", self.path)
        self.info = read_json(self.path / "prep.json")
        self.train_x, self.train_y = self._load("train")
        self.test_x, self.test_y = self._load("test")
        self.num_classes = int(self.info["num_classes"])
        self.shape = (int(self.info["channels"]), int(self.info["height"]), int(self.info["width"]))
        self.mean = torch.tensor(self.info["mean"], dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(self.info["std"], dtype=torch.float32).view(-1, 1, 1)

    def _load(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        path = self.path / f"{split}.safetensors"
        if not path.is_file():
            raise SkdError(f"{split} split missing", path)
        try:
            tensors = load_file(str(path))
        except Exception as exc:
            raise SkdError(f"cannot read ({exc.__class__.__name__}: {exc})", path) from exc
        x, y = tensors.get("images"), tensors.get("labels")
        if x is None or y is None or x.dtype != torch.uint8 or x.ndim != 4 or y.shape != (len(x),):
            raise SkdError("expected uint8 'images' (N, C, H, W) and int64 'labels' (N,)", path)
        return x, y.long()

    def dev_split(self, fraction: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """(train indices, dev indices) of the prepared train split; stratified and fixed by ``seed``."""
        if fraction <= 0:
            return torch.arange(len(self.train_y)), torch.zeros(0, dtype=torch.long)
        keep, held = _stratified_split(self.train_y.numpy(), fraction, seed)
        return torch.from_numpy(keep), torch.from_numpy(held)

    def to_gan(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 -> [-1, 1] float, the generator's output range (DiM: Normalize(0.5, 0.5))."""
        return x.float().div(127.5).sub(1.0)

    def classifier_input(self, x_gan: torch.Tensor) -> torch.Tensor:
        """[-1, 1] images -> the classifiers' input: (x + 1) / 2 normalised by the dataset's mean/std."""
        mean, std = self.mean.to(x_gan.device), self.std.to(x_gan.device)
        return ((x_gan + 1.0) * 0.5 - mean) / std
