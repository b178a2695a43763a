"""data/pipeline.py: augmented batches keep every image with its own label."""

import numpy as np
import pytest

from captchalab.data import pipeline


def _distinct_images(n: int = 12) -> np.ndarray:
    """Images that differ in brightness and in where a dark bar stands, so each can be told apart."""
    pixels = np.full((n, 32, 96), 40, np.uint8)
    for i in range(n):
        pixels[i] += np.uint8(15 * i)
        pixels[i, 8:24, 4 + 7 * i : 10 + 7 * i] = 0
    return pixels


@pytest.mark.parametrize("distort", [False, True])
@pytest.mark.parametrize("shuffle", [False, True])  # unshuffled batches have no fixed size: another graph
def test_augmented_images_stay_with_their_labels(distort, shuffle):
    pixels = _distinct_images()
    targets = np.arange(len(pixels))[:, None]
    clean = pixels.astype(np.float32) / 255
    for x, y in pipeline.batches(pixels, targets, 6, seed=3, augment=True, shuffle=shuffle, distort=distort):
        x = x.numpy()[..., 0]
        for image, label in zip(x, y.numpy()[:, 0]):
            # the augmented image is nearer its own original than any other image of the set
            distances = np.abs(clean - image).mean(axis=(1, 2))
            assert int(np.argmin(distances)) == label


def test_distortion_changes_the_images_and_stays_in_range():
    pixels = _distinct_images()
    targets = np.zeros((len(pixels), 1), np.int32)
    plain = next(iter(pipeline.batches(pixels, targets, 12, 0, augment=False, shuffle=False)))[0].numpy()
    bent = next(iter(pipeline.batches(pixels, targets, 12, 0, augment=True, shuffle=False, distort=True)))[0].numpy()
    assert bent.shape == plain.shape
    assert bent.min() >= 0.0 and bent.max() <= 1.0
    assert np.abs(bent - plain).mean() > 0.01
