"""captchalab: train, evaluate, diagnose and serve solvers for text image CAPTCHAs.

The Python API mirrors the CLI. Importing this package does not import TensorFlow:
training functions load it on first use, solving never does. The modules behind the
functions have other names (``training`` holds ``train``, ``exporting`` ``export``,
``auditing`` ``audit``, ``diagnosis`` ``diagnose``, ``evaluation`` ``evaluate``), so importing
one never replaces a function of the package.
"""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from captchalab.charset import Charset
from captchalab.decoding import Constraints, Prediction
from captchalab.errors import CaptchaLabError, extras_named
from captchalab.evaluation import evaluate
from captchalab.inference.predictor import Predictor, load

__version__ = "0.1.0"


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
    workers: int | Workers = 0,
) -> Path:
    """Synthetic captchas (``captchalab generate``); ``like=DATA`` renders look-alikes of a labelled set.

    An interrupted call continues when repeated with the same options; ``force`` starts over. ``workers``
    processes render the images (0: one per core), or Ray tasks with ``Workers(ray=True, address=...)``
    (from ``captchalab.data.synthetic``); the images do not depend on what renders them."""
    if like is not None:
        from captchalab.data.style import generate_like

        return generate_like(out, like, count, seed, length, charset, size, progress, force, workers)
    from captchalab.data.synthetic import generate as _generate

    return _generate(out, count, length or 5, charset or "0-9A-Z", size or "160x60", seed, progress, force,
                     workers)


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
    from captchalab.runs import named_run

    path = named_run(model) if model is not None else bundled_model_path()
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


# The functions whose modules import TensorFlow (training), FastAPI (serving) or Ray are loaded on
# first use (PEP 562), so that importing captchalab stays light and solving never loads
# TensorFlow. Each is the module's own function, with its own signature and docstring: no copy here.
_LAZY = {
    "train": "captchalab.training",
    "audit": "captchalab.auditing",
    "diagnose": "captchalab.diagnosis",
    "export": "captchalab.exporting",
    "serve": "captchalab.inference.http",
    "solve_dataset": "captchalab.inference.ray_solve",
    "adapt": "captchalab.adapting",
    "label": "captchalab.adapting",
}

if TYPE_CHECKING:
    from captchalab.adapting import adapt, label
    from captchalab.auditing import audit
    from captchalab.data.synthetic import Workers
    from captchalab.diagnosis import diagnose
    from captchalab.exporting import export
    from captchalab.inference.http import serve
    from captchalab.inference.ray_solve import solve_dataset
    from captchalab.training import train


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'captchalab' has no attribute '{name}'")
    with extras_named():  # without the extra that module needs: MissingExtra, which names it
        function = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = function  # later lookups find it at once
    return function


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "CaptchaLabError",
    "Charset",
    "Constraints",
    "Prediction",
    "Predictor",
    "adapt",
    "audit",
    "diagnose",
    "evaluate",
    "export",
    "generate",
    "label",
    "load",
    "serve",
    "solve",
    "solve_dataset",
    "train",
]
