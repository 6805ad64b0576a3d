"""Loss wiring of CTC self-KD (Kim, Kim & Lee 2024), on the engine's primitives.

    L = (1 - a(e)) * CTC(teacher) + a(e) * (CTC(student) + w * KD(sg(teacher) -> student))

teacher = full encoder + CTC head, student = first l layers + its CTC head, one forward pass.
KD is the frame-level KL between the two heads' posteriors; frames correspond one to one
because the two heads share the encoder's time axis. Form and a(e) schedule: the unofficial
reimplementation (see recipes/asr_ctc/README.md for what is the paper's, the code's and ours).

The InterCTC comparison (kd.method=interctc) is the standard intermediate CTC of Lee & Watanabe
(ICASSP 2021): L = (1 - lambda) * CTC(teacher) + lambda * CTC(student), lambda constant.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..engine.losses import kd_kl_loss
from ..engine.teachers import DetachedPrediction
from .config import KDConfig
from .model import lengths_to_padding_mask


def ctc_loss(
    logits: torch.Tensor, out_lengths: torch.Tensor, targets: torch.Tensor, target_lengths: torch.Tensor
) -> torch.Tensor:
    """Standard CTC (blank = 0), each utterance's loss divided by its target length, batch mean.
    Computed in float32 even under AMP (the CTC forward-backward underflows in half precision)."""
    log_probs = F.log_softmax(logits.float(), dim=-1).transpose(0, 1)  # (T, B, V)
    return F.ctc_loss(log_probs, targets, out_lengths, target_lengths, blank=0, reduction="mean", zero_infinity=True)


def ctc_frame_kd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, out_lengths: torch.Tensor, kd: KDConfig
) -> torch.Tensor:
    """Frame-level KL(teacher || student) over the vocabulary, on valid (unpadded) frames.

    The teacher is the same forward pass at full depth: an engine ``DetachedPrediction`` signal
    (stop-gradient unless kd.stop_gradient=false, reported as harmful: recipes/asr_ctc/README.md)."""
    teacher = DetachedPrediction(kd.stop_gradient)(teacher_logits)
    if kd.reduction == "official":
        return official_kl_div_mean(student_logits, teacher, kd.temperature)
    mask = ~lengths_to_padding_mask(out_lengths, student_logits.shape[1])
    if kd.mask_blank_frames:
        mask = mask & (teacher.detach().argmax(-1) != 0)
    return kd_kl_loss(
        student_logits.float(),
        teacher.float(),
        kd.temperature,
        t2_scale=kd.t2_scale,
        mask=mask,
        reduction=kd.reduction,
        detach_teacher=False,
    )


def official_kl_div_mean(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """The KD term of huutuongtu/skd-ctc @ ac779c8 (train.py), term for term:
    ``F.kl_div(log_softmax(z_S / T), softmax(z_T / T), reduction="mean")``.

    "mean" divides the summed pointwise KL by every element of the (B, T', V) tensor: padded
    frames are included (their posteriors are whatever the model emits there) and the per-frame
    KL is divided by V. No T^2 factor. The caller detaches the teacher (DetachedPrediction).
    Spelled as sum / numel: PyTorch warns that "mean" will become "batchmean" in a future release,
    and this must stay the value the unofficial code computed."""
    log_q = F.log_softmax(student_logits.float() / temperature, dim=-1)
    p = F.softmax(teacher_logits.float() / temperature, dim=-1)
    return F.kl_div(log_q, p, reduction="sum") / p.numel()


def ctc_self_kd_objective(
    out: dict[str, torch.Tensor], batch: dict, alpha: float, kd: KDConfig
) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
    """Total loss and its logged parts for kd.method in {skd, interctc, ctc}."""
    lens = out["out_lengths"]
    teacher_ctc = ctc_loss(out["teacher_logits"], lens, batch["targets"], batch["target_lengths"])
    if kd.method == "ctc":
        return teacher_ctc, {"loss/ctc_teacher": teacher_ctc}
    student_ctc = ctc_loss(out["student_logits"], lens, batch["targets"], batch["target_lengths"])
    logs: dict[str, torch.Tensor | float] = {"loss/ctc_teacher": teacher_ctc, "loss/ctc_student": student_ctc}
    if kd.method == "interctc":
        # Standard InterCTC: a constant weight, not the SKD schedule a(e).
        weight = kd.interctc_weight
        logs["weight/interctc"] = weight
        return (1.0 - weight) * teacher_ctc + weight * student_ctc, logs
    kd_term = ctc_frame_kd_loss(out["student_logits"], out["teacher_logits"], lens, kd)
    logs["loss/kd"], logs["weight/alpha"] = kd_term, alpha
    return (1.0 - alpha) * teacher_ctc + alpha * (student_ctc + kd.kd_weight * kd_term), logs
