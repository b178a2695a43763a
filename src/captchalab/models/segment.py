"""Segment, then classify each character: the answer's proposal in the original question.

The image is cut into character boxes before the network sees it (column projection with
a fallback for touching characters, in :mod:`captchalab.segmentation`; NumPy only, run by
the training loop and by the predictor). Each box sits centred in its own cell of
``width // max_length`` columns, so this network is one small convolutional classifier
shared by every cell: it never has to find where a character is, only what it is.
"""

from __future__ import annotations

import keras
from keras import layers

from captchalab.config import Dropout, Stack, Units, settings
from captchalab.models.layers import image_input
from captchalab.models.registry import ModelSpec, register


@settings
class SegmentOptions:
    filters: Stack = (32, 64)
    hidden: Units = 128
    dropout: Dropout = 0.3


@register("segment", SegmentOptions, "segment", "split into characters, classify each (fixed length)")
def build(spec: ModelSpec, options: SegmentOptions) -> keras.Model:
    height, width, slots = spec.image.height, spec.image.width, spec.max_length
    cell = max(1, width // slots)
    inputs = image_input(height, width)
    x = layers.Cropping2D(((0, 0), (0, width - cell * slots)), name="cells_only")(inputs)
    x = layers.Reshape((height, slots, cell))(x)
    x = layers.Permute((2, 1, 3))(x)  # (slots, height, cell)
    x = layers.Reshape((slots, height, cell, 1), name="cells")(x)
    x = layers.TimeDistributed(_classifier(height, cell, spec.num_classes, options), name="per_cell")(x)
    outputs = layers.Identity(name="logits")(x)
    return keras.Model(inputs, outputs, name="segment")


def _classifier(height: int, width: int, num_classes: int, options: SegmentOptions) -> keras.Model:
    """One character cell (height, width, 1) -> class logits; class 0 = empty cell."""
    cell = keras.Input((height, width, 1))
    x = layers.Rescaling(-1.0, offset=1.0)(cell)  # ink as the signal
    if height >= 32:  # a character needs no more than ~30 rows; halves the cost four times
        x = layers.AveragePooling2D(2, padding="same")(x)
    for filters in options.filters:
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_initializer="he_normal")(x)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
        x = layers.MaxPooling2D(2, padding="same")(x)
    x = layers.Flatten()(x)
    x = layers.Dropout(options.dropout)(x)
    x = layers.Dense(options.hidden, activation="relu")(x)
    x = layers.Dropout(options.dropout)(x)
    return keras.Model(cell, layers.Dense(num_classes)(x), name="character")
