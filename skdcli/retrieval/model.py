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
    def __init__(self, text_dim: int, img_dim: int, proj_dim: int, vocab_size: int, word_dim: int,
                 temperature: float = 0.07, learn_temperature: bool = True):
        super().__init__()
        self.text_proj = nn.Linear(text_dim, proj_dim)
        self.vision_proj = nn.Linear(img_dim, proj_dim)
        self.sparse_proj = nn.Linear(proj_dim, word_dim)  # W_p, b_p (new)
        self.sparse_norm = nn.LayerNorm(word_dim)  # LN (new)
        self.vocab_proj = nn.Linear(word_dim, vocab_size, bias=False)  # W_voc (from E)
        self.temp = nn.Parameter(torch.tensor(float(temperature)), requires_grad=learn_temperature)

    def init_from_encoder(self, init: dict[str, torch.Tensor], vocab: bool, proj: bool) -> list[str]:
        """Copy E into W_voc and the encoder's projections into text_proj / vision_proj (shapes must match)."""
        done = []
        with torch.no_grad():
            if vocab and "E" in init:
                self.vocab_proj.weight.copy_(init["E"])
                done.append("vocab_proj<-E")
            if proj:
                for name in ("text_proj", "vision_proj"):
                    if f"{name}.weight" in init and init[f"{name}.weight"].shape == getattr(self, name).weight.shape:
                        layer = getattr(self, name)
                        layer.weight.copy_(init[f"{name}.weight"])
                        if f"{name}.bias" in init:
                            layer.bias.copy_(init[f"{name}.bias"])
                        else:  # CLIP's projections have no bias
                            layer.bias.zero_()
                        done.append(f"{name}<-encoder")
        return done

    def sparse(self, u: torch.Tensor) -> torch.Tensor:
        return torch.log1p(torch.relu(self.vocab_proj(self.sparse_norm(self.sparse_proj(u)))))

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
