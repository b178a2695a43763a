"""Building blocks shared by the models."""

from __future__ import annotations

import keras
from keras import layers


def conv_block(
    x: keras.KerasTensor, filters: int, pool: tuple[int, int] | None, batch_norm: bool = True
) -> keras.KerasTensor:
    x = layers.Conv2D(filters, 3, padding="same", use_bias=not batch_norm, kernel_initializer="he_normal")(x)
    if batch_norm:
        x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    if pool:
        x = layers.MaxPooling2D(pool)(x)
    return x


def image_input(height: int, width: int, channels: int = 1) -> keras.KerasTensor:
    return keras.Input((height, width, channels), name="image")


def positional_logits(
    x: keras.KerasTensor, max_length: int, num_classes: int, name: str = "logits"
) -> keras.KerasTensor:
    """One softmax head per character slot, as a (max_length, num_classes) logits tensor."""
    x = layers.Dense(max_length * num_classes, name=f"{name}_heads" if name != "logits" else "heads")(x)
    return layers.Reshape((max_length, num_classes), name=name)(x)
