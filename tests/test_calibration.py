"""Temperature scaling: fitted at the end of training, applied by the predictor."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from captchalab import calibration
from captchalab.charset import Charset
from captchalab.errors import ModelError
from captchalab.heads import POSITIONAL
from captchalab.inference.predictor import Predictor

CHARSET = Charset("AB")


def _overconfident(n: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """Positional logits that are sharp (softmax ~0.99) but right only about 60% of the time."""
    rng = np.random.default_rng(seed)
    logits = np.zeros((n, 1, 3))
    labels = []
    for i in range(n):
        guess = int(rng.integers(1, 3))
        logits[i, 0, guess] = 5.0
        right = rng.random() < 0.6
        labels.append(CHARSET.symbols[guess - 1] if right else CHARSET.symbols[2 - guess])
    return logits, labels


def test_overconfidence_is_cooled_and_calibration_error_drops() -> None:
    logits, labels = _overconfident(400, 0)
    fitted = calibration.fit(logits, labels, POSITIONAL, CHARSET)
    assert fitted.temperature > 2.0
    assert fitted.ece_after < fitted.ece_before / 3
    assert fitted.nll_after < fitted.nll_before
    confidence = calibration.confidences(logits, POSITIONAL, CHARSET, fitted.temperature)
    assert abs(float(confidence.mean()) - fitted.accuracy) < 0.05


def test_few_validation_images_keep_the_temperature_near_one() -> None:
    logits, labels = _overconfident(2, 1)
    many = calibration.fit(*_overconfident(400, 1), POSITIONAL, CHARSET)
    few = calibration.fit(logits, labels, POSITIONAL, CHARSET)
    assert abs(np.log(few.temperature)) < abs(np.log(many.temperature))


def test_expected_calibration_error() -> None:
    assert calibration.expected_calibration_error(np.array([0.9, 0.9]), np.array([1.0, 0.0])) == pytest.approx(0.4)
    assert calibration.expected_calibration_error(np.array([]), np.array([])) == 0.0


@pytest.mark.parametrize("raw", ["{", '{"temperature": "x"}', '{"temperature": 0}', '{"t": 1}', "[1]"])
def test_damaged_records_are_model_errors(raw: str, tmp_path: Path) -> None:
    (tmp_path / calibration.FILE).write_text(raw)
    with pytest.raises(ModelError, match="calibration"):
        calibration.read(tmp_path)


def test_training_calibrates_and_the_predictor_applies_it(tiny_run: Path) -> None:
    record = json.loads((tiny_run / calibration.FILE).read_text())
    assert record["n"] >= 1 and 0.05 <= record["temperature"] <= 20
    onnx, keras = Predictor.load(tiny_run / "model.onnx"), Predictor.load(tiny_run, backend="keras")
    assert onnx.temperature == keras.temperature == pytest.approx(record["temperature"])
    assert onnx.describe()["temperature"] == onnx.temperature
    pixels = np.random.default_rng(0).integers(0, 255, (3, *_shape(onnx)), dtype=np.uint8)
    raw = onnx.predict_pixels(pixels)
    onnx.temperature = 1.0
    plain = onnx.predict_pixels(pixels)
    assert [r[0].text for r in raw] == [r[0].text for r in plain]  # the argmax does not move
    if record["temperature"] != 1.0:
        assert [r[0].confidence for r in raw] != [r[0].confidence for r in plain]


def test_exported_onnx_carries_the_temperature(tiny_run: Path, tmp_path: Path) -> None:
    from captchalab.exporting import export

    target = export(tiny_run, out=tmp_path / "alone.onnx")
    expected = json.loads((tiny_run / calibration.FILE).read_text())["temperature"]
    assert Predictor.load(target).temperature == pytest.approx(expected)


def _shape(predictor: Predictor) -> tuple[int, int]:
    return predictor.config.image.height, predictor.config.image.width
