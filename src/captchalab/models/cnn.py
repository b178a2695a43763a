"""Conv trunk with one classifier head per character position (fixed maximum length)."""

from __future__ import annotations

import keras
from keras import layers

from captchalab.config import Dropout, Stack, Units, settings
from captchalab.models.layers import conv_block, image_input, positional_logits
from captchalab.models.registry import ModelSpec, register


@settings
class CnnOptions:
    filters: Stack = (32, 64, 96)
    hidden: Units = 256
    dropout: Dropout = 0.3


@register("cnn", CnnOptions, "positional", "conv trunk + one softmax head per position")
def build(spec: ModelSpec, options: CnnOptions) -> keras.Model:
    inputs = image_input(spec.image.height, spec.image.width, spec.image.channels)
    x = inputs
    for filters in options.filters:
        x = conv_block(x, filters, (2, 2))
    x = layers.Flatten()(x)
    x = layers.Dropout(options.dropout)(x)
    # Normalised before the ReLU: without it, Adam's first steps on a flattened feature map
    # this wide left every hidden unit dead (loss stuck at the class prior, measured on 2k images).
    x = layers.Dense(options.hidden, use_bias=False, kernel_initializer="he_normal")(x)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    x = layers.Dropout(options.dropout)(x)
    outputs = positional_logits(x, spec.max_length, spec.num_classes)
    return keras.Model(inputs, outputs, name="cnn")
