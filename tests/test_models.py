"""The contract every registered model passes: train a step, save, reload, predict
identically, and export to ONNX with matching outputs."""

from __future__ import annotations

import numpy as np
import pytest

from captchalab import runs
from captchalab.errors import UsageError
from captchalab.inference.predictor import Predictor
from captchalab.models import registry


@pytest.mark.parametrize("name", registry.names())
def test_model_contract(name, tiny_set, tiny_run, tmp_path):
    from captchalab.training import train

    # tiny_run is this very run of the default model: one epoch on tiny_set
    folder = tiny_run if name == "crnn" else train(tiny_set, model=name, out=tmp_path / name, epochs=1, quiet=True)
    for file in ("model.keras", "model.onnx", "config.json", "history.json", "metrics.json"):
        assert (folder / file).exists(), file
    config = runs.read_config(folder)
    assert config.model == name
    keras_predictor = Predictor.load(folder, backend="keras")
    onnx_predictor = Predictor.load(folder / "model.onnx")
    assert onnx_predictor.backend == "onnx"
    files = sorted(tiny_set.glob("*.png"))[:8]
    pixels = np.stack([keras_predictor.prepare(f) for f in files])
    reloaded = Predictor.load(folder, backend="keras")
    np.testing.assert_array_equal(keras_predictor.logits(pixels), reloaded.logits(pixels))
    np.testing.assert_allclose(onnx_predictor.logits(pixels), keras_predictor.logits(pixels), atol=1e-4)
    texts = lambda p: [r[0].text for r in p.predict_pixels(pixels)]  # noqa: E731
    assert texts(onnx_predictor) == texts(keras_predictor)


def test_unknown_model_suggests_the_closest():
    with pytest.raises(UsageError, match="crnn"):
        registry.get("crn")


# cnn's case is large (19 s): make test must stay under 10 minutes, and tests/test_learning.py (large)
# checks that the cnn reads held-out images; mlp's, the asker's network, stays in the default suite.
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.large) if n == "cnn" else n
                                  for n in registry.names() if registry.get(n).head.name == "positional"])
def test_positional_models_learn_past_the_class_prior(name, tiny_set, tmp_path):
    """A positional head whose hidden units all die predicts the class prior forever: the
    asker's plateau. Five epochs on 40 images must take the training loss well below it."""
    import json
    import math

    from captchalab.training import train

    folder = train(tiny_set, model=name, out=tmp_path / name, epochs=5, quiet=True)
    classes = runs.read_config(folder).charset.num_classes
    losses = [epoch["loss"] for epoch in json.loads((folder / "history.json").read_text())]
    assert losses[-1] < 0.8 * math.log(classes), losses
