"""Systems side by side over seeds, for a recipe's `run --compare`: each system (a name and the
``--set`` items that make it) is trained and evaluated once per seed through the shared stages, and
every reported metric is summarised as mean ± sample standard deviation over the seeds.

Layout: the main system's first seed is the run itself (``RUN_DIR``, what `run` exports); every other
(system, seed) is ``RUN_DIR/compare/<system>/seed<S>`` (``RUN_DIR/compare/<system>`` with one seed).
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from .errors import SkdError

if TYPE_CHECKING:  # a type only: the statistics below import no torch (recipes' metrics modules use them)
    from .stages import Pipeline


def parse_seeds(text: str | None, default: Sequence[int]) -> list[int]:
    """``"0,1,2"`` (commas or spaces) -> [0, 1, 2]; None -> ``default``. Duplicates are an error."""
    if text is None or not str(text).strip():
        return list(default)
    try:
        seeds = [int(s) for s in str(text).replace(",", " ").split()]
    except ValueError as exc:
        raise SkdError(f"--seeds takes integers separated by commas, got '{text}'") from exc
    if len(set(seeds)) != len(seeds):
        raise SkdError(f"--seeds lists a seed twice: '{text}'")
    return seeds


def mean_std(values: Sequence[float], digits: int | None = None) -> dict[str, Any]:
    """{"mean", "std" (sample, n - 1; 0 for one value), "n", "values"} of repeated runs (seeds, folds,
    passes), every recipe's summary of them; ``digits`` rounds all of them (report precision). A NaN (a
    metric undefined for one run, e.g. an AUC without both classes) makes mean and std NaN: never dropped."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("mean_std of no values")
    if any(math.isnan(v) for v in values):
        mean = std = math.nan
    else:
        mean = statistics.fmean(values)
        std = statistics.stdev(values) if len(values) > 1 else 0.0
    if digits is not None:
        mean, std, values = round(mean, digits), round(std, digits), [round(v, digits) for v in values]
    return {"mean": mean, "std": std, "n": len(values), "values": values}


def summary_cell(row: dict[str, Any], key: str, several: bool, scale: float = 1.0) -> Any:
    """A report cell from a row of ``compare_over_seeds``'s summary (or a single eval result): the value, or
    (mean, std) when ``several`` seeds were run (``metric_table`` prints it as mean ± std); None when absent."""
    if key not in row:
        return None
    value = scale * row[key]
    return (value, scale * row[f"{key}_std"]) if several and f"{key}_std" in row else value


def compare_over_seeds(
    p: Pipeline,
    systems: dict[str, list[str]],
    seeds: Sequence[int | None],
    metrics: Sequence[str],
    main: str,
    train_keys: Sequence[str] = (),
) -> dict[str, Any]:
    """Train + evaluate every system at every seed (None = the config's train.seed); ``main`` names the
    system whose first seed is the run itself (the only one `--baseline` applies to).

    Returns ``{"seeds", "systems": {name: {metric: mean, metric + "_std": std}}, "per_seed": {name: [row per
    seed]}}``, std the sample standard deviation (0 for one seed); ``train_keys`` are train-summary entries
    (e.g. train_seconds) kept in the rows and averaged like the metrics."""
    if main not in systems:
        raise ValueError(f"main system {main!r} is not among {sorted(systems)}")
    per_seed: dict[str, list[dict[str, Any]]] = {}
    for name, sets in systems.items():
        per_seed[name] = []
        for i, seed in enumerate(seeds):
            is_run = name == main and i == 0
            run_dir: Path = p.run.path if is_run else p.run.path / "compare" / name
            if not is_run and len(seeds) > 1:
                run_dir = run_dir / f"seed{seed}"
            trained = p.train(
                run_dir,
                sets=[*p.opts.sets, *sets],
                seed=seed,
                baseline=p.opts.baseline and name == main,
                overwrite=p.opts.overwrite if is_run else True,
            )
            evaluated = p.evaluate(run_dir)
            row = {
                "seed": trained.get("seed", seed),
                "run_dir": str(run_dir),
                **{k: evaluated[k] for k in metrics if k in evaluated},
                **{k: trained[k] for k in train_keys if k in trained},
            }
            per_seed[name].append(row)
    summary: dict[str, dict[str, float]] = {}
    for name, rows in per_seed.items():
        summary[name] = {}
        for key in [*metrics, *train_keys]:
            if all(key in r for r in rows):
                stats = mean_std([r[key] for r in rows])
                summary[name][key], summary[name][f"{key}_std"] = stats["mean"], stats["std"]
    return {"seeds": list(seeds), "systems": summary, "per_seed": per_seed}
