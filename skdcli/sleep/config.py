"""Typed config of the sleep recipe (SST: Siamese Sleep Transformer, self-KD, selective batch sampling).

Defaults = the tiny embedded setup that `skd sleep run` trains on 2 CPU cores in about a minute;
`recipes/sleep/*.yaml` override them for SHHS -> Sleep-EDF. Which parts are the paper's and which
are ours: recipes/sleep/README.md (the paper's full text was not available; internals are ours).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..engine.config import TrainConfig, choice
from ..engine.errors import SkdError

STAGES = ["W", "N1", "N2", "N3", "REM"]  # class ids 0..4 (R&K S3+S4 -> N3)


@dataclass
class DataConfig:
    seq_len: int = 3  # L consecutive 30-s epochs per example (1 = epoch-wise model)
    dev_fraction: float = 0.2  # share of recordings held out, as whole subjects, for periodic eval / best checkpoint
    # subject-wise K-fold cross-validation (0 = off): subjects sorted and cut into `folds` groups, group `fold`
    # is the test set, dev comes from the other subjects (splits.py; `train --folds K` runs every fold)
    folds: int = 0
    fold: int = 0


@dataclass
class ModelConfig:
    patch_len: int = 50  # samples per patch token (0.5 s at 100 Hz); must divide fs*30
    d_model: int = 32
    n_layers_epoch: int = 1  # transformer over the patches of one 30-s epoch (CLS token -> epoch vector)
    n_layers_seq: int = 1  # transformer over the L epoch vectors (0 = none)
    n_heads: int = 2
    ff_mult: int = 2
    dropout: float = 0.1


@dataclass
class KDConfig:
    # skd: L = 1/2[CE(y,p1) + CE(y,p2)] + w·T²·D(p1_T, p2_T) over two Siamese branches (shared weights)
    # ce:  L = CE(y, p) on one branch (the --baseline)
    method: str = choice("skd", ["skd", "ce"])
    # augment (two random signal augmentations) | dropout (same input, two masks)
    siamese_view: str = choice("augment", ["augment", "dropout"])
    # sym_kl | kl_stopgrad (branch 2 is a detached teacher) | js
    divergence: str = choice("sym_kl", ["sym_kl", "kl_stopgrad", "js"])
    temperature: float = 1.0
    weight: float = 1.0  # w
    # augment view: amplitude scale ~ U(1-a, 1+a), circular time shift up to s seconds, gaussian noise std n (z units)
    aug_amplitude: float = 0.2
    aug_shift_seconds: float = 1.0
    aug_noise: float = 0.1


@dataclass
class SamplerConfig:
    # random: the engine's shuffle. balanced / selective: every batch's SUPERVISED epochs (all scored positions of
    # its windows, what the loss sees) are split over the stages with shares q_c ∝ n_c^power (balanced = power 0,
    # selective = `power`; 1 = the data prior), as closely as windows of consecutive epochs allow (sampling.py)
    kind: str = choice("selective", ["random", "balanced", "selective"])
    power: float = 0.5
    candidates: int = 4  # windows drawn per pick; the one closest to the target shares is kept (1 = braindecode's rule)


@dataclass
class EvalConfig:
    stride: int = 1  # window stride when scoring whole nights; each epoch's probabilities are averaged over windows


def _train_defaults() -> TrainConfig:
    return TrainConfig(
        max_steps=150,
        batch_size=20,
        lr=2e-3,
        warmup_steps=15,
        eval_every=50,
        checkpoint_every=50,
        best_metric="macro_f1",
        best_mode="max",
        log_every=5,
        group_by_length=False,
    )


@dataclass
class SleepConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    kd: KDConfig = field(default_factory=KDConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    train: TrainConfig = field(default_factory=_train_defaults)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def validate(self) -> None:
        if self.data.seq_len < 1:
            raise SkdError("data.seq_len must be >= 1")
        if not 0 <= self.data.dev_fraction < 1:
            raise SkdError("data.dev_fraction must be in [0, 1)")
        if self.data.folds == 1 or self.data.folds < 0:
            raise SkdError(f"data.folds must be 0 (off) or >= 2, got {self.data.folds}")
        if not 0 <= self.data.fold < max(self.data.folds, 1):
            raise SkdError(f"data.fold must be in [0, {max(self.data.folds, 1)}), got {self.data.fold}")
        if self.kd.temperature <= 0:
            raise SkdError("kd.temperature must be > 0")
        if self.model.d_model % self.model.n_heads:
            raise SkdError(
                f"model.d_model={self.model.d_model} must be divisible by model.n_heads={self.model.n_heads}"
            )
        if not 0 <= self.sampler.power <= 1:
            raise SkdError("sampler.power must be in [0, 1]")
        if self.sampler.candidates < 1:
            raise SkdError("sampler.candidates must be >= 1")
        if self.eval.stride < 1:
            raise SkdError("eval.stride must be >= 1")
