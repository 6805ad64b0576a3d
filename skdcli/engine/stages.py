"""Stage plumbing every recipe shares: config resolution, run-directory guards, resume, provenance.

A recipe's ``train`` stage is ``train_run(...)`` with its config class, a task factory and its
baseline switch; eval/export read the run back with ``load_run_config`` / ``recorded_data_dir``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, TypeVar

from .console import console
from .config import build_config, config_from_dict, config_to_yaml, load_yaml, merge_into, validate_config
from .distributed import barrier, init_distributed, shutdown_distributed
from .errors import SkdError
from .io import atomic_write_json, read_json
from .plots import plot_training_curves
from .rundir import RunDir
from .trainer import Task, Trainer, count_parameters

C = TypeVar("C")

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


def train_run(task_name: str, config_cls: type[C], make_task: Callable[[C, str], Task], *,
              data: str | None, run_dir: str, config: str | None = None, sets: list[str] | None = None,
              baseline: Callable[[C], None] | None = None, seed: int | None = None,
              max_steps: int | None = None, checkpoint_every: int | None = None, resume: bool = False,
              device: str = "auto", overwrite: bool = False, show_progress: bool = True,
              summary_extra: Callable[[C], dict[str, Any]] | None = None) -> dict:
    """Resolve the config, guard the run directory, train (under torchrun too), summarise."""
    dist_info, dev = init_distributed(device)
    try:
        run = RunDir(run_dir)
        if resume:
            if config or sets or baseline:
                raise SkdError("--resume continues with the run's own config.yaml; drop --config/--set/--baseline")
            cfg = load_run_config(config_cls, run)
            data = data or recorded_data_dir(run)
            if max_steps is not None:  # extending a run is allowed
                cfg.train.max_steps = max_steps
            latest = run.latest_checkpoint()
            if run.is_finished() and latest is not None and RunDir.load_state(latest)["step"] >= cfg.train.max_steps:
                raise SkdError(f"run already finished {cfg.train.max_steps} steps; pass --max-steps N to train further",
                               run.path)
        else:
            cfg = build_config(config_cls, config, sets)
            if baseline:
                baseline(cfg)
            overrides = {"seed": seed, "max_steps": max_steps, "checkpoint_every": checkpoint_every}
            merge_into(cfg.train, {k: v for k, v in overrides.items() if v is not None}, "train")
            validate_config(cfg)
            if data is None:
                raise SkdError(f"train needs --data DIR (a dataset written by `skd {task_name} prep`)")
            if dist_info.is_main and run.config.is_file():
                if not overwrite:
                    state = "a finished run" if run.is_finished() else "an unfinished run (continue it with --resume)"
                    raise SkdError(f"already holds {state}; pass --overwrite to start over", run.path)
                run.clear_outputs()
        task = make_task(cfg, data)  # validates the data directory on every rank
        if dist_info.is_main:
            run.path.mkdir(parents=True, exist_ok=True)
            run.write_config(config_to_yaml(cfg))
            if not resume or not run.provenance.is_file():
                fingerprint = getattr(task, "data_fingerprint", None)
                run.write_provenance(cfg.train.seed, fingerprint,
                                     {"task": task_name, "data_dir": str(Path(data).resolve()), "device": str(dev)})
        barrier()
        trainer = Trainer(task, cfg.train, run, dev, dist_info, show_progress=show_progress)
        result = trainer.fit(resume=resume).to_dict()
        summary = {"task": task_name, "run_dir": str(run.path), **(summary_extra(cfg) if summary_extra else {}),
                   **result, "parameters": count_parameters(trainer.model),
                   "world_size": dist_info.world_size, "device": str(dev)}
        if dist_info.is_main:
            atomic_write_json(run.summary, summary)
            summary["plots"] = [str(p) for p in plot_training_curves(run.metrics, run.plots)]
        barrier()
        return summary
    finally:
        shutdown_distributed()


def start_pipeline(run_dir: str, data: str | None, overwrite: bool, write_default_data: Callable[[str], Any],
                   what: str) -> tuple[RunDir, str]:
    """The start every ``skd TASK run`` shares: a directory that already holds a run is refused
    without --overwrite; without --data, the task's embedded tiny dataset is written to
    RUN_DIR/data once (its prep.json marks it finished) and reused by later runs."""
    run = RunDir(run_dir)
    if run.config.is_file() and not overwrite:
        raise SkdError("already holds a run; pass --overwrite to replace it", run.path)
    if data is None:
        data = str(run.path / "data")
        if not (Path(data) / "prep.json").is_file():
            console.print(f"[cyan]prep:[/] writing {what}")
            write_default_data(data)
    return run, data
