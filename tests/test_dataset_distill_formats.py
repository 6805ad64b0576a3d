"""dataset-distill readers and prep: every source in its exact on-disk format (files written here,
byte for byte as published: no MNIST/CIFAR file is stored in the project), and each bad-input case
of issue 13 as a one-line SkdError naming the file."""

from __future__ import annotations

import gzip
import json
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skdcli.dataset_distill.data import PreparedImages, prepare_dataset
from skdcli.dataset_distill.formats import (
    IDX_IMAGES_MAGIC,
    IDX_LABELS_MAGIC,
    load_cifar_pickle,
    read_cifar_binary,
    read_cifar_python,
    read_idx,
    read_idx_pair,
    read_image_folder,
)
from skdcli.dataset_distill.synth import (
    cifar_python_bytes,
    idx_bytes,
    synthetic_images,
    write_cifar,
    write_idx_split,
    write_image_folder,
)
from skdcli.engine.errors import SkdError


def _mnist_like(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), np.arange(n, dtype=np.uint8) % 10


def _cifar_like(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8), np.arange(n) % 10


# -- IDX --------------------------------------------------------------------------------------------------------
def test_idx_header_is_the_published_one(tmp_path: Path) -> None:
    x, y = _mnist_like(3)
    raw = idx_bytes(x, IDX_IMAGES_MAGIC)
    assert raw[:4] == b"\x00\x00\x08\x03" and struct.unpack(">3I", raw[4:16]) == (3, 28, 28)
    assert idx_bytes(y, IDX_LABELS_MAGIC)[:8] == b"\x00\x00\x08\x01\x00\x00\x00\x03"


@pytest.mark.parametrize("gz", [True, False])
def test_idx_pair_roundtrip(tmp_path: Path, gz: bool) -> None:
    x, y = _mnist_like(12)
    write_idx_split(tmp_path, "train", x, y, gz=gz)
    suffix = ".gz" if gz else ""
    images, labels = read_idx_pair(
        tmp_path / f"train-images-idx3-ubyte{suffix}", tmp_path / f"train-labels-idx1-ubyte{suffix}"
    )
    assert images.shape == (12, 1, 28, 28) and np.array_equal(images[:, 0], x) and np.array_equal(labels, y)


def test_idx_wrong_magic(tmp_path: Path) -> None:
    x, _ = _mnist_like(2)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(idx_bytes(x, IDX_LABELS_MAGIC))  # a label magic on an image file
    with pytest.raises(SkdError, match="wrong IDX magic number 0x00000801") as err:
        read_idx(path, IDX_IMAGES_MAGIC)
    assert err.value.path == str(path)


def test_idx_truncated_body_and_trailing_bytes(tmp_path: Path) -> None:
    x, _ = _mnist_like(4)
    full = idx_bytes(x, IDX_IMAGES_MAGIC)
    cut = tmp_path / "cut.gz"
    cut.write_bytes(gzip.compress(full[:-100]))
    with pytest.raises(SkdError, match="truncated IDX body"):
        read_idx(cut, IDX_IMAGES_MAGIC)
    long = tmp_path / "long"
    long.write_bytes(full + b"\x00")
    with pytest.raises(SkdError, match="longer than declared"):
        read_idx(long, IDX_IMAGES_MAGIC)
    broken_gzip = tmp_path / "broken.gz"
    broken_gzip.write_bytes(gzip.compress(full)[:-20])
    with pytest.raises(SkdError, match="gzip"):
        read_idx(broken_gzip, IDX_IMAGES_MAGIC)


def test_idx_label_and_image_counts_differ(tmp_path: Path) -> None:
    x, y = _mnist_like(5)
    write_idx_split(tmp_path, "train", x, y[:4])
    with pytest.raises(SkdError, match="4 labels for 5 images") as err:
        read_idx_pair(tmp_path / "train-images-idx3-ubyte.gz", tmp_path / "train-labels-idx1-ubyte.gz")
    assert "train-labels-idx1-ubyte.gz" in str(err.value)


# -- CIFAR ----------------------------------------------------------------------------------------------------------
def test_cifar_binary_wrong_length(tmp_path: Path) -> None:
    path = tmp_path / "data_batch_1.bin"
    path.write_bytes(b"\x00" * (3073 * 2 + 17))
    with pytest.raises(SkdError, match="not a whole number of 3073-byte records") as err:
        read_cifar_binary(path)
    assert err.value.path == str(path)


def test_cifar_python_is_a_python2_protocol2_pickle(tmp_path: Path) -> None:
    x, y = _cifar_like(4)
    payload = cifar_python_bytes({"batch_label": "b", "labels": y.tolist(), "data": x.reshape(4, -1)})
    assert payload[:2] == b"\x80\x02" and b"cnumpy.core.multiarray\n_reconstruct\n" in payload
    loaded = pickle.loads(payload, encoding="latin1")  # what torchvision does with the official files
    assert np.array_equal(loaded["data"], x.reshape(4, -1)) and loaded["labels"] == y.tolist()
    path = tmp_path / "data_batch_1"
    path.write_bytes(payload)
    images, labels = read_cifar_python(path)
    assert np.array_equal(images, x) and np.array_equal(labels, y)


def test_cifar_python_batch_of_wrong_shape(tmp_path: Path) -> None:
    x, y = _cifar_like(3)
    path = tmp_path / "test_batch"
    path.write_bytes(cifar_python_bytes({"labels": y.tolist(), "data": x.reshape(3, -1)[:, :3000]}))
    with pytest.raises(SkdError, match=r"'data' must be a uint8 array of shape \(N, 3072\)"):
        read_cifar_python(path)
    path.write_bytes(cifar_python_bytes({"labels": y.tolist()[:2], "data": x.reshape(3, -1)}))
    with pytest.raises(SkdError, match="2 labels for 3 images"):
        read_cifar_python(path)


class _WritesAFile:
    """A pickle payload whose unpickling would call open(...).write(...) via eval."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (eval, (f"open({str(self.target)!r}, 'w').write('pwned')",))


def test_malicious_pickle_is_refused_and_never_executed(tmp_path: Path) -> None:
    target = tmp_path / "side_effect.txt"
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({"data": _WritesAFile(target), "labels": [0]}, protocol=2))
    # sanity: the plain unpickler WOULD run it
    probe = tmp_path / "probe.txt"
    pickle.loads(pickle.dumps(_WritesAFile(probe)))
    assert probe.read_text() == "pwned"
    with pytest.raises(SkdError, match=r"refused global (__builtin__|builtins)\.eval") as err:
        load_cifar_pickle(path)
    assert "not executed" in str(err.value) and err.value.path == str(path)
    assert not target.exists()


def test_malicious_pickle_through_prep_leaves_no_side_effect(tmp_path: Path) -> None:
    x, y = _cifar_like(10)
    raw = tmp_path / "raw"
    folder = write_cifar(raw, x, y, x, y, layout="python")
    target = tmp_path / "owned.txt"
    (folder / "data_batch_3").write_bytes(pickle.dumps({"data": _WritesAFile(target)}, protocol=4))
    with pytest.raises(SkdError, match="data_batch_3: not a CIFAR python batch: refused global"):
        prepare_dataset("cifar10", raw, tmp_path / "prep")
    assert not target.exists() and not (tmp_path / "prep").exists()


def test_object_arrays_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps({"data": np.array([{"a": 1}], dtype=object)}, protocol=2))
    with pytest.raises(SkdError, match="refused global|only plain numbers"):
        load_cifar_pickle(path)


# -- ImageFolder ----------------------------------------------------------------------------------------------------
def _png(path: Path, size: tuple[int, int], mode: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, 128 if mode == "L" else (10, 20, 30)).save(path)


def test_image_folder_mixed_sizes_and_modes(tmp_path: Path) -> None:
    _png(tmp_path / "sizes" / "a" / "1.png", (8, 8), "L")
    _png(tmp_path / "sizes" / "b" / "2.png", (9, 8), "L")
    with pytest.raises(SkdError, match="image is 9x8 L but .*1.png is 8x8 L") as err:
        read_image_folder(tmp_path / "sizes")
    assert err.value.path.endswith("2.png")
    _png(tmp_path / "modes" / "a" / "1.png", (8, 8), "L")
    _png(tmp_path / "modes" / "b" / "2.png", (8, 8), "RGB")
    with pytest.raises(SkdError, match="image is 8x8 RGB but .* is 8x8 L"):
        read_image_folder(tmp_path / "modes")


def test_image_folder_reads_rgb_and_gray(tmp_path: Path) -> None:
    x, y = synthetic_images(2, size=8, channels=3)
    write_image_folder(tmp_path / "rgb", x, y, [f"c{k}" for k in range(10)])
    images, labels, classes = read_image_folder(tmp_path / "rgb")
    assert images.shape == (20, 3, 8, 8) and classes[0] == "c0"
    order = np.argsort(labels, kind="stable")
    assert np.array_equal(images[order], x[np.argsort(y, kind="stable")])


# -- prep, every source -----------------------------------------------------------------------------------------------
def test_prep_mnist_and_fashion(tmp_path: Path) -> None:
    x, y = _mnist_like(30)
    tx, ty = _mnist_like(20, seed=1)
    raw = tmp_path / "raw" / "MNIST" / "raw"
    write_idx_split(raw, "train", x, y)
    write_idx_split(raw, "t10k", tx, ty, gz=False)
    info = prepare_dataset("mnist", tmp_path / "raw", tmp_path / "mnist")
    assert (info["train"], info["test"], info["channels"], info["height"]) == (30, 20, 1, 28)
    assert info["mean"] == [0.131] and info["std"] == [0.308]  # DiM's constants
    data = PreparedImages(tmp_path / "mnist")
    assert np.array_equal(data.train_x[:, 0].numpy(), x) and np.array_equal(data.test_y.numpy(), ty)
    info = prepare_dataset("fashion-mnist", tmp_path / "raw", tmp_path / "fmnist")
    assert info["classes"][9] == "Ankle boot" and info["mean"] == [0.286]


@pytest.mark.parametrize("layout", ["python", "binary"])
def test_prep_cifar10(tmp_path: Path, layout: str) -> None:
    x, y = _cifar_like(50)
    tx, ty = _cifar_like(10, seed=2)
    write_cifar(tmp_path / "raw", x, y, tx, ty, layout=layout)
    info = prepare_dataset("cifar10", tmp_path / "raw", tmp_path / "prep")
    assert (info["train"], info["test"], info["channels"], info["height"]) == (50, 10, 3, 32)
    assert info["classes"][1] == "class1" and info["mean"] == [0.491, 0.482, 0.447]
    data = PreparedImages(tmp_path / "prep")
    assert np.array_equal(data.train_x.numpy(), x) and np.array_equal(data.train_y.numpy(), y)


@pytest.mark.parametrize("layout", ["python", "binary"])
def test_prep_cifar100_uses_fine_labels(tmp_path: Path, layout: str) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (200, 3, 32, 32), dtype=np.uint8)
    y = np.arange(200) % 100
    write_cifar(tmp_path / "raw", x, y, x[:100], y[:100], variant="cifar100", layout=layout)
    info = prepare_dataset("cifar100", tmp_path / "raw", tmp_path / "prep")
    assert info["num_classes"] == 100 and info["train_per_class"] == [2] * 100
    assert np.array_equal(PreparedImages(tmp_path / "prep").train_y.numpy(), y)


def test_prep_cifar10_missing_batch(tmp_path: Path) -> None:
    x, y = _cifar_like(20)
    folder = write_cifar(tmp_path / "raw", x, y, x, y, layout="binary")
    (folder / "data_batch_4.bin").unlink()
    with pytest.raises(SkdError, match="data_batch_4.bin: CIFAR-10 batch file missing"):
        prepare_dataset("cifar10", tmp_path / "raw", tmp_path / "prep")


def test_prep_imagefolder_split_and_prepared(tmp_path: Path) -> None:
    x, y = synthetic_images(5, size=8)
    write_image_folder(tmp_path / "flat", x, y, [f"k{i}" for i in range(10)])
    info = prepare_dataset("imagefolder", tmp_path / "flat", tmp_path / "prep", test_fraction=0.2)
    assert (info["train"], info["test"]) == (40, 10) and info["test_per_class"] == [1] * 10


def test_prep_digits_is_real_and_stratified(tmp_path: Path) -> None:
    info = prepare_dataset("digits", None, tmp_path / "digits")
    assert info["train"] + info["test"] == 1797 and (info["height"], info["width"], info["channels"]) == (8, 8, 1)
    data = PreparedImages(tmp_path / "digits")
    assert int(data.train_x.max()) == 255 and data.train_x.dtype.is_floating_point is False
    assert min(info["test_per_class"]) >= 30
    assert json.loads((tmp_path / "digits" / "prep.json").read_text())["fingerprint"] == info["fingerprint"]


def test_prep_synthetic_writes_pngs_and_reads_them(tmp_path: Path) -> None:
    info = prepare_dataset("synthetic", tmp_path / "pngs", tmp_path / "prep")
    assert len(list((tmp_path / "pngs" / "train").rglob("*.png"))) == 400
    assert (info["train"], info["test"], info["source"]) == (400, 100, "synthetic")


def test_prep_refuses_to_overwrite_and_keeps_old_on_failure(tmp_path: Path) -> None:
    prepare_dataset("digits", None, tmp_path / "d")
    before = (tmp_path / "d" / "prep.json").read_text()
    with pytest.raises(SkdError, match="already holds a prepared dataset; pass --overwrite"):
        prepare_dataset("digits", None, tmp_path / "d")
    with pytest.raises(SkdError, match="raw data directory not found"):
        prepare_dataset("mnist", tmp_path / "nowhere", tmp_path / "d", overwrite=True)
    assert (tmp_path / "d" / "prep.json").read_text() == before
    assert (
        prepare_dataset("digits", None, tmp_path / "d", overwrite=True)["fingerprint"]
        == json.loads(before)["fingerprint"]
    )


def test_prep_unknown_source_and_missing_raw(tmp_path: Path) -> None:
    with pytest.raises(SkdError, match="--source must be one of"):
        prepare_dataset("svhn", None, tmp_path / "x")
    with pytest.raises(SkdError, match="--source cifar10 needs --raw"):
        prepare_dataset("cifar10", None, tmp_path / "x")
