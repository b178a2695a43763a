"""captchalab: train, evaluate, diagnose and serve solvers for text image CAPTCHAs.

The Python API mirrors the CLI. Importing this package does not import TensorFlow:
training functions load it when called, solving never does.
"""

from __future__ import annotations

import sys
import types
import warnings
from pathlib import Path
from typing import Any

from captchalab.charset import Charset
from captchalab.decoding import Constraints, Prediction
from captchalab.errors import CaptchaLabError, extras_named
from captchalab.evaluate import evaluate
from captchalab.inference.predictor import Predictor, load

__version__ = "0.1.0"


def train(data: str | Path, **kwargs: Any) -> Path:
    """Train a model on DATA; returns the run folder. See ``captchalab train --help``."""
    with extras_named():  # without the [train] extra: MissingExtra, which names it
        from captchalab.train import train as _train

        return _train(data, **kwargs)


def generate(
    out: str | Path,
    count: int,
    length: int | str | None = None,
    charset: str | None = None,
    size: str | None = None,
    seed: int = 0,
    progress: Any = None,
    like: str | Path | None = None,
    force: bool = False,
    workers: int = 0,
) -> Path:
    """Synthetic captchas (``captchalab generate``); ``like=DATA`` renders look-alikes of a labelled set.

    An interrupted call continues when repeated with the same options; ``force`` starts over. ``workers``
    processes render the images (0: one per core); the images do not depend on their number."""
    if like is not None:
        from captchalab.data.style import generate_like

        return generate_like(out, like, count, seed, length, charset, size, progress, force, workers)
    from captchalab.data.synthetic import generate as _generate

    return _generate(out, count, length or 5, charset or "0-9A-Z", size or "160x60", seed, progress, force,
                     workers)


def audit(data: str | Path, out: str | Path, **kwargs: Any) -> dict[str, Any]:
    """Captcha strength: learning curve, labels needed per solve rate, verdict (``captchalab audit``)."""
    with extras_named():
        from captchalab.audit import audit as _audit

        return _audit(data, out, **kwargs)


def diagnose(data: str | Path, **kwargs: Any) -> dict[str, Any]:
    """The fully-connected experiment of the original question, measured (``captchalab diagnose``)."""
    with extras_named():
        from captchalab.diagnose import diagnose as _diagnose

        return _diagnose(data, **kwargs)


def export(run: str | Path, format: str = "onnx", out: str | Path | None = None) -> Path:
    """Export RUN to a standalone ONNX file."""
    with extras_named():
        from captchalab.export import export as _export

        return _export(run, format, out)


def solve(
    image: Any,
    model: str | Path | None = None,
    length: int | str | None = None,
    allowed: str | None = None,
    case: str = "any",
    min_confidence: float | None = None,
) -> Any:
    """Read one image (or a list of images: a list of readings) with RUN (default: the bundled model),
    optionally constrained (see ``solve --help``).

    For many calls, load the model once and keep it: ``reader = captchalab.load(RUN)``, then
    ``reader.solve(image)``. This function keeps the last few models it loaded (by path and
    modification time), so repeated calls do not reload either, but ``load`` says what it does.
    """
    constraints = Constraints.parse(length, allowed, case)
    reader = _cached(model)
    warning = constraints.unproducible(reader.config.charset)
    if warning:
        warnings.warn(warning, UserWarning, stacklevel=2)
    return reader.solve(image, constraints, min_confidence)


_LOADED: dict[tuple[str, int], Predictor] = {}
_KEEP = 4  # models kept by solve(); the oldest goes first


def _cached(model: str | Path | None) -> Predictor:
    """A predictor for MODEL, reused while its file is unchanged (path and modification time)."""
    from captchalab.inference.predictor import bundled_model_path

    path = Path(model) if model is not None else bundled_model_path()
    onnx = path / "model.onnx" if path.is_dir() else path
    try:
        key = (str(onnx.resolve()), onnx.stat().st_mtime_ns)
    except OSError:  # no such file (or a run folder without model.onnx): load() says what is wrong
        return load(model)
    if key not in _LOADED:
        while len(_LOADED) >= _KEEP:
            _LOADED.pop(next(iter(_LOADED)))
        _LOADED[key] = load(model)
    return _LOADED[key]


def solve_dataset(source: Any, model: str | Path | None = None, out: str | Path | None = None,
                  **kwargs: Any) -> Any:
    """Read many images on Ray Data (``solve --engine ray``; the [ray] extra): SOURCE is a Ray Dataset, image
    files and folders, or a .parquet/.csv of paths or bytes. Returns the lazy Dataset of ``solve --json``
    records, or with ``out`` (.parquet or .csv) writes them there and returns (rows, rows with an error).
    Options: see ``captchalab.inference.ray_solve.solve_dataset``."""
    with extras_named():
        from captchalab.inference.ray_solve import solve_dataset as _solve_dataset
        from captchalab.inference.ray_solve import write_results

        dataset = _solve_dataset(source, model, **kwargs)
        return dataset if out is None else write_results(dataset, out)


def serve(model: Any = None, **kwargs: Any) -> None:
    """Run the HTTP API (``captchalab serve``): ``model`` is RUN, ["name=RUN", ...] or {"name": RUN}."""
    with extras_named():
        from captchalab.inference.http import serve as _serve

        _serve(model, **kwargs)


__all__ = [
    "CaptchaLabError",
    "Charset",
    "Constraints",
    "Prediction",
    "Predictor",
    "audit",
    "diagnose",
    "evaluate",
    "export",
    "generate",
    "load",
    "serve",
    "solve",
    "solve_dataset",
    "train",
]


class _Package(types.ModuleType):
    """Keeps ``captchalab.train`` and ``captchalab.export`` the API functions once their modules of
    the same name are imported (the import system would replace them with the modules)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("train", "export", "audit") and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
