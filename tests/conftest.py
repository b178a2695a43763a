"""Tiny generated datasets shared by the tests; nothing is downloaded."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import random
from pathlib import Path

import captcha
import pytest
from hypothesis import settings
from PIL import Image, ImageDraw, ImageFont

from captchalab.data.synthetic import generate, write_set

# Several jobs share the 2 cores: a per-example deadline would fail tests on load, not on bugs.
settings.register_profile("shared-machine", deadline=None)
settings.load_profile("shared-machine")


@pytest.fixture(scope="session")
def tiny_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 captchas, 4-5 characters from a small charset, 96x32."""
    return generate(tmp_path_factory.mktemp("data") / "tiny", 40, length="4-5", charset="0-9A-F",
                    size="96x32", seed=1)


@pytest.fixture(scope="session")
def tiny_run(tiny_set: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A crnn trained for one epoch on the tiny set, exported to ONNX."""
    from captchalab.training import train

    return train(tiny_set, out=tmp_path_factory.mktemp("runs") / "crnn", epochs=1, quiet=True, init=None)


class EasySampler:
    """Three characters of 0-3 in black on white, one font, at jittered places: no noise, no warp.
    Trivially easy: every working model reads unseen ones after a few epochs (tests/test_learning.py)."""

    SYMBOLS, LENGTH, SIZE = "0123", 3, (96, 32)
    FONT = Path(captcha.__file__).parent / "data" / "DroidSansMono.ttf"  # the font the generator draws with

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.font = ImageFont.truetype(str(self.FONT), 28)

    def sample(self) -> tuple[str, Image.Image]:
        text = "".join(self.rng.choice(self.SYMBOLS) for _ in range(self.LENGTH))
        image = Image.new("L", self.SIZE, 255)
        draw = ImageDraw.Draw(image)
        for i, symbol in enumerate(text):
            # bold strokes (3+ pixels, over 5% ink): what segmentation.py expects of a captcha's characters
            draw.text((8 + 30 * i + self.rng.randint(-2, 2), self.rng.randint(-1, 1)), symbol, fill=0,
                      font=self.font, stroke_width=1, stroke_fill=0)
        return text, image


@pytest.fixture(scope="session")
def easy_sets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """320 easy captchas to train on and 40 others (another seed) to read."""
    root = tmp_path_factory.mktemp("easy")
    return (write_set(root / "train", EasySampler(0), 320, {"generator": "easy", "seed": 0}),
            write_set(root / "held_out", EasySampler(1), 40, {"generator": "easy", "seed": 1}))


@pytest.fixture
def stopping_rule(tmp_path: Path):
    """A factory: the training loop's end-of-epoch callback for a one-symbol crnn config with these
    training settings and ``val_images`` validation labels, on a stand-in model, to feed epoch records
    to its ``_track_best`` and read ``model.stop_training``."""
    import keras
    import numpy as np

    from captchalab.charset import Charset
    from captchalab.config import RunConfig
    from captchalab.data.images import ImageSize
    from captchalab.training import EpochEnd, Split, TrainingState

    def make(train_config, val_images: int = 50):
        config = RunConfig("crnn", "ctc", Charset("A"), ImageSize(32, 32), 1, train=train_config)
        model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
        empty = np.zeros((0, 1))
        state = TrainingState(data="d", epoch=0, history=[], learning_rate=1e-3)
        callback = EpochEnd(config, tmp_path, Split(empty, empty, empty, ("A",) * val_images, empty), state, model)
        callback.set_model(model)
        return callback, model

    return make
