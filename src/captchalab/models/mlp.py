"""Fully connected: flattened pixels, dense layers, one softmax head per position.

This is the network of the original question. What makes it learn every position (see
docs/fully-connected.md): inputs scaled to [0, 1], batch normalization between layers,
and the per-position cross-entropy averaged rather than summed.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
from keras import layers

from captchalab.models.layers import image_input, positional_logits
from captchalab.models.registry import ModelSpec, register


@dataclass(frozen=True)
class MlpOptions:
    hidden: tuple[int, ...] = (1024, 512)
    dropout: float = 0.2
    batch_norm: bool = True


@register("mlp", MlpOptions, "positional", "fully connected, one softmax head per position")
def build(spec: ModelSpec, options: MlpOptions) -> keras.Model:
    inputs = image_input(spec.image.height, spec.image.width)
    x = layers.Flatten()(inputs)
    for units in options.hidden:
        x = layers.Dense(units, use_bias=not options.batch_norm)(x)
        if options.batch_norm:
            x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
        x = layers.Dropout(options.dropout)(x)
    outputs = positional_logits(x, spec.max_length, spec.num_classes)
    return keras.Model(inputs, outputs, name="mlp")
