"""Training on several devices: ``train.devices=N`` (``train --devices N``) is tf.distribute.MirroredStrategy.

GPUs where TensorFlow sees enough; otherwise N logical CPU devices carved out of the one
physical CPU (the replicas then share its cores: this exercises the multi-device path, and
keeps a run's results the same on a laptop and on a GPU box, but makes nothing faster).
TensorFlow fixes its devices when it first runs anything, so the logical devices must be set
before that: the CLI does it; a Python caller must call ``train`` before other TensorFlow work.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from captchalab.errors import UsageError


def strategy(devices: int) -> Any:
    """The strategy for ``devices`` replicas: TensorFlow's default (no distribution) for one."""
    if devices <= 1:
        return tf.distribute.get_strategy()
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        if len(gpus) < devices:
            raise UsageError(f"train.devices={devices}: TensorFlow sees {len(gpus)} GPU(s); use at most that many")
        return tf.distribute.MirroredStrategy([f"/gpu:{i}" for i in range(devices)])
    _logical_cpus(devices)
    return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(devices)])


def _logical_cpus(devices: int) -> None:
    cpu = tf.config.list_physical_devices("CPU")[0]
    present = tf.config.get_logical_device_configuration(cpu) or []
    if len(present) >= devices:
        return
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * devices)
    except RuntimeError:  # "Virtual devices cannot be modified after being initialized"
        have = len(tf.config.list_logical_devices("CPU"))
        raise UsageError(f"train.devices={devices}: TensorFlow already started in this process with {have} CPU "
                         "device(s), and logical devices can only be set before that; train in a fresh process "
                         "(the captchalab command does), or call captchalab.train before any other TensorFlow "
                         "work") from None
