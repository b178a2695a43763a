"""data/ink.py: Otsu's threshold and 3x3 morphology, shared by segmentation.py and data/style.py."""

from __future__ import annotations

import numpy as np

from captchalab.data.ink import closing, dilate, erode, opening, otsu_threshold


def test_otsu_separates_two_clusters_on_either_scale():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0.2, 0.03, 500), rng.normal(0.7, 0.03, 300)]).clip(0, 1)
    unit = otsu_threshold(values)
    assert (values > unit).sum() == 300 and unit < 0.6
    assert abs(otsu_threshold(values * 255, top=255.0) - unit * 255) < 1e-9  # the same edge, in 0..255


def test_opening_removes_specks_and_closing_fills_pinholes():
    block = np.zeros((12, 12), bool)
    block[2:9, 2:9] = True
    speck = block.copy()
    speck[11, 0] = True
    assert (opening(speck) == block).all()
    holed = block.copy()
    holed[5, 5] = False
    assert (closing(holed) == block).all()


def test_erosion_at_the_border_depends_on_what_lies_outside():
    full = np.ones((5, 5), bool)
    assert erode(full, outside=True).all()
    assert erode(full).sum() == 9  # the border rows and columns touch "no ink"
    assert dilate(np.eye(5, dtype=bool)).sum() == 5 + 2 * 4 + 2 * 3
