"""Models: the ViT backbone, the DINO head, the video aggregators (dual-level VLAD, NetVLAD, mean) and
the exportable scorers.

Names follow timm / facebookresearch/dino (``patch_embed.proj``, ``blocks.N.attn.qkv``, ``norm`` ...)
so DINO and timm checkpoints load directly; Hugging Face ViT checkpoints are renamed on load.
The backbone takes one grey channel: a 3-channel checkpoint is folded by summing its patch-embedding
weights over the input channels, which is exact for grey frames repeated to 3 channels (the official
pipeline) with the official per-channel-identical normalisation.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..engine.errors import SkdError
from ..engine.weights import read_state_dict
from .config import NUM_CLASSES, DinoConfig, VideoConfig, ViTConfig


def _trunc_normal(t: Tensor, std: float = 0.02) -> Tensor:
    return nn.init.trunc_normal_(t, std=std, a=-2 * std, b=2 * std)


class DropPath(nn.Module):
    """Stochastic depth per sample (DINO's drop_path)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


class PatchEmbed(nn.Module):
    """The ViT patch embedding: one p x p convolution with stride p (``patch_embed.proj``, as in checkpoints)."""

    def __init__(self, dim: int, patch: int):
        super().__init__()
        self.proj = nn.Conv2d(1, dim, kernel_size=patch, stride=patch)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


class ConvStem(nn.Module):
    """A convolutional stem in place of the patch embedding (Xiao et al. 2021, "Early convolutions help
    transformers see better"): log2(p) stride-2 3x3 convolutions with BatchNorm and ReLU (channels c, 2c,
    4c ...), then a 1x1 convolution to the embedding width; same token grid as patch size p."""

    def __init__(self, dim: int, patch: int, channels: int, norm: str = "batch"):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 1
        for i in range(int(math.log2(patch))):
            cout = channels * 2**i
            layers += [
                nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False),
                _stem_norm(norm, cout),
                nn.ReLU(inplace=True),
            ]
            cin = cout
        self.convs = nn.Sequential(*layers)
        self.proj = nn.Conv2d(cin, dim, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.convs(x))


def _stem_norm(kind: str, channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels) if kind == "batch" else nn.GroupNorm(min(8, channels), channels)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, qkv_bias: bool):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, return_attention: bool = False) -> tuple[Tensor, Tensor | None]:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if return_attention:
            attn = (q @ k.transpose(-2, -1)) * (d // self.heads) ** -0.5
            attn = attn.softmax(-1)
            out = attn @ v
        else:
            attn, out = None, F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d)), attn


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float, qkv_bias: bool, drop_path: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads, qkv_bias)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, return_attention: bool = False) -> tuple[Tensor, Tensor | None]:
        y, attn = self.attn(self.norm1(x), return_attention)
        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.norm2(x))), attn


class VisionTransformer(nn.Module):
    """ViT with a [CLS] token; output = the final-norm [CLS] embedding (the official feature)."""

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.cfg = cfg
        d, p = cfg.embed_dim, cfg.patch_size
        self.patch_embed = ConvStem(d, p, cfg.stem_channels, cfg.stem_norm) if cfg.stem == "conv" else PatchEmbed(d, p)
        n = (cfg.img_size // p) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, d))
        rates = torch.linspace(0, cfg.drop_path_rate, cfg.depth).tolist()
        self.blocks = nn.ModuleList(Block(d, cfg.num_heads, cfg.mlp_ratio, cfg.qkv_bias, r) for r in rates)
        self.norm = nn.LayerNorm(d, eps=1e-6)
        _trunc_normal(self.pos_embed)
        _trunc_normal(self.cls_token)
        # Why the init matters at tiny widths: with std 0.02 (DINO / timm, tuned for ViT-S/B) a residual branch
        # adds about 0.02^2 * dim per layer to the [CLS] stream. At dim 48 that is no larger than the
        # input-independent cls_token + pos_embed[0], so the final-norm [CLS] of a random ViT is almost the same
        # vector for every image (mean pairwise cosine 0.94 on the synthetic frames; 0.48 with Xavier), DINO's
        # centred teacher is uniform from step one and training collapses (recipes/lus/README.md, section 4).
        self.apply(_init_linear if cfg.init == "dino" else _init_xavier)
        if isinstance(self.patch_embed, PatchEmbed) and cfg.init == "xavier":  # MAE: the patch conv as a linear
            w = self.patch_embed.proj.weight
            nn.init.xavier_uniform_(w.view(w.shape[0], -1))

    @property
    def embed_dim(self) -> int:
        return self.cfg.embed_dim

    def interpolate_pos_encoding(self, h: int, w: int) -> Tensor:
        """DINO's bicubic resize of the patch position embeddings to an h x w patch grid."""
        n = self.pos_embed.shape[1] - 1
        side = int(math.sqrt(n))
        if h == side and w == side:
            return self.pos_embed
        cls_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        patch_pos = patch_pos.reshape(1, side, side, -1).permute(0, 3, 1, 2)
        patch_pos = F.interpolate(patch_pos, size=(h, w), mode="bicubic", align_corners=False)
        return torch.cat([cls_pos, patch_pos.permute(0, 2, 3, 1).reshape(1, h * w, -1)], 1)

    def tokens(self, x: Tensor) -> Tensor:
        if x.shape[1] != 1:
            raise ValueError(f"the backbone takes grey frames (B, 1, H, W), got {tuple(x.shape)}")
        x = self.patch_embed(x)
        h, w = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1)
        return x + self.interpolate_pos_encoding(h, w)

    def forward(self, x: Tensor) -> Tensor:
        x = self.tokens(x)
        for block in self.blocks:
            x, _ = block(x)
        return self.norm(x)[:, 0]

    def forward_with_attention(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """([CLS] feature, last block's [CLS]->patch self-attention (B, heads, h, w))."""
        h, w = x.shape[-2] // self.cfg.patch_size, x.shape[-1] // self.cfg.patch_size
        x = self.tokens(x)
        attn = None
        for i, block in enumerate(self.blocks):
            x, attn = block(x, return_attention=i == len(self.blocks) - 1)
        cls_attn = attn[:, :, 0, 1:].reshape(x.shape[0], -1, h, w)
        return self.norm(x)[:, 0], cls_attn


def _init_linear(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        _trunc_normal(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def _init_xavier(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


class WeightNormLinear(nn.Module):
    """Linear without bias, W = g * v / ||v|| per output row (torch's legacy weight_norm, named
    weight_g / weight_v as in DINO checkpoints). ``norm_last_layer``: g fixed at 1."""

    def __init__(self, in_dim: int, out_dim: int, fix_g: bool):
        super().__init__()
        self.weight_v = nn.Parameter(_trunc_normal(torch.empty(out_dim, in_dim)))
        self.weight_g = nn.Parameter(torch.ones(out_dim, 1), requires_grad=not fix_g)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight_v * (self.weight_g / self.weight_v.norm(dim=1, keepdim=True)))


class DinoHead(nn.Module):
    """MLP (GELU, no BN) -> L2-normalise -> weight-normed linear to out_dim prototypes (DINO)."""

    def __init__(self, in_dim: int, cfg: DinoConfig):
        super().__init__()
        layers: list[nn.Module] = []
        dim = in_dim
        for _ in range(cfg.head_layers - 1):
            layers += [nn.Linear(dim, cfg.hidden_dim)] + ([nn.BatchNorm1d(cfg.hidden_dim)] if cfg.head_bn else [])
            layers.append(nn.GELU())
            dim = cfg.hidden_dim
        layers.append(nn.Linear(dim, cfg.bottleneck_dim))
        self.mlp = nn.Sequential(*layers)
        self.apply(_init_linear)
        self.last_layer = WeightNormLinear(cfg.bottleneck_dim, cfg.out_dim, cfg.norm_last_layer)

    def forward(self, x: Tensor) -> Tensor:
        return self.last_layer(F.normalize(self.mlp(x), dim=-1, p=2))


class DinoModel(nn.Module):
    """Backbone + head over multi-resolution crops (DINO's MultiCropWrapper): each resolution's
    crops run through the backbone together, the head runs once on all [CLS] features."""

    def __init__(self, vit: ViTConfig, dino: DinoConfig):
        super().__init__()
        self.backbone = VisionTransformer(vit)
        self.head = DinoHead(vit.embed_dim, dino)

    def forward(self, *crops: Tensor) -> Tensor:
        feats = [self.backbone(c) for c in crops if c is not None]
        return self.head(torch.cat(feats))


# -- video aggregation (official Medino/models/layer_dual_vlad.py) ----------------------------------------------------
class VladPooling(nn.Module):
    """NetVLAD soft assignment + residual aggregation over T frame features, with the MeDiVLAD frame-level
    attention (``frame_attention``) or plain sums (NetVLAD).

        x_t <- x_t / ||x_t||
        a_tk = softmax_k(w_k . x_t + b_k)             init w_k = 2 alpha c_k, b_k = -alpha ||c_k||^2
        r_tk = a_tk (x_t - c_k),  R_t = [r_t1 .. r_tK]
        beta_t = softmax_t((w . tanh(V R_t + b_V) + b_w) / temperature)   (frame_attention; else beta_t = 1)
        nu_k = sum_t beta_t r_tk -> intra-L2 per k -> flatten -> L2
    """

    def __init__(self, dim: int, cfg: VideoConfig, frame_attention: bool):
        super().__init__()
        k = cfg.num_clusters
        self.k, self.alpha, self.temperature = k, cfg.alpha, cfg.attention_temperature
        self.bias_norm = cfg.bias_norm
        self.frame_attention = frame_attention
        self.centroids = nn.Parameter(torch.rand(k, dim))  # the official code's torch.rand init
        self.assign = nn.Linear(dim, k)  # the official 1x1 conv
        if frame_attention:
            self.att_hidden = nn.Linear(k * dim, k * dim)
            self.att_score = nn.Linear(k * dim, 1)
        self.init_assignment()

    @torch.no_grad()
    def init_assignment(self, centroids: Tensor | None = None) -> None:
        """Set the centroids (default: keep) and the assignment from them: w = 2 alpha c, b = -alpha ||c||^2
        (``bias_norm='plain'``: the official-code -alpha ||c||)."""
        if centroids is not None:
            self.centroids.copy_(centroids)
        c = self.centroids
        self.assign.weight.copy_(2 * self.alpha * c)
        norm = c.norm(dim=1)
        self.assign.bias.copy_(-self.alpha * (norm**2 if self.bias_norm == "squared" else norm))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x: (B, T, D) -> (vlad (B, K*D), beta (B, T))."""
        b, t, d = x.shape
        x = F.normalize(x, dim=-1)
        a = self.assign(x).softmax(-1)  # (B, T, K)
        residual = a.unsqueeze(-1) * (x.unsqueeze(2) - self.centroids)  # (B, T, K, D)
        flat = residual.reshape(b, t, self.k * d)
        if self.frame_attention:
            scores = self.att_score(torch.tanh(self.att_hidden(flat))).squeeze(-1)
            beta = (scores / self.temperature).softmax(-1)
        else:
            beta = x.new_ones(b, t)
        nu = (beta.unsqueeze(-1).unsqueeze(-1) * residual).sum(1)  # (B, K, D)
        nu = F.normalize(nu, dim=-1)
        return F.normalize(nu.reshape(b, self.k * d), dim=-1), beta


class MeanPooling(nn.Module):
    """Baseline: the mean of the L2-normalised frame features (beta_t = 1 / T)."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        b, t, _ = x.shape
        return F.normalize(x, dim=-1).mean(1), x.new_full((b, t), 1.0 / t)


class Standardize(nn.Module):
    """(x - mean) / std with fixed statistics of the training fold's features (MAE-style linear probing:
    a normalisation without affine parameters before the head). Identity until ``set`` is called."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @torch.no_grad()
    def set(self, feats: Tensor) -> None:
        self.mean.copy_(feats.mean(0))
        self.std.copy_(feats.std(0).clamp_min(1e-6))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


class VideoHead(nn.Module):
    """Frame features (B, T, D) -> (logits (B, 3), beta (B, T)): [standardise] + aggregator + dropout + linear."""

    def __init__(self, dim: int, cfg: VideoConfig):
        super().__init__()
        self.norm = Standardize(dim)
        self.aggregator_name = cfg.aggregator
        if cfg.aggregator == "mean":
            self.pool: nn.Module = MeanPooling()
            out = dim
        else:
            self.pool = VladPooling(dim, cfg, frame_attention=cfg.aggregator == "dual_vlad")
            out = cfg.num_clusters * dim
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(out, NUM_CLASSES)

    def forward(self, feats: Tensor) -> tuple[Tensor, Tensor]:
        v, beta = self.pool(self.norm(feats))
        return self.classifier(self.dropout(v)), beta


class FrameHead(nn.Module):
    """Linear probe on [CLS] features."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = Standardize(dim)
        self.classifier = nn.Linear(dim, NUM_CLASSES)

    def forward(self, feats: Tensor) -> Tensor:
        return self.classifier(self.norm(feats))


class FineTuneModel(nn.Module):
    """Backbone + linear head, trained end to end (frame.mode = finetune)."""

    def __init__(self, backbone: VisionTransformer):
        super().__init__()
        self.backbone = backbone
        self.head = FrameHead(backbone.embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))


# -- exportable scorers: normalised grey frames in, everything `score` needs out ---------------------------------------
class VideoScorer(nn.Module):
    """(T, 1, S, S) normalised frames of one video -> (probs (3,), beta (T,), attention (T, heads, h, w))."""

    def __init__(self, backbone: VisionTransformer, head: VideoHead):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, frames: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        feats, attn = self.backbone.forward_with_attention(frames)
        logits, beta = self.head(feats.unsqueeze(0))
        return logits.softmax(-1)[0], beta[0], attn


class FrameScorer(nn.Module):
    """(B, 1, S, S) normalised frames -> (probs (B, 3), attention (B, heads, h, w))."""

    def __init__(self, backbone: VisionTransformer, head: FrameHead):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, frames: Tensor) -> tuple[Tensor, Tensor]:
        feats, attn = self.backbone.forward_with_attention(frames)
        return self.head(feats).softmax(-1), attn


# -- checkpoints: timm / DINO / Hugging Face -> our names --------------------------------------------------------------
def _hf_to_timm(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Hugging Face ViTModel names -> timm names (q, k, v concatenated into qkv)."""
    sd = {k.removeprefix("vit."): v for k, v in sd.items()}
    out: dict[str, Tensor] = {
        "cls_token": sd["embeddings.cls_token"],
        "pos_embed": sd["embeddings.position_embeddings"],
        "patch_embed.proj.weight": sd["embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": sd["embeddings.patch_embeddings.projection.bias"],
        "norm.weight": sd["layernorm.weight"],
        "norm.bias": sd["layernorm.bias"],
    }
    i = 0
    while f"encoder.layer.{i}.attention.attention.query.weight" in sd:
        src, dst = f"encoder.layer.{i}.", f"blocks.{i}."
        att = src + "attention.attention."
        for kind in ("weight", "bias"):
            parts = [sd.get(f"{att}{n}.{kind}") for n in ("query", "key", "value")]
            if all(p is not None for p in parts):
                out[f"{dst}attn.qkv.{kind}"] = torch.cat(parts, 0)
            out[f"{dst}attn.proj.{kind}"] = sd[f"{src}attention.output.dense.{kind}"]
            out[f"{dst}norm1.{kind}"] = sd[f"{src}layernorm_before.{kind}"]
            out[f"{dst}norm2.{kind}"] = sd[f"{src}layernorm_after.{kind}"]
            out[f"{dst}mlp.fc1.{kind}"] = sd[f"{src}intermediate.dense.{kind}"]
            out[f"{dst}mlp.fc2.{kind}"] = sd[f"{src}output.dense.{kind}"]
        i += 1
    return out


def _strip(sd: dict[str, Tensor], prefixes: tuple[str, ...]) -> dict[str, Tensor]:
    for prefix in prefixes:
        if any(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
    return sd


def read_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Tensor] | None, dict]:
    """A local ViT checkpoint -> (backbone state in timm names, DINO head state or None, extra info).

    Accepts a file (.safetensors, or .pth/.pt read with weights_only=True) or a directory holding
    model.safetensors / pytorch_model.bin (+ config.json for Hugging Face). DINO full checkpoints
    ({'student': ..., 'teacher': ...}) give the teacher (the official init loads both alike)."""
    path = Path(path)
    config: dict = {}
    if path.is_dir():
        if (path / "config.json").is_file():
            config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        candidates = [path / n for n in ("model.safetensors", "pytorch_model.bin", "checkpoint.pth", "model.pth")]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise SkdError("no model.safetensors / pytorch_model.bin / checkpoint.pth in the directory", path)
        path = found
    sd = read_state_dict(
        path, unwrap=("teacher", "state_dict", "model"), what="checkpoint", missing="checkpoint not found"
    )
    sd = _strip(dict(sd), ("module.",))
    head = {k[len("head.") :]: v for k, v in sd.items() if k.startswith("head.")} or None
    sd = _strip({k: v for k, v in sd.items() if not k.startswith("head.")}, ("backbone.",))
    if any(k.startswith(("embeddings.", "vit.embeddings.")) for k in sd):
        try:
            sd = _hf_to_timm(sd)
        except KeyError as exc:
            raise SkdError(f"a Hugging Face ViT checkpoint missing {exc}", path) from exc
    if "pos_embed" not in sd or "patch_embed.proj.weight" not in sd:
        raise SkdError("not a ViT checkpoint (no pos_embed / patch_embed.proj.weight)", path)
    return sd, head, config


def vit_config_from_state(
    sd: dict[str, Tensor], config: dict, num_heads: int = 0, drop_path_rate: float = 0.0
) -> ViTConfig:
    """The architecture a checkpoint implies (heads from config.json, else ``num_heads``, else dim // 64)."""
    w = sd["patch_embed.proj.weight"]
    dim, patch = w.shape[0], w.shape[-1]
    n = sd["pos_embed"].shape[1] - 1
    side = int(round(math.sqrt(n)))
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    mlp_hidden = sd["blocks.0.mlp.fc1.weight"].shape[0]
    heads = int(config.get("num_attention_heads") or num_heads or max(dim // 64, 1))
    return ViTConfig(
        img_size=side * patch,
        patch_size=patch,
        embed_dim=dim,
        depth=depth,
        num_heads=heads,
        mlp_ratio=mlp_hidden / dim,
        qkv_bias="blocks.0.attn.qkv.bias" in sd,
        drop_path_rate=drop_path_rate,
    )


def load_backbone_weights(model: VisionTransformer, sd: dict[str, Tensor], where: str | Path) -> None:
    """Load timm-named weights; a 3-channel patch embedding is folded into our grey one (exact)."""
    sd = dict(sd)
    w = sd["patch_embed.proj.weight"]
    conv_stem = any(k.startswith("patch_embed.convs.") for k in sd)
    if isinstance(model.patch_embed, ConvStem) != conv_stem:
        raise SkdError(
            f"the checkpoint has a {'conv' if conv_stem else 'patch'} stem, the model a "
            f"{model.cfg.stem} stem (set model.stem={'conv' if conv_stem else 'patch'})",
            where,
        )
    if not conv_stem and w.shape[1] != 1:
        sd["patch_embed.proj.weight"] = w.sum(1, keepdim=True)
    pos = sd["pos_embed"]
    if pos.shape != model.pos_embed.shape:
        raise SkdError(
            f"position embeddings {tuple(pos.shape)} do not fit the model {tuple(model.pos_embed.shape)} "
            "(set model.img_size / patch_size to the checkpoint's)",
            where,
        )
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise SkdError(f"checkpoint does not fit the ViT: missing {missing[:4]}, unexpected {unexpected[:4]}", where)
