"""The loss for each head. Both average over the batch, so the scale does not grow with
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


def loss_for(head: str) -> object:
    if head == "ctc":
        return ctc_loss
    # Mean over positions: class 0 stands for "no character" in slots past the label's end.
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
