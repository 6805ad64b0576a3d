"""CTC encoder with a self-KD sub-model (Kim, Kim & Lee 2024).

One encoder, two CTC heads: the teacher head reads the last layer L, the student head reads layer
l < L. Student and teacher share layers 1..l and the time axis, so their frame posteriors are
compared one to one. Two encoder families:

- ``TransformerEncoder``: 80-dim fbank -> SpecAugment (training only) -> 2x Conv2d subsampling
  (4x in time) -> sinusoidal positions -> pre-norm Transformer layers. Trains from scratch on CPU.
- ``HFEncoder``: a Hugging Face HuBERT / WavLM model from a local directory (the paper's
  backbones), fed the normalised waveform; the student taps the output of transformer layer l
  with a forward hook, as the reference code's ``hidden_states[l]``.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
import torchaudio
from torch import nn

from ..engine.errors import SkdError
from .config import AsrCtcConfig


def lengths_to_padding_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """True at padded positions, shape (B, max_len)."""
    return torch.arange(max_len, device=lengths.device)[None, :] >= lengths[:, None]


class SpecAugment(nn.Module):
    """Per-utterance frequency and time masking (torchaudio), training mode only."""

    def __init__(self, freq_masks: int, freq_width: int, time_masks: int, time_width: int):
        super().__init__()
        self.freq = nn.ModuleList(
            torchaudio.transforms.FrequencyMasking(freq_width, iid_masks=True) for _ in range(freq_masks)
        )
        self.time = nn.ModuleList(
            torchaudio.transforms.TimeMasking(time_width, iid_masks=True) for _ in range(time_masks)
        )

    def forward(self, feats: torch.Tensor) -> torch.Tensor:  # (B, T, F)
        if not self.training:
            return feats
        x = feats.transpose(1, 2).unsqueeze(1)  # (B, 1, F, T) as torchaudio expects
        for mask in [*self.freq, *self.time]:
            x = mask(x)
        return x.squeeze(1).transpose(1, 2)


class ConvSubsampling(nn.Module):
    """Two stride-2 3x3 convolutions: T -> ((T-1)//2 - 1)//2, then a projection to d_model."""

    def __init__(self, num_mel_bins: int, channels: int, d_model: int):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, channels, 3, 2), nn.ReLU(), nn.Conv2d(channels, channels, 3, 2), nn.ReLU()
        )
        freq = ((num_mel_bins - 1) // 2 - 1) // 2
        self.proj = nn.Linear(channels * freq, d_model)

    @staticmethod
    def output_lengths(lengths: torch.Tensor) -> torch.Tensor:
        return ((lengths - 1) // 2 - 1) // 2

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.conv(feats.unsqueeze(1))  # (B, C, T', F')
        # flatten, not reshape(b, t, c*f): keeps batch and time symbolic under torch.export
        return self.proj(x.transpose(1, 2).flatten(2)), self.output_lengths(lengths)


class EncoderLayer(nn.Module):
    """Pre-norm Transformer layer on ``F.scaled_dot_product_attention``.

    Not ``nn.TransformerEncoderLayer``: its attention folds batch and heads into one dimension
    with a view, which makes torch.export guard the batch size (an exported model then refuses a
    batch of 1). Splitting heads with ``unflatten`` keeps batch and time symbolic.
    """

    def __init__(self, d_model: int, num_heads: int, ff_dim: int, dropout: float):
        super().__init__()
        self.num_heads, self.dropout_p = num_heads, dropout
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, ff_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff_dim, d_model))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        d_head = x.shape[-1] // self.num_heads
        q, k, v = self.qkv(self.norm1(x)).unflatten(-1, (3, self.num_heads, d_head)).permute(2, 0, 3, 1, 4)
        keep = ~padding_mask[:, None, None, :]  # (B, 1, 1, T): True = attend to this key
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, dropout_p=self.dropout_p if self.training else 0.0)
        x = x + self.dropout(self.out(y.transpose(1, 2).flatten(2)))
        return x + self.dropout(self.ff(self.norm2(x)))


class TransformerEncoder(nn.Module):
    def __init__(self, cfg: AsrCtcConfig):
        super().__init__()
        m = cfg.model
        sa = m.spec_augment
        self.spec_augment = (
            SpecAugment(sa.freq_masks, sa.freq_width, sa.time_masks, sa.time_width) if sa.enabled else None
        )
        self.subsample = ConvSubsampling(cfg.data.num_mel_bins, m.conv_channels, m.d_model)
        self.dropout = nn.Dropout(m.dropout)
        self.layers = nn.ModuleList(
            EncoderLayer(m.d_model, m.num_heads, m.ff_dim, m.dropout) for _ in range(m.num_layers)
        )
        # Pre-norm layers leave the residual stream unnormalised: each CTC head gets its own norm.
        self.d_model = m.d_model
        self.num_layers = m.num_layers

    def truncated(self, num_layers: int) -> "TransformerEncoder":
        """Same weights, only the first ``num_layers`` layers (the deployable sub-model)."""
        import copy

        small = copy.copy(self)
        small._modules = dict(self._modules)
        small.layers = nn.ModuleList(list(self.layers)[:num_layers])
        small.num_layers = num_layers
        return small

    def positions(self, t: int, device: torch.device) -> torch.Tensor:
        pos = torch.arange(t, device=device, dtype=torch.float32)[:, None]
        div = torch.exp(
            torch.arange(0, self.d_model, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / self.d_model)
        )
        pe = torch.zeros(t, self.d_model, device=device)
        pe[:, 0::2] = torch.sin(pos * div)
        pe[:, 1::2] = torch.cos(pos * div)
        return pe

    def forward(
        self, feats: torch.Tensor, lengths: torch.Tensor, taps: tuple[int, ...]
    ) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
        """Run layers 1..max(taps); return {layer: hidden (B, T', D)} for the tapped layers."""
        if self.spec_augment is not None:
            feats = self.spec_augment(feats)
        x, out_lengths = self.subsample(feats, lengths)
        x = self.dropout(x * math.sqrt(self.d_model) + self.positions(x.shape[1], x.device).to(x.dtype))
        pad = lengths_to_padding_mask(out_lengths, x.shape[1])
        hidden = {}
        for i, layer in enumerate(self.layers[: max(taps)], start=1):
            x = layer(x, pad)
            if i in taps:
                hidden[i] = x
        return hidden, out_lengths


def freeze_feature_encoder(model: nn.Module, path: Path | str = "") -> None:
    """Freeze the convolutional waveform front-end of a HuBERT / WavLM / wav2vec 2.0 base model.

    Not ``model.freeze_feature_encoder()``: transformers defines it on ``WavLMModel`` and on the
    ``*ForCTC`` heads but not on ``HubertModel``, so a guard on that method silently left
    HuBERT's front-end trainable. Every one of these models keeps the front-end in
    ``feature_extractor``; ``_requires_grad = False`` is what transformers' own
    ``_freeze_parameters`` sets, so the front-end's forward stops asking for input gradients.
    """
    extractor = getattr(model, "feature_extractor", None)
    if not isinstance(extractor, nn.Module):
        raise SkdError(
            f"{type(model).__name__} has no convolutional feature encoder (feature_extractor) to "
            "freeze; set model.freeze_feature_encoder=false",
            path or None,
        )
    for param in extractor.parameters():
        param.requires_grad_(False)
    if hasattr(extractor, "_requires_grad"):
        extractor._requires_grad = False


class HFEncoder(nn.Module):
    """HuBERT / WavLM (transformers) loaded from a local directory; never downloads.

    Taps follow ``output_hidden_states``: tap i is ``hidden_states[i]``, the reference code's
    student tap. For the last layer of a stable-layer-norm model (HuBERT-Large, WavLM-Large:
    ``config.do_stable_layer_norm``) that is the output of the encoder's final LayerNorm, which
    runs after the layer stack and is what the model's own CTC head (``HubertForCTC``) reads;
    the output of layer L itself is not. Post-LN models (Base) have no such final norm.
    """

    def __init__(self, hf_model: nn.Module, final_norm: bool | None = None):
        super().__init__()
        self.model = hf_model
        self.num_layers = len(hf_model.encoder.layers)
        self.d_model = hf_model.config.hidden_size
        # final_norm=False for a truncated sub-model of a stable-layer-norm model: its last layer
        # is an intermediate layer of the full model, read before the norm (hidden_states[l]).
        self.final_norm = (
            bool(getattr(hf_model.config, "do_stable_layer_norm", False)) if final_norm is None else final_norm
        )
        self._taps: dict[int | str, torch.Tensor] = {}
        # Forward hooks tap layer outputs without relying on how a transformers version
        # assembles `hidden_states`: tap 0 is the input of layer 1 (the embedding after the
        # positional convolution): the output of the encoder's dropout, which HuBERT / WavLM
        # apply right before their layers.
        hf_model.encoder.dropout.register_forward_hook(self._make_hook(0))
        for i, layer in enumerate(hf_model.encoder.layers, start=1):
            layer.register_forward_hook(self._make_hook(i))
        if self.final_norm:
            hf_model.encoder.layer_norm.register_forward_hook(self._make_hook("final_norm"))

    @classmethod
    def from_config(cls, cfg: AsrCtcConfig) -> "HFEncoder":
        from transformers import AutoConfig, AutoModel

        path = Path(cfg.model.pretrained)
        if not (path / "config.json").is_file():
            raise SkdError("not a Hugging Face model directory (no config.json)", path)
        if any((path / n).is_file() for n in ("model.safetensors", "pytorch_model.bin")):
            model = AutoModel.from_pretrained(path, local_files_only=True)
        else:  # a config alone: random initialisation (tests, or training from scratch)
            from ..engine.console import console

            console.print(
                f"[yellow]warning:[/] {path} has config.json but no model.safetensors / pytorch_model.bin: "
                "the encoder starts from random weights"
            )
            model = AutoModel.from_config(AutoConfig.from_pretrained(path, local_files_only=True))
        if cfg.model.freeze_feature_encoder:
            freeze_feature_encoder(model, path)
        return cls(model)

    def _make_hook(self, index: int):
        def hook(module, inputs, output):
            self._taps[index] = output[0] if isinstance(output, tuple) else output

        return hook

    def forward(
        self, wave: torch.Tensor, lengths: torch.Tensor, taps: tuple[int, ...]
    ) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
        mask = (~lengths_to_padding_mask(lengths, wave.shape[1])).long()
        self._taps = {}
        self.model(wave, attention_mask=mask)
        out_lengths = self.model._get_feat_extract_output_lengths(lengths)
        # LayerDrop (HuBERT Base ships layerdrop=0.1) skips layers at random in training; a
        # skipped layer passes its input through, so its tap is the previous one, as in HF.
        for i in range(1, max(taps) + 1):
            self._taps.setdefault(i, self._taps[i - 1])
        if self.final_norm:  # hidden_states[L] of a stable-layer-norm model is after the final LayerNorm
            self._taps[self.num_layers] = self._taps["final_norm"]
        hidden = {i: self._taps[i] for i in taps}
        self._taps = {}
        return hidden, out_lengths

    def truncated(self, num_layers: int) -> "HFEncoder":
        """A separate, smaller model with the first ``num_layers`` layers (the deployable sub-model)."""
        import copy

        from transformers import AutoModel

        small_cfg = copy.deepcopy(self.model.config)
        small_cfg.num_hidden_layers = num_layers
        small = AutoModel.from_config(small_cfg)
        missing, _ = small.load_state_dict(self.model.state_dict(), strict=False)
        if missing:
            raise SkdError(f"cannot truncate the encoder: missing weights {missing[:3]}")
        return HFEncoder(small.eval(), final_norm=self.final_norm and num_layers == self.num_layers)


class CTCHead(nn.Module):
    def __init__(self, d_model: int, vocab_size: int, norm: bool):
        super().__init__()
        self.norm = nn.LayerNorm(d_model) if norm else nn.Identity()
        self.proj = nn.Linear(d_model, vocab_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.proj(self.norm(hidden))


class CTCSelfKDModel(nn.Module):
    """Encoder + teacher head (layer L) + student head (layer l), one forward pass for both."""

    def __init__(self, cfg: AsrCtcConfig, vocab_size: int):
        super().__init__()
        self.encoder = HFEncoder.from_config(cfg) if cfg.model.encoder == "hf" else TransformerEncoder(cfg)
        L = self.encoder.num_layers
        if not 1 <= cfg.model.student_layer < L:
            raise SkdError(f"model.student_layer must be in [1, {L - 1}] for this {L}-layer encoder")
        self.student_layer, self.teacher_layer = cfg.model.student_layer, L
        norm = cfg.model.encoder == "transformer"  # pre-norm residual stream needs a final norm
        self.teacher_head = CTCHead(self.encoder.d_model, vocab_size, norm)
        self.with_student = cfg.kd.method != "ctc"
        if self.with_student:
            self.student_head = (
                self.teacher_head if cfg.model.share_ctc_head else CTCHead(self.encoder.d_model, vocab_size, norm)
            )

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> dict[str, torch.Tensor]:
        taps = (self.student_layer, self.teacher_layer) if self.with_student else (self.teacher_layer,)
        hidden, out_lengths = self.encoder(features, lengths, taps)
        out = {"teacher_logits": self.teacher_head(hidden[self.teacher_layer]), "out_lengths": out_lengths}
        if self.with_student:
            out["student_logits"] = self.student_head(hidden[self.student_layer])
        return out


class CTCInference(nn.Module):
    """What gets exported: features (B, T, F) or waveform (B, S) + lengths -> (log_probs, lengths).

    For the student head only layers 1..l run: the deployable sub-model is genuinely smaller.
    """

    def __init__(self, model: CTCSelfKDModel, head: str):
        super().__init__()
        if head == "student" and not model.with_student:
            raise SkdError("this run has no student head (kd.method=ctc); export with eval.head=teacher")
        self.layer = model.student_layer if head == "student" else model.teacher_layer
        enc = model.encoder
        self.encoder = enc.truncated(self.layer)
        self.head = model.student_head if head == "student" else model.teacher_head

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, out_lengths = self.encoder(features, lengths, (self.layer,))
        return torch.log_softmax(self.head(hidden[self.layer]).float(), dim=-1), out_lengths
