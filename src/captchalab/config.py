"""Frozen configs with defaults, ``a.b=value`` overrides, and the config.json schema."""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator
from pydantic import dataclasses as pydantic_dataclasses
from pydantic_core import PydanticCustomError

from captchalab import files
from captchalab.charset import MAX_LABEL_LENGTH, Charset
from captchalab.data.images import MAX_SIDE, ImageSize, preprocessing
from captchalab.decoding import Constraints
from captchalab.errors import CharsetError, ModelError, UsageError
from captchalab.heads import Head, HeadName, head_for

CONFIG_VERSION = 1
SCHEDULES = ("cosine", "plateau")
_STRICT = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)

# Settings are frozen dataclasses validated by pydantic when they are made: by a default, a
# --set override (dataclasses.replace) or a config.json, so a value out of range never reaches
# Keras (dropout 5.0, filters -1, rnn_units 1e8 were tracebacks or out-of-memory before).
settings = functools.partial(pydantic_dataclasses.dataclass, frozen=True, config=_STRICT)
Count = Annotated[int, Field(ge=0, le=1_000_000)]
Positive = Annotated[int, Field(ge=1, le=1_000_000)]
Units = Annotated[int, Field(ge=1, le=4096)]  # filters, hidden and recurrent units of one layer
Layers = Annotated[int, Field(ge=1, le=16)]
Stack = Annotated[tuple[Units, ...], Field(min_length=1, max_length=16)]  # units of each layer in turn
Pool = Annotated[int, Field(ge=1, le=64)]
Dropout = Annotated[float, Field(ge=0.0, lt=1.0)]
Weight = Annotated[float, Field(ge=0.0, le=1000.0)]
Minutes = Annotated[float, Field(ge=0.0)]


@settings
class TrainConfig:
    epochs: Count = 0  # 0: scaled to the data, enough epochs for ``min_steps`` steps (training.auto_epochs)
    min_steps: Positive = 2500  # optimizer steps the automatic epoch budget gives a small data set at least
    batch_size: Annotated[int, Field(ge=1, le=65536)] = 16
    learning_rate: Annotated[float, Field(gt=0.0, le=10.0)] = 2e-3
    # "cosine": the rate falls from learning_rate to 2% of it over the epoch budget, whatever validation
    # does; "plateau": halved after every third of ``patience`` epochs without progress (the previous rule).
    schedule: str = "cosine"
    patience: Positive = 10
    val_fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.1
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] = 0
    augment: bool = True
    distort: bool = False  # augmentation also shears, blurs and adds pixel noise (data/pipeline.augmenter)
    threads: Annotated[int, Field(ge=0, le=1024)] = 0  # 0: TensorFlow's default (all cores)
    max_minutes: Minutes = 0.0  # stop after the epoch that passes this wall-clock budget; 0: no limit
    max_cpu_minutes: Minutes = 0.0  # the same for CPU time of this process (all threads); 0: no limit
    min_epochs: Count = 0  # early stopping waits at least this long (fine-tuning starts near perfect)
    precise_bn: bool = True  # batch-norm statistics recomputed before each validation (training.refresh_batch_norm)
    # tf.distribute.MirroredStrategy over this many devices (GPUs, else logical CPUs; distribute.py);
    # batch_size is per device, so a step reads batch_size * devices images
    devices: Annotated[int, Field(ge=1, le=64)] = 1
    # each weight's gradient clipped to this norm; 0: no clipping. With devices > 1 Keras 3 clips each
    # replica's gradient before they are summed, which differs from one device whenever a clip applies
    clipnorm: Annotated[float, Field(ge=0.0, le=1e6)] = 5.0


class _Schema(BaseModel):
    model_config = _STRICT


class ImageSchema(_Schema):
    height: Annotated[int, Field(ge=8, le=MAX_SIDE)]
    width: Annotated[int, Field(ge=8, le=MAX_SIDE)]
    channels: Literal[1, 3] = 1  # grey, or RGB colour (--set image.channels=3)
    preprocessing: Annotated[str, Field(max_length=200)] = ""


class CharsetSchema(_Schema):
    symbols: Annotated[str, Field(min_length=1, max_length=10_000)]
    case_insensitive: bool = False


class ConfigSchema(_Schema):
    """config.json, and the ``captchalab_config`` metadata of an exported ONNX model."""

    version: Literal[1]
    model: Annotated[str, Field(min_length=1, max_length=64)]
    head: HeadName
    charset: CharsetSchema
    image: ImageSchema
    max_length: Annotated[int, Field(ge=1, le=MAX_LABEL_LENGTH)]
    # The shortest and longest training label; absent in runs saved before it was recorded.
    label_lengths: Annotated[list[Annotated[int, Field(ge=1, le=MAX_LABEL_LENGTH)]],
                             Field(min_length=2, max_length=2)] | None = None
    options: dict[str, Any] = Field(default_factory=dict)  # checked against the model's own settings
    train: dict[str, Any] = Field(default_factory=dict)

    @field_validator("label_lengths")
    @classmethod
    def _shortest_first(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and value[0] > value[1]:
            raise PydanticCustomError("length_range", "{value} is not shortest, longest", {"value": value})
        return value


@dataclass(frozen=True)
class RunConfig:
    """Everything needed to rebuild a model and its preprocessing."""

    model: str
    head: Head  # how the output is read (heads.py); given by name, e.g. "ctc", it is looked up
    charset: Charset
    image: ImageSize
    max_length: int
    options: Any = None  # the model's own frozen options dataclass
    train: TrainConfig = field(default_factory=TrainConfig)
    label_lengths: tuple[int, int] | None = None  # shortest and longest training label (None: not recorded)

    def __post_init__(self) -> None:
        if isinstance(self.head, str):  # config.json and callers name the head; the object is looked up once
            object.__setattr__(self, "head", head_for(self.head))
        if self.label_lengths is not None and not 1 <= self.label_lengths[0] <= self.label_lengths[1]:
            raise UsageError(f"label lengths {self.label_lengths} are not a range such as (4, 6)")

    def reading_constraints(self, given: Constraints | None) -> Constraints | None:
        """What a reading may look like: ``given`` (solve's --length, --allowed, --case), with the
        training labels' length range where it names no length. A model trained on 4-character captchas
        answers 4 characters, not the 5 that a noise line made of one: on the style zoo's nine generated
        styles at 1,200 labels that read 0.0-3.0 points more (mean 1.0), never less (bench/lengths.py).
        --length overrides it."""
        if self.label_lengths is None:
            return given
        rules = given or Constraints()
        if rules.min_length or rules.max_length is not None:
            return rules
        return dataclasses.replace(rules, min_length=self.label_lengths[0], max_length=self.label_lengths[1])

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": CONFIG_VERSION,
            "model": self.model,
            "head": self.head.name,
            "charset": self.charset.to_dict(),
            "image": {"height": self.image.height, "width": self.image.width, "channels": self.image.channels,
                      "preprocessing": preprocessing(self.image)},
            "max_length": self.max_length,
            **({"label_lengths": list(self.label_lengths)} if self.label_lengths else {}),
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
    try:
        return dataclasses.replace(obj, **{path[0]: new})
    except ValidationError as problem:
        raise UsageError(f"--set {key}={value}: {files.describe(problem)}") from None


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


FIX = "retrain or restore the run folder"


def from_dict(data: Any, source: Path, options_type: type | None) -> RunConfig:
    """Validate a config.json against its schema; the error names the file, the field and the value."""
    if not isinstance(data, dict):
        raise ModelError(f"{source}: config must be a JSON object")
    schema = files.validate(ConfigSchema, data, str(source), ModelError, "config", FIX)
    try:
        charset = Charset(schema.charset.symbols, schema.charset.case_insensitive)
    except CharsetError as error:
        raise ModelError(f"{source}: invalid config ({error}); {FIX}") from None
    return RunConfig(
        model=schema.model,
        head=head_for(schema.head),
        charset=charset,
        image=ImageSize(schema.image.height, schema.image.width, schema.image.channels),
        max_length=schema.max_length,
        label_lengths=tuple(schema.label_lengths) if schema.label_lengths else None,
        options=load_settings(options_type, schema.options, source, "options") if options_type else None,
        # a run saved before the schedule was a setting was trained with the plateau rule
        train=load_settings(TrainConfig, {"schedule": "plateau", **schema.train}, source, "train"),
    )


def load_settings(kind: type, values: dict[str, Any], source: Path, where: str) -> Any:
    """A settings dataclass from JSON values (lists become tuples), with its ranges checked."""
    try:
        return TypeAdapter(kind).validate_json(json.dumps(values))
    except ValidationError as problem:
        raise ModelError(f"{source}: invalid config ({files.describe(problem, where)}); {FIX}") from None


def check(config: RunConfig, source: Path) -> RunConfig:
    """``config`` as the loader will see it: train checks what it is about to write with this,
    so a run it writes can always be loaded (one rule, the schema, in one place)."""
    options_type = type(config.options) if config.options is not None else None
    return from_dict(json.loads(json.dumps(config.to_dict())), source, options_type)


def read_json(path: Path) -> Any:
    try:
        return files.read_json(path, ModelError, "restore or retrain the run")
    except FileNotFoundError:
        raise ModelError(f"{path}: missing; is this a captchalab run folder?") from None


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
