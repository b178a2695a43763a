"""Keras run -> standalone ONNX file whose metadata carries the charset and preprocessing."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

from captchalab import calibration, ood, runs
from captchalab.config import RunConfig
from captchalab.errors import UsageError
from captchalab.runs import METADATA_KEY, load_keras


def export_onnx(run: str | Path, model: Any = None, config: RunConfig | None = None,
                out: str | Path | None = None) -> Path:
    """Write ``RUN/model.onnx`` (or ``out``); returns its path."""
    import numpy as np
    import onnx

    folder = runs.run_folder(run)
    config = config or runs.read_config(folder)
    model = model if model is not None else load_keras(folder, config)
    target = Path(out) if out else folder / "model.onnx"
    model(np.zeros((1, config.image.height, config.image.width, config.image.channels), np.float32), training=False)
    with contextlib.redirect_stdout(io.StringIO()):  # tf2onnx prints its progress
        runs.atomic_write(target, lambda tmp: model.export(str(tmp), format="onnx", verbose=False))
    proto = onnx.load(str(target))
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(config.to_dict())
    calibration.add_metadata(proto, folder)
    ood.add_metadata(proto, folder)
    runs.atomic_write(target, lambda tmp: onnx.save(proto, str(tmp)))
    return target


def export(run: str | Path, format: str = "onnx", out: str | Path | None = None) -> Path:
    if format != "onnx":
        raise UsageError(f"export format '{format}' is not supported; use --format onnx")
    return export_onnx(run, out=out)
