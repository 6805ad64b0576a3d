"""Typed config of the nlg-smooth recipe. Defaults = the tiny embedded setup (`skd nlg-smooth run`
trains it on the synthetic toy pair on CPU); `recipes/nlg_smooth/iwslt14.yaml` is the real-data one."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..engine.config import TrainConfig, choice
from ..engine.errors import SkdError
from ..text.seq2seq import Seq2SeqConfig

METHODS = ("als_sk", "ce", "ls", "ls_unigram", "confpen", "tfkd", "pskd")
ALPHA_FNS = ("norm_entropy", "one_minus_norm_entropy", "batch_minmax", "constant")
PRIOR_FALLBACKS = ("uniform", "ce")


# the Transformer encoder-decoder block (skdcli/text/seq2seq.py); iwslt14.yaml = transformer_iwslt_de_en
ModelConfig = Seq2SeqConfig


@dataclass
class LossConfig:
    # als_sk  : q = (1 - a_i) e_y + a_i p~_i, p~ = the best-so-far checkpoint (frozen), a_i from the entropy
    # ce      : plain cross-entropy (--baseline)
    # ls      : uniform label smoothing, q = (1 - smoothing) e_y + smoothing / V
    # ls_unigram: q = (1 - smoothing) e_y + smoothing u, u = the train split's target unigram distribution
    # confpen : confidence penalty, CE - beta H(p) (Pereyra et al. 2017)
    # tfkd    : TF-KD_reg (Yuan et al. 2020), official code's form: (1 - a) CE + a m KL(softmax(p^d / T) || p)
    # pskd    : PS-KD (Kim et al. 2021): q = (1 - a_t) e_y + a_t p_prev, p_prev = the model at the previous epoch's end
    method: str = choice("als_sk", METHODS)
    lam: float = 0.5  # lambda: the largest smoothing weight a_i can take (a_i in [0, lam])
    # entropy -> weight: H/log V | 1 - H/log V | batch min-max | constant (= lam)
    alpha_fn: str = choice("norm_entropy", ALPHA_FNS)
    temperature: float = 1.0  # prior = softmax(z_prior / T); T != 1 scales the prior term by T^2
    # before the first validation: uniform prior (adaptive LS) | ce (a = 0)
    prior_fallback: str = choice("uniform", PRIOR_FALLBACKS)
    prior_metric: str = "nll"  # validation metric that swaps the prior in (only when it improves)
    prior_mode: str = choice("min", ["min", "max"])
    # Keep the prior's logits per training pair until the prior is swapped: later epochs of the same
    # prior generation then skip its forward. Used only if the whole train split fits in this budget.
    prior_cache_mb: int = 512
    smoothing: float = 0.1  # method=ls / ls_unigram: epsilon
    beta: float = 0.1  # method=confpen: weight of the entropy bonus
    # method=tfkd, the official code's CIFAR-100 settings (experiments/*/params.json: reg_alpha 0.1,
    # reg_temperature 20, multiplier 100 over 100 classes -> 1 per class here), correct_prob 0.99
    tfkd_alpha: float = 0.1
    tfkd_temperature: float = 20.0
    tfkd_correct_prob: float = 0.99
    tfkd_multiplier: float = 1.0
    pskd_alpha_T: float = 0.8  # method=pskd: a_t grows linearly to alpha_T at the last epoch (official default 0.8)


@dataclass
class EvalConfig:
    beam_size: int = 5  # eval stage; 1 = greedy
    lenpen: float = 1.0  # fairseq length penalty: score / len^lenpen
    max_len_a: float = 0.0  # longest output = a * source length + b: fairseq-generate's defaults (0, 200)
    max_len_b: int = 200
    ece_bins: int = 10
    valid_bleu: bool = True  # periodic eval also decodes the valid set greedily (BLEU); off = NLL/ECE only
    valid_decode_max: int = 200  # sentences decoded per periodic eval (0 = all)
    batch_size: int = 64  # sentences per decoding batch


def _train_defaults() -> TrainConfig:
    return TrainConfig(
        max_steps=800,
        batch_size=64,
        lr=2e-3,
        warmup_steps=60,
        eval_every=100,
        checkpoint_every=400,
        best_metric="nll",
        best_mode="min",
        log_every=10,
        weight_decay=0.0001,
    )


@dataclass
class NlgSmoothConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=_train_defaults)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def validate(self) -> None:
        if not 0.0 <= self.loss.lam <= 1.0:
            raise SkdError(f"loss.lam must be in [0, 1], got {self.loss.lam}")
        if not 0.0 <= self.loss.smoothing <= 1.0:
            raise SkdError(f"loss.smoothing must be in [0, 1], got {self.loss.smoothing}")
        if self.loss.temperature <= 0 or self.loss.tfkd_temperature <= 0:
            raise SkdError("loss.temperature and loss.tfkd_temperature must be > 0")
        for key in ("tfkd_alpha", "tfkd_correct_prob", "pskd_alpha_T"):
            if not 0.0 <= getattr(self.loss, key) <= 1.0:
                raise SkdError(f"loss.{key} must be in [0, 1], got {getattr(self.loss, key)}")
        if self.model.d_model % self.model.num_heads:
            raise SkdError(
                f"model.d_model={self.model.d_model} must be divisible by model.num_heads={self.model.num_heads}"
            )
        if self.model.max_positions < 3:
            raise SkdError("model.max_positions must be >= 3")
        if self.eval.ece_bins < 1 or self.eval.beam_size < 1:
            raise SkdError("eval.ece_bins and eval.beam_size must be >= 1")
