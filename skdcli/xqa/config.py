"""Typed config of the xqa recipe (Carrino, Escolano & Fonollosa, arXiv 2309.17134).

Defaults = the tiny embedded setup (`skd xqa train --data <prep --source synthetic>`): stage 2 with
SKD in generations and the mAP@k coefficient on the synthetic corpus. `recipes/xqa/*.yaml` hold the
paper's settings (mBERT, 384/128/64, lr 5e-5, batch 6 x 4, 3 epochs, T = 2). Which value is the
paper's, the official code's or ours: recipes/xqa/README.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..engine.config import TrainConfig, check_choice, choice
from ..engine.errors import SkdError
from .loss import KL_DIRECTIONS
from .metrics import NORMALIZATIONS

SUITES = ("mlqa", "xquad", "tydiqa")


@dataclass
class DataConfig:
    max_seq_length: int = 64  # paper: 384
    doc_stride: int = 24  # paper: 128
    max_query_length: int = 20  # paper: 64
    # the periodic evaluation (and best checkpoint): a prepared dataset with eval cells; "" = --data's own
    dev: str = ""
    dev_split: str = choice("dev", ["dev", "test"])
    dev_suite: str = choice("mlqa", SUITES)  # how the dev cells are scored and aggregated (G-XLT F1 for mlqa)


@dataclass
class ModelConfig:
    # a local Hugging Face checkpoint directory (mBERT / XLM-R fine-tuned on SQuAD, or a base model:
    # the span head is then initialised from the seed); "" = the prepared dataset's init/ (synthetic only)
    init: str = ""


@dataclass
class KDConfig:
    # skd: CE + c * KL to the teacher | ce: cross-entropy only (the --baseline)
    method: str = choice("skd", ["skd", "ce"])
    # fw: KL(teacher || student) (paper) | rv: KL(student || teacher) | sym: both
    loss: str = choice("fw", list(KL_DIRECTIONS))
    temperature: float = 2.0  # paper's best: T = 2
    ce: bool = True  # alpha_ce = 1; false: alpha_ce = 0, the paper's "w/o CE" ablation (--no-ce)
    map_coefficient: bool = True  # c = mAP@k of the teacher (SKD+mAP@k); false: c = 1 (SKD)
    map_k: int = 10
    map_window: int = 5  # hits in [gold - w, gold + w - 1] (official range); 0 = exact position (MRR@k)
    generations: bool = True  # teacher <- student at every epoch end; false: the initial model stays the teacher
    # context: KL / ranking over context tokens + [CLS] (ours) | none: every position (official)
    mask: str = choice("context", ["context", "none"])


@dataclass
class EvalConfig:
    n_best: int = 20
    max_answer_length: int = 30
    batch_size: int = 64
    normalization: str = ""  # "" = the suite's (mlqa: MLQA v1 per context language; xquad/tydiqa: SQuAD v1.1)


def _train_defaults() -> TrainConfig:
    # paper: AdamW, no warm-up, linear decay to 0, weight decay 0, grad clip 1.0; lr/batch sized for the tiny model
    return TrainConfig(
        max_steps=0,
        batch_size=32,
        lr=1e-3,
        weight_decay=0.0,
        betas=[0.9, 0.999],
        lr_schedule="linear_warmup_linear",
        warmup_steps=0,
        min_lr_ratio=0.0,
        grad_clip=1.0,
        log_every=1,
        eval_every=0,
        checkpoint_every=0,
        keep_checkpoints=2,
        group_by_length=False,
        best_metric="gxlt_f1",
        best_mode="max",
        seed=3,
    )


@dataclass
class XqaConfig:
    # train.max_steps = 0: epochs x steps per epoch of the training windows (paper: 3 epochs = 3 generations)
    epochs: int = 3
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    kd: KDConfig = field(default_factory=KDConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    train: TrainConfig = field(default_factory=_train_defaults)

    def validate(self) -> None:
        if self.eval.normalization:
            check_choice("eval.normalization", self.eval.normalization, NORMALIZATIONS)
        if self.kd.temperature <= 0:
            raise SkdError("kd.temperature must be > 0")
        if self.kd.method == "ce" and not self.kd.ce:
            raise SkdError("kd.method=ce with kd.ce=false trains nothing (--no-ce needs SKD)")
        if self.kd.map_k < 1 or self.kd.map_window < 0:
            raise SkdError("kd.map_k must be >= 1 and kd.map_window >= 0")
        d = self.data
        if d.max_seq_length < 8 or d.doc_stride < 1 or d.max_query_length < 1:
            raise SkdError("data.max_seq_length must be >= 8, data.doc_stride and data.max_query_length >= 1")
        if d.max_query_length + d.doc_stride + 3 > d.max_seq_length:
            raise SkdError(
                f"data.max_query_length ({d.max_query_length}) + data.doc_stride ({d.doc_stride}) + 3 "
                f"special tokens must fit in data.max_seq_length ({d.max_seq_length})"
            )
        if self.eval.n_best < 1 or self.eval.max_answer_length < 1 or self.eval.batch_size < 1:
            raise SkdError("eval.n_best, eval.max_answer_length and eval.batch_size must be >= 1")
        if self.epochs < 0 or self.train.max_steps < 0:
            raise SkdError("epochs and train.max_steps must be >= 0")
        if self.epochs == 0 and self.train.max_steps == 0:
            raise SkdError("set epochs or train.max_steps (both are 0)")
