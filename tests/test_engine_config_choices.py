"""Typed choices declared at the field (engine/config.py ``choice``), checked by ``validate_config``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from skdcli.engine.config import build_config, choice, validate_config
from skdcli.engine.errors import SkdError


@dataclass
class _Inner:
    mode: str = choice("a", ["a", "b"])
    free: str = "anything"


@dataclass
class _Middle:
    inner: _Inner = field(default_factory=_Inner)
    kind: str = choice("x", ("x", "y", "z"))


@dataclass
class _Top:
    level: str = choice("frame", ["frame", "video"])
    middle: _Middle = field(default_factory=_Middle)
    other: _Inner = field(default_factory=_Inner)  # the same class under a second path
    validated: int = 0

    def validate(self) -> None:
        self.validated += 1


@dataclass
class _Plain:
    name: str = "whatever"
    size: int = 3


def test_choice_is_a_field_with_the_options_in_its_metadata() -> None:
    (mode, free) = dataclasses.fields(_Inner)
    assert mode.default == "a" and mode.metadata["choices"] == ("a", "b")
    assert "choices" not in free.metadata
    assert _Inner().mode == "a" and _Inner(mode="b").mode == "b"


def test_a_default_outside_the_options_fails_at_declaration() -> None:
    with pytest.raises(ValueError, match="'c' is not one of a, b"):
        choice("c", ["a", "b"])


def test_bad_values_name_the_dotted_path_from_the_top() -> None:
    cfg = _Top()
    assert validate_config(cfg) is cfg and cfg.validated == 1
    for path, value, options in (
        ("level", "clip", "frame, video"),
        ("middle.kind", "w", "x, y, z"),
        ("middle.inner.mode", "c", "a, b"),
        ("other.mode", "d", "a, b"),
    ):
        cfg = _Top()
        node = cfg
        *parents, leaf = path.split(".")
        for part in parents:
            node = getattr(node, part)
        setattr(node, leaf, value)
        with pytest.raises(SkdError) as exc:
            validate_config(cfg)
        assert str(exc.value.message) == f"{path}: '{value}' is not one of {options}"
        assert cfg.validated == 0  # the choices are checked before the config's own validate()


def test_set_overrides_are_checked_against_the_choices() -> None:
    with pytest.raises(SkdError, match=r"^middle\.inner\.mode: 'q' is not one of a, b$"):
        build_config(_Top, None, ["middle.inner.mode=q"])
    assert build_config(_Top, None, ["middle.inner.mode=b", "other.free=zz"]).middle.inner.mode == "b"


def test_a_config_without_choices_is_unaffected() -> None:
    cfg = _Plain(name="not a choice")
    assert validate_config(cfg) is cfg
    assert validate_config({"not": "a dataclass"}) == {"not": "a dataclass"}


def test_recipe_configs_declare_their_choices() -> None:
    from skdcli.asr_ctc.config import AsrCtcConfig, KDConfig

    assert dataclasses.fields(KDConfig)[0].metadata["choices"] == ("skd", "interctc", "ctc")
    cfg = AsrCtcConfig()
    cfg.kd.reduction = "sum"
    with pytest.raises(SkdError, match=r"^kd\.reduction: 'sum' is not one of sequence_mean, element_mean, official$"):
        validate_config(cfg)


def test_cli_bad_choice_is_a_one_line_error(tmp_path: Path) -> None:
    from conftest import assert_one_line_error, invoke

    result = invoke(
        "asr-ctc", "train", "--data", tmp_path / "none", "--run-dir", tmp_path / "r", "--set", "kd.method=nope"
    )
    assert_one_line_error(result, "kd.method: 'nope' is not one of skd, interctc, ctc", exit_code=2)
    assert not (tmp_path / "r").exists()
