"""Keras run -> standalone ONNX file whose metadata carries the charset and preprocessing."""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path
from typing import Any

from captchalab import calibration, files, ood, runs
from captchalab.config import RunConfig
from captchalab.errors import ModelError, UsageError
from captchalab.inference.predictor import METADATA_KEY


def export_onnx(run: str | Path, model: Any = None, config: RunConfig | None = None,
                out: str | Path | None = None) -> Path:
    """Write ``RUN/model.onnx`` (or ``out``); returns its path."""
    import numpy as np
    import onnx

    folder = runs.run_folder(run)
    config = config or runs.read_config(folder)
    model = model if model is not None else load_keras(folder, config)
    target = Path(out) if out else folder / "model.onnx"
    model(np.zeros((1, config.image.height, config.image.width, 1), np.float32), training=False)
    with contextlib.redirect_stdout(io.StringIO()):  # tf2onnx prints its progress
        runs.atomic_write(target, lambda tmp: model.export(str(tmp), format="onnx", verbose=False))
    proto = onnx.load(str(target))
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(config.to_dict())
    calibration.add_metadata(proto, folder)
    ood.add_metadata(proto, folder)
    runs.atomic_write(target, lambda tmp: onnx.save(proto, str(tmp)))
    return target


def load_keras(run: str | Path, config: RunConfig | None = None) -> Any:
    """Rebuild the network from config.json and load weights: no code is read from the file."""
    from captchalab.train import build_model

    folder = runs.run_folder(run)
    config = config or runs.read_config(folder)
    weights = folder / "model.keras"
    if not weights.exists():
        raise ModelError(f"{weights}: missing; finish training or resume it with --resume {folder}")
    files.regular_file(weights, ModelError)  # Keras would block forever on a pipe
    model = build_model(config)
    try:
        with warnings.catch_warnings():
            # Keras only warns when part of the file does not fit ("...retain their freshly-initialized
            # weights"): a half-loaded model must be an error, not a silently random one.
            warnings.simplefilter("error", UserWarning)
            model.load_weights(weights)
    except Exception as error:  # Keras raises many types for damaged or mismatched files
        raise ModelError(
            f"{weights}: cannot load weights ({type(error).__name__}); the file is damaged or "
            "does not match config.json. Retrain, or restore both files from the same run"
        ) from None
    return model


def export(run: str | Path, format: str = "onnx", out: str | Path | None = None) -> Path:
    if format != "onnx":
        raise UsageError(f"export format '{format}' is not supported; use --format onnx")
    return export_onnx(run, out=out)
