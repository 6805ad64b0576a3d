"""Synthetic SAR-like ship chips, written in the real datasets' on-disk layouts.

No real SAR chip may be stored (FUSAR-Ship and OpenSARShip need registration), so the tiny default
and the tests use chips drawn here and read back through the real readers. The physics is a cartoon
(OURS), chosen so that the classes differ only in ship geometry and fine structure, both blurred by
speckle, and a small CNN cannot reach 100 %:

- reflectivity: sea clutter with a smooth log-normal wave texture; a rotated hull whose length, width
  and superstructure depend on the class (hatch bars of a bulk carrier, a container grid, a tanker's
  smooth deck with a bow spot, a fishing boat's short hull and mid-ship deckhouse, a general cargo
  ship's crane points), a ship-to-clutter ratio drawn per chip; a Gaussian point-spread blur;
- multiplicative speckle: intensity I = R * n, n ~ Gamma(L, 1/L) with looks L in {1, 2, 4};
  the chip stores the amplitude sqrt(I).

Writers: the FUSAR-Ship tree (Category/Subcategory/Ship_CxxSyyNzzzz.tiff + meta.csv with its
backslash ``path`` column), the OpenSARShip scene folders (Patch / Patch_Uint8 / Patch_Cal, VV and VH)
and a plain ImageFolder tree.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from ..engine.io import atomic_write_text


@dataclass(frozen=True)
class ShipClass:
    category: str
    subcategory: str
    length: tuple[float, float]  # hull length in pixels (uniform range)
    aspect: tuple[float, float]  # length / width
    structure: str


# FUSAR-Ship category/subcategory names (Hou et al. 2020); indices follow the C/S numbering order here.
SHIP_CLASSES = (
    ShipClass("Cargo", "BulkCarrier", (30, 52), (4.8, 6.2), "hatches"),
    ShipClass("Cargo", "ContainerShip", (34, 56), (5.5, 7.0), "containers"),
    ShipClass("Cargo", "GeneralCargo", (24, 42), (5.0, 6.5), "cranes"),
    ShipClass("Tanker", "Tanker", (32, 54), (4.6, 5.8), "smooth"),
    ShipClass("Fishing", "Fishing", (12, 24), (3.2, 4.6), "deckhouse"),
)


def _rotate(u: np.ndarray, v: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    c, s = math.cos(angle), math.sin(angle)
    return c * u + s * v, -s * u + c * v


def draw_chip(cls: ShipClass, rng: np.random.Generator, size: int = 96) -> np.ndarray:
    """One (size, size) float32 amplitude chip of a ship of class ``cls``."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    cy, cx = (size - 1) / 2 + rng.normal(0, 2, 2)
    angle = rng.uniform(0, math.pi)
    along, across = _rotate(xx - cx, yy - cy, angle)  # ship frame: along the keel, across the beam

    # sea clutter: smooth log-normal texture (waves) around a unit mean
    texture = gaussian_filter(rng.normal(0, 1, (size, size)), sigma=rng.uniform(2, 5))
    texture = np.exp(0.5 * texture / (texture.std() + 1e-9) * rng.uniform(0.2, 0.6))
    sea = texture / texture.mean()

    length = rng.uniform(*cls.length)
    width = length / rng.uniform(*cls.aspect)
    half_l, half_w = length / 2, width / 2
    # hull: a rectangle with a pointed bow (tapering over the last 20 % of its length)
    t = along / half_l  # -1 stern ... +1 bow
    taper = np.where(t > 0.6, np.clip((1 - t) / 0.4, 0, 1), 1.0)
    hull = (np.abs(t) <= 1) & (np.abs(across) <= half_w * taper)
    ship = hull * rng.uniform(0.4, 0.7)

    def spot(pos: float, off: float, r_along: float, r_across: float, gain: float) -> np.ndarray:
        return gain * np.exp(-(((along - pos * half_l) / r_along) ** 2 + ((across - off) / r_across) ** 2))

    s = cls.structure
    bridge_at = -0.8 if s != "deckhouse" else rng.uniform(-0.2, 0.2)
    if s == "hatches":  # 5-7 transverse hatch bars
        n = int(rng.integers(5, 8))
        for p in np.linspace(-0.55, 0.65, n):
            ship = ship + hull * spot(p, 0, length / (5 * n), half_w * 3, rng.uniform(1.5, 3.0))
    elif s == "containers":  # two rows of container stacks, some bays empty
        n = int(rng.integers(6, 10))
        for p in np.linspace(-0.5, 0.7, n):
            for off in (-half_w / 2, half_w / 2):
                if rng.random() < 0.8:
                    ship = ship + hull * spot(p, off, length / (3.5 * n), half_w / 3, rng.uniform(1.5, 3.0))
        bridge_at = rng.uniform(-0.8, -0.6)
    elif s == "cranes":  # 2-4 crane posts: strong point scatterers on the centre line
        for p in rng.uniform(-0.5, 0.6, int(rng.integers(2, 5))):
            ship = ship + spot(p, 0, 1.2, 1.2, rng.uniform(3.0, 6.0))
    elif s == "smooth":  # tanker: a faint pipeline along the deck and a bright bow
        ship = ship + hull * spot(0.1, 0, half_l * 0.7, 0.8, 0.8) + spot(0.85, 0, 1.5, 1.5, rng.uniform(3.0, 5.0))
    bridge_gain = rng.uniform(2.0, 4.0) if s != "deckhouse" else rng.uniform(3.0, 6.0)
    ship = ship + spot(bridge_at, 0, max(length / 14, 1.2), half_w * 0.8, bridge_gain)

    scr = 10 ** (rng.uniform(4, 12) / 10)  # ship-to-clutter ratio, 4-12 dB
    reflectivity = sea + scr * gaussian_filter(ship, sigma=rng.uniform(0.6, 1.2))
    looks = int(rng.choice([1, 2, 4]))
    intensity = reflectivity * rng.gamma(looks, 1.0 / looks, (size, size))
    return np.sqrt(intensity).astype(np.float32)


def _to_dtype(amplitude: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "float32":
        return amplitude.astype(np.float32)
    if dtype == "uint16":  # a fixed gain, like a detected product's digital numbers
        return np.clip(amplitude * 400.0, 0, 65535).astype(np.uint16)
    if dtype == "uint8":  # display-scaled 8-bit: log amplitude stretched per chip
        db = 20 * np.log10(amplitude + 1e-6)
        lo, hi = np.percentile(db, [1, 99.5])
        return (np.clip((db - lo) / (hi - lo), 0, 1) * 255).round().astype(np.uint8)
    raise ValueError(f"unknown dtype {dtype!r}")


def _write_tiff(path: Path, array: np.ndarray) -> None:
    import tifffile

    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(str(path), array)


def write_fusar_like(
    root: str | Path,
    per_class: int = 60,
    *,
    size: int = 96,
    seed: int = 0,
    classes: tuple[ShipClass, ...] = SHIP_CLASSES,
    dtypes: tuple[str, ...] = ("uint16",),
) -> Path:
    """FUSAR-Ship v1.0 layout: ``Category/Subcategory/Ship_CxxSyyNzzzz.tiff`` + ``meta.csv``.

    ``dtypes`` cycles over the chips (uint16, float32, uint8), so one tree exercises every reader path.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    categories = list(dict.fromkeys(c.category for c in classes))
    rows = []
    k = 0
    for cls in classes:
        c_idx = categories.index(cls.category) + 1
        s_idx = [c.subcategory for c in classes if c.category == cls.category].index(cls.subcategory) + 1
        for n in range(1, per_class + 1):
            chip_id = f"Ship_C{c_idx:02d}S{s_idx:02d}N{n:04d}"
            amp = draw_chip(cls, rng, size)
            _write_tiff(
                root / cls.category / cls.subcategory / f"{chip_id}.tiff", _to_dtype(amp, dtypes[k % len(dtypes)])
            )
            k += 1
            spacing = rng.uniform(1.1, 1.8)
            rows.append(
                [
                    chip_id,
                    str(int(rng.integers(100000000, 999999999))),
                    str(int(rng.uniform(*cls.length) * spacing)),
                    str(int(rng.uniform(*cls.length) * spacing / rng.uniform(*cls.aspect))),
                    "DH",
                    f"{rng.uniform(20, 50):.2f}",
                    f"{spacing:.6f}",
                    f"{spacing * rng.uniform(0.6, 1.0):.6f}",
                    f"{cls.category}\\{cls.subcategory}",
                ]
            )
    write_fusar_meta(root / "meta.csv", rows)
    return root


FUSAR_META_COLUMNS = [
    "id",
    "mmsi",
    "length",
    "width",
    "polarMode",
    "centerLookAngle",
    "heightspace",
    "widthspace",
    "path",
]


def write_fusar_meta(path: Path, rows: list[list[str]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(FUSAR_META_COLUMNS)
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


OPENSARSHIP_CLASSES = (SHIP_CLASSES[0], SHIP_CLASSES[1], SHIP_CLASSES[3])  # the common 3-class subset


def write_opensarship_like(
    root: str | Path,
    per_class: int = 12,
    *,
    size: int = 64,
    seed: int = 0,
    scenes: int = 2,
    classes: tuple[ShipClass, ...] = OPENSARSHIP_CLASSES,
) -> Path:
    """OpenSARShip-like scene folders: ``<scene>/Patch`` (uint16 amplitude), ``Patch_Uint8`` (8-bit
    display) and ``Patch_Cal`` (float32 calibrated intensity), each chip in VV and VH, named
    ``<Class>_<scene>_<n>_<pol>.tif`` (class = the name's prefix before the first ``_``)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for cls in classes:
        for n in range(per_class):
            scene = root / f"S1A_IW_GRDH_scene{n % scenes:02d}"
            vv = draw_chip(cls, rng, size)
            vh = np.sqrt(vv.astype(np.float64) ** 2 * rng.uniform(0.1, 0.3)).astype(np.float32)  # cross-pol is weaker
            for pol, amp in (("vv", vv), ("vh", vh)):
                name = f"{cls.subcategory}_{scene.name[-7:]}_{n:04d}_{pol}.tif"
                _write_tiff(scene / "Patch" / name, _to_dtype(amp, "uint16"))
                _write_tiff(scene / "Patch_Uint8" / name, _to_dtype(amp, "uint8"))
                _write_tiff(scene / "Patch_Cal" / name, (amp.astype(np.float32) ** 2) / 1e3)
    return root


def write_imagefolder_like(
    root: str | Path,
    per_class: int = 10,
    *,
    size: int = 48,
    seed: int = 0,
    classes: tuple[ShipClass, ...] = SHIP_CLASSES[:3],
) -> Path:
    """``<class>/<n>.png`` 8-bit grayscale chips (any ImageFolder tree)."""
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    for cls in classes:
        (root / cls.subcategory).mkdir(parents=True, exist_ok=True)
        for n in range(per_class):
            Image.fromarray(_to_dtype(draw_chip(cls, rng, size), "uint8")).save(root / cls.subcategory / f"{n:04d}.png")
    return root
