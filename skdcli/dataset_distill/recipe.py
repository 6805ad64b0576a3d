"""The dataset-distill stages: prep -> train --stage cgan -> train --stage match -> eval (IPC table)
-> export (the generator) -> generate (an ImageFolder + tensor file) / sample (a PNG grid), and
`run` = all of it on scikit-learn's real 8x8 digits, three seeds, SKD next to the no-SKD baseline,
random real subsets and the full real train split.
"""

from __future__ import annotations

import math
import os
import secrets
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from ..engine.compare import mean_std
from ..engine.console import console, metric_table
from ..engine.contract import StageOptions
from ..engine.distributed import resolve_device
from ..engine.errors import SkdError
from ..engine.export import load_exported
from ..engine.io import atomic_write, atomic_write_json, file_sha256, read_json, staged_dir
from ..engine.rundir import RunDir
from ..engine.stages import ExportSpec, Pipeline, RecipeHooks, Trained, load_trained, train_run
from .config import EVAL_MODES, POOL_ARCHS, DistillConfig
from .data import PreparedImages, prepare_dataset
from .evaluate import (
    BatchSource,
    FixedSet,
    OnTheFly,
    TrainSpec,
    generate_fixed,
    random_real_subset,
    select_top1,
    train_models,
)
from .model import Generator, Sampler, build_classifier
from .task import DistillTask

TASK_NAME = "dataset-distill"
SEEDS = (0, 1, 2)
# The tiny default's stage-1 settings (DiM: lr 1e-4, 150 epochs at batch 128; here 8x8 digits on a CPU).
# The config's own defaults are the tiny stage 2 (see DistillConfig).
TINY_CGAN = ("train.lr=5e-4", "train.max_steps=300")


def prep_stage(
    source: str, raw: str | None, out: str, overwrite: bool = False, test_fraction: float = 0.2, seed: int = 0
) -> dict:
    return prepare_dataset(source, raw, out, overwrite=overwrite, test_fraction=test_fraction, seed=seed)


# -- evaluation of systems ---------------------------------------------------------------------------------------------
def parse_list(text: str | None, default: list, cast: type = str, name: str = "") -> list:
    if text is None or text == "":
        return list(default)
    try:
        return [cast(v.strip()) for v in str(text).split(",") if v.strip()]
    except ValueError as exc:
        raise SkdError(f"{name} expects a comma-separated list, got '{text}'") from exc


def cell_steps(kind: str, cfg: DistillConfig, ipc: int, num_classes: int) -> int:
    """Training steps of one cell: eval.epochs of the source's epoch (DiM counts in epochs)."""
    bs = cfg.eval.batch_size
    if kind == "full_real":
        return cfg.eval.full_real_steps
    if kind == "on_the_fly":
        per_epoch = num_classes * ipc // bs + (1 if cfg.eval.on_the_fly_batches == "floor_plus_one" else 0)
        if per_epoch == 0:
            raise SkdError(f"eval.on_the_fly_batches=floor gives 0 batches per epoch at IPC {ipc} with batch {bs}")
        return cfg.eval.epochs * per_epoch
    n = num_classes * ipc
    return cfg.eval.epochs * math.ceil(n / min(bs, n))


def evaluate_systems(
    systems: dict[str, list[Generator] | str],
    data: PreparedImages,
    cfg: DistillConfig,
    ipcs: list[int],
    archs: list[str],
    modes: list[str],
    repeats: int,
    device: torch.device,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Top-1 on the real test split of fresh classifiers trained per (system, arch, IPC, mode).

    A system is a list of generators (model r of a cell uses generator r mod len, and its own noise
    seed) or "random_real" / "full_real". Returns {"rows": [...], ...} with mean ± sample std."""
    for arch in archs:
        if arch not in POOL_ARCHS:
            raise SkdError(f"--arch: '{arch}' is not one of {', '.join(POOL_ARCHS)}")
    for mode in modes:
        if mode not in EVAL_MODES:
            raise SkdError(f"--mode: '{mode}' is not one of {', '.join(EVAL_MODES)}")
    if any(i < 1 for i in ipcs):
        raise SkdError(f"--ipc values must be >= 1, got {ipcs}")
    C = data.num_classes
    shape = data.shape
    train_gan = data.to_gan(data.train_x)
    test_x = data.classifier_input(data.to_gan(data.test_x)).to(device)
    test_y = data.test_y.to(device)
    e = cfg.eval
    rows: list[dict] = []
    total_steps, total_seconds = 0, 0.0
    cells = []
    for name, system in systems.items():
        for arch in archs:
            if system == "full_real":
                cells.append((name, arch, None, "full_real"))
                continue
            for ipc in ipcs:
                for mode in ["fixed"] if system == "random_real" else modes:
                    cells.append((name, arch, ipc, mode))
    for name, arch, ipc, mode in cells:
        system = systems[name]
        seeds = [seed + 1000 * r for r in range(repeats)]
        sources: list[BatchSource] = []
        for r, s in enumerate(seeds):
            if system == "full_real":
                sources.append(FixedSet(train_gan.to(device), data.train_y.to(device), e.batch_size))
            elif system == "random_real":
                x, y = random_real_subset(train_gan, data.train_y, ipc, C, s)
                sources.append(FixedSet(x.to(device), y.to(device), e.batch_size))
            else:
                gen = system[r % len(system)].to(device).eval()
                if mode == "fixed":
                    x, y = generate_fixed(gen, ipc, C, seed=s)
                    sources.append(FixedSet(x, y, e.batch_size))
                else:
                    sources.append(OnTheFly(gen, ipc, C, e.batch_size, e.on_the_fly_batches == "floor_plus_one"))
        kind = "full_real" if system == "full_real" else mode
        steps = cell_steps(kind, cfg, ipc or 1, C)
        per_epoch = max(1, steps // e.epochs) if kind != "full_real" else 0
        test_every = e.test_every_epochs * per_epoch if (e.select == "best_on_test" and per_epoch) else 0
        spec = TrainSpec(
            steps=steps,
            lr=e.lr,
            momentum=e.momentum,
            weight_decay=e.weight_decay,
            dsa=e.dsa,
            test_every_steps=test_every,
        )
        if progress:
            console.print(
                f"[cyan]eval[/] {name} {arch} {'IPC ' + str(ipc) if ipc else 'all'} {mode}: {repeats} x {steps} steps"
            )
        result = train_models(
            lambda a=arch: build_classifier(a, cfg.classifier, shape[0], shape[1], C),
            seeds,
            sources,
            spec,
            data.classifier_input,
            test_x,
            test_y,
            vectorize=e.vectorize,
            device=device,
        )
        top1 = [select_top1(curve, e.select) for curve in result["curves"]]
        stats = mean_std(top1)
        mean, std = stats["mean"], stats["std"]
        rows.append(
            {
                "system": name,
                "arch": arch,
                "ipc": ipc,
                "mode": "full train split" if kind == "full_real" else mode,
                "top1_mean": round(mean, 2),
                "top1_std": round(std, 2),
                "top1": [round(v, 2) for v in top1],
                "steps": steps,
            }
        )
        total_steps += result["model_steps"]
        total_seconds += result["seconds"]
    return {
        "rows": rows,
        "select": e.select,
        "repeats": repeats,
        "std": "sample (ddof=1)",
        "eval_model_steps": total_steps,
        "eval_seconds": round(total_seconds, 2),
        "model_steps_per_second": round(total_steps / max(total_seconds, 1e-9), 1),
    }


# -- generate / sample -------------------------------------------------------------------------------------------------
def _class_dir(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "class"


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats -> uint8, round half to even (torch.round), so the PNGs and the tensor file agree."""
    return ((images.detach().cpu().float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


def generate_stage(
    hooks: RecipeHooks,
    run_dir: str,
    ipc: int,
    out: str,
    fixed_seed: int | None = None,
    overwrite: bool = False,
    device: str = "cpu",
) -> dict:
    """IPC images per class from the run's generator: OUT/<class>/<index>.png, OUT/images.safetensors
    (uint8 images, labels) and OUT/generate.json. With --fixed-seed the noise is drawn from that seed
    (bit-identical files every time, on CPU); otherwise from a fresh random seed, recorded."""
    if ipc < 1:
        raise SkdError(f"--ipc must be >= 1, got {ipc}")
    out_dir = Path(out)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())) and not overwrite:
        raise SkdError("already exists; pass --overwrite to replace it", out_dir)
    trained = load_trained(hooks, run_dir, device=resolve_device(device))
    seed = fixed_seed if fixed_seed is not None else secrets.randbits(31)
    t0 = time.perf_counter()
    images, labels = generate_fixed(trained.model.generator, ipc, trained.task.num_classes, seed)
    seconds = time.perf_counter() - t0
    pixels = to_uint8(images)
    labels = labels.cpu()
    classes = trained.task.data.info["classes"]
    with staged_dir(out_dir) as tmp:
        from PIL import Image

        for i, (x, y) in enumerate(zip(pixels, labels.tolist())):
            folder = tmp / _class_dir(classes[y])
            folder.mkdir(exist_ok=True)
            array = x[0].numpy() if x.shape[0] == 1 else x.permute(1, 2, 0).numpy()
            Image.fromarray(np.ascontiguousarray(array), mode="L" if x.shape[0] == 1 else "RGB").save(
                folder / f"{i:06d}.png", format="PNG"
            )
        save_file({"images": pixels.contiguous(), "labels": labels.long()}, str(tmp / "images.safetensors"))
        info = {
            "task": TASK_NAME,
            "run_dir": str(trained.run.path),
            "weights": str(trained.run.weights_for_eval()),
            "ipc": ipc,
            "num_images": len(labels),
            "seed": seed,
            "fixed_seed": fixed_seed is not None,
            "classes": classes,
            "images_sha256": file_sha256(tmp / "images.safetensors"),
            "images_per_second": round(len(labels) / max(seconds, 1e-9), 1),
        }
        atomic_write_json(tmp / "generate.json", info)
    return {"out": str(out_dir), **info}


def sample_grid(images: torch.Tensor, nrow: int, scale: int) -> np.ndarray:
    """(N, C, H, W) in [0, 1] -> an HxW(x3) uint8 grid with 1-pixel gaps, each image upscaled x scale."""
    n, c, h, w = images.shape
    rows = math.ceil(n / nrow)
    hs, ws = h * scale, w * scale
    grid = np.full((rows * (hs + 1) + 1, nrow * (ws + 1) + 1, c), 255, dtype=np.uint8)
    pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    pixels = pixels.repeat_interleave(scale, 2).repeat_interleave(scale, 3).permute(0, 2, 3, 1).numpy()
    for i in range(n):
        r, k = divmod(i, nrow)
        grid[1 + r * (hs + 1) : 1 + r * (hs + 1) + hs, 1 + k * (ws + 1) : 1 + k * (ws + 1) + ws] = pixels[i]
    return grid[..., 0] if c == 1 else grid


def sample_stage(
    model: str, class_: str, n: int, out: str | None = None, seed: int = 0, scale: int = 0, overwrite: bool = False
) -> dict:
    """A PNG grid of N images of one class, from an exported generator alone."""
    from PIL import Image

    module, manifest, folder = load_exported(model, TASK_NAME)
    classes = manifest["classes"]
    if class_ in classes:
        index = classes.index(class_)
    else:
        try:
            index = int(class_)
        except ValueError:
            raise SkdError(f"--class '{class_}' is neither a class index nor one of {classes}") from None
    if not 0 <= index < len(classes):
        raise SkdError(f"--class {index} out of range: the generator knows classes 0..{len(classes) - 1}")
    if n < 1:
        raise SkdError(f"--n must be >= 1, got {n}")
    path = Path(out) if out else folder.parent / "samples" / f"class{index}.png"
    if path.exists() and not overwrite:
        raise SkdError("already exists; pass --overwrite to replace it", path)
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, int(manifest["noise_dim"]), generator=gen)
    with torch.no_grad():
        images = module(z, torch.full((n,), index, dtype=torch.long))
    scale = scale or max(1, 64 // int(manifest["height"]))  # small images are upscaled for viewing
    grid = sample_grid(images, math.ceil(math.sqrt(n)), scale)
    atomic_write(path, lambda p: Image.fromarray(grid).save(p, format="PNG"))
    return {
        "png": str(path),
        "class": index,
        "class_name": classes[index],
        "n": n,
        "seed": seed,
        "scale": scale,
        "export": str(folder),
    }


# -- hooks -------------------------------------------------------------------------------------------------------------
class DistillHooks(RecipeHooks):
    name = TASK_NAME
    config_class = DistillConfig
    tiny_data_note = "scikit-learn's handwritten digits (real, 8x8) as a prepared dataset"
    # --baseline: DiM's own matching (MSE of log-softmax, x0.01), no self-KD term
    baseline = ("match.mse_weight=0.01", "match.skd_weight=0.0")
    summary_keys = {"stage": "stage", "mse_weight": "match.mse_weight", "skd_weight": "match.skd_weight"}
    prep = staticmethod(prep_stage)

    def make_task(self, cfg: DistillConfig, data_dir: str) -> DistillTask:
        return DistillTask(cfg, data_dir)

    def write_tiny_data(self, out: Path) -> None:
        prep_stage("digits", None, str(out), overwrite=True)

    def train(self, opts: StageOptions) -> dict:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise SkdError(
                "dataset-distill trains in one process (the pool model is trained online per step); "
                "run it without torchrun"
            )
        return train_run(self, opts)

    def summary_extra(self, cfg: DistillConfig, data_dir: str) -> dict:
        extra = super().summary_extra(cfg, data_dir)
        if cfg.stage == "match":
            extra["init"] = cfg.match.init
        return extra

    def check_data_for(self, run: RunDir, cfg: DistillConfig, data_dir: str) -> None:
        prep = Path(data_dir) / "prep.json"
        if not prep.is_file():
            return
        info = read_json(prep)
        prov = read_json(run.provenance) if run.provenance.is_file() else {}
        trained_on = prov.get("data_dir")
        if trained_on and (Path(trained_on) / "prep.json").is_file():
            was = read_json(Path(trained_on) / "prep.json")
            for key in ("channels", "height", "width", "num_classes"):
                if was.get(key) != info.get(key):
                    raise SkdError(
                        f"this dataset has {key}={info.get(key)} but the run was trained with {key}={was.get(key)}",
                        data_dir,
                    )

    def evaluate_run(self, trained: Trained, opts: StageOptions) -> dict:
        cfg: DistillConfig = trained.cfg
        ipcs = parse_list(opts.extra.get("ipc"), cfg.eval.ipc, int, "--ipc")
        archs = parse_list(opts.extra.get("arch"), cfg.eval.archs, str, "--arch")
        modes = parse_list(opts.extra.get("mode"), cfg.eval.modes, str, "--mode")
        repeats = opts.extra.get("repeats") or cfg.eval.repeats
        systems: dict[str, Any] = {"generator": [trained.model.generator]}
        if opts.extra.get("references"):
            systems.update({"random real": "random_real", "full real": "full_real"})
        device = next(trained.model.parameters()).device
        result = evaluate_systems(
            systems, trained.task.data, cfg, ipcs, archs, modes, repeats, device, seed=cfg.train.seed
        )
        return {
            "task": TASK_NAME,
            "run_dir": str(trained.run.path),
            "stage": cfg.stage,
            "weights": str(trained.run.weights_for_eval()),
            "data": trained.data_dir,
            "split": "test",
            **result,
        }

    def export_spec(self, trained: Trained, opts: StageOptions) -> ExportSpec:
        gen: Generator = trained.model.generator
        info = trained.task.data.info
        g = torch.Generator().manual_seed(0)

        def inputs(n: int) -> tuple:
            return torch.randn(n, gen.noise_dim, generator=g), torch.randint(gen.num_classes, (n,), generator=g)

        batch = torch.export.Dim("batch", min=1, max=65536)
        return ExportSpec(
            Sampler(gen).eval(),
            inputs(4),
            dynamic_shapes=({0: batch}, {0: batch}),
            parity_inputs=[inputs(7), inputs(1)],
            manifest={
                "noise_dim": gen.noise_dim,
                "num_classes": gen.num_classes,
                "classes": info["classes"],
                "channels": info["channels"],
                "height": info["height"],
                "width": info["width"],
                "stage": trained.cfg.stage,
                "source": info["source"],
                "inputs": [
                    "z (B, noise_dim) float32 ~ N(0, I); its first num_classes dims are overwritten "
                    "by the one-hot label",
                    "labels (B,) int64",
                ],
                "outputs": ["images (B, C, H, W) float32 in [0, 1]"],
            },
            result_keys=("noise_dim", "num_classes"),
        )

    def eval_file(self, opts: StageOptions, result: dict) -> str:
        return "eval.json"

    # -- run: the tiny default -----------------------------------------------------------------------------------------
    def pipeline(self, p: Pipeline) -> dict:
        """Per seed: stage cgan, then stage match with SKD (RUN itself for seed 0) and without it
        (the --baseline) from the same stage-1 weights; then one table of IPC x architecture x
        system (SKD, no-SKD, random real, full real) over the 3 seeds, an export of the SKD
        generator, a fixed-seed generated IPC-10 set and a sample grid."""
        root = p.run.path
        sub = root / "runs"
        base_sets = list(p.opts.sets)
        first = p.opts.seed or 0
        seeds = [first + k for k in range(len(SEEDS))]
        skd_dirs, dim_dirs, summaries = [], [], {}
        for seed in seeds:
            cgan = sub / f"cgan_seed{seed}"
            p.train(cgan, seed=seed, baseline=False, sets=[*base_sets, "stage=cgan", *TINY_CGAN])
            skd = root if seed == first else sub / f"skd_seed{seed}"
            summaries[f"skd_seed{seed}"] = p.train(
                skd, seed=seed, baseline=False, sets=[*base_sets, "stage=match", f"match.init={cgan}"]
            )
            dim = sub / f"baseline_seed{seed}"
            p.train(dim, seed=seed, baseline=True, sets=[*base_sets, "stage=match", f"match.init={cgan}"])
            skd_dirs.append(skd)
            dim_dirs.append(dim)
        device = resolve_device(p.opts.device)
        gens = {
            name: [load_trained(self, d, device=device).model.generator for d in dirs]
            for name, dirs in (("dim+skd", skd_dirs), ("dim (no skd)", dim_dirs))
        }
        cgans = [load_trained(self, sub / f"cgan_seed{s}", device=device).model.generator for s in seeds]
        trained = load_trained(self, root, device=device)
        cfg: DistillConfig = trained.cfg
        systems: dict[str, Any] = {**gens, "cgan only": cgans, "random real": "random_real", "full real": "full_real"}
        console.print("[cyan]eval[/] IPC table (3 seeds)")
        table = evaluate_systems(
            systems,
            trained.task.data,
            cfg,
            cfg.eval.ipc,
            cfg.eval.archs,
            cfg.eval.modes,
            len(seeds),
            device,
            seed=first,
        )
        evaluated = {
            "task": TASK_NAME,
            "run_dir": str(root),
            "split": "test",
            "seeds": seeds,
            "systems": list(systems),
            **table,
        }
        atomic_write_json(root / "eval.json", evaluated)
        exported = p.export()
        sampled = sample_stage(exported["export_dir"], "3", 16, str(root / "samples" / "class3.png"), overwrite=True)
        generated = generate_stage(self, str(root), 10, str(root / "generated_ipc10"), fixed_seed=0, overwrite=True)
        return {
            "task": TASK_NAME,
            "run_dir": str(root),
            "seeds": seeds,
            "train_seconds": round(sum(s["train_seconds"] for s in summaries.values()), 1),
            **{k: table[k] for k in ("rows", "select", "repeats", "std", "eval_seconds", "model_steps_per_second")},
            "export_dir": exported["export_dir"],
            "parity_max_abs_diff": exported["parity_max_abs_diff"],
            "sample_png": sampled["png"],
            "generated": generated["out"],
            "generated_sha256": generated["images_sha256"],
        }

    def report(self, command: str, result: dict) -> Any:
        if command not in ("eval", "run") or "rows" not in result:
            return None
        rows = [
            [r["system"], r["arch"], r["ipc"] if r["ipc"] else "-", r["mode"], (r["top1_mean"], r["top1_std"])]
            for r in result["rows"]
        ]
        title = (
            f"dataset-distill {command}: top-1 (%) on the real test split, {result['repeats']} seeds, "
            f"{'last epoch' if result['select'] == 'last' else 'best on test (DiM quirk)'}"
        )
        return metric_table(title, ["system", "arch", "IPC", "mode", "top-1 mean ± std"], rows)

    # -- bench ---------------------------------------------------------------------------------------------------------
    def bench(self, data: str | None, steps: int, rounds: int, device: str, sets: list[str] | None) -> dict:
        """The matching step (stage match) through the engine vs a hand loop and SKD vs no-SKD, plus
        generation images/s and evaluation model-steps/s, vectorised and one at a time."""
        import tempfile

        from safetensors.torch import save_model

        from ..engine.bench import benchmark
        from ..engine.config import build_config

        dev = resolve_device(device)
        with tempfile.TemporaryDirectory() as tmp:
            data = data or self.tiny_data(Path(tmp) / "data")
            probe = DistillTask(build_config(DistillConfig, None, [*(sets or []), "stage=cgan"]), data)
            torch.manual_seed(0)
            init = Path(tmp) / "stage1.safetensors"
            save_model(probe.build_model(), str(init))

            def make(baseline: bool):
                cfg = build_config(DistillConfig, None, [*(sets or []), "stage=match", f"match.init={init}"])
                if baseline:
                    self.set_baseline(cfg)
                return DistillTask(cfg, data), cfg.train

            result = {
                "task": TASK_NAME,
                "step": "stage match (pool online training + G and D updates)",
                **benchmark(make, dev, steps=steps, rounds=rounds),
            }
            task, _ = make(False)
            gan = task.build_model().to(dev).eval()
            generate_fixed(gan.generator, 10, task.num_classes, seed=0)  # warm-up
            t0 = time.perf_counter()
            n = 0
            while time.perf_counter() - t0 < 1.0:
                x, _ = generate_fixed(gan.generator, 50, task.num_classes, seed=n)
                n += len(x)
            result["generation_images_per_second"] = round(n / (time.perf_counter() - t0), 1)
            result["evaluation"] = bench_evaluation(task, dev)
        return result


def bench_evaluation(task: DistillTask, device: torch.device, models: int = 3, steps: int = 30) -> dict:
    """Evaluation throughput (classifier SGD steps per second, batch eval.batch_size) of a cell of
    ``models`` models per architecture, as one vmap-ed ensemble and one model at a time."""
    cfg = task.cfg
    data = task.data
    x, y = random_real_subset(data.to_gan(data.train_x), data.train_y, 10, task.num_classes, 0)
    test_x = data.classifier_input(data.to_gan(data.test_x[:200])).to(device)
    out = {}
    for arch in cfg.eval.archs:
        timing = {}
        for vectorize in (True, False, True, False):  # alternate, keep the best of two
            sources = [FixedSet(x.to(device), y.to(device), cfg.eval.batch_size) for _ in range(models)]
            result = train_models(
                lambda a=arch: build_classifier(a, cfg.classifier, data.shape[0], data.shape[1], task.num_classes),
                list(range(models)),
                sources,
                TrainSpec(steps=steps, dsa=cfg.eval.dsa),
                data.classifier_input,
                test_x,
                data.test_y[:200].to(device),
                vectorize=vectorize,
                device=device,
            )
            rate = result["model_steps"] / result["seconds"]
            key = "vectorised" if vectorize else "one_at_a_time"
            timing[key] = max(timing.get(key, 0.0), rate)
        out[arch] = {
            "model_steps_per_second_vectorised": round(timing["vectorised"], 1),
            "model_steps_per_second_one_at_a_time": round(timing["one_at_a_time"], 1),
            "vectorised_speedup": round(timing["vectorised"] / timing["one_at_a_time"], 3),
            "models": models,
            "batch_size": cfg.eval.batch_size,
        }
    return out
