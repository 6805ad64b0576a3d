"""Readers of the real on-disk image-classification formats, written for skd with explicit checks.

Each reader returns ``(images uint8 (N, C, H, W), labels int64 (N,))`` and raises ``SkdError``
naming the file and the problem for anything malformed: a wrong magic number, a truncated or
over-long body, image and label counts that differ, a record length that does not divide the
file, a pickle that names anything but the types the CIFAR files hold, mixed image sizes or modes.

Formats (layouts as documented by their publishers and read by torchvision's dataset classes):
- IDX (MNIST, Fashion-MNIST; Y. LeCun's page): big-endian header, magic 0x00000803 (images, 3 dims)
  or 0x00000801 (labels, 1 dim), then the dims as uint32, then the uint8 body; optionally gzipped.
- CIFAR binary (A. Krizhevsky's page): records of 1 label byte (CIFAR-100: coarse then fine) and
  3072 pixel bytes (1024 R, 1024 G, 1024 B, row-major 32x32).
- CIFAR python: pickles written by Python 2 (protocol 2) of a dict with ``data`` (uint8 array
  N x 3072, same planar layout) and ``labels`` / ``fine_labels``. Read with a restricted unpickler.
- ImageFolder: ``ROOT/<class>/<image>`` (torchvision.datasets.ImageFolder), read with Pillow.
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np

from ..engine.errors import SkdError

IDX_IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dims
IDX_LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dim
CIFAR_PIXELS = 3 * 32 * 32
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm", ".pgm", ".tif", ".tiff")


# -- IDX ------------------------------------------------------------------------------------------------
def _read_maybe_gzip(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SkdError(f"cannot read ({exc.strerror})", path) from exc
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise SkdError(f"corrupt or truncated gzip stream ({exc})", path) from exc
    return raw


def read_idx(path: str | Path, expected_magic: int) -> np.ndarray:
    """One IDX file (gzipped or not) as a uint8 array of its declared shape."""
    path = Path(path)
    raw = _read_maybe_gzip(path)
    if len(raw) < 4:
        raise SkdError(f"too short for an IDX header ({len(raw)} bytes)", path)
    (magic,) = struct.unpack(">I", raw[:4])
    if magic != expected_magic:
        kind = "images" if expected_magic == IDX_IMAGES_MAGIC else "labels"
        raise SkdError(f"wrong IDX magic number 0x{magic:08x} (expected 0x{expected_magic:08x} for {kind})", path)
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise SkdError(f"truncated IDX header ({len(raw)} bytes, {ndim} dims need {header})", path)
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(dims, dtype=np.int64))
    body = len(raw) - header
    if body < expected:
        raise SkdError(
            f"truncated IDX body: header declares {'x'.join(map(str, dims))} = {expected} bytes, file holds {body}",
            path,
        )
    if body > expected:
        raise SkdError(f"IDX body longer than declared: {body} bytes after the header, {expected} expected", path)
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def read_idx_pair(
    images_path: str | Path, labels_path: str | Path, num_classes: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(images_path, IDX_IMAGES_MAGIC)
    labels = read_idx(labels_path, IDX_LABELS_MAGIC).astype(np.int64)
    if len(images) != len(labels):
        raise SkdError(f"{len(labels)} labels for {len(images)} images in {Path(images_path).name}", labels_path)
    _check_labels(labels, num_classes, labels_path)
    return images[:, None, :, :].copy(), labels


# -- CIFAR binary ------------------------------------------------------------------------------------------
def read_cifar_binary(
    path: str | Path, label_bytes: int = 1, label_index: int = 0, num_classes: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """A CIFAR binary batch: records of ``label_bytes`` label bytes + 3072 pixel bytes.
    CIFAR-10: label_bytes=1; CIFAR-100: label_bytes=2 (coarse, fine), label_index=1 for fine."""
    path = Path(path)
    raw = _read_maybe_gzip(path)
    record = label_bytes + CIFAR_PIXELS
    if not raw or len(raw) % record:
        raise SkdError(
            f"length {len(raw)} is not a whole number of {record}-byte records "
            f"({label_bytes} label byte(s) + {CIFAR_PIXELS} pixels); not a CIFAR batch or truncated",
            path,
        )
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(-1, record)
    labels = rows[:, label_index].astype(np.int64)
    _check_labels(labels, num_classes, path)
    return rows[:, label_bytes:].reshape(-1, 3, 32, 32).copy(), labels


# -- CIFAR python (restricted unpickling) ----------------------------------------------------------------------
def _safe_reconstruct(subtype: Any, shape: Any, dtype_code: Any) -> np.ndarray:
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError("numpy _reconstruct of something other than numpy.ndarray")
    if not isinstance(shape, tuple) or not all(isinstance(d, int) for d in shape):
        raise pickle.UnpicklingError("numpy _reconstruct with a shape that is not a tuple of ints")
    dtype = dtype_code if isinstance(dtype_code, np.dtype) else _safe_dtype(dtype_code)
    return np.ndarray.__new__(np.ndarray, shape, dtype)


def _safe_dtype(spec: Any, align: Any = False, copy: Any = False) -> np.dtype:
    if not isinstance(spec, (str, bytes)):
        raise pickle.UnpicklingError(f"numpy dtype from {type(spec).__name__}")
    dtype = np.dtype(spec.decode("latin1") if isinstance(spec, bytes) else spec)
    if dtype.hasobject or dtype.kind not in "biuf":
        raise pickle.UnpicklingError(f"numpy dtype {dtype} (only plain numbers are admitted)")
    return dtype


def _latin1_bytes(text: Any, encoding: Any = "latin1") -> bytes:
    # Python 3 re-pickles of bytes at protocol <= 2 go through _codecs.encode(str, 'latin1')
    if not isinstance(text, str) or encoding != "latin1":
        raise pickle.UnpicklingError("_codecs.encode other than a latin1 str")
    return text.encode("latin1")


class CifarUnpickler(pickle.Unpickler):
    """Admits only what the CIFAR python batches hold: dicts, lists, strings/bytes, ints (native
    pickle opcodes) and uint8 / number numpy arrays. Any other global (os.system, builtins.eval,
    subprocess...) is refused before it can be called."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _safe_reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _safe_reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): _safe_dtype,
        ("_codecs", "encode"): _latin1_bytes,
    }

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused global {module}.{name}") from None


def load_cifar_pickle(path: str | Path) -> dict:
    path = Path(path)
    raw = _read_maybe_gzip(path)
    try:
        obj = CifarUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        raise SkdError(
            f"not a CIFAR python batch: {exc} (only dict/list/bytes/numpy arrays are admitted; "
            "the pickle was not executed)",
            path,
        ) from exc
    except Exception as exc:  # truncated or garbled streams raise EOFError, ValueError, ...
        raise SkdError(f"not a readable CIFAR python batch ({exc.__class__.__name__}: {exc})", path) from exc
    if not isinstance(obj, dict):
        raise SkdError(f"a CIFAR python batch holds a dict, this holds a {type(obj).__name__}", path)
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def read_cifar_python(
    path: str | Path, label_key: str = "labels", num_classes: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    path = Path(path)
    batch = load_cifar_pickle(path)
    data, labels = batch.get("data"), batch.get(label_key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != CIFAR_PIXELS:
        what = f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise SkdError(f"'data' must be a uint8 array of shape (N, {CIFAR_PIXELS}), got {what}", path)
    if not isinstance(labels, (list, np.ndarray)):
        raise SkdError(f"no '{label_key}' list (keys: {', '.join(map(str, batch))})", path)
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (len(data),):
        raise SkdError(f"{labels.size} labels for {len(data)} images", path)
    _check_labels(labels, num_classes, path)
    return data.reshape(-1, 3, 32, 32).copy(), labels


def read_cifar_names(path: str | Path, key: str) -> list[str]:
    """Class names from a python meta pickle (``label_names`` / ``fine_label_names``)."""
    names = load_cifar_pickle(path).get(key)
    if not isinstance(names, list) or not all(isinstance(n, (str, bytes)) for n in names):
        raise SkdError(f"no '{key}' list of names", path)
    return [n.decode("latin1") if isinstance(n, bytes) else n for n in names]


# -- ImageFolder -------------------------------------------------------------------------------------------------
def list_image_folder(root: str | Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """Classes = sorted sub-directory names; files with an image suffix below each, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise SkdError("ImageFolder root is not a directory", root)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise SkdError("no class sub-directories (expected ROOT/<class>/<image>)", root)
    items = []
    for index, name in enumerate(classes):
        files = sorted(p for p in (root / name).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise SkdError("class directory holds no image file", root / name)
        items += [(p, index) for p in files]
    return classes, items


def read_image_folder(root: str | Path, classes: list[str] | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """All images of an ImageFolder tree; every image must share the first one's size and mode."""
    from PIL import Image, UnidentifiedImageError

    found, items = list_image_folder(root)
    if classes is not None and found != classes:
        raise SkdError(f"class directories {found} differ from the train split's {classes}", root)
    arrays, labels = [], []
    first: tuple[Path, tuple[int, int], str] | None = None
    for path, label in items:
        try:
            with Image.open(path) as img:
                img.load()
                size, mode = img.size, img.mode
                if first is None:
                    if mode not in ("L", "RGB"):
                        raise SkdError(f"image mode {mode}; only L (grayscale) and RGB are supported", path)
                    first = (path, size, mode)
                elif (size, mode) != first[1:]:
                    raise SkdError(
                        f"image is {size[0]}x{size[1]} {mode} but {first[0]} is "
                        f"{first[1][0]}x{first[1][1]} {first[2]}; all images must share size and mode",
                        path,
                    )
                array = np.asarray(img, dtype=np.uint8)
        except (UnidentifiedImageError, OSError) as exc:
            raise SkdError(f"not a readable image ({exc.__class__.__name__})", path) from exc
        arrays.append(array[None] if array.ndim == 2 else array.transpose(2, 0, 1))
        labels.append(label)
    return np.stack(arrays), np.asarray(labels, dtype=np.int64), found


def _check_labels(labels: np.ndarray, num_classes: int, path: str | Path) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise SkdError(f"labels must lie in 0..{num_classes - 1}, found {labels.min()}..{labels.max()}", path)
