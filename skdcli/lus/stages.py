"""The lus stages: prep -> pretrain -> train (frame | video) -> eval -> export -> score, and `run`,
the tiny default (DINO vs random init over 3 seeds, both folds, every frame and video method)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from ..engine.config import build_config, config_to_yaml
from ..engine.console import console
from ..engine.distributed import resolve_device
from ..engine.errors import SkdError
from ..engine.export import export_program, load_exported
from ..engine.io import atomic_write_json, read_json
from ..engine.rundir import RunDir
from ..engine.stages import load_run_config, recorded_data_dir, train_run
from ..engine.trainer import Trainer
from .config import CLASS_NAMES, LusConfig, PretrainConfig
from .data import SOURCES, PreparedLus, decode_video, prepare_dataset, sample_frame_indices
from .metrics import classification_metrics, mean_std
from .model import FrameScorer, VideoScorer
from .recipe import TASK_NAME, DinoTask, VideoTask, make_task


# -- prep --------------------------------------------------------------------------------------------------------------
def prep_stage(
    source: str,
    raw: str | None,
    out: str,
    size: int = 224,
    fps: float = 15.0,
    labels: str | None = None,
    frames_per_clip: int = 3,
    overwrite: bool = False,
) -> dict:
    if source not in SOURCES:
        raise SkdError(f"--source must be one of {', '.join(SOURCES)}, got '{source}'")
    return prepare_dataset(
        source, raw, out, size=size, fps=fps, labels=labels, frames_per_clip=frames_per_clip, overwrite=overwrite
    )


# -- pretrain ----------------------------------------------------------------------------------------------------------
def pretrain_stage(
    data: str | None,
    run_dir: str,
    config: str | None = None,
    sets: list[str] | None = None,
    init: str | None = None,
    seed: int | None = None,
    max_steps: int | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    device: str = "auto",
    overwrite: bool = False,
    show_progress: bool = True,
) -> dict:
    if resume and init:
        raise SkdError("--resume continues with the run's own config.yaml; drop --init")
    sets = list(sets or []) + ([f"init={init}"] if init else [])
    return train_run(
        f"{TASK_NAME} pretrain",
        PretrainConfig,
        DinoTask,
        data=data,
        run_dir=run_dir,
        config=config,
        sets=sets or None,
        seed=seed,
        max_steps=max_steps,
        checkpoint_every=checkpoint_every,
        resume=resume,
        device=device,
        overwrite=overwrite,
        show_progress=show_progress,
        summary_extra=lambda cfg: {
            "stage": "pretrain",
            "init": cfg.init or "scratch",
            "final_teacher_temp": cfg.dino.teacher_temp,
        },
    )


# -- train / eval / export ---------------------------------------------------------------------------------------------
def train_sets(
    level: str | None = None,
    fold: int | None = None,
    aggregator: str | None = None,
    finetune: bool = False,
    backbone: str | None = None,
) -> list[str]:
    """The train command's own flags as config overrides."""
    out = []
    if level:
        out.append(f"level={level}")
    if fold is not None:
        out.append(f"fold={fold}")
    if aggregator:
        out.append(f"video.aggregator={aggregator}")
    if finetune:
        out.append("frame.mode=finetune")
    if backbone is not None:
        out.append(f"backbone.path={backbone}")
    return out


def train_stage(
    data: str | None,
    run_dir: str,
    config: str | None = None,
    sets: list[str] | None = None,
    baseline: bool = False,
    seed: int | None = None,
    max_steps: int | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    device: str = "auto",
    overwrite: bool = False,
    show_progress: bool = True,
) -> dict:
    dev = resolve_device(device)

    def factory(cfg: LusConfig, data_dir: str):
        return make_task(cfg, data_dir, dev)

    summary = train_run(
        TASK_NAME,
        LusConfig,
        factory,
        data=data,
        run_dir=run_dir,
        config=config,
        sets=sets,
        baseline=set_baseline if baseline else None,
        seed=seed,
        max_steps=max_steps,
        checkpoint_every=checkpoint_every,
        resume=resume,
        device=device,
        overwrite=overwrite,
        show_progress=show_progress,
        summary_extra=_summary_extra,
    )
    return summary


def set_baseline(cfg: LusConfig) -> None:
    """--baseline: the same recipe on a randomly initialised backbone (no self-distillation)."""
    cfg.backbone.path = ""


def _summary_extra(cfg: LusConfig) -> dict:
    return {
        "level": cfg.level,
        "fold": cfg.fold,
        "backbone": cfg.backbone.path or "random init",
        "method": cfg.video.aggregator if cfg.level == "video" else cfg.frame.mode,
    }


def load_trained(run_dir: str, data: str | None, device: torch.device):
    run = RunDir(run_dir)
    run.require_trained()
    cfg = load_run_config(LusConfig, run)
    data_dir = data or recorded_data_dir(run)
    task = make_task(cfg, data_dir, device)
    model = task.build_model()
    RunDir.load_weights(model, run.weights_for_eval())
    return run, cfg, task, model.to(device).eval()


def evaluate_task(task, model, device) -> dict:
    """The eval body: metrics on the reported fold (+ the KNN sweep at frame level)."""
    cfg = task.cfg
    if isinstance(task, VideoTask):
        probs, beta = task.predict(model, task.report_ids, device)
        m = classification_metrics(task.labels[task.report_ids].numpy(), probs)
        extra = {
            "aggregator": cfg.video.aggregator,
            "beta_max_mean": float(beta.max(1).mean()),
            "seq_len": cfg.video.seq_len,
        }
    else:
        m = classification_metrics(task.labels[task.report_ids].numpy(), task.predict(model, task.report_ids, device))
        extra = {"mode": cfg.frame.mode, "knn": task.knn()}
    return {
        "task": TASK_NAME,
        "level": cfg.level,
        "train_fold": task.train_fold,
        "reported_fold": task.report_fold,
        "backbone": task.backbone.kind,
        "backbone_path": task.backbone.path,
        "selection": cfg.selection,
        "accuracy": m["accuracy"],
        "weighted_f1": m["weighted_f1"],
        "auc": m["auc"],
        "n": m["n"],
        "confusion": m["confusion"],
        "classes": CLASS_NAMES,
        **extra,
    }


def eval_stage(run_dir: str, data: str | None = None, device: str = "auto") -> dict:
    dev = resolve_device(device)
    run, cfg, task, model = load_trained(run_dir, data, dev)
    result = {**evaluate_task(task, model, dev), "run_dir": str(run.path), "weights": str(run.weights_for_eval())}
    atomic_write_json(run.eval_json, result)
    return result


def export_stage(run_dir: str, out: str | None = None, overwrite: bool = False) -> dict:
    dev = torch.device("cpu")
    run, cfg, task, model = load_trained(run_dir, None, dev)
    vit = task.backbone.model
    size = vit.cfg.img_size
    gen = torch.Generator().manual_seed(0)
    if isinstance(task, VideoTask):
        scorer = VideoScorer(model.backbone if hasattr(model, "backbone") else vit, model).eval()
        T = cfg.video.seq_len
        example = (torch.randn(T, 1, size, size, generator=gen),)
        parity = [example, (torch.randn(T, 1, size, size, generator=gen) * 2,)]
        dynamic = None
        outputs = ["probs (3,)", f"beta ({T},)", "attention (T, heads, h, w): last-layer [CLS] self-attention"]
        inputs = [f"frames ({T}, 1, {size}, {size}) float32, normalised"]
    else:
        backbone = model.backbone if hasattr(model, "backbone") else vit
        head = model.head if hasattr(model, "head") else model
        scorer = FrameScorer(backbone, head).eval()
        example = (torch.randn(2, 1, size, size, generator=gen),)
        parity = [example, (torch.randn(5, 1, size, size, generator=gen),)]
        dynamic = ({0: torch.export.Dim("frames", min=1, max=4096)},)
        outputs = ["probs (B, 3)", "attention (B, heads, h, w)"]
        inputs = [f"frames (B, 1, {size}, {size}) float32, normalised"]
    data = PreparedLus(recorded_data_dir(run))
    manifest = {
        "task": TASK_NAME,
        "level": cfg.level,
        "classes": CLASS_NAMES,
        "image_size": size,
        "patch_size": vit.cfg.patch_size,
        "fps": data.info["fps"],
        "normalize": {"mean": cfg.aug.mean, "std": cfg.aug.std},
        "seq_len": cfg.video.seq_len if cfg.level == "video" else None,
        "method": cfg.video.aggregator if cfg.level == "video" else cfg.frame.mode,
        "backbone": task.backbone.kind,
        "backbone_path": task.backbone.path,
        "train_fold": cfg.fold,
        "inputs": inputs,
        "outputs": outputs,
    }
    out_dir = Path(out) if out else run.export_dir
    info = export_program(
        scorer, example, out_dir, dynamic_shapes=dynamic, manifest=manifest, overwrite=overwrite, parity_inputs=parity
    )
    return {
        "task": TASK_NAME,
        "export_dir": str(out_dir),
        "level": cfg.level,
        "parity_max_abs_diff": info["parity"]["max_abs_diff"],
        "files": sorted(info["files"]),
    }


# -- score: one video with an export alone -----------------------------------------------------------------------------
def score_stage(model: str, videos: list[str], out: str, top_frames: int = 3, overwrite: bool = False) -> dict:
    from .plots import plot_attention_overlay, plot_frame_weights

    module, manifest, folder = load_exported(model)
    if manifest.get("task") != TASK_NAME:
        raise SkdError(f"not a lus export (task {manifest.get('task')!r})", folder)
    if manifest.get("level") != "video":
        raise SkdError("a frame-level export: `score --video` needs a video-level export (train --level video)", folder)
    if not videos:
        raise SkdError("give at least one --video")
    out_dir = Path(out)
    size, T = int(manifest["image_size"]), int(manifest["seq_len"])
    mean, std = manifest["normalize"]["mean"], manifest["normalize"]["std"]
    results = []
    for video in videos:
        path = Path(video)
        if not path.is_file():
            raise SkdError("video not found", path)
        stem = path.stem
        targets = [out_dir / f"{stem}_frame_weights.png", out_dir / f"{stem}_attention.png", out_dir / f"{stem}.json"]
        if any(t.exists() for t in targets) and not overwrite:
            raise SkdError(f"already holds the score of {path.name}; pass --overwrite to replace it", out_dir)
        from .data import ClipError

        try:
            frames, src_fps, decoded = decode_video(path, size, float(manifest["fps"]))
        except ClipError as exc:
            raise SkdError(str(exc), path) from exc
        idx = sample_frame_indices(len(frames), T)
        x = torch.from_numpy(frames[idx]).unsqueeze(1).float() / 255.0
        with torch.no_grad():
            probs, beta, attn = module((x - mean) / std)
        probs, beta, attn = probs.numpy(), beta.numpy(), attn.numpy()
        pred = int(probs.argmax())
        out_dir.mkdir(parents=True, exist_ok=True)
        plot_frame_weights(
            targets[0],
            beta,
            idx,
            CLASS_NAMES[pred],
            probs,
            CLASS_NAMES,
            path.name,
            uniform=manifest.get("method") != "dual_vlad",
        )
        top = np.argsort(-beta, kind="stable")[:top_frames]
        plot_attention_overlay(targets[1], frames[idx], attn, top, beta, path.name, idx)
        result = {
            "video": str(path),
            "severity": CLASS_NAMES[pred],
            "class": pred,
            "probabilities": {c: round(float(p), 4) for c, p in zip(CLASS_NAMES, probs)},
            "frames_decoded": decoded,
            "frames_after_fps": len(frames),
            "source_fps": src_fps,
            "sampled_frames": idx.tolist(),
            "beta": [round(float(b), 4) for b in beta],
            "top_frames": [int(idx[t]) for t in top],
            "weights_png": str(targets[0]),
            "attention_png": str(targets[1]),
        }
        atomic_write_json(targets[2], result)
        results.append(result)
    return {"task": TASK_NAME, "model": str(folder), "results": results}


def score_lines(result: dict) -> str:
    """One line per video (pipe-friendly): path, severity, probabilities."""
    return "\n".join(
        f"{r['video']}\t{r['severity']}\t" + " ".join(f"{c}={p:.3f}" for c, p in r["probabilities"].items())
        for r in result["results"]
    )


# -- run: the tiny default ---------------------------------------------------------------------------------------------
def _quiet_fit(task, cfg, run_dir: Path, device: torch.device, overwrite: bool) -> dict:
    """Train one grid cell in a run directory (config, checkpoints, summary) without the CLI extras (plots)."""
    run = RunDir(run_dir)
    if run.is_finished() and not overwrite:
        return read_json(run.summary)
    run.clear_outputs()
    run.path.mkdir(parents=True, exist_ok=True)
    run.write_config(config_to_yaml(cfg))
    run.write_provenance(cfg.train.seed, task.data_fingerprint, {"task": TASK_NAME, "data_dir": str(task.data.path)})
    result = Trainer(task, cfg.train, run, device, show_progress=False).fit().to_dict()
    atomic_write_json(run.summary, {"task": TASK_NAME, **result})
    return result


GRID_METHODS = ("knn", "linear", "dual_vlad", "netvlad", "mean")


def grid_stage(
    data: str,
    run_dir: str,
    pretrain_runs: dict[int, str],
    device: str = "auto",
    sets: list[str] | None = None,
    overwrite: bool = False,
) -> dict:
    """DINO-pretrained vs randomly initialised backbone, per seed and fold: frame KNN, linear probe,
    and the three video aggregators, every one on the same cached features."""
    dev = resolve_device(device)
    cells: list[dict] = []
    root = Path(run_dir)
    for seed, pre in sorted(pretrain_runs.items()):
        for init, path in (("dino", pre), ("random", "")):
            shared_backbone, shared_feats = None, None
            for fold in (1, 2):
                for level, method in (
                    ("frame", "linear"),
                    ("video", "dual_vlad"),
                    ("video", "netvlad"),
                    ("video", "mean"),
                ):
                    cfg = build_config(
                        LusConfig,
                        None,
                        list(sets or [])
                        + [
                            f"backbone.path={path}",
                            f"train.seed={seed}",
                            f"level={level}",
                            f"fold={fold}",
                            f"video.aggregator={method if level == 'video' else 'dual_vlad'}",
                        ],
                    )
                    task = make_task(cfg, data, dev, backbone=shared_backbone, features=shared_feats)
                    shared_backbone, shared_feats = task.backbone, task.features
                    cell_dir = root / "grid" / f"seed{seed}" / init / f"fold{fold}" / method
                    _quiet_fit(task, cfg, cell_dir, dev, overwrite)
                    model = task.build_model()
                    RunDir.load_weights(model, RunDir(cell_dir).weights_for_eval())
                    ev = evaluate_task(task, model.to(dev).eval(), dev)
                    atomic_write_json(RunDir(cell_dir).eval_json, ev)
                    cells.append(
                        {
                            "seed": seed,
                            "init": init,
                            "fold": fold,
                            "method": method,
                            **{k: ev[k] for k in ("accuracy", "weighted_f1", "auc")},
                        }
                    )
                    if method == "linear":
                        knn = ev["knn"]
                        cells.append(
                            {
                                "seed": seed,
                                "init": init,
                                "fold": fold,
                                "method": "knn",
                                "k": knn["k"],
                                **{k: knn[k] for k in ("accuracy", "weighted_f1", "auc")},
                            }
                        )
    table = {}
    for init in ("dino", "random"):
        for method in GRID_METHODS:
            rows = [c for c in cells if c["init"] == init and c["method"] == method]
            table[f"{init}/{method}"] = {m: mean_std([r[m] for r in rows]) for m in ("accuracy", "weighted_f1", "auc")}
    result = {
        "task": TASK_NAME,
        "seeds": sorted(pretrain_runs),
        "folds": [1, 2],
        "cells": cells,
        "table": table,
        "chance": _chance(PreparedLus(data)),
    }
    atomic_write_json(root / "grid.json", result)
    return result


def _chance(data: PreparedLus) -> dict:
    """Majority-class accuracy of each reported fold (the floor a classifier must beat)."""
    out = {}
    for level, rows in (("frame", data.labelled), ("video", [c for c in data.clips if c["kind"] == "video"])):
        accs = []
        for fold in (1, 2):
            train = [r["label"] for r in rows if r["fold"] == fold and r["label"] >= 0]
            test = [r["label"] for r in rows if r["fold"] == 3 - fold and r["label"] >= 0]
            if train and test:
                majority = np.bincount(train, minlength=3).argmax()
                accs.append(float(np.mean(np.array(test) == majority)))
        out[level] = round(float(np.mean(accs)), 4) if accs else None
    return out


def run_all_stages(
    run_dir: str,
    data: str | None = None,
    seeds: int = 3,
    device: str = "auto",
    overwrite: bool = False,
    sets: list[str] | None = None,
    pretrain_sets: list[str] | None = None,
    max_steps: int | None = None,
) -> dict:
    """The tiny default: synthetic clips in the MeDiVLAD layout -> DINO pretraining (per seed) -> frame KNN /
    linear probe and video dual-VLAD / NetVLAD / mean pooling on DINO and on random-init backbones, both
    folds -> the main run (seed 0, DINO, dual-VLAD, fold 1) evaluated, exported, and a synthetic mp4 scored."""
    t0 = time.perf_counter()
    run = RunDir(run_dir)
    if run.config.is_file() and not overwrite:
        raise SkdError("already holds a run; pass --overwrite to replace it", run.path)
    if data is None:
        data = str(run.path / "data" / "prepared")
        if not (Path(data) / "prep.json").is_file():
            console.print("[cyan]prep:[/] synthetic B-mode clips in the MeDiVLAD layout")
            prep_stage("synthetic", str(run.path / "data" / "raw"), data, size=32, overwrite=True)
    pretrain_runs = {}
    for seed in range(seeds):
        pre = run.path / "pretrain" / f"seed{seed}"
        if not (RunDir(pre).is_finished() and not overwrite):
            console.print(f"[cyan]pretrain[/] DINO seed {seed}")
            pretrain_stage(
                data,
                str(pre),
                sets=pretrain_sets,
                seed=seed,
                max_steps=max_steps,
                overwrite=True,
                device=device,
                show_progress=False,
            )
        pretrain_runs[seed] = str(pre)
    console.print("[cyan]grid[/] frame KNN / linear, video dual-VLAD / NetVLAD / mean; DINO vs random init")
    grid = grid_stage(data, str(run.path), pretrain_runs, device, sets, overwrite)
    console.print("[cyan]main run[/] DINO seed 0, video dual-VLAD, fold 1: train -> eval -> export -> score")
    train_stage(
        data,
        str(run.path),
        sets=list(sets or []) + [f"backbone.path={pretrain_runs[0]}"],
        seed=0,
        device=device,
        overwrite=True,
        show_progress=False,
    )
    evaluated = eval_stage(str(run.path), device=device)
    exported = export_stage(str(run.path), overwrite=True)
    from .synth import write_video_folder

    clips = write_video_folder(
        run.path / "data" / "score_clips",
        [("severe_clip.mp4", 3, "p0"), ("healthy_clip.mp4", 0, "p1")],
        size=64,
        seed=123,
    )
    scored = score_stage(
        exported["export_dir"],
        [str(clips / "severe_clip.mp4"), str(clips / "healthy_clip.mp4")],
        str(run.path / "score"),
        overwrite=True,
    )
    return {
        "task": TASK_NAME,
        "run_dir": str(run.path),
        "data": data,
        "chance": grid["chance"],
        "table": grid["table"],
        "main": {k: evaluated[k] for k in ("accuracy", "weighted_f1", "auc", "confusion")},
        "export_dir": exported["export_dir"],
        "parity_max_abs_diff": exported["parity_max_abs_diff"],
        "score": [
            {k: r[k] for k in ("video", "severity", "probabilities", "attention_png", "weights_png")}
            for r in scored["results"]
        ],
        "total_seconds": round(time.perf_counter() - t0, 1),
    }
