"""Datasets to tensors: train/validation split, augmented tf.data batches."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from keras import layers

from captchalab.data import images


def held_out(n: int, fraction: float) -> int:
    """How many of ``n`` images ``split`` keeps for validation: at least one, never all."""
    return min(n - 1, max(1, round(n * fraction)))


def split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, validation) index arrays; validation keeps at least one item."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = held_out(n, fraction)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def augmenter(seed: int, distort: bool = False) -> tf.keras.Sequential:
    """Small shifts, zooms, rotations and contrast changes that any captcha style survives;
    ``distort`` adds what a site's own generator varies between images: slant (shear), blur and
    pixel noise. Not RandomElasticTransform: inside tf.data (Keras 3.15), on batches of no fixed
    size, it swaps some images for the batch's first, and labels no longer match (the check that
    each augmented image stays with its own: tests/test_pipeline.py)."""
    steps = [
        layers.RandomTranslation(0.06, 0.04, fill_mode="nearest", seed=seed),
        layers.RandomZoom(0.06, fill_mode="nearest", seed=seed + 1),
        layers.RandomRotation(0.01, fill_mode="nearest", seed=seed + 2),
        layers.RandomContrast(0.3, seed=seed + 3),
    ]
    if distort:
        steps += [
            layers.RandomShear(x_factor=0.1, fill_mode="nearest", seed=seed + 4),
            layers.RandomGaussianBlur(factor=0.5, kernel_size=3, sigma=(0.1, 0.7), value_range=(0.0, 1.0),
                                      seed=seed + 5),
            layers.GaussianNoise(0.03, seed=seed + 6),
        ]
    return tf.keras.Sequential(steps)


def batches(
    pixels: np.ndarray,
    targets: np.ndarray,
    batch_size: int,
    seed: int,
    augment: bool,
    shuffle: bool = True,
    distort: bool = False,
) -> tf.data.Dataset:
    """uint8 images (n, h, w) to float32 (n, h, w, 1) batches in [0, 1]."""
    data = tf.data.Dataset.from_tensor_slices((pixels, targets))
    if shuffle:
        data = data.shuffle(len(pixels), seed=seed, reshuffle_each_iteration=True)
    # Shuffled training batches are all full: a last, smaller batch has another shape, and TensorFlow
    # traces the whole training step again for it (about 8 s of a one-epoch run on 40 images here).
    # The images left out differ every epoch. A set smaller than one batch is one batch.
    data = data.batch(batch_size, drop_remainder=shuffle and len(pixels) >= batch_size)
    data = data.map(lambda x, y: (images.scaled(tf.cast(x, tf.float32)), y))
    if augment:
        augment_layers = augmenter(seed, distort)
        data = data.map(
            lambda x, y: (tf.clip_by_value(augment_layers(x, training=True), 0.0, 1.0), y),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    return data.prefetch(tf.data.AUTOTUNE)
