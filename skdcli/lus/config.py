"""Typed configs of the lus recipe (MeDiVLAD: DINO self-distillation + dual-level VLAD, Guo et al., ISBI 2025).

Two roots, because the two stages train different things with different optimiser settings:

    PretrainConfig   `skd lus pretrain`: DINO self-distillation of a ViT on unlabelled LUS frames
    LusConfig        `skd lus train --level frame|video`: KNN / linear probe / fine-tuning on frames,
                     dual-level VLAD (or NetVLAD / mean pooling) on cached frame features of videos

Defaults are the tiny embedded setup (`skd lus run`, 2 CPU cores); recipes/lus/*.yaml hold the
paper's settings. Every official-code quirk is fixed by default and kept as a switch; which value
is the paper's, the official code's or ours: recipes/lus/README.md (provenance table).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..engine.config import TrainConfig, choice
from ..engine.errors import SkdError

# The official `combine_class`: LUS scores 0 / 1 / 2 / 3 -> classes 0 / 1 / 1 / 2.
SCORE_TO_CLASS = (0, 1, 1, 2)
CLASS_NAMES = ["score 0", "score 1-2", "score 3"]
NUM_CLASSES = len(CLASS_NAMES)


@dataclass
class ViTConfig:
    """The backbone (timm / DINO naming). Official: ViT-S/8 = img 224, patch 8, dim 384, depth 12, 6 heads.
    Grey input: one channel (a 3-channel checkpoint is folded exactly, see model.load_backbone_weights)."""

    img_size: int = 32
    patch_size: int = 4  # tiny: 64 tokens per 32-px frame (official ViT-S/8 at 224: 784; the official vit_tinyer: /4)
    embed_dim: int = 48
    depth: int = 3
    num_heads: int = 3
    mlp_ratio: float = 2.0
    qkv_bias: bool = True
    drop_path_rate: float = 0.0  # stochastic depth of the student (DINO's default for ViT-S: 0.1)
    # weight init of a ViT trained from scratch: dino = trunc-normal std 0.02 for every linear layer (DINO / timm);
    # xavier = Xavier-uniform linear layers and patch embedding (the original ViT / MAE). See model.VisionTransformer.
    init: str = choice("xavier", ["dino", "xavier"])
    # patch = one stride-p convolution (ViT, what checkpoints hold); conv = a stack of stride-2 3x3 conv + BN + ReLU
    # layers and a 1x1 projection (Xiao et al. 2021, "Early convolutions help transformers see better")
    stem: str = choice("patch", ["patch", "conv"])
    stem_channels: int = 16  # conv stem: channels of the first conv layer, doubled at each stride-2 layer
    # conv stem: batch (Xiao et al.) | group (GroupNorm, 8 groups: no running statistics)
    stem_norm: str = choice("batch", ["batch", "group"])


@dataclass
class AugConfig:
    """DINO multi-crop augmentation, batched on the device (augment.py)."""

    global_crops_scale: list[float] = field(default_factory=lambda: [0.6, 1.0])  # official (DINO default: 0.4-1)
    local_crops_scale: list[float] = field(default_factory=lambda: [0.1, 0.6])
    local_crops_number: int = 4  # official: 10
    global_size: int = 0  # 0 = model.img_size (official 224)
    local_size: int = 16  # official 96
    hflip: float = 0.5
    jitter_prob: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    # ColorJitter's saturation 0.2 / hue 0.1 are identities on grey frames repeated to 3 channels: not applied.
    blur_kernel: int = 9
    blur_sigma: list[float] = field(default_factory=lambda: [0.1, 2.0])
    blur_prob_global: float = 0.1
    blur_prob_local: float = 0.5
    # official-code quirk: its blur wrapper applies the blur with probability 1 - p (globals blurred 90 %)
    blur_inverted_prob: bool = False
    solarize_prob: float = 0.2  # second global crop only
    solarize_threshold: float = 0.5
    mean: float = 0.326  # official Normalize (same on the 3 repeated channels)
    std: float = 0.228


@dataclass
class DinoConfig:
    """DINO loss, teacher and schedules. Epoch-based official schedules are counted in `epoch_steps`
    optimizer steps per epoch (official: 100 iterations)."""

    out_dim: int = 256  # prototypes K (official 65536)
    hidden_dim: int = 96  # head MLP (official 2048)
    bottleneck_dim: int = 32  # official 256
    head_layers: int = 3
    norm_last_layer: bool = True  # weight-norm g fixed at 1
    head_bn: bool = False  # BatchNorm in the head MLP (DINO's use_bn_in_head; off for ViTs, as official)
    student_temp: float = 0.1
    teacher_temp: float = 0.04  # official 0.06 (DINO's ViT-S default 0.04: the tiny default)
    warmup_teacher_temp: float = 0.04
    warmup_teacher_temp_epochs: int = 2  # official 5
    center_momentum: float = 0.9
    # all: the centre is the mean over all 2B teacher outputs (DINO); per_position: official-code quirk
    # (teacher outputs shaped (crops, B, 1, K), averaged over the crop axis only -> one centre per batch slot)
    center_mode: str = choice("all", ["all", "per_position"])
    # EMA momentum, cosine to 1 over training. Official 0.998 over 10k steps; the tiny run has 300: at 0.998 its
    # teacher would stay within a few % of the random init, so 0.98 (recipes/lus/README.md, section 4)
    momentum_teacher: float = 0.98
    weight_decay_end: float = 0.5  # cosine from train.weight_decay (0.1) to this
    freeze_last_layer_epochs: int = 1  # the head's last layer gets no update in the first epoch(s)
    epoch_steps: int = 10  # optimizer steps per DINO "epoch" (official 100 iterations)
    clip_grad: float = 3.0  # per-parameter gradient-norm clip (0 = off); train.grad_clip stays 0
    knn_k: int = 10  # monitoring KNN (labelled frames, fold 1 <-> fold 2) during pretraining


@dataclass
class PretrainDataConfig:
    frames_per_draw: int = 1  # official RandomSelect: one random frame of a uniformly drawn video


def _pretrain_train() -> TrainConfig:
    # official: AdamW, lr 5e-4 * B / 256 (B = 32 -> 6.25e-5) cosine to 1e-6 after a 10-epoch warm-up,
    # wd 0.1 -> 0.5, 100 epochs x 100 iterations. Tiny: 300 steps of 16 frames at a higher lr.
    return TrainConfig(
        max_steps=300,
        batch_size=16,
        lr=1e-3,
        weight_decay=0.1,
        betas=[0.9, 0.999],
        warmup_steps=30,
        min_lr_ratio=0.01,
        grad_clip=0.0,
        eval_every=100,
        checkpoint_every=100,
        log_every=10,
        group_by_length=False,
        best_metric="knn_acc",
        best_mode="max",
    )


@dataclass
class PretrainConfig:
    data: PretrainDataConfig = field(default_factory=PretrainDataConfig)
    model: ViTConfig = field(default_factory=ViTConfig)
    dino: DinoConfig = field(default_factory=DinoConfig)
    aug: AugConfig = field(default_factory=AugConfig)
    # a local ViT checkpoint (timm / DINO .pth or .safetensors, or a Hugging Face ViT directory);
    # "" = from scratch. In real use: ImageNet DINO ViT-S/8 (dino_deitsmall8_pretrain_full_checkpoint).
    init: str = ""
    train: TrainConfig = field(default_factory=_pretrain_train)

    def validate(self) -> None:
        _check_vit(self.model)
        a, d = self.aug, self.dino
        for name, (lo, hi) in (
            ("aug.global_crops_scale", a.global_crops_scale),
            ("aug.local_crops_scale", a.local_crops_scale),
        ):
            if not 0 < lo <= hi <= 1:
                raise SkdError(f"{name} must be [lo, hi] with 0 < lo <= hi <= 1, got {[lo, hi]}")
        if a.local_crops_number < 0:
            raise SkdError("aug.local_crops_number must be >= 0")
        if a.local_crops_number and a.local_size % self.model.patch_size:
            raise SkdError(
                f"aug.local_size={a.local_size} must be a multiple of model.patch_size={self.model.patch_size}"
            )
        if a.global_size and a.global_size % self.model.patch_size:
            raise SkdError(f"aug.global_size={a.global_size} must be a multiple of model.patch_size")
        if a.blur_kernel % 2 == 0 or a.blur_kernel < 1:
            raise SkdError("aug.blur_kernel must be odd and >= 1")
        for name in ("hflip", "jitter_prob", "blur_prob_global", "blur_prob_local", "solarize_prob"):
            if not 0 <= getattr(a, name) <= 1:
                raise SkdError(f"aug.{name} must be in [0, 1]")
        if d.student_temp <= 0 or d.teacher_temp <= 0 or d.warmup_teacher_temp <= 0:
            raise SkdError("dino temperatures must be > 0")
        if not 0 <= d.momentum_teacher <= 1 or not 0 <= d.center_momentum <= 1:
            raise SkdError("dino.momentum_teacher and dino.center_momentum must be in [0, 1]")
        if d.epoch_steps < 1:
            raise SkdError("dino.epoch_steps must be >= 1")
        if d.head_layers < 1 or d.out_dim < 2:
            raise SkdError("dino.head_layers must be >= 1 and dino.out_dim >= 2")
        if self.train.grad_clip:
            raise SkdError(
                "pretraining clips each parameter's gradient (dino.clip_grad, as the official code); "
                "leave train.grad_clip at 0"
            )


@dataclass
class BackboneConfig:
    # "" = a randomly initialised ViT (model.*, seeded by train.seed): the no-pretraining baseline;
    # a `skd lus pretrain` run directory (its EMA teacher, as the official code uses);
    # or a local ViT checkpoint (timm / DINO / Hugging Face) = e.g. ImageNet DINO without LUS pretraining.
    path: str = ""
    num_heads: int = 0  # for checkpoints that do not say it (timm / DINO .pth): 0 = embed_dim // 64


@dataclass
class FeatureConfig:
    views: int = 2  # cached views per frame: view 0 clean, the others augmented (hflip, jitter, crop)
    crop_scale: list[float] = field(default_factory=lambda: [0.4, 1.0])  # official video: centre crop ratio in [0.4, 1]
    cache_dir: str = ""  # "" = DATA/feature_cache
    batch_size: int = 256
    # standardise features with the training fold's mean / std before the trained heads (linear probe, video
    # aggregator), as MAE's linear probing does (ours; the official heads take raw features). KNN stays raw.
    standardize: bool = True


@dataclass
class KnnConfig:
    k_max: int = 19  # official sweep k = 1..19
    temperature: float = 0.07
    # train_fold: k picked by leave-one-patient-out KNN inside the training fold (ours);
    # reported_fold: the official max over k on the fold it reports (optimistic quirk)
    select_k: str = choice("train_fold", ["train_fold", "reported_fold"])


@dataclass
class FrameConfig:
    # linear: probe on cached frozen features; finetune: backbone + linear end to end
    mode: str = choice("linear", ["linear", "finetune"])
    crop_scale: list[float] = field(default_factory=lambda: [0.2, 1.0])  # finetune: RandomResizedCrop scale
    hflip: float = 0.5


@dataclass
class VideoConfig:
    aggregator: str = choice("dual_vlad", ["dual_vlad", "netvlad", "mean"])  # dual_vlad (MeDiVLAD) | netvlad | mean
    seq_len: int = 8  # frames per video (official 15); shorter clips are sampled with repeats
    num_clusters: int = 3  # K (official = number of classes)
    alpha: float = 1.0
    # squared: NetVLAD's bias -alpha * ||c_k||^2; plain: the official-code quirk -alpha * ||c_k||
    bias_norm: str = choice("squared", ["squared", "plain"])
    attention_temperature: float = 1.2  # beta_t = softmax_t(score_t / 1.2)
    # class means of L2-normalised training frames | random (torch.rand)
    centroid_init: str = choice("class_means", ["class_means", "random"])
    time_flip: float = 0.5
    dropout: float = 0.0


def _head_train() -> TrainConfig:
    return TrainConfig(
        max_steps=150,
        batch_size=8,
        lr=2e-3,
        weight_decay=1e-5,
        betas=[0.9, 0.999],
        warmup_steps=10,
        min_lr_ratio=0.025,
        grad_clip=0.0,
        eval_every=0,
        checkpoint_every=50,
        log_every=10,
        group_by_length=False,
        best_metric="accuracy",
        best_mode="max",
    )


@dataclass
class LusConfig:
    level: str = choice("video", ["frame", "video"])  # frame | video
    fold: int = 1  # train on fold-file 1 and report on fold-file 2 (fold 2: the reverse)
    # last: the final weights are evaluated (ours); reported_fold: the official best-on-the-reported-fold
    # checkpoint (evaluated every train.eval_every steps; optimistic)
    selection: str = choice("last", ["last", "reported_fold"])
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    model: ViTConfig = field(default_factory=ViTConfig)  # the random-init backbone (backbone.path = "")
    features: FeatureConfig = field(default_factory=FeatureConfig)
    knn: KnnConfig = field(default_factory=KnnConfig)
    frame: FrameConfig = field(default_factory=FrameConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    aug: AugConfig = field(default_factory=AugConfig)  # normalisation (+ fine-tuning jitter)
    train: TrainConfig = field(default_factory=_head_train)

    def validate(self) -> None:
        if self.fold not in (1, 2):
            raise SkdError(f"fold must be 1 or 2, got {self.fold}")
        _check_vit(self.model)
        if self.level == "video" and self.frame.mode == "finetune":
            raise SkdError(
                "video training keeps the backbone frozen on cached features (the official backbone "
                "warm-up never ends); --finetune-backbone is for --level frame"
            )
        if self.video.seq_len < 1 or self.video.num_clusters < 1:
            raise SkdError("video.seq_len and video.num_clusters must be >= 1")
        if self.video.attention_temperature <= 0 or self.knn.temperature <= 0:
            raise SkdError("video.attention_temperature and knn.temperature must be > 0")
        if self.knn.k_max < 1:
            raise SkdError("knn.k_max must be >= 1")
        if self.features.views < 1:
            raise SkdError("features.views must be >= 1")
        if self.selection == "reported_fold" and not self.train.eval_every:
            raise SkdError("selection=reported_fold picks the best evaluation: set train.eval_every > 0")


def _check_vit(m: ViTConfig) -> None:
    if m.stem == "conv" and (m.patch_size & (m.patch_size - 1) or m.patch_size < 2):
        raise SkdError(f"model.stem=conv needs a power-of-two model.patch_size >= 2, got {m.patch_size}")
    if m.img_size % m.patch_size:
        raise SkdError(f"model.img_size={m.img_size} must be a multiple of model.patch_size={m.patch_size}")
    if m.embed_dim % m.num_heads:
        raise SkdError(f"model.embed_dim={m.embed_dim} must be divisible by model.num_heads={m.num_heads}")
    if m.depth < 1:
        raise SkdError("model.depth must be >= 1")
