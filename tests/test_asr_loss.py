"""The asr-ctc loss wiring against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from skdcli.asr_ctc.config import KDConfig
from skdcli.asr_ctc.loss import ctc_frame_kd_loss, ctc_loss, ctc_self_kd_objective


def test_ctc_loss_single_frame_by_hand() -> None:
    # One frame, target "1": the only alignment emits token 1, p = softmax([0, ln 3])[1] = 3/4.
    # CTC = -ln(3/4), divided by the target length 1.
    logits = torch.tensor([[[0.0, math.log(3.0)]]])
    loss = ctc_loss(logits, torch.tensor([1]), torch.tensor([[1]]), torch.tensor([1]))
    assert loss.item() == pytest.approx(-math.log(0.75), abs=1e-6)


def test_frame_kd_masks_padding_and_stops_gradient() -> None:
    # Utterance 0 has 2 valid frames, utterance 1 one valid frame (its 2nd frame is padding).
    # Frame KL with teacher p = [1/4, 3/4], student q = [1/2, 1/2]:
    #   KL = 1/4 ln(1/2) + 3/4 ln(3/2) = 0.130812...
    kl = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    teacher = torch.tensor([[[0.0, math.log(3.0)]] * 2, [[0.0, math.log(3.0)], [9.0, -9.0]]], requires_grad=True)
    student = torch.zeros(2, 2, 2, requires_grad=True)
    loss = ctc_frame_kd_loss(student, teacher, torch.tensor([2, 1]), KDConfig())
    # sequence_mean: each utterance's mean over its valid frames (kl and kl), then the batch mean.
    assert loss.item() == pytest.approx(kl, abs=1e-6)
    loss.backward()
    assert teacher.grad is None or torch.all(teacher.grad == 0)
    assert student.grad.abs().sum() > 0
    # T = 2 with the T^2 factor: p = softmax([0, ln3]/2), q uniform.
    p1 = math.sqrt(3) / (1 + math.sqrt(3))
    kl_t2 = 4 * ((1 - p1) * math.log((1 - p1) / 0.5) + p1 * math.log(p1 / 0.5))
    loss_t2 = ctc_frame_kd_loss(student, teacher, torch.tensor([2, 1]), KDConfig(temperature=2.0))
    assert loss_t2.item() == pytest.approx(kl_t2, abs=1e-6)


def test_objective_weights_by_alpha() -> None:
    # (1 - a) * CTC_T + a * (CTC_S + w * KD) with hand-set parts.
    torch.manual_seed(0)
    out = {
        "teacher_logits": torch.randn(2, 6, 5),
        "student_logits": torch.randn(2, 6, 5),
        "out_lengths": torch.tensor([6, 5]),
    }
    batch = {"targets": torch.tensor([[1, 2], [3, 0]]), "target_lengths": torch.tensor([2, 1])}
    kd = KDConfig(kd_weight=0.5)
    total, logs = ctc_self_kd_objective(out, batch, 0.3, kd)
    expected = 0.7 * logs["loss/ctc_teacher"] + 0.3 * (logs["loss/ctc_student"] + 0.5 * logs["loss/kd"])
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    plain, plain_logs = ctc_self_kd_objective(
        {k: v for k, v in out.items() if k != "student_logits"}, batch, 0.3, KDConfig(method="ctc")
    )
    assert plain.item() == pytest.approx(logs["loss/ctc_teacher"].item(), rel=1e-6)


def test_blank_frame_masking_drops_blank_teacher_frames() -> None:
    # Frame 0: teacher argmax is blank (id 0) -> dropped; frame 1: argmax non-blank -> kept.
    teacher = torch.tensor([[[5.0, 0.0], [0.0, math.log(3.0)]]])
    student = torch.zeros(1, 2, 2)
    kl = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    loss = ctc_frame_kd_loss(student, teacher, torch.tensor([2]), KDConfig(mask_blank_frames=True))
    assert loss.item() == pytest.approx(kl, abs=1e-6)


def test_interctc_is_standard_interctc_with_a_constant_weight() -> None:
    # Lee & Watanabe 2021 with one intermediate layer: (1 - 0.3) * CTC_T + 0.3 * CTC_S, whatever
    # the SKD schedule's a(e) is at that step (here 0.7, late in training).
    torch.manual_seed(0)
    out = {
        "teacher_logits": torch.randn(2, 6, 5),
        "student_logits": torch.randn(2, 6, 5),
        "out_lengths": torch.tensor([6, 5]),
    }
    batch = {"targets": torch.tensor([[1, 2], [3, 0]]), "target_lengths": torch.tensor([2, 1])}
    ctc_t = ctc_loss(out["teacher_logits"], out["out_lengths"], batch["targets"], batch["target_lengths"])
    ctc_s = ctc_loss(out["student_logits"], out["out_lengths"], batch["targets"], batch["target_lengths"])
    for alpha in (0.3, 0.7):
        inter, logs = ctc_self_kd_objective(out, batch, alpha, KDConfig(method="interctc"))
        assert inter.item() == pytest.approx(0.7 * ctc_t.item() + 0.3 * ctc_s.item(), rel=1e-6)
        assert logs["weight/interctc"] == 0.3 and "weight/alpha" not in logs and "loss/kd" not in logs
    other, _ = ctc_self_kd_objective(out, batch, 0.7, KDConfig(method="interctc", interctc_weight=0.5))
    assert other.item() == pytest.approx(0.5 * ctc_t.item() + 0.5 * ctc_s.item(), rel=1e-6)


def test_official_reduction_is_the_unofficial_codes_kl_div_mean() -> None:
    # Same batch as test_frame_kd_masks_padding_and_stops_gradient: 3 valid frames with
    # KL(p || q) = kl each, and one padded frame (utterance 1, frame 2) with teacher [9, -9].
    # F.kl_div(..., reduction="mean") sums the pointwise KL over all B*T*V = 2*2*2 = 8 elements,
    # padding included, and divides by 8.
    kl = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    p_pad = 1 / (1 + math.exp(-18))
    kl_pad = p_pad * math.log(p_pad / 0.5) + (1 - p_pad) * math.log((1 - p_pad) / 0.5)
    teacher = torch.tensor([[[0.0, math.log(3.0)]] * 2, [[0.0, math.log(3.0)], [9.0, -9.0]]], requires_grad=True)
    student = torch.zeros(2, 2, 2, requires_grad=True)
    lengths = torch.tensor([2, 1])
    official = ctc_frame_kd_loss(student, teacher, lengths, KDConfig(reduction="official"))
    assert official.item() == pytest.approx((3 * kl + kl_pad) / 8, abs=1e-6)
    official.backward()
    assert teacher.grad is None and student.grad.abs().sum() > 0
    # ours on the same batch: kl (sequence_mean) and kl / V over valid frames (element_mean)
    assert ctc_frame_kd_loss(student, teacher, lengths, KDConfig()).item() == pytest.approx(kl, abs=1e-6)
    element = ctc_frame_kd_loss(student, teacher, lengths, KDConfig(reduction="element_mean"))
    assert element.item() == pytest.approx(kl / 2, abs=1e-6)
    # Without padding, sequence_mean = V x official: the scale factor the config comments state.
    full = torch.tensor([2, 2])
    ratio = ctc_frame_kd_loss(student, teacher, full, KDConfig()) / ctc_frame_kd_loss(
        student, teacher, full, KDConfig(reduction="official")
    )
    assert ratio.item() == pytest.approx(2.0, rel=1e-6)
    # no T^2 factor: T = 2 gives the plain KL of the softened distributions, / 8
    p1 = math.sqrt(3) / (1 + math.sqrt(3))
    kl_t = (1 - p1) * math.log((1 - p1) / 0.5) + p1 * math.log(p1 / 0.5)
    p_pad_t = 1 / (1 + math.exp(-9))
    kl_pad_t = p_pad_t * math.log(p_pad_t / 0.5) + (1 - p_pad_t) * math.log((1 - p_pad_t) / 0.5)
    soft = ctc_frame_kd_loss(student, teacher, lengths, KDConfig(reduction="official", temperature=2.0, t2_scale=False))
    assert soft.item() == pytest.approx((3 * kl_t + kl_pad_t) / 8, abs=1e-6)


def test_official_reduction_config_checks() -> None:
    from skdcli.asr_ctc.config import AsrCtcConfig
    from skdcli.engine.config import validate_config
    from skdcli.engine.errors import SkdError

    cfg = AsrCtcConfig()
    cfg.kd.reduction = "official"
    validate_config(cfg)
    assert "kd.reduction=official" in cfg.system_label
    cfg.kd.mask_blank_frames = True
    with pytest.raises(SkdError, match="cannot drop blank frames"):
        validate_config(cfg)
    cfg.kd.mask_blank_frames, cfg.kd.temperature = False, 2.0
    with pytest.raises(SkdError, match="no T\\^2 factor"):
        validate_config(cfg)
    cfg.kd.method = "interctc"
    cfg.kd.temperature = 1.0
    assert "constant weight 0.3" in cfg.system_label
