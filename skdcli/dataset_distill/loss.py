"""Losses of the two stages.

AC-WGAN-GP (DiM gen_condense.py / pool_match.py, vimar-gu/DiM @ 36573394):
    L_D = mean D_src(fake) - mean D_src(real) + CE(D_cls(fake), y_fake) + CE(D_cls(real), y_real) + 10 * GP
    L_G = -mean D_src(G(z, y)) + CE(D_cls(G(z, y)), y)
    GP  = mean_b (||grad_x D_src(x_hat)||_2 - 1)^2,  x_hat = a x_real + (1 - a) x_fake,  a ~ U[0, 1) per image

Logit matching of stage 2, f = the pool model, l_O = f(A(x_real)) (teacher, no gradient),
l_S = f(A(G(z, y_real))):
    DiM (--match logit):   mean_{b,c} (log_softmax(l_O) - log_softmax(l_S))^2      (DiM weights it 0.01)
    self-KD (the paper's term as reconstructed in recipes/dataset_distill/README.md; ours where unverified):
                           T^2 * KL(softmax(Z(l_O)/T) || softmax(Z(l_S)/T)), batch mean,
                           Z = per-row logit standardisation (Sun et al., CVPR 2024)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..engine.losses import kd_kl_loss


def gradient_penalty(discriminator: nn.Module, real: Tensor, fake: Tensor, alpha: Tensor | None = None) -> Tensor:
    """WGAN-GP (Gulrajani et al. 2017) on the source head, with a graph for the double backward."""
    if alpha is None:
        alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
    mixed = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    source, _ = discriminator(mixed)
    (grad,) = torch.autograd.grad(source.sum(), mixed, create_graph=True)
    return ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()


def discriminator_loss(
    source_fake: Tensor,
    class_fake: Tensor,
    labels_fake: Tensor,
    source_real: Tensor,
    class_real: Tensor,
    labels_real: Tensor,
    penalty: Tensor,
    gp_weight: float = 10.0,
    class_weight: float = 1.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    wasserstein = source_fake.mean() - source_real.mean()
    ce = F.cross_entropy(class_fake, labels_fake) + F.cross_entropy(class_real, labels_real)
    terms = {"loss/d_wasserstein": wasserstein, "loss/d_class": ce, "loss/d_gp": penalty}
    return wasserstein + class_weight * ce + gp_weight * penalty, terms


def generator_adversarial_loss(
    source: Tensor, class_logits: Tensor, labels: Tensor, class_weight: float = 1.0
) -> tuple[Tensor, dict[str, Tensor]]:
    adversarial = -source.mean()
    ce = F.cross_entropy(class_logits, labels)
    return adversarial + class_weight * ce, {"loss/g_adversarial": adversarial, "loss/g_class": ce}


def dim_logit_mse(real_logits: Tensor, syn_logits: Tensor) -> Tensor:
    """DiM's logit matching without its 0.01 factor: mean over batch and classes of the squared
    difference of log-softmax outputs. ``real_logits`` is treated as a constant target."""
    return (F.log_softmax(real_logits.detach(), dim=1) - F.log_softmax(syn_logits, dim=1)).pow(2).mean()


def skd_logit_loss(
    real_logits: Tensor, syn_logits: Tensor, temperature: float = 4.0, standardize: bool = True
) -> Tensor:
    """Self-KD logit alignment: the pool model's own standardised logits on real images teach its
    logits on generated images (forward KL, T^2 factor, batch mean); the teacher is detached."""
    return kd_kl_loss(
        syn_logits,
        real_logits,
        temperature,
        t2_scale=True,
        direction="forward",
        reduction="batchmean",
        detach_teacher=True,
        standardize=standardize,
    )
