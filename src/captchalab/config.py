"""Frozen configs with defaults, ``a.b=value`` overrides, and the config.json schema."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from captchalab.charset import Charset
from captchalab.data.images import MAX_SIDE, ImageSize
from captchalab.errors import CharsetError, ModelError, UsageError

CONFIG_VERSION = 1


SCHEDULES = ("cosine", "plateau")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 0  # 0: scaled to the data, enough epochs for ``min_steps`` steps (train.auto_epochs)
    min_steps: int = 2500  # optimizer steps the automatic epoch budget gives a small data set at least
    batch_size: int = 16
    learning_rate: float = 2e-3
    # "cosine": the rate falls from learning_rate to 2% of it over the epoch budget, whatever validation
    # does; "plateau": halved after every third of ``patience`` epochs without progress (the previous rule).
    schedule: str = "cosine"
    patience: int = 10
    val_fraction: float = 0.1
    seed: int = 0
    augment: bool = True
    threads: int = 0  # 0: TensorFlow's default (all cores)
    max_minutes: float = 0.0  # stop after the epoch that passes this wall-clock budget; 0: no limit
    max_cpu_minutes: float = 0.0  # the same for CPU time of this process (all threads); 0: no limit
    min_epochs: int = 0  # early stopping waits at least this long (fine-tuning starts near perfect)
    precise_bn: bool = True  # batch-norm statistics recomputed before each validation (train.refresh_batch_norm)


@dataclass(frozen=True)
class RunConfig:
    """Everything needed to rebuild a model and its preprocessing."""

    model: str
    head: str  # "ctc", "positional" or "segment" (positional after segmentation.py): how to decode
    charset: Charset
    image: ImageSize
    max_length: int
    options: Any = None  # the model's own frozen options dataclass
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": CONFIG_VERSION,
            "model": self.model,
            "head": self.head,
            "charset": self.charset.to_dict(),
            "image": {"height": self.image.height, "width": self.image.width, "channels": 1,
                      "preprocessing": "grayscale, alpha on white, bilinear resize, /255"},
            "max_length": self.max_length,
            "options": dataclasses.asdict(self.options) if self.options is not None else {},
            "train": dataclasses.asdict(self.train),
        }


def apply_overrides(config: Any, overrides: Iterable[str]) -> Any:
    """``["train.epochs=5", "model.hidden=256"]`` applied to nested frozen dataclasses.

    ``model.`` is an alias for the model's ``options``.
    """
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--set '{item}' is not key=value, e.g. train.epochs=20")
        path = ["options" if part == "model" and i == 0 else part for i, part in enumerate(key.split("."))]
        config = _replace_path(config, path, value, key)
    return config


def _replace_path(obj: Any, path: list[str], value: str, key: str) -> Any:
    if not dataclasses.is_dataclass(obj):
        raise UsageError(f"--set {key}: '{path[0]}' is not a setting")
    names = {f.name: f for f in dataclasses.fields(obj)}
    if path[0] not in names:
        raise UsageError(f"--set {key}: unknown setting '{path[0]}'; known: {', '.join(sorted(names))}")
    current = getattr(obj, path[0])
    new = _replace_path(current, path[1:], value, key) if len(path) > 1 else _coerce(value, type(current), key)
    return dataclasses.replace(obj, **{path[0]: new})


def _coerce(value: str, kind: type, key: str) -> Any:
    try:
        if kind is bool:
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return value.lower() in ("true", "1", "yes")
        if kind is tuple:
            return tuple(int(v) for v in value.split(",") if v)
        return kind(value)
    except ValueError:
        raise UsageError(f"--set {key}={value}: expected a {kind.__name__}") from None


def from_dict(
    data: Any, source: Path, options_type: type | None
) -> RunConfig:
    """Validate a config.json against its schema; the error names the field and the file."""
    if not isinstance(data, dict):
        raise ModelError(f"{source}: config must be a JSON object")
    try:
        if data.get("version") != CONFIG_VERSION:
            raise ValueError(f"version must be {CONFIG_VERSION}, got {data.get('version')!r}")
        unknown = set(data) - {"version", "model", "head", "charset", "image", "max_length", "options", "train"}
        if unknown:
            raise ValueError(f"unknown field(s) {sorted(unknown)}")
        image = _typed(data["image"], dict, "image")
        options = _build(options_type, data.get("options", {})) if options_type else None
        return RunConfig(
            model=_typed(data["model"], str, "model"),
            head=_head(data["head"]),
            charset=Charset.from_dict(_typed(data["charset"], dict, "charset")),
            image=ImageSize(_bounded(image["height"], "image.height", 8, MAX_SIDE),
                            _bounded(image["width"], "image.width", 8, MAX_SIDE)),
            max_length=_bounded(data["max_length"], "max_length", 1, 256),
            options=options,
            # a run saved before the schedule was a setting was trained with the plateau rule
            train=_build(TrainConfig, {"schedule": "plateau", **data.get("train", {})}),
        )
    except KeyError as error:
        raise ModelError(f"{source}: invalid config (missing field {error.args[0]!r}); retrain or restore the "
                         "run folder") from None
    except (TypeError, ValueError, CharsetError) as error:
        raise ModelError(f"{source}: invalid config ({error}); retrain or restore the run folder") from None


def _bounded(value: Any, name: str, low: int, high: int) -> int:
    number = _typed(value, int, name)
    if not low <= number <= high:
        raise ValueError(f"'{name}' must be between {low} and {high}, got {number}")
    return int(number)


def _head(value: Any) -> str:
    if value not in ("ctc", "positional", "segment"):
        raise ValueError(f"'head' must be 'ctc', 'positional' or 'segment', got {value!r}")
    return str(value)


def _typed(value: Any, kind: type, name: str) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"'{name}' must be {kind.__name__}, got {value!r}")
    return value


def _build(kind: type, values: Any) -> Any:
    if not isinstance(values, dict):
        raise TypeError(f"'{kind.__name__}' must be an object")
    hints = typing.get_type_hints(kind)
    known = {f.name for f in dataclasses.fields(kind)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown field(s) {sorted(unknown)} for {kind.__name__}")
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        origin = typing.get_origin(hint)
        if origin in (tuple, typing.Tuple) or hint is tuple:  # noqa: UP006
            if not isinstance(value, list):
                raise TypeError(f"'{name}' must be a list")
            kwargs[name] = tuple(_typed(v, int, name) for v in value)
        elif isinstance(hint, type):
            kwargs[name] = _typed(value, hint, name)
        elif isinstance(hint, types.UnionType):
            kwargs[name] = value
        else:
            kwargs[name] = value
    return kind(**kwargs)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{path}: missing; is this a captchalab run folder?") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelError(f"{path}: not valid JSON ({error}); restore or retrain the run") from None


def settings_defaults(kind: type = TrainConfig, prefix: str = "train") -> list[tuple[str, str]]:
    """``PREFIX.KEY`` settings of a config dataclass with their defaults as typed after ``--set``
    (``train --help``; ``captchalab models`` lists each model's options with prefix ``model``)."""
    return [(f"{prefix}.{item.name}", _as_typed(item.default)) for item in dataclasses.fields(kind)]


def _as_typed(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return f"{value:g}" if isinstance(value, float) else str(value)
