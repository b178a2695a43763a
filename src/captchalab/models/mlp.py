"""Fully connected: flattened pixels, dense layers, one softmax head per position.

This is the network of the original question. What makes it learn every position
(measured by ``captchalab diagnose`` and bench/fully_connected.py, see
docs/fully-connected.md):

- ``invert``: ink as the signal (1 - pixel, background near 0). With dark text on a light
  background every input is near 1 and the image-independent part of each unit's input
  swamps the characters; this alone keeps an un-normalized MLP at chance.
- ``pool``: average-pool the image before flattening (160x60 -> 40x15 at 4): sixteen times
  fewer first-layer weights to fit from the same data; still fully connected.
- a fan-in-scaled initialisation (Keras' default Glorot-uniform here; the diagnose harness
  uses He-normal): N(0, 1) weights, as ``tf.random_normal`` gives, saturate.

Kept from before, not shown to matter: batch normalization and dropout between layers (in
the short 10k-image harness without dropout batch normalization does not help), and the
per-position cross-entropy averaged rather than summed (models/losses.py: the same with Adam,
a 320x larger step with plain SGD).
"""

from __future__ import annotations

import keras
from keras import layers

from captchalab.config import Dropout, Pool, Stack, settings
from captchalab.models.layers import image_input, positional_logits
from captchalab.models.registry import ModelSpec, register


@settings
class MlpOptions:
    hidden: Stack = (1024, 512)
    dropout: Dropout = 0.2
    batch_norm: bool = True
    invert: bool = True
    pool: Pool = 4


# 100 epochs at least: on 50,000 images the budget sized for the crnn (20 epochs) read 5.8% of a fresh
# test set whole (mean character 0.562), 100 epochs 22.4% (0.720); on 10,000, 0.3% (0.296) and 1.0%
# (0.410), for 4.6-4.9x the CPU (bench/fully_connected.py, docs/fully-connected.md section (d)).
@register("mlp", MlpOptions, "positional", "fully connected, one softmax head per position", least_epochs=100)
def build(spec: ModelSpec, options: MlpOptions) -> keras.Model:
    inputs = image_input(spec.image.height, spec.image.width, spec.image.channels)
    x = layers.Rescaling(-1.0, offset=1.0, name="invert")(inputs) if options.invert else inputs
    if options.pool > 1:
        x = layers.AveragePooling2D(options.pool, padding="same", name="downsample")(x)
    x = layers.Flatten()(x)
    for units in options.hidden:
        x = layers.Dense(units, use_bias=not options.batch_norm)(x)
        if options.batch_norm:
            x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
        x = layers.Dropout(options.dropout)(x)
    outputs = positional_logits(x, spec.max_length, spec.num_classes)
    return keras.Model(inputs, outputs, name="mlp")
