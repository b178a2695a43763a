"""captchalab: train, evaluate, diagnose and serve solvers for text image CAPTCHAs.

The Python API mirrors the CLI. Importing this package does not import TensorFlow:
training functions load it when called, solving never does.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

from captchalab.charset import Charset
from captchalab.decoding import Constraints, Prediction
from captchalab.errors import CaptchaLabError
from captchalab.evaluate import evaluate
from captchalab.inference.predictor import Predictor, load

__version__ = "0.1.0"


def train(data: str | Path, **kwargs: Any) -> Path:
    """Train a model on DATA; returns the run folder. See ``captchalab train --help``."""
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
) -> Path:
    """Synthetic captchas (``captchalab generate``); ``like=DATA`` renders look-alikes of a labelled set.

    An interrupted call continues when repeated with the same options; ``force`` starts over."""
    if like is not None:
        from captchalab.data.style import generate_like

        return generate_like(out, like, count, seed, length, charset, size, progress, force)
    from captchalab.data.synthetic import generate as _generate

    return _generate(out, count, length or 5, charset or "0-9A-Z", size or "160x60", seed, progress, force)


def audit(data: str | Path, out: str | Path, **kwargs: Any) -> dict[str, Any]:
    """Captcha strength: learning curve, labels needed per solve rate, verdict (``captchalab audit``)."""
    from captchalab.audit import audit as _audit

    return _audit(data, out, **kwargs)


def diagnose(data: str | Path, **kwargs: Any) -> dict[str, Any]:
    """The fully-connected experiment of the original question, measured (``captchalab diagnose``)."""
    from captchalab.diagnose import diagnose as _diagnose

    return _diagnose(data, **kwargs)


def export(run: str | Path, format: str = "onnx", out: str | Path | None = None) -> Path:
    """Export RUN to a standalone ONNX file."""
    from captchalab.export import export as _export

    return _export(run, format, out)


def solve(
    image: Any,
    model: str | Path | None = None,
    length: int | str | None = None,
    allowed: str | None = None,
    case: str = "any",
    min_confidence: float | None = None,
) -> Prediction:
    """Read one image with RUN (default: the bundled model), optionally constrained (see ``solve --help``)."""
    return load(model).solve(image, Constraints.parse(length, allowed, case), min_confidence)


def serve(model: Any = None, **kwargs: Any) -> None:
    """Run the HTTP API (``captchalab serve``): ``model`` is RUN, ["name=RUN", ...] or {"name": RUN}."""
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
