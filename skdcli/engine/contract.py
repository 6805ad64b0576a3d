"""The CLI contract every recipe shares, written once: `train`, `eval`, `export` and `run`.

A recipe describes itself with a ``Recipe`` (name, help, where its hooks live, its extra flags) and
gets those four commands generated here with the shared options, spelled and documented in one place
(``SHARED``). What differs per paper (``prep``, ``transcribe``, ``score``, ``search``...) stays a plain
typer function in the recipe's ``cli.py``, registered on the app this module builds.

- A flag that is only a config key is an alias (``Flag("--sampler", key="sampler.kind")``): its value
  becomes one more ``--set sampler.kind=...`` item, so it goes through the same typed override path
  (and ``--resume`` refuses it like any other config change).
- Every other recipe flag reaches the hooks in ``StageOptions.extra``.
- Stage options travel as one typed object (``StageOptions``), never as positional lists.

This module imports no torch: ``skd --help`` builds every command from it. The torch side (what the
generated commands run) is ``engine.stages``, imported when a command runs.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
from typing import Annotated, Any, Callable, Optional

import typer

from .cliutil import DebugOpt, JsonOpt, run_stage

STAGES = ("train", "eval", "export", "run")


@dataclasses.dataclass
class StageOptions:
    """Everything a shared stage was asked to do (from the CLI, or built by a pipeline)."""

    command: str = "train"
    run_dir: str = ""
    data: Optional[str] = None
    config: Optional[str] = None
    sets: list[str] = dataclasses.field(default_factory=list)  # --set items, then the aliases
    baseline: bool = False
    seed: Optional[int] = None
    max_steps: Optional[int] = None
    checkpoint_every: Optional[int] = None
    resume: bool = False
    device: str = "auto"
    overwrite: bool = False
    out: Optional[str] = None
    json: bool = False
    debug: bool = False
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # recipe flags that are not config keys

    def but(self, **changes: Any) -> "StageOptions":
        """A copy with some fields changed (``extra`` and ``sets`` are copied, not shared)."""
        base = dataclasses.replace(self, sets=list(self.sets), extra=dict(self.extra))
        return dataclasses.replace(base, **changes)


@dataclasses.dataclass(frozen=True)
class Opt:
    """One shared option: its declaration, type, default and help (per command where they differ)."""

    decl: str
    type: Any
    default: Any
    help: str | dict[str, str] = ""

    def help_for(self, command: str) -> str:
        return self.help.get(command, self.help.get("*", "")) if isinstance(self.help, dict) else self.help

    def annotated(self, command: str = "*") -> Any:
        """The option as a typer annotation, for a recipe's own commands (``prep``, ``score``...)."""
        return Annotated[self.type, typer.Option(self.decl, help=self.help_for(command))]


SHARED: dict[str, Opt] = {
    "data": Opt(
        "--data",
        Optional[str],
        None,
        {
            "train": "Prepared dataset (from `prep`).",
            "eval": "Prepared dataset (default: the one the run trained on).",
            "run": "Reuse a prepared dataset instead of RUN_DIR/data.",
        },
    ),
    "run_dir": Opt("--run-dir", str, None, "Run directory."),
    "config": Opt(
        "--config",
        Optional[str],
        None,
        {"train": "YAML config (e.g. {example}).", "run": "YAML config (default: the tiny embedded one)."},
    ),
    "sets": Opt("--set", Optional[list[str]], None, "Override a config key: --set train.lr=3e-4 (repeatable)."),
    "baseline": Opt("--baseline", bool, False, "Train the recipe's no-distillation baseline."),
    "seed": Opt("--seed", Optional[int], None, "Random seed (train.seed)."),
    "max_steps": Opt("--max-steps", Optional[int], None, "Optimizer steps (train.max_steps)."),
    "checkpoint_every": Opt(
        "--checkpoint-every", Optional[int], None, "Checkpoint every N steps (train.checkpoint_every)."
    ),
    "resume": Opt("--resume", bool, False, "Continue the run from its latest checkpoint."),
    "out": Opt("--out", Optional[str], None, "Export directory (default: RUN_DIR/export)."),
    "device": Opt("--device", str, "auto", "cpu | cuda | auto."),
    "overwrite": Opt("--overwrite", bool, False, "Replace a finished run / prepared dataset / export."),
}

# For the recipes' own commands: the same options, spelled by the same table.
DeviceOpt = SHARED["device"].annotated()
OverwriteOpt = SHARED["overwrite"].annotated()
SetOpt = SHARED["sets"].annotated()
RunDirOpt = SHARED["run_dir"].annotated()

# The shared options of each generated command, in the order `--help` lists them. "<early>" and
# "<late>" are where the recipe's flags go (``Flag.late`` picks); --json and --debug always close.
LAYOUT: dict[str, tuple[str, ...]] = {
    "train": (
        "data",
        "run_dir",
        "config",
        "sets",
        "baseline",
        "<early>",
        "seed",
        "max_steps",
        "checkpoint_every",
        "resume",
        "<late>",
        "device",
        "overwrite",
    ),
    "eval": ("run_dir", "data", "<early>", "<late>", "device"),
    "export": ("run_dir", "out", "<early>", "<late>", "overwrite"),
    "run": (
        "run_dir",
        "data",
        "<early>",
        "config",
        "baseline",
        "seed",
        "max_steps",
        "sets",
        "<late>",
        "device",
        "overwrite",
    ),
}


@dataclasses.dataclass(frozen=True)
class Flag:
    """A recipe's own option on a generated command.

    ``key`` makes it an alias of a config key (its value is applied as ``--set key=value``); without
    a key the value reaches the hooks as ``opts.extra[dest]``. ``decl`` may be a boolean pair
    (``"--compare/--no-compare"``). ``late`` puts it after the shared run-control options in --help.
    """

    decl: str
    help: str = ""
    type: Any = str
    default: Any = None
    key: Optional[str] = None
    commands: tuple[str, ...] = ("train", "run")
    late: bool = False

    @property
    def dest(self) -> str:
        return self.decl.split("/")[0].lstrip("-").replace("-", "_")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """What a task tells the engine about itself; its ``cli.py`` holds one and builds ``app`` from it."""

    name: str  # the sub-command: `skd NAME ...`
    help: str
    hooks: str  # "package.module:Class" of the RecipeHooks subclass, imported when a command runs
    docs: dict[str, str]  # one-line help of train / eval / export / run
    flags: tuple[Flag, ...] = ()
    config_example: str = ""  # shown in train --config's help

    def __post_init__(self) -> None:
        missing = [s for s in STAGES if s not in self.docs]
        if missing:
            raise ValueError(f"recipe {self.name}: docs for {missing} missing")
        for flag in self.flags:
            unknown = set(flag.commands) - set(STAGES)
            if unknown:
                raise ValueError(f"recipe {self.name}: flag {flag.decl} on unknown commands {unknown}")

    @property
    def default_run_dir(self) -> str:
        return f"runs/{self.name}"

    def load_hooks(self) -> Any:
        module, _, cls = self.hooks.partition(":")
        return getattr(importlib.import_module(module), cls)()

    def app(self) -> "RecipeApp":
        app = RecipeApp(help=self.help, no_args_is_help=True)
        for command in STAGES:
            app.command("eval" if command == "eval" else command, help=self.docs[command])(self._command(command))
        app.recipe = self
        return app

    # -- generating one shared command --------------------------------------------------------------
    def _command(self, command: str) -> Callable[..., None]:
        params: list[inspect.Parameter] = [
            inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)
        ]
        flags = [f for f in self.flags if command in f.commands]
        for slot in LAYOUT[command]:
            if slot in ("<early>", "<late>"):
                for flag in flags:
                    if flag.late == (slot == "<late>"):
                        params.append(
                            _parameter(
                                flag.dest,
                                flag.type if flag.type is bool else Optional[flag.type],
                                flag.default,
                                flag.decl,
                                flag.help,
                            )
                        )
                continue
            opt = SHARED[slot]
            default = self.default_run_dir if slot == "run_dir" else opt.default
            text = opt.help_for(command).replace("{example}", self.config_example or f"recipes/{self.name}/....yaml")
            params.append(_parameter(slot, opt.type, default, opt.decl, text))
        params += [
            inspect.Parameter("json_out", inspect.Parameter.KEYWORD_ONLY, annotation=JsonOpt, default=False),
            inspect.Parameter("debug", inspect.Parameter.KEYWORD_ONLY, annotation=DebugOpt, default=False),
        ]
        recipe = self

        def stage_command(ctx: typer.Context, **values: Any) -> None:
            opts = recipe.options(command, values)
            run_stage(
                f"{recipe.name} {command}",
                lambda: recipe._run(command, opts),
                opts.json,
                opts.debug,
                ctx,
                render=lambda result: recipe.load_hooks().report(command, result),
            )

        stage_command.__signature__ = inspect.Signature(params)  # typer reads the options from here
        stage_command.__name__ = command
        stage_command.__doc__ = self.docs[command]
        return stage_command

    def options(self, command: str, values: dict[str, Any]) -> StageOptions:
        """The parsed command line as one StageOptions: aliases appended to --set, the rest in extra."""
        values = dict(values)
        sets = list(values.pop("sets", None) or [])
        extra: dict[str, Any] = {}
        for flag in self.flags:
            if command not in flag.commands:
                continue
            value = values.pop(flag.dest)
            if flag.key is None:
                extra[flag.dest] = value
            elif value is not None:
                sets.append(f"{flag.key}={json.dumps(value)}")  # JSON is YAML: the --set parser reads it typed
        values["json"] = values.pop("json_out")
        return StageOptions(command=command, sets=sets, extra=extra, **values)

    def _run(self, command: str, opts: StageOptions) -> dict:
        from . import stages  # torch is imported only when a command runs

        hooks = self.load_hooks()
        return {
            "train": stages.train_stage,
            "eval": stages.eval_stage,
            "export": stages.export_stage,
            "run": stages.pipeline_stage,
        }[command](hooks, opts)


def _parameter(name: str, tp: Any, default: Any, decl: str, help_text: str) -> inspect.Parameter:
    # decl may be a boolean pair "--x/--no-x", which typer takes as one declaration
    return inspect.Parameter(
        name,
        inspect.Parameter.KEYWORD_ONLY,
        default=default,
        annotation=Annotated[tp, typer.Option(decl, help=help_text)],
    )


class RecipeApp(typer.Typer):
    """A recipe's typer app. Lists `prep` first, then the shared stages, the recipe's own commands, `run` last."""

    recipe: Recipe

    ORDER = {"prep": 0, "train": 1, "eval": 2, "export": 3, "run": 9}

    def ordered(self) -> "RecipeApp":
        def rank(info: Any) -> int:
            name = info.name or (info.callback.__name__ if info.callback else "")
            return self.ORDER.get(name, 5)

        self.registered_commands.sort(key=rank)  # stable: the recipe's own commands keep their order
        return self


def load_recipe_app(module: str) -> RecipeApp:
    """The registry's loader: ``module`` is a recipe's cli module holding ``app`` (built from ``RECIPE``)."""
    app = importlib.import_module(module).app
    if not isinstance(app, RecipeApp):
        raise TypeError(f"{module}.app is not built with Recipe.app()")
    return app.ordered()
