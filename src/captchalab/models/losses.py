"""The loss each head names. Both average over the batch, so the scale does not grow with
the number of character positions (the summed loss of the original question did)."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="captchalab")
def ctc_loss(y_true: keras.KerasTensor, y_pred: keras.KerasTensor) -> keras.KerasTensor:
    """CTC over logits; labels are padded with 0 (the blank), which marks their end."""
    labels = ops.cast(y_true, "int32")
    label_length = ops.sum(ops.cast(ops.not_equal(labels, 0), "int32"), axis=-1)
    batch, steps = ops.shape(y_pred)[0], ops.shape(y_pred)[1]
    logit_length = ops.full((batch,), steps, dtype="int32")
    return ops.ctc_loss(labels, y_pred, label_length, logit_length, mask_index=0)


def loss_for(name: str) -> object:
    """The loss a head trains with, by the name it gives (``Head.loss`` in heads.py)."""
    if name == "ctc":
        return ctc_loss
    if name == "slot_crossentropy":
        # Mean over positions: class 0 stands for "no character" in slots past the label's end.
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    raise ValueError(f"no loss named '{name}'")
