"""Typed config of the asr-ctc recipe. Defaults = the tiny embedded setup that `skd asr-ctc run`
trains on CPU in about two minutes; `recipes/asr_ctc/*.yaml` override them for real data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..engine.config import TrainConfig, choice
from ..engine.errors import SkdError
from ..engine.schedules import build_weight_schedule


@dataclass
class DataConfig:
    # fbank (from-scratch encoder) | waveform (HuBERT/WavLM-style encoders)
    feature: str = choice("fbank", ["fbank", "waveform"])
    num_mel_bins: int = 80
    max_train_seconds: float = 0.0  # drop longer training utterances (0 = keep all)
    # Compute features once before training and keep them in RAM instead of every epoch. Right
    # for small corpora; 100 h of fbank is ~11 GB, so real-data configs turn it off.
    cache_features: bool = True


@dataclass
class SpecAugmentConfig:
    enabled: bool = True  # applied in the model's forward, training mode only, fbank front-end only
    freq_masks: int = 2
    freq_width: int = 10  # mel bins
    time_masks: int = 2
    time_width: int = 8  # frames (10 ms)


@dataclass
class ModelConfig:
    # transformer (fbank + conv subsampling) | hf (local HuBERT/WavLM dir)
    encoder: str = choice("transformer", ["transformer", "hf"])
    pretrained: str = ""  # encoder=hf: local directory in Hugging Face format (config.json [+ weights])
    d_model: int = 128
    conv_channels: int = 32  # channels of the 2x Conv2d subsampling (the costliest part on CPU)
    num_layers: int = 4
    num_heads: int = 4
    ff_dim: int = 512
    dropout: float = 0.1
    student_layer: int = 2  # the sub-model (student) = the first `student_layer` encoder layers
    share_ctc_head: bool = False  # one CTC projection for student and teacher (paper: unknown)
    freeze_feature_encoder: bool = True  # encoder=hf: keep the CNN waveform front-end frozen
    spec_augment: SpecAugmentConfig = field(default_factory=SpecAugmentConfig)


# KL reductions of the frame-level KD term (recipes/asr_ctc/README.md §3). With V vocabulary
# entries and no padding, sequence_mean = V x element_mean = V x official for the same logits.
KD_REDUCTIONS = ("sequence_mean", "element_mean", "official")


@dataclass
class KDConfig:
    # skd:      L = (1-a(e))·CTC(teacher) + a(e)·(CTC(student) + w·KL(sg(teacher) || student)), frame level
    # interctc: L = (1-lambda)·CTC(teacher) + lambda·CTC(student), constant lambda (Lee & Watanabe 2021)
    # ctc:      plain CTC on the full model
    method: str = choice("skd", ["skd", "interctc", "ctc"])
    temperature: float = 1.0
    t2_scale: bool = True  # multiply the KL by T^2 (ours; the unofficial code has T=1, no factor)
    # sequence_mean (ours): sum over V, mean over each utterance's valid frames, mean over the batch;
    # element_mean: the same sum over valid frames divided by V * (valid frames in the batch);
    # official: huutuongtu/skd-ctc's F.kl_div(reduction="mean"), the mean over all B*T'*V elements,
    # padding frames included, never a T^2 factor. sequence_mean = V x official on unpadded batches.
    reduction: str = choice("sequence_mean", KD_REDUCTIONS)
    stop_gradient: bool = (
        True  # detach the teacher posteriors (recipes/asr_ctc/README.md: training without it is harmful)
    )
    mask_blank_frames: bool = False  # drop frames whose teacher argmax is blank (paper: not helpful)
    kd_weight: float = 1.0  # w above; its effect depends on the reduction (x V for sequence_mean)
    alpha: Any = field(default_factory=lambda: {"kind": "clipped_linear_epoch", "t": 0.3})
    # kd.method=interctc only: the constant weight lambda of the intermediate CTC loss (0.3, the usual
    # InterCTC setting; see recipes/asr_ctc/README.md §5). The SKD schedule kd.alpha is not used.
    interctc_weight: float = 0.3


@dataclass
class EvalConfig:
    # head reported as `wer` and exported: auto (student unless kd.method=ctc) | student | teacher
    head: str = choice("auto", ["auto", "student", "teacher"])
    beam_size: int = 1  # 1 = greedy CTC decoding; >1 = prefix beam search without LM
    spike_utterances: int = 50  # utterances used for the spike-timing analysis


def kd_weight_vs_official(kd: KDConfig, vocab_size: int) -> float:
    """How much heavier the KD term is than the official preset's (kd.reduction=official, w = 1),
    on batches without padding: sequence_mean sums over the V vocabulary entries where official
    averages, and both non-official reductions carry the T^2 factor when kd.t2_scale."""
    scale = kd.kd_weight * (kd.temperature**2 if kd.t2_scale and kd.reduction != "official" else 1.0)
    return scale * vocab_size if kd.reduction == "sequence_mean" else scale


def describe_alpha(alpha: Any) -> str:
    if isinstance(alpha, dict) and alpha.get("kind") == "clipped_linear_epoch":
        t = alpha.get("t", 0.3)
        return f"clip((e-1)/(E-1), {t:g}, {1 - t:g})"
    return str(alpha)


def _train_defaults() -> TrainConfig:
    return TrainConfig(
        max_steps=800,
        batch_size=16,
        lr=2e-3,
        warmup_steps=60,
        eval_every=200,
        checkpoint_every=200,
        best_metric="wer",
        best_mode="min",
        log_every=10,
    )


@dataclass
class AsrCtcConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    kd: KDConfig = field(default_factory=KDConfig)
    train: TrainConfig = field(default_factory=_train_defaults)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def validate(self) -> None:
        if self.model.encoder == "hf":
            if not self.model.pretrained:
                raise SkdError("model.encoder=hf needs model.pretrained=<local HF model directory>")
            if self.data.feature != "waveform":
                raise SkdError("model.encoder=hf reads raw audio: set data.feature=waveform")
        elif self.data.feature != "fbank":
            raise SkdError("model.encoder=transformer reads filterbanks: set data.feature=fbank")
        if self.model.encoder == "transformer" and not 1 <= self.model.student_layer < self.model.num_layers:
            raise SkdError(
                f"model.student_layer must be in [1, {self.model.num_layers - 1}] (got {self.model.student_layer})"
            )
        if self.kd.temperature <= 0:
            raise SkdError("kd.temperature must be > 0")
        if self.kd.reduction == "official":
            if self.kd.mask_blank_frames:
                raise SkdError(
                    "kd.reduction=official averages over every frame, padding included (the unofficial "
                    "code); it cannot drop blank frames: set kd.mask_blank_frames=false"
                )
            if self.kd.t2_scale and self.kd.temperature != 1.0:
                raise SkdError(
                    "kd.reduction=official has no T^2 factor (the unofficial code); set kd.t2_scale=false "
                    "to use a temperature other than 1"
                )
        if not 0.0 <= self.kd.interctc_weight <= 1.0:
            raise SkdError(f"kd.interctc_weight must be in [0, 1] (got {self.kd.interctc_weight})")
        try:
            build_weight_schedule(self.kd.alpha)
        except ValueError as exc:
            raise SkdError(f"kd.alpha: {exc}") from exc

    @property
    def system_label(self) -> str:
        """What was trained, in words, for summaries and result tables."""
        kd = self.kd
        if kd.method == "ctc":
            return "plain CTC (teacher head only)"
        if kd.method == "interctc":
            return f"InterCTC (Lee & Watanabe 2021), constant weight {kd.interctc_weight:g} on the intermediate CTC"
        return f"SKD, frame KL with kd.reduction={kd.reduction}, w={kd.kd_weight:g}, a(e)={describe_alpha(kd.alpha)}"

    @property
    def export_head(self) -> str:
        if self.eval.head != "auto":
            return self.eval.head
        return "teacher" if self.kd.method == "ctc" else "student"
