"""Batched image augmentation on the device: DINO multi-crop, fine-tuning crops and cached video views.

The official code uses torchvision / kornia transforms one image at a time. Here every op draws its
random parameters per sample and runs once per batch (one ``grid_sample`` for all crops of a
resolution, one grouped convolution for all blurs), because the multi-crop is the hot path of a
DINO step: kornia 0.9's augmentation modules took ~1.3 s per tiny 12-crop batch on 2 CPU cores
(recipes/lus/README.md, "Performance"). The ops follow torchvision's definitions:

- RandomResizedCrop: area fraction ~ U(scale), log aspect ~ U(log 3/4, log 4/3), 10 attempts, else
  the centre crop clamped to the ratio range; bicubic resampling (no antialias: a difference from
  torchvision when a crop shrinks by more than ~2x).
- ColorJitter on grey frames: brightness x*b and contrast c*x + (1-c)*mean(x), b, c ~ U(1 +- 0.4), in a
  random order, each clamped to [0, 1]; saturation and hue are identities on grey input.
- GaussianBlur: kernel k, sigma ~ U(sigma_range), reflect padding.
- Solarize: x >= threshold -> 1 - x.

All randomness comes from torch's generator (the engine reseeds it every step, so resume is exact)
or from an explicit ``gen``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .config import AugConfig


def _rand(n: int, gen: torch.Generator | None, device: torch.device) -> Tensor:
    return torch.rand(n, generator=gen, device="cpu").to(device) if gen is not None else torch.rand(n, device=device)


def sample_crop_boxes(
    n: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    gen: torch.Generator | None = None,
    attempts: int = 10,
) -> Tensor:
    """(n, 4) boxes (top, left, h, w) in pixels, torchvision RandomResizedCrop.get_params, vectorised."""
    area = height * width
    u = torch.rand(n, attempts, 4, generator=gen)
    target = area * (scale[0] + (scale[1] - scale[0]) * u[..., 0])
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[..., 1]
    aspect = torch.exp(log_r)
    w = torch.sqrt(target * aspect).round()
    h = torch.sqrt(target / aspect).round()
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((n,), -1))
    rows = torch.arange(n)
    pick = first.clamp(min=0)
    h_sel, w_sel = h[rows, pick], w[rows, pick]
    top = (u[rows, pick, 2] * (height - h_sel + 1)).floor().clamp(max=height - h_sel)
    left = (u[rows, pick, 3] * (width - w_sel + 1)).floor().clamp(max=width - w_sel)
    # fallback (no attempt fits): the centre crop, aspect clamped into the ratio range
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        fh, fw = height, round(height * ratio[1])
    else:
        fw, fh = width, height
    fallback = first < 0
    h_sel = torch.where(fallback, torch.tensor(float(fh)), h_sel)
    w_sel = torch.where(fallback, torch.tensor(float(fw)), w_sel)
    top = torch.where(fallback, torch.tensor(float((height - fh) // 2)), top)
    left = torch.where(fallback, torch.tensor(float((width - fw) // 2)), left)
    return torch.stack([top, left, h_sel, w_sel], 1)


def resized_crop(x: Tensor, boxes: Tensor, size: int, flip: Tensor | None = None, mode: str = "bicubic") -> Tensor:
    """Crop box i of image i and resize it to size x size (optionally mirrored), for the whole batch
    in one grid_sample. ``x``: (N, C, H, W) float; ``boxes``: (N, 4) top, left, h, w in pixels."""
    n, _, height, width = x.shape
    boxes = boxes.to(x.device, x.dtype)
    top, left, h, w = boxes.unbind(1)
    sx = w / width
    if flip is not None:
        sx = torch.where(flip.to(x.device), -sx, sx)
    theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = sx
    theta[:, 0, 2] = (2 * left + w) / width - 1
    theta[:, 1, 1] = h / height
    theta[:, 1, 2] = (2 * top + h) / height - 1
    grid = F.affine_grid(theta, [n, x.shape[1], size, size], align_corners=False)
    out = F.grid_sample(x, grid, mode=mode, padding_mode="border", align_corners=False)
    return out.clamp_(0, 1) if mode == "bicubic" else out


def color_jitter(
    x: Tensor,
    brightness: float,
    contrast: float,
    prob: float,
    gen: torch.Generator | None = None,
    factors: tuple[Tensor, Tensor, Tensor] | None = None,
) -> Tensor:
    """Brightness and contrast jitter in a random order per sample, applied with probability ``prob``.
    ``factors`` = (b, c, contrast_first) per sample overrides the draws (a clip's frames share them)."""
    n = x.shape[0]
    if factors is None:
        u = torch.rand(n, 4, generator=gen).to(x.device) if gen is not None else torch.rand(n, 4, device=x.device)
        apply = u[:, 0] < prob
        b = torch.where(apply, 1 - brightness + 2 * brightness * u[:, 1], torch.ones_like(u[:, 1]))
        c = torch.where(apply, 1 - contrast + 2 * contrast * u[:, 2], torch.ones_like(u[:, 2]))
        contrast_first = u[:, 3] < 0.5
    else:
        b, c, contrast_first = (f.to(x.device) for f in factors)
    view = (n,) + (1,) * (x.dim() - 1)
    b, c, contrast_first = b.view(view), c.view(view), contrast_first.view(view)

    def bright(t: Tensor) -> Tensor:
        return (t * b).clamp(0, 1)

    def contr(t: Tensor) -> Tensor:
        mean = t.mean(dim=tuple(range(1, t.dim())), keepdim=True)
        return (c * t + (1 - c) * mean).clamp(0, 1)

    return torch.where(contrast_first, bright(contr(x)), contr(bright(x)))


def gaussian_kernels(sigma: Tensor, kernel_size: int) -> Tensor:
    """(N, k) normalised 1-D Gaussian kernels, torchvision's _get_gaussian_kernel1d per sigma."""
    half = (kernel_size - 1) * 0.5
    pos = torch.linspace(-half, half, kernel_size, device=sigma.device, dtype=sigma.dtype)
    pdf = torch.exp(-0.5 * (pos[None] / sigma[:, None]) ** 2)
    return pdf / pdf.sum(1, keepdim=True)


def gaussian_blur(
    x: Tensor, prob: float, kernel_size: int, sigma_range: tuple[float, float], gen: torch.Generator | None = None
) -> Tensor:
    """Blur each sample with probability ``prob`` (sigma ~ U(sigma_range)); one grouped conv for all."""
    n, ch, height, width = x.shape
    u = torch.rand(n, 2, generator=gen).to(x.device) if gen is not None else torch.rand(n, 2, device=x.device)
    chosen = (u[:, 0] < prob).nonzero().flatten()
    if chosen.numel() == 0 or kernel_size <= 1:
        return x
    sigma = sigma_range[0] + (sigma_range[1] - sigma_range[0]) * u[chosen, 1]
    k = gaussian_kernels(sigma.to(x.dtype), kernel_size)  # (m, k)
    m = chosen.numel()
    pad = kernel_size // 2
    mode = "reflect" if pad < min(height, width) else "replicate"
    sel = x[chosen].reshape(1, m * ch, height, width)
    weight = k.repeat_interleave(ch, 0)
    sel = F.conv2d(F.pad(sel, (pad, pad, 0, 0), mode=mode), weight.view(m * ch, 1, 1, kernel_size), groups=m * ch)
    sel = F.conv2d(F.pad(sel, (0, 0, pad, pad), mode=mode), weight.view(m * ch, 1, kernel_size, 1), groups=m * ch)
    out = x.clone()
    out[chosen] = sel.view(m, ch, height, width)
    return out


def solarize(x: Tensor, prob: float, threshold: float, gen: torch.Generator | None = None) -> Tensor:
    chosen = _rand(x.shape[0], gen, x.device) < prob
    view = (x.shape[0],) + (1,) * (x.dim() - 1)
    return torch.where(chosen.view(view) & (x >= threshold), 1 - x, x)


def normalize(x: Tensor, aug: AugConfig) -> Tensor:
    return (x - aug.mean) / aug.std


def to_unit(frames: Tensor) -> Tensor:
    """uint8 (N, H, W) -> float (N, 1, H, W) in [0, 1]."""
    return frames.unsqueeze(1).float().div_(255.0)


def blur_probability(p: float, aug: AugConfig) -> float:
    """The official wrapper blurs with probability 1 - p (quirk, aug.blur_inverted_prob); fixed: p."""
    return 1.0 - p if aug.blur_inverted_prob else p


def multi_crop(frames: Tensor, aug: AugConfig, global_size: int) -> tuple[Tensor, Tensor | None]:
    """DINO crops of a batch of uint8 frames (B, H, W): (2B globals at global_size, nB locals at
    aug.local_size or None), normalised, ordered [g1 | g2] and [l1 | ... | ln] along the batch."""
    x = to_unit(frames)
    b, _, height, width = x.shape

    def pipeline(src: Tensor, size: int, scale, blur_p: float, solarize_p: float = 0.0) -> Tensor:
        n = src.shape[0]
        boxes = sample_crop_boxes(n, height, width, tuple(scale)).to(src.device)
        flip = torch.rand(n, device=src.device) < aug.hflip
        out = resized_crop(src, boxes, size, flip)
        out = color_jitter(out, aug.brightness, aug.contrast, aug.jitter_prob)
        out = gaussian_blur(out, blur_probability(blur_p, aug), aug.blur_kernel, tuple(aug.blur_sigma))
        if solarize_p > 0:
            out = solarize(out, solarize_p, aug.solarize_threshold)
        return normalize(out, aug)

    g1 = pipeline(x, global_size, aug.global_crops_scale, aug.blur_prob_global)
    g2 = pipeline(x, global_size, aug.global_crops_scale, aug.blur_prob_global, aug.solarize_prob)
    locals_ = None
    if aug.local_crops_number:
        locals_ = pipeline(
            x.repeat(aug.local_crops_number, 1, 1, 1), aug.local_size, aug.local_crops_scale, aug.blur_prob_local
        )
    return torch.cat([g1, g2]), locals_


def finetune_crops(frames: Tensor, aug: AugConfig, size: int, scale: tuple[float, float], hflip: float) -> Tensor:
    """Frame-level training augmentation (official: hflip, RandomResizedCrop(scale (0.2, 1))), normalised."""
    x = to_unit(frames)
    boxes = sample_crop_boxes(x.shape[0], x.shape[2], x.shape[3], scale).to(x.device)
    flip = torch.rand(x.shape[0], device=x.device) < hflip
    return normalize(resized_crop(x, boxes, size, flip), aug)


def clean_view(frames: Tensor, aug: AugConfig, size: int) -> Tensor:
    """Evaluation view: resize to the model size (if needed) and normalise."""
    x = to_unit(frames)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False).clamp_(0, 1)
    return normalize(x, aug)


def clip_view(
    frames: Tensor, aug: AugConfig, size: int, crop_scale: tuple[float, float], gen: torch.Generator
) -> Tensor:
    """One augmented view of a whole clip (T, H, W), the same draw for every frame (official video
    training: hflip 0.5, ColorJiggle(brightness 0.4, contrast 0.4) per video, a centre crop of
    ratio ~ U(crop_scale) with p = 0.5)."""
    x = to_unit(frames)
    t, _, height, width = x.shape
    u = torch.rand(6, generator=gen)
    ratio = crop_scale[0] + (crop_scale[1] - crop_scale[0]) * u[0] if u[1] < 0.5 else torch.tensor(1.0)
    ch, cw = (height * ratio).round().clamp(min=1), (width * ratio).round().clamp(min=1)
    box = torch.stack([((height - ch) / 2).floor(), ((width - cw) / 2).floor(), ch, cw]).expand(t, 4)
    flip = (u[2] < aug.hflip).expand(t)
    out = resized_crop(x, box, size, flip)
    b = (1 - aug.brightness + 2 * aug.brightness * u[3]).expand(t)
    c = (1 - aug.contrast + 2 * aug.contrast * u[4]).expand(t)
    out = color_jitter(out, aug.brightness, aug.contrast, 1.0, factors=(b, c, (u[5] < 0.5).expand(t)))
    return normalize(out, aug)
