"""captchalab: train, evaluate, diagnose and serve solvers for text image CAPTCHAs.

The Python API mirrors the CLI. Importing this package does not import TensorFlow:
training functions load it when called, solving never does. The modules behind the
functions have other names (``training`` holds ``train``, ``exporting`` ``export``,
``auditing`` ``audit``, ``diagnosis`` ``diagnose``, ``evaluation`` ``evaluate``), so importing
one never replaces a function of the package.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from captchalab.charset import Charset
from captchalab.config import TrainConfig
from captchalab.decoding import Constraints, Prediction
from captchalab.errors import CaptchaLabError, extras_named
from captchalab.evaluation import evaluate
from captchalab.inference import http_config
from captchalab.inference.predictor import Predictor, load

__version__ = "0.1.0"


def train(
    data: str | Path,
    val: str | Path | None = None,
    model: str | None = None,
    out: str | Path | None = None,
    epochs: int | None = None,
    overrides: tuple[str, ...] | list[str] = (),
    charset: str | None = None,
    case_insensitive: bool = False,
    skip_bad: bool = False,
    force: bool = False,
    resume: str | Path | None = None,
    export_onnx: bool = True,
    quiet: bool = False,
    init: str | Path | None = None,
    train_config: TrainConfig | None = None,
) -> Path:
    """Train a model on DATA; returns the run folder. See ``captchalab train --help``; ``train_config``
    is the typed form of the ``train.*`` settings (``overrides`` apply on top of it)."""
    with extras_named():  # without the [train] extra: MissingExtra, which names it
        from captchalab.training import train as _train  # imports TensorFlow: not before it is needed

        return _train(data, val=val, model=model, out=out, epochs=epochs, overrides=overrides, charset=charset,
                      case_insensitive=case_insensitive, skip_bad=skip_bad, force=force, resume=resume,
                      export_onnx=export_onnx, quiet=quiet, init=init, train_config=train_config)


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


def audit(
    data: str | Path,
    out: str | Path,
    test: str | Path | None = None,
    budget_minutes: float = 60.0,
    counts: Sequence[int] | None = None,
    seeds: int = 3,
    pretrain_images: int | None = None,
    quiet: bool = False,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Captcha strength: learning curve, labels needed per solve rate, verdict (``captchalab audit``)."""
    with extras_named():
        from captchalab.auditing import audit as _audit

        return _audit(data, out, test=test, budget_minutes=budget_minutes, counts=counts, seeds=seeds,
                      pretrain_images=pretrain_images, quiet=quiet, force=force, progress=progress)


def diagnose(
    data: str | Path,
    limit: int = 10000,
    epochs: int = 8,
    plot: str | Path | None = "diagnose.png",
    only: tuple[str, ...] | list[str] = (),
    skip_bad: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """The fully-connected experiment of the original question, measured (``captchalab diagnose``)."""
    with extras_named():
        from captchalab.diagnosis import diagnose as _diagnose

        return _diagnose(data, limit=limit, epochs=epochs, plot=plot, only=only, skip_bad=skip_bad,
                         progress=progress)


def export(run: str | Path, format: str = "onnx", out: str | Path | None = None) -> Path:
    """Export RUN to a standalone ONNX file."""
    with extras_named():
        from captchalab.exporting import export as _export

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


def serve(
    model: http_config.ModelSpec = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    max_loaded: int = 4,
    threads: int = 1,
    max_bytes: int = http_config.ServeConfig.max_bytes,
    max_pixels: int = http_config.ServeConfig.max_pixels,
    max_images: int = http_config.ServeConfig.max_images,
    timeout: float = http_config.ServeConfig.timeout,
    log_level: str = "info",
    *,
    allowed_hosts: Sequence[str] = (),
    cors_origins: Sequence[str] = (),
    api_key: str | None = None,
    max_connections: int = http_config.ServeConfig.max_connections,
    header_timeout: float = http_config.ServeConfig.header_timeout,
) -> None:
    """Run the HTTP API (``captchalab serve``): ``model`` is RUN, ["name=RUN", ...] or {"name": RUN}."""
    with extras_named():  # FastAPI and uvicorn come with the [serve] extra
        from captchalab.inference.http import serve as _serve

        _serve(model, host=host, port=port, workers=workers, max_loaded=max_loaded, threads=threads,
               max_bytes=max_bytes, max_pixels=max_pixels, max_images=max_images, timeout=timeout,
               log_level=log_level, allowed_hosts=allowed_hosts, cors_origins=cors_origins, api_key=api_key,
               max_connections=max_connections, header_timeout=header_timeout)


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
