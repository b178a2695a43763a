"""Split a captcha into character boxes and lay them out in fixed cells. NumPy + Pillow only.

This is the inference-path half of the ``segment`` model (the answer's proposal in the
original question): instead of asking a network to find each character, we find them
ourselves and give the classifier one character per cell.

1. *Ink*: darkness relative to the image's background (its median), so colours and
   backgrounds do not matter; the ink threshold is Otsu's.
2. *Clean*: a 3x3 morphological opening removes noise dots and thin noise curves, which
   are narrower than character strokes; runs with little ink are dropped as noise.
3. *Boxes* by column projection: runs of columns that hold ink.
4. *Exactly n boxes*: touching characters give too few runs, so the widest run is split
   at the emptiest columns near evenly spaced points (the fallback for touching
   characters); broken characters or leftover noise give too many, so the adjacent pair
   whose union is narrowest is merged.
5. *Cells*: each box is cropped to its ink rows, scaled to fit a cell of ``width // n``
   columns (aspect kept) and centred; the result has the input's size, so every model
   input stays an (h, w) image and ONNX export needs nothing special.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from captchalab.data.ink import dilate, opening, otsu_threshold

MIN_RUN_MASS = 12  # ink pixels; runs with less are noise
NOISE_SHARE = 0.15  # runs with less than this share of an average character's ink are noise
MARGIN = 2  # pixels kept free around a character in its cell
MIN_THRESHOLD = 0.1  # of the ink map: a nearly blank image is not all ink


def segment_batch(pixels: np.ndarray, count: int) -> np.ndarray:
    """uint8 (n, h, w) captchas -> uint8 (n, h, w) with ``count`` characters in fixed cells."""
    return np.stack([segment(image, count) for image in pixels]) if len(pixels) else pixels.copy()


def segment(image: np.ndarray, count: int) -> np.ndarray:
    """One uint8 (h, w) captcha -> uint8 (h, w): dark characters on white, one per cell."""
    ink = ink_map(image)
    mask = ink_mask(ink)
    boxes = character_boxes(mask, count)
    return render_cells(ink * dilate(mask), mask, boxes, image.shape)


def ink_map(image: np.ndarray) -> np.ndarray:
    """float32 (h, w) in [0, 1]: how much darker than the background each pixel is."""
    gray = image.astype(np.float32)
    ink = np.clip(np.median(gray) - gray, 0, None)
    peak = float(np.percentile(ink, 95))  # characters cover more than 5%; noise dots less
    return np.clip(ink / peak, 0, 1) if peak > 0 else np.zeros_like(ink)


def ink_mask(ink: np.ndarray) -> np.ndarray:
    """bool (h, w): the ink of an ``ink_map`` above Otsu's threshold, specks and thin lines removed."""
    return opening(ink > max(otsu_threshold(ink), MIN_THRESHOLD))


def character_boxes(mask: np.ndarray, count: int) -> list[tuple[int, int]]:
    """Exactly ``count`` column ranges [start, end), left to right."""
    profile = mask.sum(axis=0)
    floor = max(MIN_RUN_MASS, NOISE_SHARE * profile.sum() / count)
    runs = [(a, b) for a, b in _runs(profile > 0) if profile[a:b].sum() >= floor]
    if not runs:
        width = mask.shape[1]
        cuts = np.linspace(0, width, count + 1).round().astype(int)
        return [(int(cuts[i]), int(max(cuts[i + 1], cuts[i] + 1))) for i in range(count)]
    while len(runs) > count:
        runs = _merge_narrowest_pair(runs)
    while len(runs) < count:
        runs = _split_widest(runs, profile, count)
    return runs


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    edges = np.diff(np.concatenate([[0], flags.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return [(int(a), int(b)) for a, b in zip(starts, ends)]


def _merge_narrowest_pair(runs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    i = min(range(len(runs) - 1), key=lambda k: runs[k + 1][1] - runs[k][0])
    return [*runs[:i], (runs[i][0], runs[i + 1][1]), *runs[i + 2 :]]


def _split_widest(runs: list[tuple[int, int]], profile: np.ndarray, count: int) -> list[tuple[int, int]]:
    """Split the widest run into as many parts as its width suggests (at least 2)."""
    i = max(range(len(runs)), key=lambda k: runs[k][1] - runs[k][0])
    start, end = runs[i]
    width = end - start
    if width < 2:  # nothing left to split: duplicate the box (a blank-ish cell)
        return [*runs[: i + 1], runs[i], *runs[i + 1 :]]
    typical = sum(b - a for a, b in runs) / count
    parts = int(min(max(2, round(width / max(typical, 1))), count - len(runs) + 1, width))
    cuts = [start]
    for k in range(1, parts):
        target = start + width * k / parts
        reach = max(1, int(width / parts / 3))
        low, high = max(cuts[-1] + 1, int(target) - reach), min(end - (parts - k), int(target) + reach + 1)
        cuts.append(low + int(np.argmin(profile[low:high])) if high > low else max(cuts[-1] + 1, int(target)))
    cuts.append(end)
    pieces = [(cuts[k], cuts[k + 1]) for k in range(parts)]
    return [*runs[:i], *pieces, *runs[i + 1 :]]


def render_cells(
    ink: np.ndarray, mask: np.ndarray, boxes: list[tuple[int, int]], shape: tuple[int, ...]
) -> np.ndarray:
    """Each box's ink, cropped to its rows, scaled into its own cell; white elsewhere."""
    height, width = shape[0], shape[1]
    cell = max(1, width // len(boxes))
    out = np.zeros((height, width), dtype=np.float32)
    for index, (start, end) in enumerate(boxes):
        rows = np.flatnonzero(mask[:, start:end].any(axis=1))
        top, bottom = (int(rows[0]), int(rows[-1]) + 1) if len(rows) else (0, height)
        crop = ink[top:bottom, start:end]
        margin = min(MARGIN, (cell - 1) // 2, (height - 1) // 2)
        scale = min((cell - 2 * margin) / crop.shape[1], (height - 2 * margin) / crop.shape[0])
        size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
        resized = np.asarray(Image.fromarray(crop).resize(size, Image.Resampling.BILINEAR))
        x = index * cell + (cell - size[0]) // 2
        y = (height - size[1]) // 2
        out[y : y + size[1], x : x + size[0]] = resized
    return (255 - np.clip(out, 0, 1) * 255).round().astype(np.uint8)
