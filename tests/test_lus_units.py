"""lus: losses, schedules, KNN, VLAD, metrics and augmentation against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from skdcli.lus.augment import gaussian_kernels, resized_crop, sample_crop_boxes, solarize
from skdcli.lus.config import SCORE_TO_CLASS, DinoConfig, VideoConfig
from skdcli.lus.data import sample_frame_indices
from skdcli.lus.loss import (
    DinoCentre,
    clip_per_parameter,
    cosine_value,
    dino_loss,
    knn_scores,
    teacher_momentum,
    teacher_temperature,
    weight_decay_at,
)
from skdcli.lus.metrics import classification_metrics, mean_std
from skdcli.lus.model import MeanPooling, VladPooling

LN3 = math.log(3.0)


def test_dino_loss_matches_hand_computation():
    # B = 1, K = 2, crops = [global 1, global 2, local]; teacher temp 1, student temp 1.
    # teacher raw [1, ln3] minus centre [1, 0] -> [0, ln3] -> q0 = [1/4, 3/4]; teacher 2 raw [1, 0] -> q1 = [1/2, 1/2]
    teacher = torch.tensor([[1.0, LN3], [1.0, 0.0]])
    center = torch.tensor([1.0, 0.0])
    # student: p(g1) = [1/2, 1/2], p(g2) = [3/4, 1/4], p(local) = [1/4, 3/4]
    student = torch.tensor([[0.0, 0.0], [LN3, 0.0], [0.0, LN3]])
    loss, q = dino_loss(student, teacher, center, student_temp=1.0, teacher_temp=1.0)

    def h(q_, p_):
        return -sum(a * math.log(b) for a, b in zip(q_, p_))

    q0, q1 = [0.25, 0.75], [0.5, 0.5]
    p0, p1, p2 = [0.5, 0.5], [0.75, 0.25], [0.25, 0.75]
    expected = (h(q0, p1) + h(q0, p2) + h(q1, p0) + h(q1, p2)) / 4  # pairs (u, v), v != u
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert torch.allclose(q, torch.tensor([[[0.25, 0.75]], [[0.5, 0.5]]]), atol=1e-6)


def test_dino_loss_temperatures_scale_logits():
    teacher = torch.tensor([[0.0, 0.04 * LN3], [0.0, 0.0]])
    student = torch.tensor([[0.0, 0.0], [0.1 * LN3, 0.0], [0.0, 0.1 * LN3]])
    scaled, _ = dino_loss(student, teacher, torch.zeros(2), student_temp=0.1, teacher_temp=0.04)
    plain, _ = dino_loss(student / 0.1, teacher / 0.04, torch.zeros(2), 1.0, 1.0)
    assert scaled.item() == pytest.approx(plain.item(), abs=1e-6)


def test_centre_update_all_and_per_position_quirk():
    # 2 global crops x B = 2, K = 2
    teacher = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]])  # rows: g1b0, g1b1, g2b0, g2b1
    c = DinoCentre(2, momentum=0.9, mode="all")
    c.update(teacher)
    assert torch.allclose(c.value(), torch.tensor([0.1 * 4.0, 0.1 * 5.0]))  # mean of all four rows = [4, 5]
    c.update(teacher)
    assert torch.allclose(c.value(), torch.tensor([0.9 * 0.4 + 0.4, 0.9 * 0.5 + 0.5]))
    q = DinoCentre(2, momentum=0.9, mode="per_position")
    q.update(teacher)  # per batch slot: b0 -> mean([1,2],[5,6]) = [3,4]; b1 -> [5,6]
    assert torch.allclose(q.value(), torch.tensor([[0.3, 0.4], [0.5, 0.6]]))
    state = q.state_dict()
    r = DinoCentre(2, momentum=0.9, mode="per_position")
    r.load_state_dict(state)
    assert torch.equal(r.value(), q.value())


def test_schedules():
    d = DinoConfig(
        epoch_steps=10,
        warmup_teacher_temp_epochs=3,
        warmup_teacher_temp=0.04,
        teacher_temp=0.06,
        momentum_teacher=0.998,
        weight_decay_end=0.5,
    )
    assert [teacher_temperature(d, s) for s in (0, 9, 10, 19, 20, 500)] == pytest.approx(
        [0.04, 0.04, 0.05, 0.05, 0.06, 0.06]
    )
    assert teacher_momentum(d, 0, 100) == pytest.approx(0.998)
    assert teacher_momentum(d, 50, 100) == pytest.approx(0.999)
    assert teacher_momentum(d, 100, 100) == pytest.approx(1.0)
    assert weight_decay_at(0.1, d, 0, 100) == pytest.approx(0.1)
    assert weight_decay_at(0.1, d, 50, 100) == pytest.approx(0.3)
    assert cosine_value(0.1, 0.5, 25, 100) == pytest.approx(0.5 + 0.5 * (0.1 - 0.5) * (1 + math.cos(math.pi / 4)))


def test_per_parameter_clip():
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    a.grad, b.grad = torch.tensor([6.0, 8.0]), torch.tensor([0.3, 0.4])  # norms 10 and 0.5
    clip_per_parameter([a, b], 3.0)
    assert torch.allclose(a.grad.norm(), torch.tensor(3.0), atol=1e-5)
    assert torch.equal(b.grad, torch.tensor([0.3, 0.4]))


def test_knn_votes_by_hand():
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    labels = torch.tensor([0, 1, 1])
    test = torch.tensor([[1.0, 0.1]])
    votes = knn_scores(train, labels, test, k_max=3, temperature=0.1, num_classes=2)
    s = [1 / math.sqrt(1.01), 1.1 / (math.sqrt(2) * math.sqrt(1.01)), 0.1 / math.sqrt(1.01)]  # cosine sims
    w = [math.exp(x / 0.1) for x in s]
    assert votes[0, 0].tolist() == pytest.approx([w[0], 0.0], rel=1e-5)
    assert votes[1, 0].tolist() == pytest.approx([w[0], w[1]], rel=1e-5)
    assert votes[2, 0].tolist() == pytest.approx([w[0], w[1] + w[2]], rel=1e-5)
    # excluded neighbours (same patient) never vote
    ex = knn_scores(train, labels, test, 1, 0.1, 2, exclude=torch.tensor([[True, False, False]]))
    assert ex[0, 0].tolist() == pytest.approx([0.0, w[1]], rel=1e-5)


def _vlad_by_hand(x, c, w, b, frame_weights):
    """Plain-python VLAD: x (T, D), c (K, D), assignment weights w (K, D), bias b (K,)."""
    x = [np.asarray(v) / np.linalg.norm(v) for v in x]
    k_, d_ = c.shape
    nu = np.zeros((k_, d_))
    for t, xt in enumerate(x):
        logits = w @ xt + b
        a = np.exp(logits - logits.max())
        a /= a.sum()
        for k in range(k_):
            nu[k] += frame_weights[t] * a[k] * (xt - c[k])
    nu = nu / np.linalg.norm(nu, axis=1, keepdims=True)
    flat = nu.reshape(-1)
    return flat / np.linalg.norm(flat)


@pytest.mark.parametrize("bias_norm", ["squared", "plain"])
def test_netvlad_matches_hand_computation(bias_norm):
    cfg = VideoConfig(num_clusters=2, alpha=1.0, bias_norm=bias_norm)
    pool = VladPooling(2, cfg, frame_attention=False)
    c = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    pool.init_assignment(c)
    assert torch.allclose(pool.assign.weight, 2 * c)
    expected_bias = [-1.0, -4.0] if bias_norm == "squared" else [-1.0, -2.0]  # -alpha ||c||^2 vs -alpha ||c||
    assert pool.assign.bias.tolist() == pytest.approx(expected_bias)
    x = torch.tensor([[[3.0, 4.0], [1.0, -1.0]]])
    out, beta = pool(x)
    hand = _vlad_by_hand(x[0].numpy(), c.numpy(), 2 * c.numpy(), np.array(expected_bias), [1.0, 1.0])
    assert np.allclose(out[0].detach().numpy(), hand, atol=1e-6)
    assert torch.equal(beta, torch.ones(1, 2))


def test_dual_vlad_frame_attention():
    torch.manual_seed(0)
    cfg = VideoConfig(num_clusters=3, attention_temperature=1.2)
    pool = VladPooling(4, cfg, frame_attention=True)
    x = torch.randn(2, 5, 4)
    out, beta = pool(x)
    assert out.shape == (2, 12) and beta.shape == (2, 5)
    assert torch.allclose(beta.sum(1), torch.ones(2))
    assert torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-6)
    # beta_t = softmax_t((w . tanh(V R_t + b_V) + b_w) / 1.2), R_t the frame's residuals
    xn = F.normalize(x[0], dim=-1)
    a = pool.assign(xn).softmax(-1)
    r = (a.unsqueeze(-1) * (xn.unsqueeze(1) - pool.centroids)).reshape(5, 12)
    scores = pool.att_score(torch.tanh(pool.att_hidden(r))).squeeze(-1)
    assert torch.allclose(beta[0], (scores / 1.2).softmax(0), atol=1e-6)
    hand = _vlad_by_hand(
        x[0].numpy(),
        pool.centroids.detach().numpy(),
        pool.assign.weight.detach().numpy(),
        pool.assign.bias.detach().numpy(),
        beta[0].detach().numpy(),
    )
    assert np.allclose(out[0].detach().numpy(), hand, atol=1e-5)


def test_mean_pooling():
    out, beta = MeanPooling()(torch.tensor([[[3.0, 4.0], [0.0, 2.0]]]))
    assert out[0].tolist() == pytest.approx([0.3, 0.9])
    assert beta[0].tolist() == pytest.approx([0.5, 0.5])


def test_label_merge_and_metrics():
    assert [SCORE_TO_CLASS[s] for s in range(4)] == [0, 1, 1, 2]
    y = np.array([0, 1, 2, 1])
    probs = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.6, 0.3], [0.1, 0.8, 0.1]])
    m = classification_metrics(y, probs)
    assert m["accuracy"] == 0.75
    # per-class F1: class 0 = 1, class 1: P = 2/3, R = 1 -> 0.8, class 2 = 0; weights 1/4, 2/4, 1/4
    assert m["weighted_f1"] == pytest.approx(0.25 * 1 + 0.5 * 0.8 + 0.25 * 0)
    # OvR AUC: class 0 separable (1), class 1 positives {0.7, 0.8} vs negatives {0.1, 0.6} (1),
    # class 2 positive 0.3 vs negatives {0.1, 0.1, 0.1} (1)
    assert m["auc"] == pytest.approx(1.0)
    assert m["confusion"] == [[1, 0, 0], [0, 2, 0], [0, 1, 0]]


def test_frame_sampling_official():
    assert sample_frame_indices(4, 8).tolist() == [0, 0, 0, 1, 1, 2, 2, 3]  # short clip: repeats
    assert sample_frame_indices(30, 15).tolist() == [int(v) for v in np.floor(np.linspace(0, 29, 15))]
    picked = sample_frame_indices(40, 8, True, rand=lambda k: k - 1)
    assert picked.tolist() == [4 + 5 * i for i in range(8)]  # stride 40 // 8 = 5, span 36: last offset 4 -> frame 39
    assert sample_frame_indices(5, 8, True, rand=lambda k: 0).tolist() == sample_frame_indices(5, 8).tolist()


def test_crop_boxes_and_resize():
    gen = torch.Generator().manual_seed(0)
    boxes = sample_crop_boxes(500, 32, 40, (0.1, 0.6), gen=gen)
    top, left, h, w = boxes.unbind(1)
    assert bool((top >= 0).all() and (left >= 0).all() and (top + h <= 32).all() and (left + w <= 40).all())
    area = h * w / (32 * 40)
    assert bool((area > 0.08).all() and (area < 0.65).all())
    x = torch.arange(16.0).view(1, 1, 4, 4) / 16
    same = resized_crop(x, torch.tensor([[0.0, 0.0, 4.0, 4.0]]), 4, mode="bilinear")
    assert torch.allclose(same, x, atol=1e-6)
    flipped = resized_crop(x, torch.tensor([[0.0, 0.0, 4.0, 4.0]]), 4, flip=torch.tensor([True]), mode="bilinear")
    assert torch.allclose(flipped, x.flip(-1), atol=1e-6)
    half = resized_crop(x, torch.tensor([[0.0, 2.0, 2.0, 2.0]]), 2, mode="bilinear")  # top-right 2x2 block
    assert torch.allclose(half, x[..., :2, 2:], atol=1e-6)


def test_gaussian_kernel_and_solarize():
    k = gaussian_kernels(torch.tensor([1.0]), 3)[0]
    e = math.exp(-0.5)
    assert k.tolist() == pytest.approx([e / (1 + 2 * e), 1 / (1 + 2 * e), e / (1 + 2 * e)])
    x = torch.tensor([[[[0.2, 0.7]]]])
    assert solarize(x, 1.0, 0.5).flatten().tolist() == pytest.approx([0.2, 0.3])


def test_recipe_configs_hold_the_official_settings() -> None:
    from pathlib import Path

    from skdcli.engine.config import build_config
    from skdcli.lus.config import LusConfig, PretrainConfig
    from skdcli.lus.model import DinoModel

    recipes = Path(__file__).resolve().parent.parent / "recipes" / "lus"
    assert build_config(PretrainConfig, recipes / "tiny_dino.yaml") == PretrainConfig()  # the embedded defaults
    dino = build_config(PretrainConfig, recipes / "dino.yaml")
    d, a, t = dino.dino, dino.aug, dino.train
    assert (d.out_dim, d.student_temp, d.warmup_teacher_temp, d.teacher_temp, d.warmup_teacher_temp_epochs) == (
        65536,
        0.1,
        0.04,
        0.06,
        5,
    )
    assert (d.center_momentum, d.momentum_teacher, d.weight_decay_end, d.freeze_last_layer_epochs) == (
        0.9,
        0.998,
        0.5,
        1,
    )
    assert (a.local_crops_number, a.global_size, a.local_size, t.batch_size, t.lr) == (10, 224, 96, 32, 6.25e-5)
    assert (dino.model.init, dino.model.stem, dino.model.patch_size, dino.model.embed_dim) == ("dino", "patch", 8, 384)
    backbone = DinoModel(dino.model, dino.dino).backbone
    assert sum(p.numel() for p in backbone.parameters()) == 21_621_120  # ViT-S/8 (21.67M) with one grey input channel
    video = build_config(LusConfig, recipes / "video.yaml")
    v = video.video
    assert (video.level, v.aggregator, v.seq_len, v.num_clusters, v.attention_temperature) == (
        "video",
        "dual_vlad",
        15,
        3,
        1.2,
    )
    assert (video.train.lr, video.train.weight_decay, video.train.batch_size) == (2e-3, 1e-5, 2)
    frame = build_config(LusConfig, recipes / "frame.yaml")
    assert (frame.level, frame.frame.mode, frame.knn.k_max, frame.knn.temperature, frame.train.lr) == (
        "frame",
        "linear",
        19,
        0.07,
        5e-4,
    )


def test_mean_std_leaves_out_undefined_cells() -> None:
    # an AUC is undefined (NaN / None) on a reported fold without two classes: that cell is left out, n says so
    stats = mean_std([0.5, None, float("nan"), 0.7])
    assert stats == {"mean": 0.6, "std": round(0.02**0.5, 4), "n": 2, "values": [0.5, 0.7]}
    assert mean_std([None])["n"] == 0
