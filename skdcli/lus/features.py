"""Frozen backbones and their cached features.

The official video classifier runs the frozen ViT on every frame of every sampled clip at every step.
Here each backbone's [CLS] features are computed once per prepared dataset — every clip frame and
every labelled frame, in ``features.views`` views (view 0 clean; the others one augmented draw per
clip, official video augmentation) — and cached as safetensors under DATA/feature_cache/, keyed by
the backbone weights, the dataset fingerprint and the view settings. Frame probes, KNN and all video
aggregators then train on the cache; video training never re-runs the ViT.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..engine.config import config_from_dict, load_yaml
from ..engine.console import console
from ..engine.errors import SkdError
from ..engine.io import atomic_write
from ..engine.rundir import RunDir
from .augment import clean_view, clip_view
from .config import AugConfig, LusConfig, PretrainConfig, ViTConfig
from .data import PreparedLus
from .model import VisionTransformer, load_backbone_weights, read_checkpoint, vit_config_from_state


@dataclass
class Backbone:
    model: VisionTransformer
    kind: str  # random | pretrain | checkpoint
    path: str
    fingerprint: str


def state_fingerprint(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def is_pretrain_run(path: Path) -> bool:
    if not (path / "config.yaml").is_file():
        return False
    try:
        return "dino" in load_yaml(path / "config.yaml")
    except SkdError:
        return False


def teacher_from_pretrain_run(path: str | Path) -> tuple[VisionTransformer, PretrainConfig]:
    """The EMA teacher's backbone of a finished `skd lus pretrain` run (its last checkpoint)."""
    run = RunDir(path)
    if not run.is_finished():
        raise SkdError("the pretraining run is not finished (resume it with `skd lus pretrain --resume`)", run.path)
    cfg = config_from_dict(PretrainConfig, load_yaml(run.config))
    latest = run.latest_checkpoint()
    if latest is None:
        raise SkdError("the pretraining run has no checkpoint", run.path)
    state = RunDir.load_state(latest)
    teacher = state.get("teachers", {}).get("ema", {}).get("model")
    if not teacher:
        raise SkdError("checkpoint holds no EMA teacher", latest)
    vit = VisionTransformer(ViTConfig(**{**cfg.model.__dict__, "drop_path_rate": 0.0}))
    sd = {k[len("backbone.") :]: v for k, v in teacher.items() if k.startswith("backbone.")}
    load_backbone_weights(vit, sd, latest)
    return vit.eval(), cfg


def load_backbone(cfg: LusConfig, device: torch.device | str = "cpu") -> Backbone:
    """The frozen backbone named by backbone.path (module doc of config.BackboneConfig)."""
    path = cfg.backbone.path
    if not path:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.train.seed)
            vit = VisionTransformer(ViTConfig(**{**cfg.model.__dict__, "drop_path_rate": 0.0}))
        kind = "random"
    elif is_pretrain_run(Path(path)):
        vit, _ = teacher_from_pretrain_run(path)
        kind = "pretrain"
    else:
        sd, _, extra = read_checkpoint(path)
        vit = VisionTransformer(vit_config_from_state(sd, extra, cfg.backbone.num_heads))
        load_backbone_weights(vit, sd, path)
        kind = "checkpoint"
    vit = vit.to(device).eval().requires_grad_(False)
    return Backbone(vit, kind, path, state_fingerprint(vit))


@torch.no_grad()
def compute_features(
    vit: VisionTransformer,
    frames: np.ndarray,
    groups: list[tuple[int, int]],
    views: int,
    aug: AugConfig,
    crop_scale: tuple[float, float],
    device: torch.device,
    batch_size: int = 256,
    seed: int = 0,
) -> torch.Tensor:
    """[CLS] features (views, N, D) of uint8 frames (N, S, S). View 0 is clean; view v >= 1 applies one
    augmented draw per group (a clip's frames share it), from a generator seeded by (seed, v)."""
    size = vit.cfg.img_size
    out = torch.empty(views, len(frames), vit.embed_dim)
    for v in range(views):
        gen = torch.Generator().manual_seed(seed * 1000 + v)
        chunks: list[torch.Tensor] = []
        done = pending = 0
        for i, (start, n) in enumerate(groups):
            x = torch.from_numpy(np.array(frames[start : start + n])).to(device)
            chunks.append(clean_view(x, aug, size) if v == 0 else clip_view(x, aug, size, crop_scale, gen))
            pending += n
            if pending >= batch_size or i == len(groups) - 1:
                feats = vit(torch.cat(chunks)).float().cpu()
                out[v, done : done + len(feats)] = feats
                done += len(feats)
                chunks, pending = [], 0
    return out


@dataclass
class FeatureSet:
    clips: torch.Tensor  # (views, all clip frames, D)
    labelled: torch.Tensor  # (views, labelled frames, D)
    cache_file: Path | None
    from_cache: bool


def cached_features(backbone: Backbone, data: PreparedLus, cfg: LusConfig, device: torch.device) -> FeatureSet:
    """Features of every clip frame and labelled frame for this backbone, from the cache when present."""
    f = cfg.features
    key_text = "|".join(
        map(
            str,
            (
                backbone.fingerprint,
                data.fingerprint,
                f.views,
                list(f.crop_scale),
                backbone.model.cfg.img_size,
                cfg.aug.mean,
                cfg.aug.std,
                cfg.aug.hflip,
                cfg.aug.brightness,
                cfg.aug.contrast,
                "v1",
            ),
        )
    )
    key = hashlib.sha256(key_text.encode()).hexdigest()[:20]
    folder = Path(f.cache_dir) if f.cache_dir else data.path / "feature_cache"
    file = folder / f"{key}.safetensors"
    if file.is_file():
        try:
            t = load_file(str(file))
            return FeatureSet(t["clips"], t["labelled"], file, True)
        except Exception:  # a damaged cache entry is recomputed, never trusted
            console.print(f"[yellow]feature cache {file} unreadable: recomputing")
    clip_groups = [(c["offset"], c["n_frames"]) for c in data.clips]
    clips = compute_features(
        backbone.model, data.frames, clip_groups, f.views, cfg.aug, tuple(f.crop_scale), device, f.batch_size
    )
    labelled = compute_features(
        backbone.model,
        data.labelled_frames,
        [(i, 1) for i in range(len(data.labelled))],
        f.views,
        cfg.aug,
        tuple(f.crop_scale),
        device,
        f.batch_size,
        seed=1,
    )
    try:
        atomic_write(
            file,
            lambda p: save_file(
                {"clips": clips.contiguous(), "labelled": labelled.contiguous()}, str(p), metadata={"key": key_text}
            ),
        )
        saved: Path | None = file
    except OSError as exc:  # e.g. a read-only dataset: features stay in memory
        console.print(f"[yellow]cannot write the feature cache ({exc.__class__.__name__}); continuing without it")
        saved = None
    return FeatureSet(clips, labelled, saved, False)
