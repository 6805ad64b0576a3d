"""Typed config of the dataset-distill recipe: DiM's two training stages plus the self-KD logit term.

Li et al., "Generative Dataset Distillation Based on Self-knowledge Distillation" (ICASSP 2025,
arXiv 2501.04202) builds on DiM (Wang et al. 2023, official code vimar-gu/DiM @ 36573394):

- stage ``cgan``: a conditional AC-WGAN-GP, the one-hot label written into the first C noise dims;
- stage ``match``: the generator keeps its adversarial loss and also matches the logits that a
  pool model (drawn per epoch, trained online on real data) gives to real and generated images.

The defaults are the tiny embedded setup (8x8 scikit-learn digits) that `skd dataset-distill run`
trains on 2 CPU cores; `recipes/dataset_distill/*.yaml` hold DiM's hyperparameters for CIFAR-10,
MNIST and Fashion-MNIST. Which settings are the paper's, DiM's or ours: recipes/dataset_distill/README.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..engine.config import TrainConfig, check_choice, choice
from ..engine.errors import SkdError

STAGES = ("cgan", "match")
POOL_ARCHS = ("convnet", "resnet10", "resnet18", "resnet10_ap", "resnet18_ap")
EVAL_MODES = ("fixed", "on_the_fly")


@dataclass
class DataConfig:
    # Held out of the prepared train split (stratified, fixed) for checkpoint selection, so the
    # test split is never used to pick anything (DiM picks its checkpoint on test accuracy).
    dev_fraction: float = 0.1


@dataclass
class GeneratorConfig:
    # DiM gan_model.Generator: FC(noise -> ch*s0*s0), BN, ReLU, then per upsampling a ConvTranspose
    # (x2) + BN + ReLU followed by `convs_after_upsample[i]` 3x3 conv + BN + ReLU, a last 3x3 conv, tanh.
    # DiM: noise 100, 196 channels, 3 upsamplings (4 -> 32, or 4 -> 7 -> 14 -> 28), convs [3, 1, 0].
    noise_dim: int = 32
    channels: int = 32
    upsamples: int = 2
    convs_after_upsample: list[int] = field(default_factory=lambda: [1, 0])


@dataclass
class DiscriminatorConfig:
    # DiM gan_model.Discriminator: 3x3 convs with these strides, each LayerNorm + LeakyReLU, a global
    # max pool, a 1-unit source head and a C-way class head. DiM: 196 channels, strides [1,2,1,2,1,1,1,2].
    channels: int = 32
    strides: list[int] = field(default_factory=lambda: [1, 2, 2])


@dataclass
class ClassifierConfig:
    """Pool models (stage 2) and evaluation models. DiM: ConvNet-3 width 128, instance norm, average
    pooling; ResNets of the CIFAR branch (base width 32 -> 32/64/128/256, batch norm)."""

    convnet_width: int = 16
    convnet_depth: int = 3
    convnet_norm: str = choice("instance", ["instance", "batch", "none"])  # instance | batch | none
    resnet_width: int = 4
    resnet_norm: str = choice("batch", ["batch", "instance"])  # batch | instance


@dataclass
class GanConfig:
    # L_D = E D(fake) - E D(real) + CE(fake) + CE(real) + gp_weight * GP;  L_G = -E D(G(z,y)) + CE(G(z,y))
    gp_weight: float = 10.0  # DiM calc_gradient_penalty LAMBDA
    class_weight: float = 1.0  # weight of the auxiliary classification terms (DiM: 1)


@dataclass
class MatchConfig:
    """Stage 2 (DiM pool_match.py + the paper's self-KD term)."""

    init: str = ""  # the stage-1 weights: a cgan run dir, its model.safetensors, or a pretrained file (required)
    pool: list[str] = field(default_factory=lambda: ["convnet", "resnet10"])  # DiM: all five POOL_ARCHS
    redraw_every_steps: int = 0  # 0 = a fresh pool model each epoch (DiM); N = every N generator steps
    online_batches: int = 4  # SGD steps on real data before each generator step (DiM --epochs-match-train: 16)
    online_lr: float = 0.01
    online_momentum: float = 0.9
    online_weight_decay: float = 5e-4
    online_dsa: str = "color_crop"  # DiM aug_rand: color_crop_cutout minus cutout (--mixup-net cut), per image
    match_dsa: str = "color_crop_cutout"  # DiM --match-aug: one draw shared by real and generated halves
    match_dsa_same_on_batch: bool = True  # DiM DiffAug(batch=True); False = per-image Siamese pairs (DSA paper)
    # train (DiM: batch statistics in the pool model's norm layers) | eval
    pool_mode: str = choice("train", ["train", "eval"])
    # L_match = mse_weight * mean_bc (log_softmax f(A x_real) - log_softmax f(A G(z, y)))^2     (DiM --match logit)
    #         + skd_weight * T^2 * KL(softmax(Z(l_real)/T) || softmax(Z(l_syn)/T))          (self-KD; ours)
    mse_weight: float = 0.0
    skd_weight: float = 1.0
    skd_temperature: float = 4.0
    skd_standardize: bool = True  # Z(l) = (l - mean) / (1e-7 + std) per row (Sun et al. 2024)


@dataclass
class SelectConfig:
    """The engine's periodic eval (best checkpoint): train one small classifier on a fixed generated
    set and score it on the dev split held out of train (never on test)."""

    ipc: int = 10
    arch: str = choice("convnet", POOL_ARCHS)
    steps: int = 100
    batch_size: int = 64


@dataclass
class EvalConfig:
    """`eval`: fresh models trained on generated images, top-1 on the real test split (DiM validate.py)."""

    ipc: list[int] = field(default_factory=lambda: [1, 10])
    archs: list[str] = field(default_factory=lambda: ["convnet", "resnet10"])
    modes: list[str] = field(default_factory=lambda: ["fixed", "on_the_fly"])
    repeats: int = 3
    epochs: int = 100  # DiM: 1000
    batch_size: int = 64  # DiM: 64 (pool_match.py) / 128 (validate.py)
    lr: float = 0.03  # DiM: 0.01 (for 1000 epochs)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    dsa: str = "color_crop"  # DiM aug_rand for the evaluation models
    # on_the_fly batches per epoch: floor(C * ipc / batch) + 1 (gen_condense/pool_match.py) or floor (validate.py)
    on_the_fly_batches: str = choice("floor_plus_one", ["floor_plus_one", "floor"])
    # last (ours) | best_on_test (DiM: the best test top-1 over test points, optimistic)
    select: str = choice("last", ["last", "best_on_test"])
    test_every_epochs: int = 0  # test points for best_on_test (DiM: 200); 0 = only the last epoch
    full_real_steps: int = 600  # the full-real-train-set reference row: SGD steps
    vectorize: bool = True  # train the repeats of one cell as one torch.func.vmap ensemble


def _train_defaults() -> TrainConfig:
    # DiM: Adam lr 1e-4 betas (0, 0.9) for both players, batch 128 (stage 1) / 64 (stage 2); no
    # weight decay, no clipping, constant LR.
    return TrainConfig(
        max_steps=100,
        batch_size=64,
        lr=2e-4,
        weight_decay=0.0,
        betas=[0.0, 0.9],
        lr_schedule="constant",
        warmup_steps=0,
        grad_clip=0.0,
        log_every=10,
        eval_every=0,
        checkpoint_every=100,
        best_metric="dev_top1",
        best_mode="max",
        group_by_length=False,
    )


@dataclass
class DistillConfig:
    stage: str = choice("match", STAGES)  # cgan | match
    data: DataConfig = field(default_factory=DataConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    gan: GanConfig = field(default_factory=GanConfig)
    match: MatchConfig = field(default_factory=MatchConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    train: TrainConfig = field(default_factory=_train_defaults)

    def validate(self) -> None:
        for name in self.match.pool:
            check_choice("match.pool[]", name, POOL_ARCHS)
        for name in self.eval.archs:
            check_choice("eval.archs[]", name, POOL_ARCHS)
        for mode in self.eval.modes:
            check_choice("eval.modes[]", mode, EVAL_MODES)
        if not self.match.pool:
            raise SkdError("match.pool must name at least one architecture")
        if not 0 <= self.data.dev_fraction < 1:
            raise SkdError("data.dev_fraction must be in [0, 1)")
        if self.generator.upsamples < 1 or len(self.generator.convs_after_upsample) != self.generator.upsamples:
            raise SkdError(
                f"generator.convs_after_upsample must have generator.upsamples="
                f"{self.generator.upsamples} entries, got {self.generator.convs_after_upsample}"
            )
        if any(s not in (1, 2) for s in self.discriminator.strides) or not self.discriminator.strides:
            raise SkdError(
                f"discriminator.strides must be a non-empty list of 1s and 2s, got {self.discriminator.strides}"
            )
        if self.match.skd_temperature <= 0:
            raise SkdError("match.skd_temperature must be > 0")
        if self.match.mse_weight < 0 or self.match.skd_weight < 0:
            raise SkdError("match.mse_weight and match.skd_weight must be >= 0")
        if self.match.online_batches < 0 or self.match.redraw_every_steps < 0:
            raise SkdError("match.online_batches and match.redraw_every_steps must be >= 0")
        if any(i < 1 for i in self.eval.ipc) or self.eval.repeats < 1 or self.eval.epochs < 1:
            raise SkdError("eval.ipc entries, eval.repeats and eval.epochs must be >= 1")
        if self.select.ipc < 1 or self.select.steps < 1:
            raise SkdError("select.ipc and select.steps must be >= 1")
