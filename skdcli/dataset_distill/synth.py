"""Writers of the real on-disk formats, and a synthetic 10-class image set written through them.

No MNIST or CIFAR file is stored in this project, and nothing is downloaded at run time. The
tests and `prep --source synthetic` therefore write files in the exact published layouts (IDX,
CIFAR binary, CIFAR python as Python 2's cPickle protocol 2 wrote it, ImageFolder PNGs) and read
them back through the real readers in ``formats.py``.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from ..engine.io import atomic_write, atomic_write_bytes
from .formats import IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC


# -- IDX -------------------------------------------------------------------------------------------------------
def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    array = np.ascontiguousarray(array, dtype=np.uint8)
    return struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_idx_split(out_dir: Path, prefix: str, images: np.ndarray, labels: np.ndarray, gz: bool = True) -> None:
    """MNIST names: ``{prefix}-images-idx3-ubyte[.gz]`` and ``{prefix}-labels-idx1-ubyte[.gz]``;
    prefix ``train`` or ``t10k``. ``images`` (N, H, W) uint8."""
    suffix = ".gz" if gz else ""
    for name, array, magic in (
        (f"{prefix}-images-idx3-ubyte", images, IDX_IMAGES_MAGIC),
        (f"{prefix}-labels-idx1-ubyte", labels, IDX_LABELS_MAGIC),
    ):
        data = idx_bytes(array, magic)
        atomic_write_bytes(out_dir / (name + suffix), gzip.compress(data, mtime=0) if gz else data)


# -- CIFAR binary ----------------------------------------------------------------------------------------------
def cifar_binary_bytes(images: np.ndarray, labels: np.ndarray, coarse: np.ndarray | None = None) -> bytes:
    """Records of [coarse,] label, 3072 planar pixels; ``images`` (N, 3, 32, 32) uint8."""
    flat = np.ascontiguousarray(images, dtype=np.uint8).reshape(len(images), -1)
    heads = [labels.astype(np.uint8)[:, None]]
    if coarse is not None:
        heads.insert(0, coarse.astype(np.uint8)[:, None])
    return np.concatenate([*heads, flat], axis=1).tobytes()


# -- CIFAR python: a Python 2 cPickle protocol-2 stream, opcode by opcode ---------------------------------------------
def _py2_str(text: str | bytes) -> bytes:
    data = text.encode("latin1") if isinstance(text, str) else text
    if len(data) < 256:
        return b"U" + bytes([len(data)]) + data  # SHORT_BINSTRING
    return b"T" + struct.pack("<i", len(data)) + data  # BINSTRING


def _py2_int(value: int) -> bytes:
    if 0 <= value < 256:
        return b"K" + bytes([value])  # BININT1
    if 0 <= value < 65536:
        return b"M" + struct.pack("<H", value)  # BININT2
    return b"J" + struct.pack("<i", value)  # BININT


def _py2_uint8_array(array: np.ndarray) -> bytes:
    """numpy's ndarray.__reduce__ as Python 2 numpy pickled it (numpy.core.multiarray._reconstruct)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    shape = b"".join(_py2_int(d) for d in array.shape)
    shape += {1: b"\x85", 2: b"\x86", 3: b"\x87"}[array.ndim]  # TUPLE1/2/3
    return (
        b"cnumpy.core.multiarray\n_reconstruct\n"
        + b"cnumpy\nndarray\n"
        + _py2_int(0)
        + b"\x85"
        + _py2_str("b")
        + b"\x87R"  # TUPLE3, REDUCE -> empty array
        + b"("
        + _py2_int(1)
        + shape  # MARK, version, shape
        + b"cnumpy\ndtype\n"
        + _py2_str("u1")
        + _py2_int(0)
        + _py2_int(1)
        + b"\x87R"  # dtype('u1', 0, 1)
        + b"("
        + _py2_int(3)
        + _py2_str("|")
        + b"NNN"
        + b"J\xff\xff\xff\xff" * 2
        + _py2_int(0)
        + b"tb"  # dtype state
        + b"\x89"
        + _py2_str(array.tobytes())
        + b"tb"
    )  # is_fortran False, raw data; TUPLE, BUILD


def cifar_python_bytes(entries: dict[str, object]) -> bytes:
    """A dict of str -> (uint8 array | list of int | list of str | str | int), pickled the way the CIFAR
    python batches were (Python 2 cPickle, protocol 2)."""
    out = [b"\x80\x02}("]  # PROTO 2, EMPTY_DICT, MARK
    for key, value in entries.items():
        out.append(_py2_str(key))
        if isinstance(value, np.ndarray):
            out.append(_py2_uint8_array(value))
        elif isinstance(value, list):
            items = b"".join(_py2_int(int(v)) if not isinstance(v, (str, bytes)) else _py2_str(v) for v in value)
            out.append(b"](" + items + b"e")  # EMPTY_LIST, MARK, ..., APPENDS
        elif isinstance(value, int):
            out.append(_py2_int(value))
        else:
            out.append(_py2_str(value))
    out.append(b"u.")  # SETITEMS, STOP
    return b"".join(out)


def write_cifar(
    out_dir: Path,
    images: np.ndarray,
    labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    *,
    variant: str = "cifar10",
    layout: str = "python",
    train_batches: int = 5,
) -> Path:
    """The official archive's extracted layout, for cifar10 / cifar100 in the python or binary version.
    CIFAR-10's train split is spread over ``train_batches`` batch files like data_batch_1..5."""
    out_dir = Path(out_dir)
    names = [f"class{i}" for i in range(int(max(labels.max(), test_labels.max())) + 1)]
    if variant == "cifar10":
        folder = out_dir / ("cifar-10-batches-py" if layout == "python" else "cifar-10-batches-bin")
        chunks = np.array_split(np.arange(len(images)), train_batches)
        splits = [(f"data_batch_{i + 1}", images[c], labels[c]) for i, c in enumerate(chunks)]
        splits.append(("test_batch", test_images, test_labels))
        for name, x, y in splits:
            if layout == "python":
                payload = cifar_python_bytes(
                    {
                        "batch_label": name,
                        "labels": y.tolist(),
                        "data": x.reshape(len(x), -1),
                        "filenames": [f"{i}.png" for i in range(len(x))],
                    }
                )
                atomic_write_bytes(folder / name, payload)
            else:
                atomic_write_bytes(folder / f"{name}.bin", cifar_binary_bytes(x, y))
        if layout == "python":
            atomic_write_bytes(folder / "batches.meta", cifar_python_bytes({"label_names": names, "num_vis": 3072}))
        else:
            atomic_write_bytes(folder / "batches.meta.txt", ("\n".join(names) + "\n").encode())
        return folder
    folder = out_dir / ("cifar-100-python" if layout == "python" else "cifar-100-binary")
    for name, x, y in (("train", images, labels), ("test", test_images, test_labels)):
        coarse = y // 5
        if layout == "python":
            payload = cifar_python_bytes(
                {
                    "filenames": [f"{i}.png" for i in range(len(x))],
                    "batch_label": name,
                    "fine_labels": y.tolist(),
                    "coarse_labels": coarse.tolist(),
                    "data": x.reshape(len(x), -1),
                }
            )
            atomic_write_bytes(folder / name, payload)
        else:
            atomic_write_bytes(folder / f"{name}.bin", cifar_binary_bytes(x, y, coarse))
    if layout == "python":
        atomic_write_bytes(
            folder / "meta", cifar_python_bytes({"fine_label_names": names, "coarse_label_names": names[::5]})
        )
    else:
        atomic_write_bytes(folder / "fine_label_names.txt", ("\n".join(names) + "\n").encode())
    return folder


# -- ImageFolder ------------------------------------------------------------------------------------------------------
def write_image_folder(root: Path, images: np.ndarray, labels: np.ndarray, classes: list[str]) -> None:
    """ROOT/<class>/<index>.png; ``images`` (N, C, H, W) uint8 with C = 1 (L) or 3 (RGB)."""
    from PIL import Image

    for i, (x, y) in enumerate(zip(images, labels)):
        array = x[0] if x.shape[0] == 1 else x.transpose(1, 2, 0)
        img = Image.fromarray(np.ascontiguousarray(array), mode="L" if x.shape[0] == 1 else "RGB")
        atomic_write(Path(root) / classes[int(y)] / f"{i:05d}.png", lambda p, im=img: im.save(p, format="PNG"))


# -- a synthetic 10-class set ------------------------------------------------------------------------------------------
def synthetic_images(
    n_per_class: int, size: int = 8, channels: int = 1, num_classes: int = 10, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Class k = an oriented grating (angle k*pi/C, two spatial frequencies) with random phase,
    contrast and pixel noise: separable, but not trivially (a linear probe on pixels gets
    well below 100 %). Returns uint8 (N, C, size, size) and int64 labels, classes interleaved."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    images, labels = [], []
    for _ in range(n_per_class):
        for k in range(num_classes):
            angle = np.pi * k / num_classes
            freq = 1.5 if k % 2 == 0 else 2.5
            phase = rng.uniform(0, 2 * np.pi)
            wave = np.sin(2 * np.pi * freq * (xx * np.cos(angle) + yy * np.sin(angle)) + phase)
            img = 0.5 + 0.35 * rng.uniform(0.6, 1.0) * wave + rng.normal(0, 0.12, (size, size))
            tint = np.ones((1, 1, 1)) if channels == 1 else rng.uniform(0.7, 1.0, (channels, 1, 1))
            images.append(np.clip(img[None] * tint * 255, 0, 255).astype(np.uint8))
            labels.append(k)
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def write_synthetic_image_folder(
    root: Path, n_train_per_class: int = 40, n_test_per_class: int = 10, size: int = 8, channels: int = 1, seed: int = 0
) -> Path:
    """ROOT/train/<class>/*.png and ROOT/test/<class>/*.png of ``synthetic_images``."""
    root = Path(root)
    classes = [f"grating{k}" for k in range(10)]
    x, y = synthetic_images(n_train_per_class, size, channels, seed=seed)
    write_image_folder(root / "train", x, y, classes)
    x, y = synthetic_images(n_test_per_class, size, channels, seed=seed + 1)
    write_image_folder(root / "test", x, y, classes)
    return root
