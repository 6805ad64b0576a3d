"""The shared stages every recipe runs through: train, eval, export and run (the pipeline).

The commands are generated in ``engine.contract``; this is what they run. A recipe gives a
``RecipeHooks`` subclass (its config class, Task factory, baseline switch, tiny-data writer, the body
of its eval, its export spec and its pipeline); everything around those (config resolution, run
directory guards, resume, provenance, loading a trained run, atomic result files, timing) is here,
once.

Config resolution for a new run: the config class's defaults <- ``--config`` YAML <- ``--baseline``
<- ``--set`` items (the recipe's alias flags among them) <- ``--seed`` / ``--max-steps`` /
``--checkpoint-every``. So an explicit option always wins over what ``--baseline`` implies.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Generic, TypeVar

import torch

from .config import (
    build_config,
    config_from_dict,
    config_to_yaml,
    load_yaml,
    merge_into,
    parse_set_overrides,
    validate_config,
)
from .console import console
from .contract import StageOptions
from .distributed import barrier, init_distributed, resolve_device, shutdown_distributed
from .errors import SkdError
from .export import export_program
from .io import atomic_write_json, read_json
from .plots import plot_training_curves
from .rundir import RunDir
from .trainer import Task, Trainer, count_parameters

C = TypeVar("C")


@dataclasses.dataclass
class Trained(Generic[C]):
    """A trained run loaded back: its config, the Task over ``data_dir``, and the model with the run's
    eval weights (best checkpoint, else latest), in eval mode."""

    cfg: C
    task: Task
    model: torch.nn.Module
    run: RunDir
    data_dir: str


@dataclasses.dataclass
class ExportSpec:
    """What a recipe exports: the inference module, example inputs (and their dynamic dimensions),
    parity inputs of other shapes, manifest entries, and extra files (``write_files(folder) -> entries``)."""

    module: torch.nn.Module
    example_inputs: tuple
    dynamic_shapes: Any = None
    parity_inputs: list[tuple] | None = None
    manifest: dict[str, Any] = dataclasses.field(default_factory=dict)
    write_files: Callable[[Path], dict] | None = None
    result_keys: tuple[str, ...] = ()  # manifest entries echoed in the export stage's result


class RecipeHooks:
    """What a recipe gives the shared stages. Subclass it in the recipe's ``recipe.py``."""

    name: str = ""  # the task name, as in `skd NAME`
    config_class: type = object
    baseline: tuple[str, ...] = ()  # what --baseline sets (``--set`` items): the no-distillation system
    summary_keys: dict[str, str] = {}  # train summary entry -> dotted config key, e.g. {"kd_method": "kd.method"}
    tiny_data_note = "the tiny default dataset"  # what `run` says it writes
    bench_sets: tuple[str, ...] = ()  # config overrides of `skd bench` (before the user's --set)

    # -- what every recipe gives --------------------------------------------------------------------
    def make_task(self, cfg: Any, data_dir: str) -> Task:
        raise NotImplementedError

    def prep(self, source: str, raw: str | None, out: str, **options: Any) -> dict:
        """The recipe's prep stage (``prep_stage`` of its recipe.py), as `prep --source ... --out ...` runs it."""
        raise NotImplementedError

    def write_tiny_data(self, out: Path) -> None:
        """Write the embedded tiny dataset in the real on-disk format and prepare it into ``out``:
        by default what ``prep --source synthetic`` writes."""
        self.prep("synthetic", None, str(out), overwrite=True)

    def evaluate_recorded(self, opts: StageOptions) -> dict | None:
        """An eval that needs no model, such as a significance test between runs already evaluated: its
        result, or None (the default) to load the run and call ``evaluate_run``."""
        return None

    def evaluate_run(self, trained: Trained, opts: StageOptions) -> dict:
        """The eval stage's result (the engine writes it into the run as ``eval_file(opts, result)``)."""
        raise NotImplementedError

    def export_spec(self, trained: Trained, opts: StageOptions) -> ExportSpec:
        raise NotImplementedError

    # -- what a recipe may change -------------------------------------------------------------------
    def set_baseline(self, cfg: Any) -> None:
        """What ``--baseline`` changes in the config: the ``baseline`` overrides, typed like ``--set``."""
        merge_into(cfg, parse_set_overrides(list(self.baseline)))

    def summary_extra(self, cfg: Any, data_dir: str) -> dict:
        """Entries added to train_summary.json and the train stage's result (``summary_keys`` by default)."""
        return {name: config_value(cfg, key) for name, key in self.summary_keys.items()}

    def check_data_for(self, run: RunDir, cfg: Any, data_dir: str) -> None:
        """Refuse, with one clear line, a dataset the trained run cannot be loaded on (before the weights
        are loaded into a model built for it); called by ``load_trained``."""

    def train(self, opts: StageOptions) -> dict:
        """The train stage (a recipe may wrap it, e.g. repeats over seeds)."""
        return train_run(self, opts)

    def eval_file(self, opts: StageOptions, result: dict) -> str:
        """The file in the run directory the eval stage's result goes to."""
        return "eval.json"

    def tiny_data(self, root: Path) -> str:
        """The tiny dataset `run` trains on, written under ``root`` once and reused afterwards."""
        if not (root / "prep.json").is_file():
            console.print(f"[cyan]prep:[/] writing {self.tiny_data_note}")
            self.write_tiny_data(root)
        return str(root)

    def pipeline(self, p: "Pipeline") -> dict:
        """`run`: train -> eval -> export on the tiny default (recipes add their own steps)."""
        trained, evaluated, exported = p.train(), p.evaluate(), p.export()
        return {
            "task": self.name,
            "run_dir": str(p.run.path),
            "steps": trained["steps"],
            "train_seconds": trained["train_seconds"],
            **evaluated,
            "export_dir": exported["export_dir"],
            "parity_max_abs_diff": exported["parity_max_abs_diff"],
        }

    def report(self, command: str, result: dict) -> Any:
        """The human view of a stage's result (a rich renderable), or None for the generic table."""
        return None

    def bench(self, data: str | None, steps: int, rounds: int, device: str, sets: list[str] | None) -> dict:
        """`skd bench TASK`: this recipe's training step through the engine vs a hand-written loop, and SKD
        vs --baseline (engine/bench.py), on ``data`` or the tiny default; plus ``bench_extra``'s figures."""
        from .bench import benchmark

        dev = resolve_device(device)
        with tempfile.TemporaryDirectory() as tmp:
            data = data or self.tiny_data(Path(tmp) / "data")

            def make(baseline: bool) -> tuple[Task, Any]:
                cfg = build_config(self.config_class, None, [*self.bench_sets, *(sets or [])])
                if baseline:
                    self.set_baseline(cfg)
                return self.bench_task(cfg, data), cfg.train

            result = {"task": self.name, **benchmark(make, dev, steps=steps, rounds=rounds)}
            return {**result, **self.bench_extra(make, data, dev, steps, rounds, result)}

    def bench_task(self, cfg: Any, data_dir: str) -> Task:
        """The Task `bench` times (default: the training Task)."""
        return self.make_task(cfg, data_dir)

    def bench_extra(
        self,
        make: Callable[[bool], tuple[Task, Any]],
        data: str,
        device: torch.device,
        steps: int,
        rounds: int,
        timed: dict,
    ) -> dict:
        """The recipe's own `bench` figures (throughputs, caches...); ``make(baseline)`` builds a Task and
        ``timed`` holds the step timings already measured."""
        return {}


# -- config and run directory ------------------------------------------------------------------------
def config_value(cfg: Any, key: str) -> Any:
    """``cfg`` at a dotted key (``"kd.method"``)."""
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def load_run_config(config_cls: type[C], run: RunDir) -> C:
    if not run.config.is_file():
        raise SkdError("not a skd run directory (no config.yaml)", run.path)
    try:
        cfg = validate_config(config_from_dict(config_cls, load_yaml(run.config)))
    except SkdError as exc:
        raise SkdError(exc.message, run.config) from exc
    return cfg


def recorded_data_dir(run: RunDir) -> str:
    if run.provenance.is_file():
        data = read_json(run.provenance).get("data_dir")
        if data:
            return data
    raise SkdError("no --data given and the run does not record its data directory", run.path)


def new_run_config(hooks: RecipeHooks, opts: StageOptions) -> Any:
    """Defaults <- --config <- --baseline <- --set (and alias flags) <- --seed/--max-steps/--checkpoint-every."""
    cfg = build_config(hooks.config_class, opts.config, None)
    if opts.baseline:
        hooks.set_baseline(cfg)
    if opts.sets:
        merge_into(cfg, parse_set_overrides(opts.sets))
    overrides = {"seed": opts.seed, "max_steps": opts.max_steps, "checkpoint_every": opts.checkpoint_every}
    merge_into(cfg.train, {k: v for k, v in overrides.items() if v is not None}, "train")
    return validate_config(cfg)


# -- train ---------------------------------------------------------------------------------------------
def train_stage(hooks: RecipeHooks, opts: StageOptions) -> dict:
    return hooks.train(opts)


def train_run(hooks: RecipeHooks, opts: StageOptions, show_progress: bool = True, plots: bool = True) -> dict:
    """Resolve the config, guard the run directory, train (under torchrun too), summarise. ``plots=False``
    skips the training-curve figures (for a pipeline's many small runs: each costs more than their training)."""
    dist_info, dev = init_distributed(opts.device)
    data = opts.data
    try:
        run = RunDir(opts.run_dir)
        if opts.resume:
            if opts.config or opts.sets or opts.baseline:
                raise SkdError(
                    "--resume continues with the run's own config.yaml; drop --config/--set/--baseline "
                    "(and the flags that set config keys)"
                )
            cfg = load_run_config(hooks.config_class, run)
            data = data or recorded_data_dir(run)
            if opts.max_steps is not None:  # extending a run is allowed
                cfg.train.max_steps = opts.max_steps
            latest = run.latest_checkpoint()
            if run.is_finished() and latest is not None and RunDir.load_state(latest)["step"] >= cfg.train.max_steps:
                raise SkdError(
                    f"run already finished {cfg.train.max_steps} steps; pass --max-steps N to train further", run.path
                )
        else:
            cfg = new_run_config(hooks, opts)
            if data is None:
                raise SkdError(f"train needs --data DIR (a dataset written by `skd {hooks.name} prep`)")
            if dist_info.is_main and run.config.is_file():
                if not opts.overwrite:
                    state = "a finished run" if run.is_finished() else "an unfinished run (continue it with --resume)"
                    raise SkdError(f"already holds {state}; pass --overwrite to start over", run.path)
                run.clear_outputs()
        task = hooks.make_task(cfg, data)  # validates the data directory on every rank
        if dist_info.is_main:
            run.path.mkdir(parents=True, exist_ok=True)
            run.write_config(config_to_yaml(cfg))
            if not opts.resume or not run.provenance.is_file():
                run.write_provenance(
                    cfg.train.seed,
                    task.data_fingerprint(),
                    {
                        **task.provenance(),
                        "task": hooks.name,
                        "data_dir": str(Path(data).resolve()),
                        "device": str(dev),
                    },
                )
        barrier()
        trainer = Trainer(task, cfg.train, run, dev, dist_info, show_progress=show_progress)
        result = trainer.fit(resume=opts.resume).to_dict()
        summary = {
            "task": hooks.name,
            "run_dir": str(run.path),
            **hooks.summary_extra(cfg, data),
            **result,
            "parameters": count_parameters(trainer.model),
            "world_size": dist_info.world_size,
            "device": str(dev),
        }
        if dist_info.is_main:
            atomic_write_json(run.summary, summary)
            if plots:
                summary["plots"] = [str(p) for p in plot_training_curves(run.metrics, run.plots)]
        barrier()
        return summary
    finally:
        shutdown_distributed()


# -- loading a trained run, eval, export -----------------------------------------------------------------
def load_trained(
    hooks: RecipeHooks,
    run_dir: str | Path,
    data: str | None = None,
    device: torch.device | str = "cpu",
    sets: list[str] | None = None,
) -> Trained:
    """The one way to load a trained run: its config (plus eval-time ``sets``), the Task over ``data``
    (default: the data it trained on) and the model with its eval weights."""
    run = RunDir(run_dir)
    run.require_trained()
    cfg = load_run_config(hooks.config_class, run)
    if sets:
        merge_into(cfg, parse_set_overrides(sets))
        validate_config(cfg)
    data_dir = data or recorded_data_dir(run)
    hooks.check_data_for(run, cfg, data_dir)
    task = hooks.make_task(cfg, data_dir)
    model = task.build_model()
    RunDir.load_weights(model, run.weights_for_eval())
    device = torch.device(device) if isinstance(device, str) else device
    return Trained(cfg=cfg, task=task, model=model.to(device).eval(), run=run, data_dir=data_dir)


def eval_stage(hooks: RecipeHooks, opts: StageOptions) -> dict:
    recorded = hooks.evaluate_recorded(opts)
    if recorded is not None:
        return recorded
    trained = load_trained(hooks, opts.run_dir, opts.data, resolve_device(opts.device), opts.sets)
    result = hooks.evaluate_run(trained, opts)
    atomic_write_json(trained.run.path / hooks.eval_file(opts, result), result)
    return result


def export_stage(hooks: RecipeHooks, opts: StageOptions) -> dict:
    trained = load_trained(hooks, opts.run_dir, None, "cpu", opts.sets)
    spec = hooks.export_spec(trained, opts)
    out_dir = Path(opts.out) if opts.out else trained.run.export_dir

    def write_extra(folder: Path) -> dict:
        files = spec.write_files(folder) if spec.write_files else {}
        return {"task": hooks.name, **spec.manifest, **files, "parameters": count_parameters(spec.module)}

    manifest = export_program(
        spec.module,
        spec.example_inputs,
        out_dir,
        dynamic_shapes=spec.dynamic_shapes,
        write_extra=write_extra,
        overwrite=opts.overwrite,
        parity_inputs=spec.parity_inputs,
    )
    return {
        "task": hooks.name,
        "export_dir": str(out_dir),
        **{k: manifest[k] for k in spec.result_keys},
        "parameters": manifest["parameters"],
        "parity_max_abs_diff": manifest["parity"]["max_abs_diff"],
        "files": sorted(manifest["files"]),
    }


# -- run: the whole pipeline on the tiny default ------------------------------------------------------------
class Pipeline:
    """What a recipe's ``pipeline`` hook composes: the shared stages, on the run's data."""

    def __init__(self, hooks: RecipeHooks, opts: StageOptions, run: RunDir, data: str):
        self.hooks, self.opts, self.run, self.data = hooks, opts, run, data

    def train(self, run_dir: str | Path | None = None, **changes: Any) -> dict:
        console.print(f"[cyan]train[/] {run_dir or ''}")
        return train_stage(self.hooks, self._options("train", run_dir, {"data": self.data}, changes))

    def evaluate(self, run_dir: str | Path | None = None, **changes: Any) -> dict:
        console.print(f"[cyan]eval[/] {run_dir or ''}")
        return eval_stage(self.hooks, self._options("eval", run_dir, {"data": self.data, "sets": []}, changes))

    def export(self, run_dir: str | Path | None = None, **changes: Any) -> dict:
        console.print("[cyan]export[/]")
        return export_stage(
            self.hooks, self._options("export", run_dir, {"sets": [], "out": None, "overwrite": True}, changes)
        )

    def _options(self, command: str, run_dir: str | Path | None, defaults: dict, changes: dict) -> StageOptions:
        """The run command's options, as the stage ``command`` on ``run_dir``: ``defaults`` then ``changes``."""
        return self.opts.but(command=command, run_dir=str(run_dir or self.opts.run_dir), **{**defaults, **changes})


def pipeline_stage(hooks: RecipeHooks, opts: StageOptions) -> dict:
    """`skd TASK run`: a directory that already holds a run is refused without --overwrite; without
    --data, the task's tiny dataset is written to RUN_DIR/data once and reused by later runs."""
    t0 = time.perf_counter()
    run = RunDir(opts.run_dir)
    if run.config.is_file() and not opts.overwrite:
        raise SkdError("already holds a run; pass --overwrite to replace it", run.path)
    data = opts.data or hooks.tiny_data(run.path / "data")
    result = hooks.pipeline(Pipeline(hooks, opts, run, data))
    result["total_seconds"] = round(time.perf_counter() - t0, 1)
    return result
