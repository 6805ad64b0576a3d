"""Reading one SAR chip and turning its amplitude into a normalised network input.

Readers: ``tifffile`` for .tif/.tiff (uint8, uint16, int16, float32/64 and complex chips, as
FUSAR-Ship and OpenSARShip ship them), Pillow for .png/.jpg/.bmp. Normalisation (recipes/sar/README.md §3):

    1. a = |chip|                       complex (SLC-like) samples -> magnitude; RGB -> channel mean
    2. x = 20 log10(a + eps)  ("db")    amplitude to decibels; "linear" keeps a; "auto" = linear for
                                        uint8 chips (already display-scaled, e.g. Patch_Uint8), dB otherwise
    3. lo, hi = percentile(x, p_lo), percentile(x, p_hi) over the chip;  x = clip((x - lo)/(hi - lo), 0, 1)
    4. centre crop (optional) and resize to size x size (bilinear, antialiased)

The network then sees (x - mean) / std with the train split's mean and std (prep.json).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..engine.errors import SkdError

TIFF_SUFFIXES = (".tif", ".tiff")
IMAGE_SUFFIXES = TIFF_SUFFIXES + (".png", ".jpg", ".jpeg", ".bmp")
SCALES = ("auto", "db", "linear")


@dataclass(frozen=True)
class NormSpec:
    scale: str = "auto"
    p_lo: float = 1.0
    p_hi: float = 99.9
    crop: int = 0  # centre crop to crop x crop pixels first (0 = the whole chip, padded to a square)
    size: int = 64

    def validate(self) -> None:
        if self.scale not in SCALES:
            raise SkdError(f"--scale must be one of {', '.join(SCALES)}, got '{self.scale}'")
        if not 0 <= self.p_lo < self.p_hi <= 100:
            raise SkdError(f"--percentiles must satisfy 0 <= lo < hi <= 100, got {self.p_lo},{self.p_hi}")
        if self.size < 8:
            raise SkdError(f"--size must be >= 8, got {self.size}")
        if self.crop < 0:
            raise SkdError(f"--crop must be >= 0, got {self.crop}")

    def to_dict(self) -> dict:
        return {"scale": self.scale, "p_lo": self.p_lo, "p_hi": self.p_hi, "crop": self.crop, "size": self.size}


@dataclass
class Chip:
    """A chip as read: (H, W) amplitude, float64, plus what it was on disk."""

    amplitude: np.ndarray
    dtype: str
    was_rgb: bool
    was_complex: bool


def read_chip(path: str | Path) -> Chip:
    """Read one chip file; raise SkdError naming the file when it is unreadable or not an image."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise SkdError(f"not a chip image (expected one of {', '.join(IMAGE_SUFFIXES)})", path)
    try:
        if suffix in TIFF_SUFFIXES:
            import tifffile

            arr = np.asarray(tifffile.imread(str(path)))
        else:
            from PIL import Image

            with Image.open(path) as im:
                im.load()
                if im.mode == "P":
                    im = im.convert("RGB")
                arr = np.asarray(im)
    except SkdError:
        raise
    except Exception as exc:  # tifffile / Pillow raise many kinds for corrupt files
        raise SkdError(
            f"unreadable chip ({exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''})", path
        ) from exc
    if arr.size == 0:  # tifffile warns and returns nothing for a TIFF without a valid first page
        raise SkdError("unreadable chip (no image data)", path)
    return to_amplitude(arr, path)


def to_amplitude(arr: np.ndarray, path: str | Path = "") -> Chip:
    """(H, W), (H, W, C) or (C, H, W) array -> (H, W) float64 magnitude."""
    dtype = str(arr.dtype)
    was_complex = np.iscomplexobj(arr)
    was_rgb = False
    a = np.abs(arr) if was_complex else arr
    if a.ndim == 3:
        # channels last (Pillow, most TIFF writers) or first (planar TIFF); a chip is never 3-4 pixels wide
        if a.shape[-1] in (2, 3, 4):
            a = a[..., :3] if a.shape[-1] >= 3 else a[..., :1]
        elif a.shape[0] in (2, 3, 4):
            a = np.moveaxis(a[:3] if a.shape[0] >= 3 else a[:1], 0, -1)
        else:
            raise SkdError(f"chip has shape {arr.shape}; expected (H, W) or (H, W, 3)", path)
        was_rgb = a.shape[-1] == 3
        a = a.astype(np.float64).mean(axis=-1)
    if a.ndim != 2:
        raise SkdError(f"chip has shape {arr.shape}; expected (H, W) or (H, W, 3)", path)
    if min(a.shape) < 2:
        raise SkdError(f"chip is {a.shape[0]}x{a.shape[1]} pixels", path)
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        bad = int((~np.isfinite(a)).sum())
        raise SkdError(f"chip has {bad} non-finite pixel(s)", path)
    return Chip(a, dtype, was_rgb, was_complex)


def normalise(chip: Chip, spec: NormSpec) -> np.ndarray:
    """Steps 2-4 of the module doc: (size, size) float32 in [0, 1]."""
    import torch
    import torch.nn.functional as F

    a = chip.amplitude
    scale = spec.scale
    if scale == "auto":
        scale = "linear" if chip.dtype == "uint8" else "db"
    x = 20.0 * np.log10(a + 1e-6) if scale == "db" else a
    lo, hi = np.percentile(x, [spec.p_lo, spec.p_hi])
    x = np.clip((x - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.zeros_like(x)
    x = _square(x, spec.crop)
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None, None]
    if t.shape[-1] != spec.size:
        t = F.interpolate(
            t, size=(spec.size, spec.size), mode="bilinear", align_corners=False, antialias=t.shape[-1] > spec.size
        )
    return t[0, 0].clamp_(0.0, 1.0).numpy()


def _square(x: np.ndarray, crop: int) -> np.ndarray:
    """Centre crop to crop x crop (when the chip is larger), then zero-pad to a square: ships sit at
    the chip centre in both FUSAR-Ship and OpenSARShip, and chips of OpenSARShip vary in size."""
    h, w = x.shape
    if crop:
        top, left = max((h - crop) // 2, 0), max((w - crop) // 2, 0)
        x = x[top : top + crop, left : left + crop]
        h, w = x.shape
    side = max(h, w)
    if h == w:
        return x
    out = np.zeros((side, side), dtype=x.dtype)
    top, left = (side - h) // 2, (side - w) // 2
    out[top : top + h, left : left + w] = x
    return out
