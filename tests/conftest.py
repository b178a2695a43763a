"""Tiny generated datasets shared by the tests; nothing is downloaded."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from pathlib import Path

import pytest
from hypothesis import settings

from captchalab.data.synthetic import generate

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

    return train(tiny_set, out=tmp_path_factory.mktemp("runs") / "crnn", epochs=1, quiet=True)
