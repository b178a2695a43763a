"""One registry for every model: ``@register`` a builder, look it up by name."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from captchalab.data.images import ImageSize
from captchalab.errors import UsageError
from captchalab.heads import Head, HeadName, head_for


@dataclass(frozen=True)
class ModelSpec:
    """What the data decides: input size, number of classes, longest label."""

    image: ImageSize
    num_classes: int
    max_length: int


@dataclass(frozen=True)
class ModelEntry:
    name: str
    build: Callable[[ModelSpec, Any], Any]  # (spec, options) -> keras.Model of logits
    options_type: type
    head: Head
    summary: str
    # Optional (model, spec, options) -> the network trained in its place: same weights plus
    # training-only outputs; only ``build``'s network is saved and exported.
    training_model: Callable[[Any, ModelSpec, Any], Any] | None = None
    # Optional (data image size, longest label) -> the model's input size.
    input_size: Callable[[ImageSize, int], ImageSize] | None = None
    # The automatic epoch budget gives this model at least this many passes (training.auto_epochs):
    # a network that learns slowly per step needs more than the budget sized for the crnn.
    least_epochs: int = 0


_REGISTRY: dict[str, ModelEntry] = {}


def register(
    name: str,
    options_type: type,
    head: HeadName,  # how the output is read (heads.py), by name
    summary: str,
    training_model: Callable[[Any, ModelSpec, Any], Any] | None = None,
    input_size: Callable[[ImageSize, int], ImageSize] | None = None,
    least_epochs: int = 0,
) -> Callable:
    def decorator(build: Callable[[ModelSpec, Any], Any]) -> Callable[[ModelSpec, Any], Any]:
        _REGISTRY[name] = ModelEntry(name, build, options_type, head_for(head), summary, training_model,
                                     input_size, least_epochs)
        return build

    return decorator


def get(name: str) -> ModelEntry:
    _load_all()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise UsageError(f"unknown model '{name}'; choose one of: {', '.join(names())}.{hint}")
    return _REGISTRY[name]


def names() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def _load_all() -> None:
    # Importing the modules runs their @register; deferred because they import Keras, which
    # must come in through import_quietly (reading a run's config is often the first to need it).
    from captchalab._tf import import_quietly

    import_quietly()
    from captchalab.models import cnn, crnn, mlp, segment  # noqa: F401
