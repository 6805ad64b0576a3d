"""Differentiable Siamese Augmentation (DSA; Zhao & Bilen, ICML 2021), as used by dataset distillation.

Every op is differentiable in the images, so a loss on augmented *synthetic* images reaches the
generator (or the learned pixels) behind them, and "Siamese" means the real and the synthetic
batch can be augmented with the SAME sampled parameters: sample once with ``sample``, then
``apply`` the one ``DSAParams`` to both.

Ops and their parameter ranges follow the DSA reference code as vendored by DiM
(vimar-gu/DiM @ 36573394, ``augment.py``), for images of any channel count:

    color      brightness  x + (r - 0.5) * 1.0                       r ~ U[0, 1)
               saturation  (x - mean_c x) * 2r + mean_c x            (identity on one channel)
               contrast    (x - mean_chw x) * (r + 0.5) + mean_chw x
    crop       integer translation by up to round(0.125 H) pixels, zero fill (pad-and-shift)
    cutout     a zeroed square of side round(0.5 H), centre anywhere in the image
    flip       horizontal, p = 0.5
    scale      affine scaling, sx, sy ~ U[1/1.2, 1.2]
    rotate     affine rotation, up to +-15 degrees

The strategy string lists ops joined by "_" (``color_crop_cutout``). As in the reference code,
flip, color and cutout always run when listed; of the other ops (crop, scale, rotate) ONE is
drawn per call. ``same_on_batch=True`` draws one parameter set for the whole batch (DiM's
``batch=True`` mode, used for matching); otherwise each image gets its own.

Randomness comes from torch's RNG (or a given ``torch.Generator``), so a trainer that reseeds
torch per step replays the same augmentations on resume. kornia was considered: its colour ops
are HSV-based (RGB only) and its crop/erasing parameterisations differ, so it would not be DSA.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

ALWAYS_OPS = ("flip", "color", "cutout")
CHOICE_OPS = ("crop", "scale", "rotate")
OPS = ALWAYS_OPS + CHOICE_OPS


@dataclass
class DSAParams:
    """One draw of augmentation parameters for a batch of ``batch`` images (tensors of length batch,
    equal entries when drawn with ``same_on_batch``). ``choice`` is the drawn op among crop/scale/rotate."""

    batch: int
    choice: str | None = None
    values: dict[str, Tensor] = field(default_factory=dict)


class DSA:
    def __init__(
        self,
        strategy: str = "color_crop_cutout",
        *,
        crop_ratio: float = 0.125,
        cutout_ratio: float = 0.5,
        scale_ratio: float = 1.2,
        rotate_degrees: float = 15.0,
        flip_prob: float = 0.5,
        brightness: float = 1.0,
        saturation: float = 2.0,
        contrast: float = 0.5,
    ):
        names = [s for s in strategy.lower().split("_") if s] if strategy.lower() not in ("", "none") else []
        unknown = [s for s in names if s not in OPS]
        if unknown:
            raise ValueError(f"unknown DSA op(s) {unknown} in strategy {strategy!r}; valid: {', '.join(OPS)}")
        self.strategy = strategy
        self.always = [op for op in ALWAYS_OPS if op in names]
        self.choices = [op for op in names if op in CHOICE_OPS]
        self.crop_ratio, self.cutout_ratio, self.scale_ratio = crop_ratio, cutout_ratio, scale_ratio
        self.rotate_degrees, self.flip_prob = rotate_degrees, flip_prob
        self.brightness, self.saturation, self.contrast = brightness, saturation, contrast

    @property
    def enabled(self) -> bool:
        return bool(self.always or self.choices)

    # -- sampling -----------------------------------------------------------------------------------
    def sample(
        self,
        batch: int,
        height: int,
        width: int,
        *,
        same_on_batch: bool = False,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
    ) -> DSAParams:
        """Draw the parameters for ``batch`` images of size height x width."""
        n = 1 if same_on_batch else batch

        def rand(*shape: int) -> Tensor:
            return torch.rand(n, *shape, generator=generator).expand(batch, *shape).to(device)

        def randint(low: int, high: int) -> Tensor:  # [low, high)
            return torch.randint(low, high, (n,), generator=generator).expand(batch).to(device)

        params = DSAParams(batch)
        v = params.values
        # draw in a fixed order so a given RNG state always gives the same parameters
        if "flip" in self.always:
            v["flip"] = rand() < self.flip_prob
        if "color" in self.always:
            v["brightness"], v["saturation"], v["contrast"] = rand(), rand(), rand()
        if self.choices:
            params.choice = self.choices[int(torch.randint(len(self.choices), (1,), generator=generator))]
            if params.choice == "crop":
                sh, sw = int(height * self.crop_ratio + 0.5), int(width * self.crop_ratio + 0.5)
                v["shift_h"], v["shift_w"] = randint(-sh, sh + 1), randint(-sw, sw + 1)
            elif params.choice == "scale":
                r = self.scale_ratio
                v["scale_h"], v["scale_w"] = rand() * (r - 1 / r) + 1 / r, rand() * (r - 1 / r) + 1 / r
            else:
                v["angle"] = (rand() - 0.5) * 2 * self.rotate_degrees / 180 * math.pi
        if "cutout" in self.always:
            ch, cw = int(height * self.cutout_ratio + 0.5), int(width * self.cutout_ratio + 0.5)
            v["cut_h"] = randint(0, height + (1 - ch % 2))
            v["cut_w"] = randint(0, width + (1 - cw % 2))
        return params

    # -- applying -------------------------------------------------------------------------------------
    def apply(self, x: Tensor, params: DSAParams) -> Tensor:
        """Augment (B, C, H, W) images with drawn parameters (differentiable in ``x``)."""
        if x.shape[0] != params.batch:
            raise ValueError(f"parameters were drawn for {params.batch} images, got a batch of {x.shape[0]}")
        v = params.values
        if "flip" in v:
            x = torch.where(v["flip"].view(-1, 1, 1, 1), x.flip(3), x)
        if "brightness" in v:
            x = x + (v["brightness"].view(-1, 1, 1, 1).to(x.dtype) - 0.5) * self.brightness
            mean = x.mean(dim=1, keepdim=True)
            x = (x - mean) * (v["saturation"].view(-1, 1, 1, 1).to(x.dtype) * self.saturation) + mean
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = (x - mean) * (v["contrast"].view(-1, 1, 1, 1).to(x.dtype) + self.contrast) + mean
        if params.choice == "crop":
            x = translate(x, v["shift_h"], v["shift_w"])
        elif params.choice == "scale":
            zero = torch.zeros_like(v["scale_h"])
            theta = torch.stack(
                [torch.stack([v["scale_w"], zero, zero], -1), torch.stack([zero, v["scale_h"], zero], -1)], 1
            )
            x = _affine(x, theta)
        elif params.choice == "rotate":
            a = v["angle"]
            zero = torch.zeros_like(a)
            theta = torch.stack(
                [torch.stack([a.cos(), -a.sin(), zero], -1), torch.stack([a.sin(), a.cos(), zero], -1)], 1
            )
            x = _affine(x, theta)
        if "cut_h" in v:
            ch, cw = int(x.shape[2] * self.cutout_ratio + 0.5), int(x.shape[3] * self.cutout_ratio + 0.5)
            x = x * cutout_mask(x.shape[2], x.shape[3], v["cut_h"], v["cut_w"], ch, cw).to(x.dtype).unsqueeze(1)
        return x

    def __call__(self, x: Tensor, *, same_on_batch: bool = False, generator: torch.Generator | None = None) -> Tensor:
        if not self.enabled:
            return x
        params = self.sample(
            x.shape[0], x.shape[2], x.shape[3], same_on_batch=same_on_batch, device=x.device, generator=generator
        )
        return self.apply(x, params)


def translate(x: Tensor, shift_h: Tensor, shift_w: Tensor) -> Tensor:
    """out[b, :, i, j] = x[b, :, i + shift_h[b], j + shift_w[b]], zero where that falls outside.
    Index-clamping into a one-pixel zero border, as the reference code does."""
    b, _, h, w = x.shape
    padded = F.pad(x, (1, 1, 1, 1))
    rows = (torch.arange(h, device=x.device).view(1, h) + shift_h.view(b, 1) + 1).clamp(0, h + 1)
    cols = (torch.arange(w, device=x.device).view(1, w) + shift_w.view(b, 1) + 1).clamp(0, w + 1)
    batch = torch.arange(b, device=x.device).view(b, 1, 1)
    return padded.permute(0, 2, 3, 1)[batch, rows.view(b, h, 1), cols.view(b, 1, w)].permute(0, 3, 1, 2)


def cutout_mask(h: int, w: int, centre_h: Tensor, centre_w: Tensor, size_h: int, size_w: int) -> Tensor:
    """(B, H, W) mask: 0 inside the square of side size starting at centre - size // 2, 1 elsewhere."""
    top = (centre_h - size_h // 2).view(-1, 1, 1)
    left = (centre_w - size_w // 2).view(-1, 1, 1)
    rows = torch.arange(h, device=centre_h.device).view(1, h, 1)
    cols = torch.arange(w, device=centre_w.device).view(1, 1, w)
    inside = (rows >= top) & (rows < top + size_h) & (cols >= left) & (cols < left + size_w)
    return (~inside).float()


def _affine(x: Tensor, theta: Tensor) -> Tensor:
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False)
