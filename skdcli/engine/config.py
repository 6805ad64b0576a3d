"""Typed configuration: dataclass defaults, YAML overrides, ``--set a.b=c`` overrides.

A recipe's config is a tree of dataclasses whose defaults are the tiny embedded setup. A YAML
file overrides any subset of it; ``--set`` overrides single leaves. Unknown keys are an error
that lists the valid ones, and every value is checked against the field's declared type, so a
typo never silently trains the default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import SkdError

T = TypeVar("T")


def choice(default: str, options: Sequence[str]) -> Any:
    """A string field that takes one of ``options``, declared at the field::

        method: str = choice("skd", ["skd", "interctc", "ctc"])

    ``validate_config`` checks it under the field's dotted path (``kd.method``)."""
    options = tuple(options)
    if default not in options:
        raise ValueError(f"choice default '{default}' is not one of {', '.join(options)}")
    return dataclasses.field(default=default, metadata={"choices": options})


@dataclasses.dataclass
class TrainConfig:
    """Engine settings shared by every recipe (optimisation, logging, checkpoints)."""

    max_steps: int = 400  # optimizer steps; an "epoch" is one pass over the train split
    batch_size: int = 16  # global batch (split across DDP ranks), per optimizer step
    grad_accum: int = 1  # micro-batches per optimizer step
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: list[float] = dataclasses.field(default_factory=lambda: [0.9, 0.98])
    lr_schedule: str = "linear_warmup_cosine"  # constant | linear_warmup_cosine | linear_warmup_linear | noam
    warmup_steps: int = 40
    min_lr_ratio: float = 0.05
    grad_clip: float = 5.0  # max global grad norm; 0 disables
    amp: str = "auto"  # auto (bf16/fp16 on CUDA, off on CPU) | off | bf16 | fp16
    num_workers: int = 0  # DataLoader workers
    group_by_length: bool = True  # batch examples of similar length (if the recipe gives lengths)
    log_every: int = 10
    eval_every: int = 100  # 0: only at the end
    checkpoint_every: int = 100  # 0: only at the end
    keep_checkpoints: int = 2  # newest step checkpoints kept (best is kept apart)
    best_metric: str = "loss"  # eval metric that picks checkpoints/best (each recipe's config sets its own)
    best_mode: str = "min"  # min | max
    seed: int = 0
    deterministic: bool = True  # torch.use_deterministic_algorithms on CUDA (warn_only)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the type annotation ``tp``; return it converted where lossless."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            if arg is type(None):
                if value is None:
                    return None
                continue
            try:
                return _coerce(value, arg, where)
            except SkdError:
                continue
        raise SkdError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if tp is Any:
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise SkdError(f"{where}: expected a list, got {value!r}")
        (arg,) = typing.get_args(tp)[:1] or (Any,)
        return [_coerce(v, arg, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise SkdError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise SkdError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise SkdError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "3e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise SkdError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise SkdError(f"{where}: expected a string, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise SkdError(f"{where}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return value
    return value


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def merge_into(cfg: Any, overrides: dict, where: str = "") -> Any:
    """Apply a nested dict of overrides to a dataclass instance (in place), validating keys."""
    types_ = _field_types(type(cfg))
    for key, value in overrides.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in types_:
            valid = ", ".join(sorted(types_))
            raise SkdError(f"unknown config key '{path}'; valid keys here: {valid}")
        tp = types_[key]
        current = getattr(cfg, key)
        if isinstance(current, dict) and isinstance(value, dict):
            # e.g. --set kd.alpha.t=0.2 keeps the other keys of a schedule spec
            setattr(cfg, key, {**current, **value})
        elif dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise SkdError(f"{path}: expected a mapping of {type(current).__name__} fields, got {value!r}")
            merge_into(current, value, path)
        else:
            setattr(cfg, key, _coerce(value, tp, path))
    return cfg


def parse_set_overrides(items: list[str]) -> dict:
    """Turn ``["a.b=3", "c=[1,2]"]`` into ``{"a": {"b": 3}, "c": [1, 2]}`` (values parsed as YAML)."""
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise SkdError(f"--set expects key.path=value, got '{item}'")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise SkdError(f"--set expects key.path=value, got '{item}'")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise SkdError(f"--set: '{key}' conflicts with another --set")
        node[parts[-1]] = value
    return out


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise SkdError("config file not found", path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark else ""
        raise SkdError(f"not valid YAML{line}", path) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SkdError("a config file must be a mapping of keys to values", path)
    return data


def build_config(cls: type[T], config_file: str | Path | None = None, sets: list[str] | None = None) -> T:
    """Defaults <- YAML file <- ``--set`` overrides, validated."""
    cfg = cls()
    if config_file:
        try:
            merge_into(cfg, load_yaml(config_file))
        except SkdError as exc:
            if exc.path is None:
                raise SkdError(exc.message, config_file) from exc
            raise
    if sets:
        merge_into(cfg, parse_set_overrides(sets))
    return validate_config(cfg)


def check_choices(cfg: Any, where: str = "") -> None:
    """Check every ``choice(...)`` field of a dataclass tree, each under its dotted path from the top."""
    for f in dataclasses.fields(cfg):
        path = f"{where}.{f.name}" if where else f.name
        value = getattr(cfg, f.name)
        choices = f.metadata.get("choices")
        if choices is not None:
            check_choice(path, value, choices)
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            check_choices(value, path)


def validate_config(cfg: T) -> T:
    """Check the ``choice(...)`` fields, then run the config's own cross-field checks (a ``validate()``
    method), if it has any."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        check_choices(cfg)
    validate = getattr(cfg, "validate", None)
    if validate:
        validate()
    return cfg


def config_to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def config_to_yaml(cfg: Any) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=None)


def config_from_dict(cls: type[T], data: dict) -> T:
    return merge_into(cls(), data)


def check_choice(name: str, value: str, choices: typing.Iterable[str]) -> None:
    choices = list(choices)
    if value not in choices:
        raise SkdError(f"{name}: '{value}' is not one of {', '.join(choices)}")
