"""Typed config of the nlp-embed recipe. Defaults = the tiny embedded setup that `skd nlp-embed run`
trains on CPU in seconds per system (the synthetic class-based Markov corpus, a 1-layer LSTM LM);
`recipes/nlp_embed/{ptb,wikitext2}.yaml` override them for real corpora."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..engine.config import TrainConfig, choice
from ..engine.errors import SkdError
from ..engine.schedules import build_weight_schedule
from ..text.lm import LMConfig
from ..text.seq2seq import Seq2SeqConfig

METHODS = ("skd", "noise", "random", "input_noise", "ce", "ls")
BPTT_MODES = ("stateful", "windows")
SIMILARITIES = ("dot", "cos", "neg_l2")


@dataclass
class DataConfig:
    # stateful: truncated BPTT (Zaremba et al. 2014; pytorch/examples word_language_model): the train stream
    #   is cut into train.batch_size parallel columns, consecutive windows of `bptt` tokens, the LSTM state
    #   carried from window to window (detached) and reset each epoch; eval runs the whole valid/test stream
    #   statefully in eval.stream_batch columns. LSTM only.
    # windows: independent windows of `bptt` tokens, shuffled, no carried state (train and eval); Transformers.
    bptt_mode: str = choice("stateful", BPTT_MODES)
    bptt: int = 20  # tokens per training window (next-token predictions per example)
    eval_bptt: int = 0  # window for eval / perplexity (0 = bptt; with stateful eval it only bounds memory)


@dataclass
class KDConfig:
    # skd:   L = (1-b)·CE(e_y, p) + b·CE(q~, p), q~ = softmax over y's top-K neighbours of
    #        sim(w_y, w_j)/T, W = the detached output-embedding matrix
    #        (our reading of the abstract: recipes/nlp_embed/README.md §3, §5)
    # noise: the same, but w_y is perturbed by isotropic Gaussian noise of norm noise_scale·|w_y| first
    #        (our reading of the paper's "random noise" control; README §5)
    # input_noise: plain CE with Gaussian noise of std noise_scale·rms(E) added to the input word
    #        embeddings (the other reading of "random noise injected into word embeddings")
    # random: the same weighting over K neighbours drawn at random (not the nearest), redrawn at every refresh
    #        (controls for how the neighbours are chosen; `noise` keeps the true nearest ones)
    # ce:    plain cross-entropy (--baseline)     ls: uniform label smoothing with `label_smoothing`
    method: str = choice("skd", METHODS)
    sim: str = choice("cos", SIMILARITIES)  # dot | cos | neg_l2
    temperature: float = 0.1  # of the similarity softmax
    topk: int = 16  # K neighbours per gold word; 0 = the full vocabulary (exact, O(V) per token)
    include_gold: bool = True  # the gold word is neighbour 0 (so K=1 gives q~ = one-hot)
    refresh_every: int = 50  # steps between rebuilding the cached neighbour table
    beta: Any = field(
        default_factory=lambda: {"kind": "linear_ramp", "start": 0.0, "end": 0.5, "begin_frac": 0.1, "end_frac": 0.3}
    )
    noise_scale: float = 1.0  # noise / input_noise
    label_smoothing: float = 0.1  # ls


# mode=nmt: the shared Transformer encoder-decoder block (skdcli/text/seq2seq.py); its decoder's
# output embedding (tied to the joint input embedding by default) is W
NmtModelConfig = Seq2SeqConfig


@dataclass
class EvalConfig:
    ece_bins: int = 10
    # data.bptt_mode=stateful: the valid/test stream as this many parallel streams, the state carried over the
    # whole stream. 1 = one sequence, every token but the first predicted with its full history (the test
    # setting of Zaremba et al.'s code and AWD-LSTM); 10 = pytorch/examples word_language_model's eval batch
    # (the N % 10 tail tokens and each stream's first token are not predicted). eval.json names it.
    stream_batch: int = 1
    batch_size: int = 32  # windows per batch (bptt_mode=windows); sentences per batch (mode=nmt)
    beam_size: int = 5  # mode=nmt, eval stage (periodic validation decodes greedily)
    lenpen: float = 1.0  # fairseq length penalty
    max_len_a: float = 0.0  # longest output = a * source length + b: fairseq-generate's defaults (0, 200)
    max_len_b: int = 200
    valid_decode_max: int = 200  # mode=nmt: sentences decoded per periodic validation (BLEU); 0 = all


def _train_defaults() -> TrainConfig:
    return TrainConfig(
        max_steps=1500,
        batch_size=16,
        lr=3e-3,
        warmup_steps=30,
        eval_every=100,
        checkpoint_every=500,
        best_metric="ppl",
        best_mode="min",
        log_every=10,
        weight_decay=0.01,
    )


def _model_defaults() -> LMConfig:
    return LMConfig(arch="lstm", d_embed=64, d_hidden=64, num_layers=1, dropout=0.3, tie_weights=True)


@dataclass
class NlpEmbedConfig:
    # lm: an LM corpus (`prep --source ptb|wikitext2|text|synthetic`); nmt: a parallel dataset
    # (`prep --source iwslt14|parallel|synthetic-nmt`). `train` sets it from the dataset it is given.
    mode: str = choice("lm", ["lm", "nmt"])
    data: DataConfig = field(default_factory=DataConfig)
    model: LMConfig = field(default_factory=_model_defaults)
    nmt: NmtModelConfig = field(default_factory=NmtModelConfig)
    kd: KDConfig = field(default_factory=KDConfig)
    train: TrainConfig = field(default_factory=_train_defaults)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def validate(self) -> None:
        if self.mode == "nmt" and self.kd.method == "input_noise":
            raise SkdError("kd.method=input_noise is implemented for mode=lm only (use kd.method=noise)")
        if self.nmt.d_model % self.nmt.num_heads:
            raise SkdError("nmt.d_model must be divisible by nmt.num_heads")
        if self.mode == "lm" and self.data.bptt_mode == "stateful" and self.model.arch != "lstm":
            raise SkdError(
                "data.bptt_mode=stateful carries an LSTM state; a Transformer LM has none: set data.bptt_mode=windows"
            )
        if self.kd.method == "random" and self.kd.topk < 1:
            raise SkdError("kd.method=random draws kd.topk random neighbours: set kd.topk >= 1")
        if self.eval.stream_batch < 1:
            raise SkdError("eval.stream_batch must be >= 1")
        if self.model.arch == "transformer":
            if self.model.d_hidden != self.model.d_embed:
                raise SkdError("model.arch=transformer has one width: set model.d_hidden = model.d_embed")
            if self.model.d_embed % self.model.num_heads:
                raise SkdError("model.d_embed must be divisible by model.num_heads")
            if max(self.data.bptt, self.data.eval_bptt) > self.model.max_len:
                raise SkdError(f"data.bptt/eval_bptt must be <= model.max_len ({self.model.max_len})")
        if self.data.bptt < 1 or self.data.eval_bptt < 0:
            raise SkdError("data.bptt must be >= 1 and data.eval_bptt >= 0")
        if self.kd.temperature <= 0:
            raise SkdError("kd.temperature must be > 0")
        if self.kd.topk < 0 or self.kd.refresh_every < 1:
            raise SkdError("kd.topk must be >= 0 and kd.refresh_every >= 1")
        if self.kd.noise_scale < 0 or not 0 <= self.kd.label_smoothing <= 1:
            raise SkdError("kd.noise_scale must be >= 0 and kd.label_smoothing in [0, 1]")
        try:
            build_weight_schedule(self.kd.beta)
        except ValueError as exc:
            raise SkdError(f"kd.beta: {exc}") from exc
