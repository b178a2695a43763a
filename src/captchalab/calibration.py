"""Temperature scaling: confidences that mean what they say.

A network's raw confidence is usually too high. At the end of training we fit one number,
the temperature T, on the validation images: logits are divided by T before the softmax,
and T is chosen so that the confidence of each reading best predicts whether the reading
is right (binary cross-entropy, with a weak prior that keeps T near 1 when there are only
a few validation images). The confidence fitted is the one reported: the top-1 reading's
sequence probability (heads.py), of the top-1 readings at T = 1. The best path does not
move with T; the top-1 reading moves only where no reading holds half the probability.

The fit is stored as ``calibration.json`` in the run folder and in the ONNX metadata
(key ``captchalab_calibration``); the predictor applies it. NumPy only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from captchalab import decoding, files, heads, runs
from captchalab.charset import Charset
from captchalab.errors import ModelError
from captchalab.heads import Head

FILE = "calibration.json"
METADATA_KEY = "captchalab_calibration"
GRID = np.exp(np.linspace(math.log(0.05), math.log(20.0), 241))
PRIOR_WIDTH = 0.5  # standard deviation of log T under the prior
BINS = 10
FIX = "delete it or retrain"


@dataclass(frozen=True)
class Calibration:
    temperature: float
    n: int  # validation images it was fitted on
    accuracy: float  # sequence accuracy of the top-1 readings on them
    ece_before: float  # expected calibration error, 10 bins, before and after
    ece_after: float
    nll_before: float  # mean binary cross-entropy of confidence vs correctness
    nll_after: float


def confidences(
    logits: np.ndarray, head: Head, charset: Charset, temperature: float = 1.0, readings: Sequence[str] | None = None,
) -> np.ndarray:
    """The confidence of each image's top-1 reading at ``temperature``, as the predictor reports it;
    with ``readings``, the probability of those texts instead (the fit keeps its readings fixed)."""
    probs = decoding.softmax(logits / temperature)
    if readings is None:  # found at temperature 1, scored at ``temperature`` (heads.decode)
        return np.array([r[0].confidence for r in heads.decode(decoding.softmax(logits), head, charset, scored=probs)])
    return np.clip(head.probability(probs, [tuple(charset.encode(text)) for text in readings]), 0.0, 1.0)


def _bce(confidence: np.ndarray, correct: np.ndarray) -> float:
    c = np.clip(confidence, 1e-6, 1 - 1e-6)
    return float(-np.mean(correct * np.log(c) + (1 - correct) * np.log(1 - c)))


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = BINS) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by bin size."""
    if len(confidence) == 0:
        return 0.0
    index = np.minimum((confidence * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        chosen = index == b
        if chosen.any():
            total += chosen.sum() * abs(float(correct[chosen].mean()) - float(confidence[chosen].mean()))
    return total / len(confidence)


def fit(logits: np.ndarray, labels: Sequence[str], head: Head, charset: Charset) -> Calibration:
    """Fit the temperature on validation logits (n, steps, classes) and their labels."""
    if len(labels) == 0:
        raise ValueError("calibration needs at least one validation image")
    readings = [r[0].text for r in heads.decode(decoding.softmax(logits), head, charset)]
    correct = np.array([r == charset.normalize(t) for r, t in zip(readings, labels)], dtype=np.float64)
    n = len(labels)
    scores = [_bce(confidences(logits, head, charset, t, readings), correct)
              + math.log(t) ** 2 / (2 * PRIOR_WIDTH**2 * n) for t in GRID]
    best = float(GRID[int(np.argmin(scores))])
    before, after = (confidences(logits, head, charset, t, readings) for t in (1.0, best))
    return Calibration(
        temperature=round(best, 4), n=n, accuracy=float(correct.mean()),
        ece_before=expected_calibration_error(before, correct), ece_after=expected_calibration_error(after, correct),
        nll_before=_bce(before, correct), nll_after=_bce(after, correct),
    )


def save(folder: Path, calibration: Calibration) -> None:
    runs.write_json(folder / FILE, asdict(calibration))


class CalibrationSchema(BaseModel):
    """calibration.json, and the ``captchalab_calibration`` metadata of an ONNX model (temperature only)."""

    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)
    temperature: Annotated[float, Field(ge=0.01, le=100.0)]
    n: Annotated[int, Field(ge=0)] | None = None
    accuracy: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    ece_before: float | None = None
    ece_after: float | None = None
    nll_before: float | None = None
    nll_after: float | None = None


def parse(raw: Any, source: str) -> float:
    """The temperature from a calibration record (dict or JSON text); checked, never trusted blindly."""
    data = files.parse_json(raw, source, ModelError, FIX) if isinstance(raw, str) else raw
    return files.validate(CalibrationSchema, data, source, ModelError, "calibration record", FIX).temperature


def read(folder: Path) -> float:
    """The run folder's temperature; 1.0 (no scaling) when it has no calibration.json."""
    path = folder / FILE
    try:
        return parse(files.read_json(path, ModelError, FIX), str(path))
    except FileNotFoundError:
        return 1.0


def add_metadata(proto: Any, folder: Path) -> None:
    """Copy the run's calibration into an ONNX model's metadata (if the run has one)."""
    path = folder / FILE
    if path.exists():
        entry = proto.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, json.dumps({"temperature": read(folder)})
