"""segmentation: boxes from column projection, the touching-character fallback, fixed cells."""

from __future__ import annotations

import json

import numpy as np
import pytest

from captchalab.charset import Charset
from captchalab.config import from_dict
from captchalab.data.images import ImageSize, prepare
from captchalab.data.synthetic import Renderer
from captchalab.errors import ModelError
from captchalab.heads import SEGMENT
from captchalab.segmentation import character_boxes, segment, segment_batch


def blocks(spans: list[tuple[int, int]], height: int = 40, width: int = 150) -> np.ndarray:
    """White image with solid dark bars at the given column spans."""
    image = np.full((height, width), 240, np.uint8)
    for start, end in spans:
        image[8:32, start:end] = 30
    return image


def mask_of(image: np.ndarray) -> np.ndarray:
    return image < 128


def test_separate_characters_give_one_box_each():
    spans = [(5, 20), (30, 45), (60, 72), (90, 105), (120, 140)]
    assert character_boxes(mask_of(blocks(spans)), 5) == spans


def test_touching_characters_are_split_at_the_emptiest_column():
    image = blocks([(5, 20), (30, 45), (60, 72), (90, 140)])
    image[8:20, 114:116] = 240  # a thin waist between two touching characters
    boxes = character_boxes(mask_of(image), 5)
    assert len(boxes) == 5 and boxes[:3] == [(5, 20), (30, 45), (60, 72)]
    assert boxes[3][0] == 90 and boxes[4][1] == 140 and 105 <= boxes[3][1] <= 125


def test_a_broken_character_is_merged_back():
    boxes = character_boxes(mask_of(blocks([(5, 20), (30, 36), (38, 45), (60, 72), (90, 105), (120, 140)])), 5)
    assert boxes == [(5, 20), (30, 45), (60, 72), (90, 105), (120, 140)]


def test_noise_specks_and_thin_lines_are_not_characters():
    image = blocks([(5, 20), (30, 45), (60, 72), (90, 105), (120, 140)])
    image[2:4, 50:52] = 20  # a noise dot between characters
    image[36, :] = 60  # a thin line across the image
    out = segment(image, 5)
    cell = 150 // 5
    for index in range(5):
        assert (out[:, index * cell : (index + 1) * cell] < 128).sum() > 50  # every cell holds a character
    assert out.shape == image.shape and out.dtype == np.uint8


def test_blank_image_splits_evenly_and_stays_white():
    out = segment(np.full((30, 100), 250, np.uint8), 4)
    assert out.shape == (30, 100) and out.min() >= 250
    assert character_boxes(np.zeros((30, 100), bool), 4) == [(0, 25), (25, 50), (50, 75), (75, 100)]


def test_generated_captchas_fill_every_cell_deterministically():
    renderer = Renderer(Charset.parse("0-9A-Z"), 5, ImageSize(60, 160), seed=4)
    pixels = np.stack([prepare(renderer.sample()[1], ImageSize(60, 160)) for _ in range(6)])
    cells = segment_batch(pixels, 5)
    assert cells.shape == pixels.shape and cells.dtype == np.uint8
    np.testing.assert_array_equal(cells, segment_batch(pixels, 5))
    ink_per_cell = (cells < 128).reshape(6, 60, 5, 32).sum(axis=(1, 3))
    assert (ink_per_cell > 20).mean() > 0.9


def test_empty_batch_and_tiny_cells():
    assert segment_batch(np.zeros((0, 20, 30), np.uint8), 5).shape == (0, 20, 30)
    assert segment(blocks([(2, 4), (6, 8)], 10, 12), 8).shape == (10, 12)


def test_config_accepts_the_segment_head_and_names_the_heads_on_error(tmp_path):
    config = {"version": 1, "model": "segment", "head": "segment", "charset": Charset.parse("0-9").to_dict(),
              "image": {"height": 60, "width": 160}, "max_length": 5}
    assert from_dict(config, tmp_path / "config.json", None).head is SEGMENT
    with pytest.raises(ModelError, match="'segment'"):
        from_dict({**config, "head": "boxes"}, tmp_path / "config.json", None)
    json.dumps(config)
