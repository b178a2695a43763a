"""Predictor's one batching path: predict_pixels splits any number of images into batches,
and ``reader.solve([...])`` is the batch API built on it."""

from __future__ import annotations

import numpy as np

import captchalab
from captchalab.charset import Charset
from captchalab.data.images import ImageSize
from captchalab.data.synthetic import Renderer


def test_batches_read_as_one_call_per_image_would() -> None:
    reader = captchalab.load()  # the bundled model: no training, no TensorFlow
    renderer = Renderer(Charset.parse("0-9A-Z"), "4-6", ImageSize(60, 160), 5)
    pictures = [renderer.sample()[1] for _ in range(7)]
    pixels = np.stack([reader.prepare(p) for p in pictures])
    calls: list[int] = []
    run = reader._backend.run
    reader._backend.run = lambda batch: calls.append(len(batch)) or run(batch)
    told: list[int] = []
    batched = reader.predict_pixels(pixels, top_k=2, batch_size=3, progress=told.append)
    assert calls == told == [3, 3, 1]
    calls.clear()
    alone = [reader.predict_pixels(pixels[i : i + 1], top_k=2)[0] for i in range(len(pixels))]
    assert [[r.text for r in b] for b in batched] == [[r.text for r in a] for a in alone]
    assert np.allclose([r.confidence for b in batched for r in b], [r.confidence for a in alone for r in a])
    assert [p.text for p in reader.solve(pictures)] == [b[0].text for b in batched]
    assert reader.solve([]) == [] and reader.predict_pixels(pixels[:0]) == []
