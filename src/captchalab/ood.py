"""Out-of-distribution signal: is this image unlike the images the model was trained on?

A softmax confidence says how sure the model is among its own readings, not whether the
image is of a kind it has seen: the bundled model reads a real site's captcha as ``M226RHD``
at 0.99. The logits' scale says more. The score of an image is the mean over frames (or
slots) of log-sum-exp of its logits, the negative free energy of energy-based OOD detection
(Liu et al., 2020): images like the training ones drive the logits high, unfamiliar ones
leave them low whatever the argmax. At the end of training the scores of the validation
images are recorded (``ood.json`` in the run folder, key ``captchalab_ood`` in the ONNX
metadata); a reading whose score is below their 1st percentile is flagged ``ood``. So about
1% of images like the validation ones are flagged too. How well it separates for the bundled
model: bench/ood.py, bench/results/ood.json. NumPy only.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from captchalab import files, runs
from captchalab.errors import ModelError

FILE = "ood.json"
FIX = "delete it or retrain"
METADATA_KEY = "captchalab_ood"
SCORE = "mean_logsumexp"
PERCENTILE = 1.0  # readings scoring below this percentile of the validation images are flagged


def scores(logits: np.ndarray) -> np.ndarray:
    """One score per image from raw logits (n, frames or slots, classes): higher is more familiar."""
    logits = np.asarray(logits, dtype=np.float64)
    top = logits.max(axis=-1, keepdims=True)
    logsumexp = np.log(np.exp(logits - top).sum(axis=-1)) + top[..., 0]
    return logsumexp.mean(axis=-1)


def reference(logits: np.ndarray) -> dict[str, Any]:
    """The record kept with a model: its validation images' scores summarized."""
    values = scores(logits)
    if not len(values):
        raise ValueError("the OOD reference needs at least one validation image")
    return {"score": SCORE, "n": len(values), "percentile": PERCENTILE,
            "threshold": round(float(np.percentile(values, PERCENTILE)), 4),
            "median": round(float(np.median(values)), 4)}


def flags(logits: np.ndarray, record: dict[str, Any] | None) -> list[bool | None]:
    """True where an image scores below the model's threshold; None for a model without a record."""
    if record is None:
        return [None] * len(logits)
    return [bool(v < record["threshold"]) for v in scores(logits)]


def parse(raw: Any, source: str) -> dict[str, Any]:
    """A reference record (dict or JSON text), checked."""
    try:
        data = files.parse_json(raw, source, ModelError, FIX) if isinstance(raw, str) else raw
        threshold = float(data["threshold"])
        if data.get("score") != SCORE:
            raise ValueError
    except (TypeError, KeyError, ValueError, json.JSONDecodeError):
        raise ModelError(f"{source}: OOD reference is damaged or of another kind; delete it or retrain") from None
    if not math.isfinite(threshold):
        raise ModelError(f"{source}: OOD threshold {threshold} is not a number; delete it or retrain")
    return {**data, "threshold": threshold}


def save(folder: Path, record: dict[str, Any]) -> None:
    runs.write_json(folder / FILE, record)


def read(folder: Path) -> dict[str, Any] | None:
    """The run folder's reference; None when it has none (runs trained before it existed)."""
    path = folder / FILE
    if not path.exists():
        return None
    try:  # bounded, regular files only, nesting checked (files.py)
        return parse(files.read_json(path, ModelError, FIX), str(path))
    except OSError:
        raise ModelError(f"{path}: cannot be read; delete it or retrain") from None


def add_metadata(proto: Any, folder: Path) -> None:
    """Copy the run's reference into an ONNX model's metadata (if the run has one)."""
    record = read(folder)
    if record is not None:
        entry = proto.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, json.dumps(record)
