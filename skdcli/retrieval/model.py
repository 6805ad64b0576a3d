"""The trained part (the official code's `RetrievalProjModel`): dense projections + a shared
vocabulary-space sparse head, on top of cached pre-projection embeddings.

    u_t = normalize(text_proj(h_t))          u_i = normalize(vision_proj(h_i))      (dense, proj_dim)
    z   = log1p(relu(W_voc · LN(W_p · u + b_p)))                                    (sparse, V)

The sparse head reads the already-normalised dense vector u (official code), so the sparse losses
also train text_proj / vision_proj. W_voc starts as a detached clone of the text encoder's word
embeddings E (not tied to E). A learnable temperature tau scales the dense score.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SparseDenseRetriever(nn.Module):
    def __init__(
        self,
        text_dim: int,
        img_dim: int,
        proj_dim: int,
        vocab_size: int,
        word_dim: int,
        temperature: float = 0.07,
        learn_temperature: bool = True,
        vocab_keep: torch.Tensor | None = None,
    ):
        super().__init__()
        self.text_proj = nn.Linear(text_dim, proj_dim)
        self.vision_proj = nn.Linear(img_dim, proj_dim)
        self.sparse_proj = nn.Linear(proj_dim, word_dim)  # W_p, b_p (new)
        self.sparse_norm = nn.LayerNorm(word_dim)  # LN (new)
        self.vocab_proj = nn.Linear(word_dim, vocab_size, bias=False)  # W_voc (from E)
        self.temp = nn.Parameter(torch.tensor(float(temperature)), requires_grad=learn_temperature)
        # 1 = the term may carry weight, 0 = masked (special tokens, stop-list, DF cap; ours, README §2).
        # Derived from the config and the prepared dataset, so not saved with the weights.
        keep = torch.ones(vocab_size) if vocab_keep is None else vocab_keep.float()
        if keep.shape != (vocab_size,):
            raise ValueError(f"vocab_keep has shape {tuple(keep.shape)}, expected ({vocab_size},)")
        self.register_buffer("vocab_keep", keep, persistent=False)

    def load_init(self, tensors: dict[str, torch.Tensor]) -> None:
        """Copy checked initial tensors (``init_weights.init_tensors_for``: names are this module's parameter
        names, shapes already equal) into the layers."""
        params = dict(self.named_parameters())
        with torch.no_grad():
            for name, value in tensors.items():
                if params[name].shape != value.shape:  # init_tensors_for checked this; a guard, not a path
                    raise ValueError(f"{name}: {tuple(value.shape)} != {tuple(params[name].shape)}")
                params[name].copy_(value)

    def sparse(self, u: torch.Tensor) -> torch.Tensor:
        # In fp32 even under autocast: bf16 sparse logits are off by up to ~0.1 (README §3), and the
        # sparse score has no temperature to absorb it. The dense branch keeps the autocast dtype.
        with torch.autocast(u.device.type, enabled=False):
            logits = self.vocab_proj(self.sparse_norm(self.sparse_proj(u.float())))
            return torch.log1p(torch.relu(logits)) * self.vocab_keep

    def encode_text(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u = F.normalize(self.text_proj(h), dim=-1)
        return u, self.sparse(u)

    def encode_image(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u = F.normalize(self.vision_proj(h), dim=-1)
        return u, self.sparse(u)

    def temperature(self) -> torch.Tensor:
        # official: tau clamped to [0.001, 0.5] at every forward pass (in place, outside autograd)
        with torch.no_grad():
            self.temp.clamp_(0.001, 0.5)
        return self.temp

    def forward(self, text_emb: torch.Tensor, img_emb: torch.Tensor) -> dict[str, torch.Tensor]:
        u_t, z_t = self.encode_text(text_emb)
        u_i, z_i = self.encode_image(img_emb)
        return {"u_t": u_t, "z_t": z_t, "u_i": u_i, "z_i": z_i, "temp": self.temperature()}


class RetrievalHeads(nn.Module):
    """What `export` writes: (text embeddings, image embeddings) -> (u_t, z_t, u_i, z_i)."""

    def __init__(self, model: SparseDenseRetriever):
        super().__init__()
        self.model = model

    def forward(self, text_emb: torch.Tensor, img_emb: torch.Tensor):
        u_t, z_t = self.model.encode_text(text_emb)
        u_i, z_i = self.model.encode_image(img_emb)
        return u_t, z_t, u_i, z_i
