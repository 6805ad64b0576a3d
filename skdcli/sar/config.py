"""Typed config of the sar recipe: DRRNet-SKD (Xu et al., arXiv 2311.15231) and the self-KD baselines
it is compared with, for SAR ship classification.

Defaults = the tiny embedded setup that `skd sar run` trains on 2 CPU cores (synthetic SAR chips in
the FUSAR-Ship layout, a quarter-width ResNet-10). `recipes/sar/*.yaml` override them for FUSAR-Ship
and OpenSARShip. Only the paper's abstract could be read: the loss, both teachers and the AWA
formula are OUR reading, every candidate behind a switch (recipes/sar/README.md, provenance table).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..engine.config import TrainConfig, choice
from ..engine.errors import SkdError

METHODS = ("drrnet", "cs-kd", "ps-kd", "tf-kd", "byot", "dlb", "zipf-ls", "ce")
BACKBONES = ("resnet10t", "resnet18", "resnet50", "vgg16", "densenet121", "mobilenet_v2")


@dataclass
class ModelConfig:
    # resnet10t (ours, CPU-sized) | torchvision resnet18/resnet50/vgg16/densenet121/mobilenet_v2
    backbone: str = choice("resnet10t", BACKBONES)
    width: int = 16  # resnet10t only: channels of the first stage (then x2 per stage)
    dropout: float = 0.0  # before the classifier (resnet10t / resnet*; vgg/densenet/mobilenet keep torchvision's)
    # A local file of initial weights (safetensors, or a torch state dict read with weights_only=True);
    # nothing is downloaded. 3-channel first convolutions are summed to the 1-channel input, and a
    # classifier of another shape is left at its random initialisation (recipes/sar/README.md §4).
    pretrained: str = ""


@dataclass
class AugmentConfig:
    # Applied per sample inside compute_loss from torch's RNG (reseeded by the engine each step):
    # flips and a random translation by up to `shift` pixels (zero padding = the normalised sea floor).
    hflip: bool = True
    vflip: bool = True
    shift: int = 4


@dataclass
class AWAConfig:
    # Adaptive Weight Assignment (OURS: the paper gives no formula). Two weights, w_off + w_on = 1,
    # moving in opposite directions with the network's performance:
    #   perf    w_on = clip(a, eps, 1-eps), a = accuracy (source: train = EMA of the batch accuracy,
    #           val = the latest validation accuracy); w_off = 1 - w_on
    #   loss    w_off = L_ce / (L_ce + L_ce(0)) with L_ce an EMA of the batch CE; w_on = 1 - w_off
    #   linear  w_on = clip(step / total_steps, eps, 1-eps) (ablation: not performance-based)
    #   fixed   w_on = fixed_on, w_off = 1 - fixed_on (ablation)
    mode: str = choice("perf", ["perf", "loss", "linear", "fixed"])
    source: str = choice("train", ["train", "val"])  # perf only: train | val
    momentum: float = 0.9  # EMA momentum of the batch accuracy / CE
    eps: float = 0.05
    fixed_on: float = 0.5


@dataclass
class DRRNetConfig:
    # L = CE + lambda * tau^2 * [w_off * KL(p_off || p_s) + w_on * KL(p_on || p_s)]   (OURS: recipes/sar/README.md)
    # snapshot (previous generation) | best (best validation checkpoint) | file
    offline: str = choice("snapshot", ["snapshot", "best", "file"])
    offline_path: str = ""  # offline=file: weights of a trained same-architecture model (or a run dir)
    generation_epochs: int = 8  # offline=snapshot: the teacher is refreshed every N epochs
    # last (the last iteration's prediction, DLB-style) | view (another augmented view) | ema
    online: str = choice("last", ["last", "view", "ema"])
    ema_decay: float = 0.99  # online=ema
    temperature: float = 3.0
    weight: float = 1.0  # lambda
    awa: AWAConfig = field(default_factory=AWAConfig)


@dataclass
class CSKDConfig:  # Yun et al., CVPR 2020; official code alinlab/cs-kd
    temperature: float = 4.0
    weight: float = 1.0
    exclude_self: bool = False  # official sampler may pair a chip with itself (random.choice over its class)


@dataclass
class PSKDConfig:  # Kim et al., ICCV 2021; official code lgcnsai/PS-KD-Pytorch
    alpha_T: float = 0.8  # alpha_t = alpha_T * epoch / total_epochs (1-based epoch)


@dataclass
class TFKDConfig:  # Yuan et al., CVPR 2020; official code yuanli2333/Teacher-free-Knowledge-Distillation
    # reg (manually designed virtual teacher) | self (a trained copy of the same network)
    variant: str = choice("reg", ["reg", "self"])
    teacher: str = ""  # variant=self: the trained teacher (a run dir or a weights file)
    alpha: float = 0.1  # official base_resnet18 params (reg): 0.1; resnet18_self_teacher (self): 0.95
    temperature: float = 20.0  # reg 20; self 6
    multiplier: float = 100.0  # reg 100; self 50 (the official KLDivLoss() averages over B*K elements)
    correct_prob: float = 0.99  # reg: the virtual teacher's probability of the true class
    # element_mean (official nn.KLDivLoss()) | batchmean
    reduction: str = choice("element_mean", ["element_mean", "batchmean"])


@dataclass
class BYOTConfig:  # Zhang et al., ICCV 2019 (weights as in mmrazor's byot_resnet18 config)
    alpha: float = 0.3  # (1-alpha) CE + alpha KL for every shallow exit; the deepest gets CE only
    temperature: float = 3.0
    feature_weight: float = 0.03  # L2 between each exit's pooled feature and the deepest one (detached)


@dataclass
class DLBConfig:  # Shen et al., CVPR 2022
    temperature: float = 3.0
    weight: float = 1.0


@dataclass
class ZipfConfig:  # Liang et al., ECCV 2022; official code megvii-research/zipfls
    weight: float = 1.0
    power: float = 1.0
    dense: bool = True  # rank classes by the votes of the per-position (dense) predictions
    loss_mask: bool = False  # only correctly classified samples contribute (official switch, off by default)


@dataclass
class KDConfig:
    method: str = choice("drrnet", METHODS)
    drrnet: DRRNetConfig = field(default_factory=DRRNetConfig)
    cs_kd: CSKDConfig = field(default_factory=CSKDConfig)
    ps_kd: PSKDConfig = field(default_factory=PSKDConfig)
    tf_kd: TFKDConfig = field(default_factory=TFKDConfig)
    byot: BYOTConfig = field(default_factory=BYOTConfig)
    dlb: DLBConfig = field(default_factory=DLBConfig)
    zipf_ls: ZipfConfig = field(default_factory=ZipfConfig)


@dataclass
class EvalConfig:
    split: str = choice("test", ["test", "val"])  # the split `eval` scores by default: test | val


def _train_defaults() -> TrainConfig:
    return TrainConfig(
        max_steps=400,
        batch_size=32,
        lr=3e-3,
        weight_decay=5e-4,
        warmup_steps=20,
        eval_every=50,
        checkpoint_every=100,
        log_every=1,
        group_by_length=False,
        best_metric="accuracy",
        best_mode="max",
    )


@dataclass
class SarConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    kd: KDConfig = field(default_factory=KDConfig)
    train: TrainConfig = field(default_factory=_train_defaults)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def validate(self) -> None:
        kd, dr = self.kd, self.kd.drrnet
        for name, t in (
            ("drrnet", dr.temperature),
            ("cs_kd", kd.cs_kd.temperature),
            ("tf_kd", kd.tf_kd.temperature),
            ("byot", kd.byot.temperature),
            ("dlb", kd.dlb.temperature),
        ):
            if t <= 0:
                raise SkdError(f"kd.{name}.temperature must be > 0, got {t}")
        if not 0 <= dr.awa.eps < 0.5:
            raise SkdError(f"kd.drrnet.awa.eps must be in [0, 0.5), got {dr.awa.eps}")
        if not 0 <= dr.awa.momentum < 1:
            raise SkdError(f"kd.drrnet.awa.momentum must be in [0, 1), got {dr.awa.momentum}")
        if not 0 <= dr.awa.fixed_on <= 1:
            raise SkdError(f"kd.drrnet.awa.fixed_on must be in [0, 1], got {dr.awa.fixed_on}")
        if dr.generation_epochs < 1:
            raise SkdError("kd.drrnet.generation_epochs must be >= 1")
        if kd.method == "drrnet" and dr.offline == "file" and not dr.offline_path:
            raise SkdError("kd.drrnet.offline=file needs kd.drrnet.offline_path (a run dir or a weights file)")
        if kd.method == "drrnet" and dr.offline == "best" and self.train.eval_every <= 0:
            raise SkdError("kd.drrnet.offline=best needs periodic validation (train.eval_every > 0)")
        if kd.method == "drrnet" and dr.awa.source == "val" and dr.awa.mode == "perf" and self.train.eval_every <= 0:
            raise SkdError("kd.drrnet.awa.source=val needs periodic validation (train.eval_every > 0)")
        if kd.method == "tf-kd" and kd.tf_kd.variant == "self" and not kd.tf_kd.teacher:
            raise SkdError("kd.tf_kd.variant=self needs kd.tf_kd.teacher (a run dir or a weights file)")
        if not 0 <= kd.ps_kd.alpha_T <= 1:
            raise SkdError("kd.ps_kd.alpha_T must be in [0, 1]")
        if not 0 < kd.tf_kd.correct_prob <= 1:
            raise SkdError("kd.tf_kd.correct_prob must be in (0, 1]")
        if kd.method == "dlb" or (kd.method == "drrnet" and dr.online == "last"):
            if self.train.batch_size % 2:
                raise SkdError(
                    f"kd.method={kd.method} needs an even train.batch_size (halves), got {self.train.batch_size}"
                )
        if self.model.width < 4:
            raise SkdError("model.width must be >= 4")
        if self.augment.shift < 0:
            raise SkdError("augment.shift must be >= 0")
