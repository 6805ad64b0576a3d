"""Perplexity the standard way (issue 14, item 11): truncated BPTT with the LSTM state carried across
windows in training, stateful evaluation over the whole stream, exact resume and DDP with that state."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from conftest import REPO, invoke, invoke_json, sets
from fixtures_nlp_embed import NLP_EMBED_TINY
from skdcli.engine.config import build_config
from skdcli.engine.rundir import RunDir
from skdcli.engine.schedules import Progress
from skdcli.engine.trainer import Trainer
from skdcli.nlp_embed.config import NlpEmbedConfig
from skdcli.nlp_embed.recipe import make_task, score_lm, score_lm_stateful
from skdcli.text.lm import LSTMLM, CarriedHiddenState, LMConfig
from skdcli.text.lm_corpus import LMStreamColumns, LMWindows, batchify

V = 23


def tiny_lstm() -> LSTMLM:
    torch.manual_seed(0)
    return LSTMLM(V, LMConfig(d_embed=8, d_hidden=8, num_layers=2, dropout=0.0, tie_weights=True)).eval()


def test_stateful_perplexity_equals_a_hand_written_loop() -> None:
    model = tiny_lstm()
    stream = torch.randint(0, V, (301,), generator=torch.Generator().manual_seed(1))
    # the hand-written loop: one sequence, state carried window after window (pytorch/examples evaluate())
    nll, state = 0.0, None
    with torch.no_grad():
        for i in range(0, len(stream) - 1, 7):
            x, y = stream[i : i + 7][None], stream[i + 1 : i + 8][None]
            x = x[:, : y.shape[1]]
            out, state = model.rnn(model.embed(x), state)
            nll += float(F.cross_entropy(model.out(out)[0], y[0], reduction="sum"))
        whole = float(F.cross_entropy(model(stream[None, :-1])[0], stream[1:], reduction="sum"))
    hand_ppl = math.exp(nll / 300)
    scored = score_lm_stateful(model, batchify(stream, 1), 7, torch.device("cpu"), bins=10)["metrics"]
    assert scored["tokens"] == 300
    assert scored["ppl"] == pytest.approx(hand_ppl, rel=1e-5)
    assert scored["ppl"] == pytest.approx(math.exp(whole / 300), rel=1e-5)  # = one pass over the whole stream
    # the window-independent evaluation forgets the context at every window edge: another number
    windows = score_lm(model, torch.utils.data.DataLoader(LMWindows(stream, 7), batch_size=8), torch.device("cpu"), 10)
    assert windows["metrics"]["tokens"] == 300 and abs(windows["metrics"]["ppl"] - hand_ppl) > 1e-4


def test_stream_columns_and_the_carried_state() -> None:
    stream = torch.arange(43)
    ds = LMStreamColumns(stream, columns=4, bptt=3)
    assert torch.equal(ds.data, torch.arange(40).view(4, 10))  # batchify: 3 tail tokens dropped
    assert ds.windows == 3 and len(ds) == 12  # 9 predictions per column: windows of 3, 3, 3
    item = ds[1 * 3 + 2]  # column 1, window 2
    assert item["column"] == 1 and item["window"] == 2
    assert item["inputs"].tolist() == [16, 17, 18] and item["targets"].tolist() == [17, 18, 19]
    assert ds.order()[:5] == [0, 3, 6, 9, 1]  # window 0 of every column, then window 1 ...
    short = LMStreamColumns(torch.arange(22), columns=2, bptt=4)  # 11 per column: windows 4, 4, 2
    last = short[2]
    assert last["mask"].tolist() == [True, True, False, False] and last["targets"][:2].tolist() == [9, 10]

    carried = CarriedHiddenState(num_layers=1, columns=4, hidden=2)
    cols = torch.tensor([1, 3])
    h, c = carried.get(cols, 0, torch.device("cpu"))
    assert h.shape == (1, 2, 2) and not h.any()  # every epoch starts from zeros
    carried.put(cols, 0, (torch.ones(1, 2, 2), 2 * torch.ones(1, 2, 2)))
    h, c = carried.get(cols, 1, torch.device("cpu"))
    assert h.eq(1).all() and c.eq(2).all()
    with pytest.raises(RuntimeError, match="out of order"):
        carried.get(torch.tensor([0]), 1, torch.device("cpu"))  # column 0 never ran window 0
    state = carried.state_dict()
    again = CarriedHiddenState(1, 4, 2)
    again.load_state_dict(state)
    assert torch.equal(again.get(cols, 1, torch.device("cpu"))[0], h)


def test_training_carries_the_state_and_detaches_it(nlp_embed_corpus: Path) -> None:
    cfg = build_config(
        NlpEmbedConfig, None, [*NLP_EMBED_TINY, "model.dropout=0.0", "train.batch_size=4", "kd.method=ce"]
    )
    task = make_task(cfg, nlp_embed_corpus)
    torch.manual_seed(0)
    model = task.build_model()
    ds = task.train_dataset()
    order = task.epoch_order(ds, 0, 1, 4)
    first, second = (task.collate([ds[i] for i in order[k : k + 4]]) for k in (0, 4))
    assert first["window"].tolist() == [0] * 4 and second["window"].tolist() == [1] * 4
    progress = Progress(step=0, total_steps=10, epoch=1, total_epochs=1)
    task.compute_loss(model, first, progress)
    loss, _ = task.compute_loss(model, second, progress)
    # by hand: window 1 starts from window 0's final state, and no gradient reaches window 0
    _, state = model(first["inputs"], return_state=True)
    state = (state[0].detach().requires_grad_(), state[1].detach())
    logits, _ = model(second["inputs"], state=state, return_state=True)
    expected = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), second["targets"].reshape(-1))
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)
    loss.backward()
    assert task.carried.h.grad is None and not task.carried.h.requires_grad


def _stateful_cfg(steps: int) -> NlpEmbedConfig:
    return build_config(
        NlpEmbedConfig,
        None,
        [
            *NLP_EMBED_TINY,
            "train.eval_every=0",
            "train.checkpoint_every=3",
            f"train.max_steps={steps}",
            "train.keep_checkpoints=10",
        ],
    )


def test_resume_mid_epoch_restores_the_carried_state(nlp_embed_corpus: Path, tmp_path: Path) -> None:
    """A crash after the step-3 checkpoint and a resume give the uninterrupted run's weights bit for bit:
    the state entering window 3 came from step 3's forward, so it must come from the checkpoint."""
    device = torch.device("cpu")

    def fit(run: Path, resume: bool = False, crash_at: int | None = None):
        def on_step(step: int) -> None:
            if step == crash_at:
                raise KeyboardInterrupt

        run.mkdir(exist_ok=True)
        trainer = Trainer(
            make_task(_stateful_cfg(8), nlp_embed_corpus),
            _stateful_cfg(8).train,
            RunDir(run),
            device,
            show_progress=False,
        )
        trainer.fit(resume=resume, on_step=on_step)
        return trainer

    straight = fit(tmp_path / "straight")
    assert straight.steps_per_epoch > 8  # the resume lands mid-epoch, where the state matters
    with pytest.raises(KeyboardInterrupt):
        fit(tmp_path / "crashed", crash_at=5)
    saved = RunDir.load_state(tmp_path / "crashed" / "checkpoints" / "step_00000003")["teachers"]["lstm_state"]
    assert saved["next_window"].eq(3).all() and saved["h"].abs().sum() > 0
    fit(tmp_path / "crashed", resume=True)
    a = load_file(tmp_path / "straight" / "checkpoints" / "step_00000008" / "model.safetensors")
    b = load_file(tmp_path / "crashed" / "checkpoints" / "step_00000008" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_eval_names_the_convention_and_transformers_keep_windows(
    nlp_embed_run: Path, nlp_embed_corpus: Path, tmp_path: Path
) -> None:
    result = invoke_json("nlp-embed", "eval", "--run-dir", nlp_embed_run)
    assert result["ppl_convention"].startswith("stateful: the whole stream as 1 parallel stream")
    assert result["tokens"] == len(_stream(nlp_embed_corpus, "test")) - 1  # every token but the first
    bad = invoke(
        "nlp-embed",
        "train",
        "--data",
        nlp_embed_corpus,
        "--run-dir",
        tmp_path / "t",
        "--max-steps",
        "1",
        *sets(*NLP_EMBED_TINY, "model.arch=transformer", "model.max_len=32"),
    )
    assert bad.exit_code == 2 and "data.bptt_mode=windows" in bad.stderr


def _stream(corpus: Path, split: str) -> torch.Tensor:
    return load_file(corpus / "tokens.safetensors")[split]


@pytest.mark.slow
def test_ddp_two_ranks_follow_one_process_with_carried_state(nlp_embed_corpus: Path, tmp_path: Path) -> None:
    """2 gloo ranks (each running half of the columns) follow the 1-process loss trajectory, and the
    checkpointed LSTM state holds every column (gathered from both ranks)."""
    common = [
        "nlp-embed",
        "train",
        "--data",
        str(nlp_embed_corpus),
        "--max-steps",
        "4",
        "--device",
        "cpu",
        *sets(*NLP_EMBED_TINY, "model.dropout=0.0", "train.eval_every=0", "train.checkpoint_every=2"),
    ]
    single = subprocess.run(
        [sys.executable, "-m", "skdcli", *common, "--run-dir", str(tmp_path / "one")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert single.returncode == 0, single.stderr
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    ddp = subprocess.run(
        [
            torchrun,
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "skdcli",
            *common,
            "--run-dir",
            str(tmp_path / "two"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]

    def losses(run: Path) -> list[float]:
        rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        return [r["loss"] for r in rows if r["split"] == "train"]

    assert len(losses(tmp_path / "one")) == 4
    assert losses(tmp_path / "two") == pytest.approx(losses(tmp_path / "one"), rel=1e-4, abs=1e-5)
    one = RunDir.load_state(tmp_path / "one" / "checkpoints" / "step_00000002")["teachers"]["lstm_state"]
    two = RunDir.load_state(tmp_path / "two" / "checkpoints" / "step_00000002")["teachers"]["lstm_state"]
    assert two["next_window"].eq(2).all()
    torch.testing.assert_close(two["h"], one["h"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(two["c"], one["c"], rtol=1e-4, atol=1e-5)


def _logged(run: Path) -> dict[int, dict[str, float]]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return {
        r["step"]: {k: v for k, v in r.items() if k == "loss" or k.startswith(("loss/", "weight/"))}
        for r in rows
        if r["split"] == "train"
    }


def test_the_windows_option_is_the_old_training(nlp_embed_corpus: Path, tmp_path: Path) -> None:
    """data.bptt_mode=windows trains exactly as before issue 14 (the shared tiny run's pinned trajectory)."""
    from fixtures_nlp_embed import PRE_ISSUE_14_TRAJECTORY

    invoke_json(
        "nlp-embed",
        "train",
        "--data",
        nlp_embed_corpus,
        "--run-dir",
        tmp_path / "w",
        "--max-steps",
        "8",
        *sets(*NLP_EMBED_TINY, "train.eval_every=4", "train.checkpoint_every=4", "data.bptt_mode=windows"),
    )
    logged = _logged(tmp_path / "w")
    for step, values in PRE_ISSUE_14_TRAJECTORY.items():
        assert logged[step] == pytest.approx(values, rel=1e-4, abs=1e-4), step
