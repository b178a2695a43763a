"""Conv trunk + bidirectional LSTM + CTC: reads variable-length text left to right."""

from __future__ import annotations

from dataclasses import dataclass

import keras
from keras import layers

from captchalab.models.layers import conv_block, image_input
from captchalab.models.registry import ModelSpec, register


@dataclass(frozen=True)
class CrnnOptions:
    filters: tuple[int, ...] = (32, 48, 64)
    rnn_units: int = 64
    rnn_layers: int = 2
    dropout: float = 0.25
    batch_norm: bool = True


@register("crnn", CrnnOptions, "ctc", "conv + BiLSTM + CTC; variable length (default)")
def build(spec: ModelSpec, options: CrnnOptions) -> keras.Model:
    inputs = image_input(spec.image.height, spec.image.width)
    x = inputs
    # Halve both axes twice, then only the height: width/4 time steps leave room for CTC.
    pools = [(2, 2), (2, 2)] + [(2, 1)] * (len(options.filters) - 2)
    for filters, pool in zip(options.filters, pools):
        x = conv_block(x, filters, pool, options.batch_norm)
    height, width, channels = x.shape[1], x.shape[2], x.shape[3]
    x = layers.Permute((2, 1, 3))(x)
    x = layers.Reshape((width, height * channels))(x)
    x = layers.Dense(options.rnn_units * 2, activation="relu")(x)
    x = layers.Dropout(options.dropout)(x)
    for _ in range(options.rnn_layers):
        lstm = layers.LSTM(options.rnn_units, return_sequences=True, dropout=options.dropout)
        x = layers.Bidirectional(lstm)(x)
    outputs = layers.Dense(spec.num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="crnn")
