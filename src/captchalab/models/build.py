"""A run's networks from its config: the inference model, and the network training fits.

Importing this does not import Keras: ``registry.get`` loads it on the first build.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from captchalab.config import RunConfig
from captchalab.models import registry

if TYPE_CHECKING:
    import keras


def build_model(config: RunConfig) -> keras.Model:
    entry = registry.get(config.model)
    spec = registry.ModelSpec(config.image, config.charset.num_classes, config.max_length)
    return entry.build(spec, config.options)


def training_model(model: keras.Model, config: RunConfig) -> keras.Model:
    """The network fit() trains: the model itself, or the model plus training-only outputs."""
    entry = registry.get(config.model)
    if entry.training_model is None:
        return model
    spec = registry.ModelSpec(config.image, config.charset.num_classes, config.max_length)
    return entry.training_model(model, spec, config.options)
