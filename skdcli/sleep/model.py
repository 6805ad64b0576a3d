"""SST: a Siamese Sleep Transformer on single-channel raw EEG (architecture: ours, see README).

    x (B, L, fs*30) -> patches of `patch_len` samples -> linear patch embedding (a strided conv)
    -> [CLS] + learned positions -> epoch transformer -> CLS vector per 30-s epoch
    -> + learned epoch positions -> sequence transformer over the L epochs -> linear head -> (B, L, 5)

"Siamese" = the two branches are this one module with shared weights, run on two views of the
same windows (recipe.py / loss.py); there is no second set of parameters.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import ModelConfig


def _encoder(cfg: ModelConfig, layers: int) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(
        cfg.d_model,
        cfg.n_heads,
        cfg.ff_mult * cfg.d_model,
        cfg.dropout,
        activation="gelu",
        batch_first=True,
        norm_first=True,
    )
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)


class SleepTransformer(nn.Module):
    def __init__(self, cfg: ModelConfig, samples_per_epoch: int, seq_len: int, num_classes: int = 5):
        super().__init__()
        if samples_per_epoch % cfg.patch_len:
            raise ValueError(f"model.patch_len={cfg.patch_len} must divide the {samples_per_epoch} samples of an epoch")
        self.samples_per_epoch, self.seq_len = samples_per_epoch, seq_len
        n_patches = samples_per_epoch // cfg.patch_len
        self.patch = nn.Conv1d(1, cfg.d_model, cfg.patch_len, stride=cfg.patch_len)
        self.cls = nn.Parameter(torch.zeros(1, 1, cfg.d_model))
        self.patch_pos = nn.Parameter(0.02 * torch.randn(1, n_patches + 1, cfg.d_model))
        self.epoch_encoder = _encoder(cfg, cfg.n_layers_epoch)
        self.epoch_norm = nn.LayerNorm(cfg.d_model)
        self.seq_pos = nn.Parameter(0.02 * torch.randn(1, seq_len, cfg.d_model))
        self.seq_encoder = _encoder(cfg, cfg.n_layers_seq) if cfg.n_layers_seq > 0 else None
        self.seq_norm = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n_epochs, s = x.shape
        tokens = self.patch(x.reshape(b * n_epochs, 1, s)).transpose(1, 2)  # (B*L, P, D)
        tokens = torch.cat([self.cls.expand(b * n_epochs, -1, -1), tokens], dim=1) + self.patch_pos
        epochs = self.epoch_norm(self.epoch_encoder(tokens)[:, 0]).reshape(b, n_epochs, -1)  # CLS per epoch
        seq = epochs + self.seq_pos
        if self.seq_encoder is not None:
            seq = self.seq_encoder(seq)
        return self.head(self.seq_norm(seq))  # (B, L, classes)
