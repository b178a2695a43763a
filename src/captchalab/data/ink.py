"""Ink and threshold primitives on NumPy arrays: Otsu's threshold and 3x3 morphology.

Shared by segmentation.py (cutting characters for the ``segment`` model, on the inference path)
and data/style.py (measuring a captcha's look): NumPy only.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def otsu_threshold(values: np.ndarray, top: float = 1.0, bins: int = 64) -> float:
    """The histogram edge that best separates ``values`` (in 0..``top``) into two classes (Otsu)."""
    hist, edges = np.histogram(values, bins=bins, range=(0.0, top))
    weight = hist.astype(np.float64)
    centers = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(weight)
    w1 = w0[-1] - w0
    m0 = np.cumsum(weight * centers) / np.maximum(w0, 1)  # an empty class has weight 0: no separation
    m1 = (np.sum(weight * centers) - np.cumsum(weight * centers)) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    return float(edges[int(np.argmax(between)) + 1])


def _neighbours(mask: np.ndarray, outside: bool) -> Iterator[np.ndarray]:
    """The nine 3x3-shifted views of ``mask``, with ``outside`` beyond its edges."""
    padded = np.pad(mask, 1, constant_values=outside)
    h, w = mask.shape
    return (padded[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3))


def erode(mask: np.ndarray, outside: bool = False) -> np.ndarray:
    """3x3 erosion; ``outside``: whether the border counts as ink (True keeps ink that touches it)."""
    out = np.ones_like(mask)
    for view in _neighbours(mask, outside):
        out &= view
    return out


def dilate(mask: np.ndarray) -> np.ndarray:
    """3x3 dilation."""
    out = np.zeros_like(mask)
    for view in _neighbours(mask, False):
        out |= view
    return out


def opening(mask: np.ndarray) -> np.ndarray:
    """3x3 erosion then dilation: removes specks and lines thinner than 3 pixels."""
    return dilate(erode(mask))


def closing(mask: np.ndarray) -> np.ndarray:
    """3x3 dilation then erosion (the border counting as ink): fills pinholes of textured strokes."""
    return erode(dilate(mask), outside=True)
