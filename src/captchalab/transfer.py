"""Start training from a pretrained run (``train --init RUN``).

Both networks come from the same builder, so their layers pair up in order. Every layer
whose weights have the same shapes is copied. The output layer is matched symbol by
symbol: classes the two charsets share keep their pretrained weights, new symbols start
from a fresh initialisation, so a model pretrained on ``0-9a-z`` fine-tunes to a captcha
that uses 19 of those symbols without losing what it learnt about them. A grey run's first
convolution is widened for a colour run (``image.channels=3``) so that both start out computing
the same thing.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from captchalab import runs
from captchalab.charset import BLANK, Charset
from captchalab.config import RunConfig
from captchalab.data.images import LUMA
from captchalab.errors import UsageError
from captchalab.runs import load_keras

OUTPUT_LAYERS = ("logits", "heads")  # the Dense that produces the classes (ctc / positional models)


def adopt(config: RunConfig, source: RunConfig, init: str) -> RunConfig:
    """The new run's config: the pretrained run's network options and image size, the new charset."""
    if config.model != source.model:
        raise UsageError(f"--init {init} is a '{source.model}' run; leave out --model or pass --model {source.model}")
    slots = max(config.max_length, source.max_length) if config.head.fixed_length else config.max_length
    return replace(config, options=source.options, image=source.image, max_length=slots)


def transfer_weights(model: Any, config: RunConfig, init: Path) -> dict[str, Any]:
    """Copy the weights of run ``init`` into ``model``; returns what was copied and what was not."""
    source_config = runs.read_config(init)
    if source_config.model != config.model:
        raise UsageError(f"--init {init} is a '{source_config.model}' run; train a '{source_config.model}' "
                         f"model (--model {source_config.model}) to start from it")
    source = load_keras(init, source_config)
    target_layers = [layer for layer in model.layers if layer.weights]
    source_layers = [layer for layer in source.layers if layer.weights]
    if [type(t) for t in target_layers] != [type(s) for s in source_layers]:
        raise UsageError(f"--init {init}: its network has different layers (other model options); "
                         "pass the same --set model.* options it was trained with")
    copied, widened, fresh, classes = [], [], [], None
    for target, src in zip(target_layers, source_layers):
        if target.name in OUTPUT_LAYERS and src.name == target.name:
            classes = _copy_output(target, src, source_config, config)
            copied.append(target.name)
        elif [w.shape for w in target.get_weights()] == [w.shape for w in src.get_weights()]:
            target.set_weights(src.get_weights())
            copied.append(target.name)
        elif (colour := _widened(src.get_weights(), target.get_weights())) is not None:
            target.set_weights(colour)
            widened.append(target.name)
        else:
            fresh.append(target.name)
    return {"init": str(init), "layers_copied": len(copied) + len(widened), "layers_reinitialized": fresh,
            "output_classes": classes, **({"layers_widened_to_colour": widened} if widened else {})}


def _widened(source: list[np.ndarray], target: list[np.ndarray]) -> list[np.ndarray] | None:
    """A grey network's first convolution for colour input: each colour channel gets the grey kernel
    times that colour's share of grey (images.LUMA), so the colour network starts out computing exactly
    what the grey one computed on the same image; fine-tuning then learns what hue adds. None when
    the layers differ otherwise."""
    if len(source) != len(target) or source[0].ndim != 4 or source[0].shape[2] != 1 or target[0].shape[2] != 3:
        return None
    kernel = source[0] * np.asarray(LUMA, dtype=source[0].dtype)[None, None, :, None]
    widened = [kernel, *source[1:]]
    return widened if [w.shape for w in widened] == [w.shape for w in target] else None


def class_map(source: Charset, target: Charset) -> list[int | None]:
    """For each target class (0 = blank), the source class with the same symbol, or None."""
    return [BLANK] + [source.index_of(ch) for ch in target.symbols]


def _copy_output(target: Any, source: Any, source_config: RunConfig, config: RunConfig) -> dict[str, int]:
    """Copy the output Dense class by class (and slot by slot for one head per position)."""
    mapping = class_map(source_config.charset, config.charset)
    kernel, bias = (np.array(w) for w in target.get_weights())
    src_kernel, src_bias = source.get_weights()
    if kernel.shape[0] != src_kernel.shape[0]:
        return {"copied": 0, "new": len(mapping)}
    slots_t, slots_s = (config.max_length, source_config.max_length) if target.name == "heads" else (1, 1)
    shape_t, shape_s = (slots_t, len(mapping)), (slots_s, source_config.charset.num_classes)
    kernel3, bias2 = kernel.reshape(kernel.shape[0], *shape_t), bias.reshape(shape_t)
    src_kernel3, src_bias2 = src_kernel.reshape(src_kernel.shape[0], *shape_s), src_bias.reshape(shape_s)
    slots = min(slots_t, slots_s)
    for j, i in enumerate(mapping):
        if i is not None:
            kernel3[:, :slots, j] = src_kernel3[:, :slots, i]
            bias2[:slots, j] = src_bias2[:slots, i]
    target.set_weights([kernel3.reshape(kernel.shape), bias2.reshape(bias.shape)])
    found = sum(i is not None for i in mapping)
    return {"copied": found, "new": len(mapping) - found}
