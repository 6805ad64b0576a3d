"""Every sar stage and command through the CLI on generated chips in the real layouts: prep (with
--shots / --label-noise), train with every --method, eval (--split, --repeats), export, predict (one line
per chip, Grad-CAM PNG), compare, pretrained weights from a local file, the torchvision backbones, and
the bad inputs the issue lists. The kill -9 resume test is in test_sar_resume.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from conftest import assert_one_line_error, invoke, invoke_json, sets
from fixtures_sar import SAR_TINY
from skdcli.sar.config import BACKBONES, METHODS
from skdcli.sar.model import SarNet, load_pretrained
from skdcli.sar.synth import SHIP_CLASSES, write_fusar_like


def test_prep_cli_records_shots_and_label_noise(tmp_path: Path) -> None:
    raw = write_fusar_like(tmp_path / "raw", per_class=8, size=48, classes=SHIP_CLASSES[:3])
    result = invoke_json(
        "sar",
        "prep",
        "--source",
        "fusar",
        "--raw",
        raw,
        "--out",
        tmp_path / "p",
        "--size",
        "24",
        "--shots",
        "3",
        "--label-noise",
        "0.3",
        "--seed",
        "5",
        "--classes",
        "GeneralCargo,BulkCarrier,ContainerShip",
    )
    assert result["classes"] == ["GeneralCargo", "BulkCarrier", "ContainerShip"]  # --classes order = class ids
    assert result["shots"] == 3 and set(result["split_counts"]["train"].values()) == {3}
    info = json.loads((tmp_path / "p" / "prep.json").read_text())
    assert info["label_noise"]["rate"] == 0.3 and info["split"]["seed"] == 5 and info["normalisation"]["size"] == 24
    again = invoke("sar", "prep", "--source", "fusar", "--raw", raw, "--out", tmp_path / "p")
    assert_one_line_error(again, str(tmp_path / "p"), "--overwrite")
    assert_one_line_error(
        invoke("sar", "prep", "--source", "fusar", "--raw", tmp_path / "missing", "--out", tmp_path / "q"),
        str(tmp_path / "missing"),
        "not found",
    )
    assert not (tmp_path / "q").exists()


@pytest.mark.parametrize("method", [m for m in METHODS if m != "drrnet"])
def test_every_baseline_trains_through_the_cli(method: str, sar_data: Path, sar_run: Path, tmp_path: Path) -> None:
    extra = (
        [
            "kd.tf_kd.variant=self",
            f"kd.tf_kd.teacher={sar_run}",
            "kd.tf_kd.alpha=0.95",
            "kd.tf_kd.temperature=6",
            "kd.tf_kd.multiplier=50",
        ]
        if method == "tf-kd"
        else []
    )
    summary = invoke_json(
        "sar",
        "train",
        "--data",
        sar_data,
        "--run-dir",
        tmp_path / method,
        "--method",
        method,
        "--max-steps",
        "3",
        *sets(*SAR_TINY, "train.eval_every=0", *extra),
    )
    assert summary["method"] == method and summary["steps"] == 3
    rows = [json.loads(x) for x in (tmp_path / method / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["split"] == "train"]
    assert len(train) == 3 and all(r["loss"] == r["loss"] for r in train)
    expected = {
        "cs-kd": "loss/cls",
        "ps-kd": "loss/soft_ce",
        "tf-kd": "loss/kl_teacher",
        "byot": "loss/kl_exit3",
        "dlb": "loss/kl_last",
        "zipf-ls": "loss/zipf",
        "ce": "loss/ce",
    }[method]
    assert expected in train[-1]
    if method == "dlb":
        assert train[0]["loss/kl_last"] == 0.0 and train[1]["loss/kl_last"] > 0  # half of batch 2 was in batch 1


def test_drrnet_run_logs_awa_weights_and_teachers(sar_run: Path) -> None:
    rows = [json.loads(x) for x in (sar_run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["split"] == "train"]
    assert [r["step"] for r in train] == list(range(1, 9))  # AWA weights logged every step
    assert all(r["weight/off"] + r["weight/on"] == pytest.approx(1.0) for r in train)
    assert [r["teacher/offline_ready"] for r in train] == [0.0] * 5 + [1.0] * 3  # generation 1 ends at step 5
    assert (sar_run / "plots" / "awa_weights.png").is_file()
    state = torch.load(sorted((sar_run / "checkpoints").glob("step_*"))[-1] / "state.pt", weights_only=True)
    assert set(state["teachers"]) == {"offline", "online", "awa"} and state["teachers"]["offline"]["generation"] == 1
    assert state["teachers"]["awa"]["updates"] == 8


def test_eval_split_repeats_and_confusion(sar_run: Path) -> None:
    result = invoke_json("sar", "eval", "--run-dir", sar_run)
    assert result["split"] == "test" and result["chips"] == 10 and len(result["confusion"]) == 5
    assert set(result["per_class_accuracy"]) == {"BulkCarrier", "ContainerShip", "Fishing", "GeneralCargo", "Tanker"}
    assert Path(result["confusion_png"]).is_file() and (sar_run / "eval.json").is_file()
    val = invoke_json("sar", "eval", "--run-dir", sar_run, "--split", "val", "--repeats", "3")
    assert val["split"] == "val" and val["repeats"]["accuracy"]["n"] == 3 and (sar_run / "eval_val.json").is_file()
    human = invoke("sar", "eval", "--run-dir", sar_run)
    assert human.exit_code == 0 and "BulkCarrier" in human.stderr and human.stdout == ""
    assert_one_line_error(invoke("sar", "eval", "--run-dir", sar_run, "--split", "train"), "--split")


def test_export_and_predict_one_line_per_chip_with_gradcam(sar_export: Path, sar_data: Path, tmp_path: Path) -> None:
    manifest = json.loads((sar_export / "manifest.json").read_text())
    assert manifest["task"] == "sar" and manifest["parity"]["max_abs_diff"] < 1e-4 and manifest["channels"] == 1
    chips = sorted((sar_data / "raw").rglob("*.tiff"))[:3]
    out = invoke("sar", "predict", "--model", sar_export, *chips, "--gradcam", tmp_path / "cam")
    assert out.exit_code == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 3 and all(line.split("\t")[0] == str(c) for line, c in zip(lines, chips))
    classes = manifest["classes"]
    for line in lines:
        chip, cls, probs, png = line.split("\t")
        values = dict(kv.split("=") for kv in probs.split())
        assert (
            cls in classes
            and list(values) == classes
            and sum(map(float, values.values())) == pytest.approx(1, abs=1e-3)
        )
        assert Path(png).is_file()
    js = invoke_json("sar", "predict", "--model", sar_export, chips[0])
    assert js["predictions"][0]["chip"] == str(chips[0])
    assert_one_line_error(
        invoke("sar", "predict", "--model", sar_export, chips[0], "--gradcam", tmp_path / "cam"), "--overwrite"
    )
    bad = tmp_path / "bad.tiff"
    bad.write_bytes(b"II*\x00garbage")
    assert_one_line_error(invoke("sar", "predict", "--model", sar_export, bad), str(bad), "unreadable chip")
    assert_one_line_error(invoke("sar", "predict", "--model", tmp_path, chips[0]), "manifest")


def test_compare_two_methods_two_seeds_and_reuse(sar_data: Path, tmp_path: Path) -> None:
    args = [
        "sar",
        "compare",
        "--data",
        sar_data,
        "--run-dir",
        tmp_path / "cmp",
        "--methods",
        "ce,dlb",
        "--seeds",
        "2",
        "--max-steps",
        "2",
        *sets(*SAR_TINY, "train.eval_every=0"),
    ]
    result = invoke_json(*args)
    assert list(result["methods"]) == ["ce", "dlb"] and result["methods"]["dlb"]["accuracy"]["n"] == 2
    assert (tmp_path / "cmp" / "dlb" / "seed1" / "eval.json").is_file() and (
        tmp_path / "cmp" / "compare.json"
    ).is_file()
    stamp = (tmp_path / "cmp" / "ce" / "seed0" / "train_summary.json").stat().st_mtime_ns
    human = invoke(*args)
    assert human.exit_code == 0 and "dlb" in human.stderr and "±" in human.stderr
    assert (tmp_path / "cmp" / "ce" / "seed0" / "train_summary.json").stat().st_mtime_ns == stamp  # reused
    assert_one_line_error(invoke("sar", "compare", "--data", sar_data, "--methods", "ce,kd"), "--methods")


def test_train_repeats_gives_mean_and_std(sar_data: Path, tmp_path: Path) -> None:
    result = invoke_json(
        "sar",
        "train",
        "--data",
        sar_data,
        "--run-dir",
        tmp_path / "rep",
        "--baseline",
        "--repeats",
        "2",
        "--max-steps",
        "2",
        *sets(*SAR_TINY, "train.eval_every=0"),
    )
    assert result["method"] == "ce" and result["accuracy"]["n"] == 2 and result["seeds"] == [0, 1]


def test_pretrained_weights_from_a_local_file(sar_data: Path, tmp_path: Path) -> None:
    from torchvision.models import resnet18

    torch.manual_seed(0)
    rgb = resnet18(num_classes=1000)  # a 3-channel ImageNet-shaped state dict, as a user would have it
    weights = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in rgb.state_dict().items()}, str(weights))
    net = SarNet("resnet18", 5, 1)
    report = load_pretrained(net, weights)
    assert report["first_conv_from_rgb"] == ["net.conv1.weight"] and "fc.weight" in report["skipped"]
    assert torch.allclose(net.net.conv1.weight, rgb.conv1.weight.sum(1, keepdim=True))
    assert torch.equal(net.net.layer1[0].conv1.weight, rgb.layer1[0].conv1.weight)
    pt = tmp_path / "resnet18.pt"
    torch.save({"state_dict": rgb.state_dict()}, pt)
    summary = invoke_json(
        "sar",
        "train",
        "--data",
        sar_data,
        "--run-dir",
        tmp_path / "r18",
        "--backbone",
        "resnet18",
        "--baseline",
        "--max-steps",
        "1",
        *sets(*SAR_TINY, "train.eval_every=0", f"model.pretrained={pt}"),
    )
    assert summary["backbone"] == "resnet18"
    junk = tmp_path / "junk.pt"
    torch.save({"layer.weight": torch.zeros(3)}, junk)
    assert_one_line_error(
        invoke(
            "sar",
            "train",
            "--data",
            sar_data,
            "--run-dir",
            tmp_path / "j",
            "--backbone",
            "resnet18",
            "--max-steps",
            "1",
            *sets(f"model.pretrained={junk}"),
        ),
        str(junk),
        "no tensor",
    )


@pytest.mark.parametrize("backbone", [b for b in BACKBONES if b != "resnet10t"])
def test_torchvision_backbones_take_one_channel(backbone: str) -> None:
    net = SarNet(backbone, 4, 1, byot_exits=True)
    x = torch.randn(2, 1, 32, 32)
    assert net(x).shape == (2, 4)
    feats, exits, deep, logits = net(x, output="exits")
    assert len(exits) == 3 and all(z.shape == (2, 4) for z in exits) and feats[0].shape == deep.shape


def test_bad_training_inputs(sar_data: Path, tmp_path: Path) -> None:
    assert_one_line_error(
        invoke("sar", "train", "--data", sar_data, "--run-dir", tmp_path / "a", "--method", "kd"), "kd.method", "drrnet"
    )
    assert_one_line_error(
        invoke("sar", "train", "--data", sar_data, "--run-dir", tmp_path / "b", *sets("kd.drrnet.offline=file")),
        "offline_path",
    )
    assert_one_line_error(
        invoke(
            "sar",
            "train",
            "--data",
            sar_data,
            "--run-dir",
            tmp_path / "c",
            *sets("kd.drrnet.offline=file", f"kd.drrnet.offline_path={tmp_path / 'nope'}"),
        ),
        str(tmp_path / "nope"),
        "not found",
    )
    assert_one_line_error(invoke("sar", "train", "--data", tmp_path, "--run-dir", tmp_path / "d"), "prep.json")


@pytest.mark.parametrize(
    "switches",
    [
        ["kd.drrnet.offline=best", "kd.drrnet.online=view", "kd.drrnet.awa.mode=loss"],
        ["kd.drrnet.online=ema", "kd.drrnet.awa.mode=perf", "kd.drrnet.awa.source=val"],
        ["kd.drrnet.awa.mode=linear"],
        ["kd.drrnet.awa.mode=fixed", "kd.drrnet.awa.fixed_on=0.3"],
    ],
    ids=["best-view-loss", "ema-val", "linear", "fixed"],
)
def test_every_drrnet_reading_is_a_switch_that_trains(switches: list[str], sar_data: Path, tmp_path: Path) -> None:
    invoke_json(
        "sar",
        "train",
        "--data",
        sar_data,
        "--run-dir",
        tmp_path / "r",
        "--max-steps",
        "4",
        *sets(*SAR_TINY, "train.eval_every=2", *switches),
    )
    rows = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["split"] == "train"]
    assert all(r["weight/off"] + r["weight/on"] == pytest.approx(1.0) for r in train)
    if "kd.drrnet.awa.mode=fixed" in switches:
        assert {round(r["weight/on"], 6) for r in train} == {0.3}
    if "kd.drrnet.offline=best" in switches:  # the best checkpoint after the step-2 validation teaches steps 3-4
        assert [r["teacher/offline_ready"] for r in train] == [0.0, 0.0, 1.0, 1.0]
    if "kd.drrnet.online=view" in switches or "kd.drrnet.online=ema" in switches:
        assert all(r["loss/kl_online"] > 0 for r in train)


def test_drrnet_offline_teacher_from_a_file(sar_data: Path, sar_run: Path, tmp_path: Path) -> None:
    invoke_json(
        "sar",
        "train",
        "--data",
        sar_data,
        "--run-dir",
        tmp_path / "f",
        "--max-steps",
        "2",
        *sets(*SAR_TINY, "train.eval_every=0", "kd.drrnet.offline=file", f"kd.drrnet.offline_path={sar_run}"),
    )
    rows = [json.loads(x) for x in (tmp_path / "f" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["teacher/offline_ready"] == 1.0 and r["loss/kl_offline"] > 0 for r in rows if r["split"] == "train")


def test_run_over_seeds_reports_mean_and_std(sar_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["sar", "run", "--data", sar_data, "--run-dir", run, "--seeds", "0,1", "--max-steps", "2"]
    result = invoke_json(*args, *sets(*SAR_TINY, "train.eval_every=0"))
    # DRRNet's first seed is the run itself (exported); every other (method, seed) under RUN/compare/
    assert result["seeds"] == [0, 1] and set(result["systems"]) == {"drrnet", "ce"}
    assert (run / "eval.json").is_file() and (run / "export" / "model.pt2").is_file()
    for method, seed in (("drrnet", 1), ("ce", 0), ("ce", 1)):
        assert (run / "compare" / method / f"seed{seed}" / "eval.json").is_file()
    assert "method: ce" in (run / "compare" / "ce" / "seed0" / "config.yaml").read_text()  # the baseline's --set
    for method, rows in result["per_seed"].items():
        acc = [r["accuracy"] for r in rows]
        assert [r["seed"] for r in rows] == [0, 1]
        assert result["systems"][method]["accuracy"] == pytest.approx(sum(acc) / 2)
        assert result["systems"][method]["accuracy_std"] == pytest.approx(abs(acc[0] - acc[1]) / 2**0.5)
    assert result["drrnet"]["accuracy"] == result["per_seed"]["drrnet"][0]["accuracy"]  # first seed in full
    assert set(result["ce"]["per_class_accuracy"]) == set(result["drrnet"]["per_class_accuracy"])
