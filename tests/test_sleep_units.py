"""Sleep loss (hand-computed), metrics (hand-computed), class-aware samplers and the engine's
epoch-order hook (DDP split and mid-epoch resume)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fixtures_sleep import SLEEP_FIXTURES
from skdcli.engine.trainer import ResumableDistributedSampler
from skdcli.sleep.config import KDConfig, ModelConfig
from skdcli.sleep.loss import siamese_self_kd_loss
from skdcli.sleep.metrics import mean_std, sleep_metrics
from skdcli.sleep.model import SleepTransformer
from skdcli.sleep.sampling import WindowBalancer, supervised_shares, target_shares, window_compositions

# p1 = softmax([0, ln 3]) = [.25, .75], p2 = [.5, .5], label 1
L1 = torch.tensor([[[0.0, math.log(3.0)]]])
L2 = torch.tensor([[[0.0, 0.0]]])
Y = torch.tensor([[1]])
CE = 0.5 * (-math.log(0.75) + math.log(2.0))  # 0.490415
KL_12 = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)  # KL(p1||p2) = 0.130812
KL_21 = 0.5 * math.log(2.0) + 0.5 * math.log(0.5 / 0.75)  # KL(p2||p1) = 0.143841


def test_siamese_loss_symmetric_kl_by_hand() -> None:
    loss, logs = siamese_self_kd_loss(L1, L2, Y, KDConfig(divergence="sym_kl"))
    assert float(logs["loss/ce"]) == pytest.approx(CE, abs=1e-6)
    assert float(logs["loss/kd"]) == pytest.approx(0.5 * (KL_12 + KL_21), abs=1e-6)
    assert float(loss) == pytest.approx(0.627742, abs=1e-5)


def test_siamese_loss_stopgrad_weight_and_temperature() -> None:
    l1, l2 = L1.clone().requires_grad_(), L2.clone().requires_grad_()
    loss, logs = siamese_self_kd_loss(l1, l2, Y, KDConfig(divergence="kl_stopgrad", weight=2.0))
    assert logs["loss/kd"].item() == pytest.approx(KL_21, abs=1e-6)  # KL(sg(p2) || p1)
    assert loss.item() == pytest.approx(CE + 2 * KL_21, abs=1e-6)
    loss.backward()
    # branch 2 only gets its CE gradient: d/dz of 1/2 CE(y, softmax(z)) = 1/2 (p - onehot)
    assert l2.grad.flatten().tolist() == pytest.approx([0.25, -0.25], abs=1e-6)
    # T = 2: p_T = softmax(z / 2); T² factor
    p1, p2 = torch.softmax(L1.flatten() / 2, 0), torch.softmax(L2.flatten() / 2, 0)
    kl = float((p2 * (p2 / p1).log()).sum()) * 4
    _, logs = siamese_self_kd_loss(L1, L2, Y, KDConfig(divergence="kl_stopgrad", temperature=2.0))
    assert float(logs["loss/kd"]) == pytest.approx(kl, abs=1e-6)


def test_unscored_positions_get_no_loss() -> None:
    # position 2 is unscored (-1): CE and KD are the means over the scored positions 1 and 3 only
    l1 = torch.cat([L1, torch.tensor([[[5.0, -5.0]]]), L2], dim=1)  # (1, 3, 2)
    l2 = torch.cat([L2, torch.tensor([[[-5.0, 5.0]]]), L1], dim=1)
    y = torch.tensor([[1, -1, 1]])
    loss, logs = siamese_self_kd_loss(l1, l2, y, KDConfig(divergence="sym_kl"))
    ce = 0.5 * (-math.log(0.75) + math.log(2.0))  # each branch: positions {p=.75, p=.5}, mean
    assert float(logs["loss/ce"]) == pytest.approx(ce, abs=1e-6)
    assert float(logs["loss/kd"]) == pytest.approx(0.5 * (KL_12 + KL_21), abs=1e-6)
    base, _ = siamese_self_kd_loss(l1, None, y, KDConfig(method="ce"))
    assert float(base) == pytest.approx(0.5 * (-math.log(0.75) + math.log(2.0)), abs=1e-6)


def test_baseline_is_plain_cross_entropy() -> None:
    loss, logs = siamese_self_kd_loss(L1, None, Y, KDConfig(method="ce"))
    assert float(loss) == pytest.approx(-math.log(0.75), abs=1e-6) and set(logs) == {"loss/ce"}


def test_kd_term_zero_for_identical_branches_positive_with_dropout() -> None:
    torch.manual_seed(0)
    model = SleepTransformer(ModelConfig(d_model=16, patch_len=100, dropout=0.3), 3000, 3)
    x, y = torch.randn(4, 3, 3000), torch.randint(0, 5, (4, 3))
    kd = KDConfig(siamese_view="dropout")
    model.eval()
    out = model(torch.cat([x, x]))
    assert siamese_self_kd_loss(out[:4], out[4:], y, kd)[1]["loss/kd"].item() == pytest.approx(0.0, abs=1e-6)
    model.train()
    out = model(torch.cat([x, x]))
    assert out.shape == (8, 3, 5) and siamese_self_kd_loss(out[:4], out[4:], y, kd)[1]["loss/kd"].item() > 1e-4


def test_metrics_by_hand() -> None:
    m = sleep_metrics(np.array([0, 0, 1, 1, 2, 2, 3, 4]), np.array([0, 1, 1, 1, 2, 0, 3, 4]))
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["per_class_f1"] == {"W": 0.5, "N1": 0.8, "N2": 0.6667, "N3": 1.0, "REM": 1.0}
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3 + 1 + 1) / 5)
    pe = (2 * 2 + 2 * 3 + 2 * 1 + 1 + 1) / 64
    assert m["kappa"] == pytest.approx((0.75 - pe) / (1 - pe))
    assert m["confusion"][0] == [1, 1, 0, 0, 0] and m["confusion"][2] == [1, 0, 1, 0, 0]
    # a stage absent from both counts as F1 0 in the macro average (labels are passed explicitly)
    assert sleep_metrics(np.array([0, 1]), np.array([0, 0]))["macro_f1"] == pytest.approx(2 / 3 / 5)
    s = mean_std([0.5, 0.7, 0.6])
    assert s["mean"] == pytest.approx(0.6) and s["std"] == pytest.approx(0.1) and s["n"] == 3


def sc4001_night() -> np.ndarray:
    """The real SC4001 night's stages as prep keeps them (841 epochs: W 188, N1 58, N2 250, N3 220, REM 125)."""
    from skdcli.sleep.data import scored_span
    from skdcli.sleep.formats import read_edf_hypnogram

    y = read_edf_hypnogram(SLEEP_FIXTURES / "sleep-cassette" / "SC4001EC-Hypnogram.edf").labels[:2650]
    first, last = scored_span(y, 30.0)
    return y[first : last + 1]


def test_balanced_batches_balance_every_supervised_epoch_of_sc4001() -> None:
    """Issue 15: with L = 10 on SC4001, balancing the centre epoch gave N1 12 % of the epochs the loss sees."""
    y = sc4001_night()
    assert len(y) == 841 and np.bincount(y).tolist() == [188, 58, 250, 220, 125]
    L, B = 10, 20
    starts = np.arange(len(y) - L + 1)
    order = WindowBalancer(y, starts, L, power=0.0).order(B, seed=0, epoch=1)
    assert len(order) == len(starts) // B * B
    shares = supervised_shares(y, starts, L, order)
    assert np.abs(shares - 0.2).max() < 0.006 and shares[1] > 0.19
    comp = window_compositions(y, starts, L)
    per_batch = [comp[order[b * B : (b + 1) * B]].sum(0) / (B * L) for b in range(len(order) // B)]
    assert np.abs(np.array(per_batch) - 0.2).max() <= 0.05  # every single batch close to 1/5 per stage
    n1_epochs = set(np.flatnonzero(y == 1).tolist())
    covered = {s + i for s in starts[order] for i in range(L)}
    assert n1_epochs <= covered  # every N1 epoch of the night is used
    assert order == WindowBalancer(y, starts, L, 0.0).order(B, 0, 1)  # a pure function of (seed, epoch)
    assert order != WindowBalancer(y, starts, L, 0.0).order(B, 0, 2)


def test_selective_shares_follow_the_tempered_prior() -> None:
    y = sc4001_night()
    starts = np.arange(len(y) - 9)
    counts = np.bincount(y, minlength=5)
    for power in (0.5, 1.0):
        shares = supervised_shares(y, starts, 10, WindowBalancer(y, starts, 10, power).order(20, 3, 1))
        assert np.abs(shares - counts**power / (counts**power).sum()).max() < 0.01


def test_compositions_count_scored_epochs_only() -> None:
    y = np.array([0, 1, -1, 1, 4, -1, -1], dtype=np.int8)
    comp = window_compositions(y, np.array([0, 2, 4]), 3)
    assert comp.tolist() == [[1, 1, 0, 0, 0], [0, 1, 0, 0, 1], [0, 0, 0, 0, 1]]
    assert target_shares(np.array([10, 0, 40, 0, 0]), 0.0).tolist() == [0.5, 0.0, 0.5, 0.0, 0.0]


def test_engine_order_hook_splits_over_ranks_and_resumes() -> None:
    y = sc4001_night()[:209]
    starts = np.arange(200)
    balancer = WindowBalancer(y, starts, 10, 0.0)
    data = list(range(200))
    fn = lambda seed, epoch: balancer.order(10, seed, epoch)
    one = ResumableDistributedSampler(data, 1, 0, seed=0, global_batch=10, order_fn=fn)
    two = [ResumableDistributedSampler(data, 2, r, seed=0, global_batch=10, order_fn=fn) for r in range(2)]
    for s in [one, *two]:
        s.set_epoch(4)
    full, ranks = list(one), [list(s) for s in two]
    assert len(full) == len(one) == 200 and [len(r) for r in ranks] == [100, 100]
    for step in range(20):  # a global batch of 10 = 5 per rank, same examples as on one rank
        assert sorted(ranks[0][step * 5 : (step + 1) * 5] + ranks[1][step * 5 : (step + 1) * 5]) == sorted(
            full[step * 10 : (step + 1) * 10]
        )
    one.start_index = 30
    assert list(one) == full[30:] and len(one) == 170


def test_pooled_folds_equal_sklearn_on_the_concatenation() -> None:
    from skdcli.sleep.metrics import cross_validation_summary, metrics_from_confusion

    rng = np.random.default_rng(0)
    folds, trues, preds = [], [], []
    for k in range(3):
        y = rng.integers(0, 5, 60 + 10 * k)
        p = np.where(rng.random(len(y)) < 0.6, y, rng.integers(0, 5, len(y)))
        trues.append(y), preds.append(p)
        folds.append({"recordings": 2, "subjects": [f"s{k}"], **sleep_metrics(y, p)})
    direct = sleep_metrics(np.concatenate(trues), np.concatenate(preds))
    pooled = metrics_from_confusion(direct["confusion"])
    for key in ("accuracy", "macro_f1", "kappa"):
        assert pooled[key] == pytest.approx(direct[key], abs=1e-12)
    assert pooled["per_class_f1"] == direct["per_class_f1"]
    summary = cross_validation_summary(folds)
    assert summary["pooled"]["kappa"] == pytest.approx(direct["kappa"], abs=1e-12)
    accs = [f["accuracy"] for f in folds]
    assert summary["accuracy"]["mean"] == pytest.approx(np.mean(accs), abs=1e-4)
    assert summary["accuracy"]["std"] == pytest.approx(np.std(accs, ddof=1), abs=1e-4)
    assert [r["fold"] for r in summary["per_fold"]] == [0, 1, 2] and summary["per_fold"][2]["epochs"] == 80


def test_sleep_statistics_by_hand_and_against_yasa() -> None:
    import yasa

    from skdcli.sleep.metrics import sleep_statistics

    # 2 W, N1, N2, W, N3, REM, unscored, N2, 2 W -> TIB 5.5 min, SPT 3.5, TST 2.5
    s = sleep_statistics([0, 0, 1, 2, 0, 3, 4, -1, 2, 0, 0])
    assert (s["tib_min"], s["spt_min"], s["tst_min"], s["waso_min"], s["unscored_min"]) == (5.5, 3.5, 2.5, 0.5, 0.5)
    assert s["sleep_onset_latency_min"] == 1.0 and s["rem_latency_min"] == 2.0  # REM 4 epochs after onset
    assert s["sleep_efficiency_pct"] == pytest.approx(100 * 2.5 / 5.5, abs=1e-4)
    assert s["minutes"] == {"W": 2.5, "N1": 0.5, "N2": 1.0, "N3": 0.5, "REM": 0.5}
    assert s["percent"]["N2"] == 40.0 and s["percent"]["W"] == pytest.approx(100 * 2.5 / 5.5, abs=1e-4)
    none = sleep_statistics([0, 0, -1])
    assert none["tst_min"] == 0 and none["sleep_onset_latency_min"] is None and none["percent"]["N1"] is None
    # every value against yasa on Markov hypnograms with movement / unscored epochs
    rng = np.random.default_rng(0)
    names = {0: "W", 1: "N1", 2: "N2", 3: "N3", 4: "R", -1: "ART", -2: "UNS"}
    for _ in range(5):
        runs = rng.choice([0, 1, 2, 3, 4, -1, -2], 60, p=[0.3, 0.1, 0.3, 0.1, 0.14, 0.03, 0.03])
        h = np.repeat(runs, rng.integers(1, 12, 60))
        ours = sleep_statistics(h)
        ref = yasa.Hypnogram(np.array([names[int(v)] for v in h]), n_stages=5, freq="30s").sleep_statistics()
        for key, mine in (
            ("TIB", ours["tib_min"]),
            ("SPT", ours["spt_min"]),
            ("TST", ours["tst_min"]),
            ("WASO", ours["waso_min"]),
            ("SE", ours["sleep_efficiency_pct"]),
            ("SME", ours["sleep_maintenance_efficiency_pct"]),
            ("SOL", ours["sleep_onset_latency_min"]),
            ("Lat_REM", ours["rem_latency_min"] + ours["sleep_onset_latency_min"]),
            ("WAKE", ours["minutes"]["W"]),
            ("N1", ours["minutes"]["N1"]),
            ("N3", ours["minutes"]["N3"]),
            ("REM", ours["minutes"]["REM"]),
            ("%N2", ours["percent"]["N2"]),
            ("%REM", ours["percent"]["REM"]),
        ):
            assert mine == pytest.approx(float(ref[key]), abs=1e-3), key
