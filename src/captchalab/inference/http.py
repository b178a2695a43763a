"""``captchalab serve``: the HTTP API of DESIGN.md on top of the one Predictor.

``POST /solve`` takes multipart ``file`` fields (one or more) or JSON ``{"images": [base64, ...]}``
and answers ``{"model": NAME, "results": [{"text", "confidence"}, ...]}``; ``GET /healthz``;
``GET /model`` (name, charset, size, metrics). Every error is JSON ``{"error": "..."}``.

Limits (bytes per image, pixels, images per request) are checked before any image is decoded.
Several models can be served at once; they load on first use and at most ``max_loaded`` stay in
memory (least recently used are dropped). ``uvicorn`` workers build the app with
:func:`app_from_env`, which reads the settings that :func:`serve` put in ``CAPTCHALAB_SERVE``.
No TensorFlow is imported unless a served run has no ``model.onnx``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import json
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from captchalab.data import images
from captchalab.decoding import Constraints
from captchalab.errors import CaptchaLabError, ImageError, ModelError, UsageError
from captchalab.inference.predictor import Predictor, bundled_model_path

ENV_VAR = "CAPTCHALAB_SERVE"
DEFAULT_NAME = "default"
MAX_TOP_K = 20
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
log = logging.getLogger("captchalab.serve")
T = TypeVar("T")


@dataclass(frozen=True)
class ServeConfig:
    """Everything a server process needs; JSON-serialisable so workers can read it from the environment."""

    models: tuple[tuple[str, str], ...] = ()  # (name, run folder or .onnx); empty: the bundled model
    default: str = DEFAULT_NAME
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    max_bytes: int = 1024 * 1024  # per image, as uploaded (before base64 encoding)
    max_pixels: int = 1_000_000  # width * height, read from the header before decoding
    max_side: int = 4096
    max_images: int = 64  # per request
    max_loaded: int = 4  # models kept in memory at once
    threads: int = 1  # ONNX Runtime intra-op threads per model
    timeout: float = 30.0  # seconds to receive a request body, and again to answer it
    log_level: str = "info"

    def __post_init__(self) -> None:
        for key in ("port", "workers", "max_bytes", "max_pixels", "max_side", "max_images", "max_loaded"):
            if getattr(self, key) < (0 if key == "port" else 1):
                raise UsageError(f"serve: {key.replace('_', '-')} must be positive, not {getattr(self, key)}")
        if self.threads < 0 or self.timeout <= 0:
            raise UsageError("serve: threads must be >= 0 and timeout > 0")

    @property
    def max_body(self) -> int:
        """Largest request body accepted: every image at the limit, base64-encoded, plus form overhead."""
        return self.max_images * (self.max_bytes * 4 // 3 + 1024) + 64 * 1024

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeConfig:
        data = json.loads(text)
        data["models"] = tuple(tuple(pair) for pair in data.get("models", ()))
        return cls(**data)


ModelSpec = str | Path | Sequence[str | Path] | Mapping[str, str | Path] | None


def parse_models(model: ModelSpec) -> tuple[tuple[tuple[str, str], ...], str]:
    """``RUN``, ``["site_a=RUN_A", "RUN"]`` or ``{"site_a": RUN_A}`` -> ((name, path), ...), default name.

    A plain RUN is served as ``default`` and is the default; with only named models the first one is;
    with none, the bundled model is served as ``default``.
    """
    if model is None:
        return (), DEFAULT_NAME
    if isinstance(model, Mapping):
        items = [(str(name), str(path)) for name, path in model.items()]
    else:
        items = [_split_spec(str(spec)) for spec in ([model] if isinstance(model, str | Path) else model)]
    names = [name for name, _ in items]
    for name in names:
        if not _NAME.match(name):
            raise UsageError(f"--model: '{name}' is not a usable name (letters, digits, '_', '.', '-')")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise UsageError(f"--model: {', '.join(duplicates)} given more than once; give each model its own name")
    if not items:
        return (), DEFAULT_NAME
    return tuple(items), DEFAULT_NAME if DEFAULT_NAME in names else names[0]


def _split_spec(spec: str) -> tuple[str, str]:
    name, sep, path = spec.partition("=")
    if sep and _NAME.match(name) and not Path(spec).exists():
        return name, path
    return DEFAULT_NAME, spec


class UnknownModel(CaptchaLabError):
    exit_code = 2


class ModelPool:
    """Named models loaded on first use; at most ``max_loaded`` kept, least recently used dropped first."""

    def __init__(self, paths: Mapping[str, str | None], max_loaded: int, threads: int = 1) -> None:
        self.paths, self.max_loaded, self.threads = dict(paths), max_loaded, threads
        self._loaded: OrderedDict[str, Predictor] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {name: threading.Lock() for name in self.paths}

    def get(self, name: str) -> Predictor:
        if name not in self.paths:
            raise UnknownModel(f"no model named '{name}'; this server has: {', '.join(self.paths)}")
        with self._loading[name]:  # one load per model at a time; other models are not blocked
            with self._lock:
                if name in self._loaded:
                    self._loaded.move_to_end(name)
                    return self._loaded[name]
            predictor = Predictor.load(self.paths[name], threads=self.threads)
            with self._lock:
                self._loaded[name] = predictor
                while len(self._loaded) > self.max_loaded:
                    dropped, _ = self._loaded.popitem(last=False)
                    log.info("unloaded model %s (max-loaded %d)", dropped, self.max_loaded)
            return predictor

    def ready(self, name: str) -> Predictor | None:
        """The model if it is loaded (marked as just used), without waiting for a load."""
        with self._lock:
            if name in self._loaded:
                self._loaded.move_to_end(name)
                return self._loaded[name]
        return None

    def loaded(self) -> list[str]:
        with self._lock:
            return list(self._loaded)


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True)
class Upload:
    label: str  # how errors name it: the uploaded file name or images[i]
    data: bytes


def check_models(config: ServeConfig) -> None:
    """Fail before serving: every model path exists, the default model loads."""
    for name, path in config.models:
        if not Path(path).exists():
            raise ModelError(f"--model {name}={path}: no such run folder or .onnx file")
    if not config.models and not bundled_model_path().exists():
        raise ModelError("no bundled model in this installation; pass --model RUN")
    pool = ModelPool(_paths(config), 1, config.threads)
    pool.get(config.default)


def _paths(config: ServeConfig) -> dict[str, str | None]:
    return dict(config.models) if config.models else {DEFAULT_NAME: None}


def create_app(config: ServeConfig) -> FastAPI:
    """The ASGI app for ``config``; models load on first use."""
    pool = ModelPool(_paths(config), config.max_loaded, config.threads)
    executor = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="captchalab-infer")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="captchalab", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.pool, app.state.config = pool, config
    _install_error_handlers(app)

    async def in_thread(function: Callable[[], T]) -> T:
        deadline = time.monotonic() + config.timeout

        def run() -> T:
            if time.monotonic() > deadline:  # waited in the queue past the timeout: skip the work
                raise TimeoutError
            return function()

        try:
            return await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(executor, run), config.timeout)
        except (asyncio.TimeoutError, TimeoutError):
            raise HttpError(503, f"the server took longer than {config.timeout:g} s; retry later") from None

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "default": config.default, "models": list(pool.paths), "loaded": pool.loaded()}

    @app.get("/model")
    async def model_info(request: Request) -> dict[str, Any]:
        name = request.query_params.get("model") or config.default
        predictor = await in_thread(lambda: pool.get(name))
        return describe(name, predictor)

    @app.post("/solve")
    async def solve(request: Request) -> dict[str, Any]:
        uploads, fields = await read_request(request, config)
        name = str(fields.get("model") or request.query_params.get("model") or config.default)
        top_k = parse_top_k(fields.get("top_k", request.query_params.get("top_k")))
        constraints, min_confidence = parse_decoding(fields, request.query_params)
        predictor = pool.ready(name) or await in_thread(lambda: pool.get(name))
        results = await in_thread(
            lambda: solve_uploads(predictor, uploads, top_k, config, constraints, min_confidence))
        return {"model": name, "results": results}

    return app


def app_from_env() -> FastAPI:
    """App factory for uvicorn workers: settings come from the ``CAPTCHALAB_SERVE`` environment variable."""
    raw = os.environ.get(ENV_VAR)
    return create_app(ServeConfig.from_json(raw) if raw else ServeConfig())


def describe(name: str, predictor: Predictor) -> dict[str, Any]:
    info = predictor.describe()
    info.pop("source", None)  # do not show the server's file system to clients
    info["architecture"] = info.pop("name")
    image = predictor.config.image
    return {"name": name, **info, "size": f"{image.width}x{image.height}", "metrics": _metrics(predictor.source)}


def _metrics(source: Path) -> dict[str, Any] | None:
    path = source.parent / "metrics.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def parse_top_k(value: Any) -> int:
    if value is None or value == "":
        return 1
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(value)  # int() would quietly turn true into 1 and 2.5 into 2
        top_k = int(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: JSON 1e999 is infinity
        raise HttpError(400, f"top_k must be a whole number from 1 to {MAX_TOP_K}, not {value!r}") from None
    if not 1 <= top_k <= MAX_TOP_K:
        raise HttpError(400, f"top_k must be from 1 to {MAX_TOP_K}, not {top_k}")
    return top_k


def parse_decoding(fields: dict[str, Any], query: Any) -> tuple[Constraints, float | None]:
    """Decode-time constraints (``length`` "5" or "4-6", ``allowed`` "a-z0-9", ``case`` any/lower/upper)
    and ``min_confidence`` from the request fields or query; bad values are 400s."""
    values = {key: fields.get(key, query.get(key)) for key in ("length", "allowed", "case", "min_confidence")}
    for key, value in values.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, str | int | float)):
            raise HttpError(400, f"{key} must be a string or a number, not {type(value).__name__}")
    raw = values["min_confidence"]
    try:
        min_confidence = None if raw in (None, "") else float(raw)
    except ValueError:
        raise HttpError(400, f"min_confidence must be a number from 0 to 1, not {raw!r}") from None
    if min_confidence is not None and not 0.0 <= min_confidence <= 1.0:
        raise HttpError(400, f"min_confidence must be from 0 to 1, not {min_confidence}")
    text = {key: None if values[key] in (None, "") else str(values[key]) for key in ("length", "allowed", "case")}
    return Constraints.parse(text["length"], text["allowed"], text["case"]), min_confidence


def solve_uploads(
    predictor: Predictor, uploads: Sequence[Upload], top_k: int, config: ServeConfig,
    constraints: Constraints | None = None, min_confidence: float | None = None,
) -> list[dict]:
    """Decode (within the limits) and read all uploads in one batch; a bad image fails the request.

    A best reading under ``min_confidence`` comes back as ``"text": null, "abstained": true`` with its ``guess``."""
    pixels = []
    for upload in uploads:
        image = images.open_image(upload.data, upload.label, config.max_bytes, config.max_pixels, config.max_side)
        pixels.append(predictor.prepare(image))
    readings = predictor.predict_pixels(np.stack(pixels), top_k, constraints, min_confidence)
    results = []
    for upload, reading in zip(uploads, readings):
        best = reading[0]
        result: dict[str, Any] = {"text": best.text, "confidence": round(best.confidence, 4)}
        if best.abstained:
            result.update(text=None, abstained=True, guess=best.text)
        if not upload.label.startswith("images["):
            result["file"] = upload.label
        if top_k > 1:
            result["top_k"] = [{"text": p.text, "confidence": round(p.confidence, 4)} for p in reading]
        results.append(result)
    return results


async def read_request(request: Request, config: ServeConfig) -> tuple[list[Upload], dict[str, Any]]:
    """The uploads and the other fields (model, top_k) of a multipart or JSON request."""
    body = await read_body(request, config)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        uploads, fields = await _read_form(request, body, config)
    elif kind == "application/json" or kind.endswith("+json"):
        uploads, fields = _read_json(body, config)
    else:
        raise HttpError(415, "send multipart/form-data with 'file' fields, or JSON {\"images\": [base64, ...]}")
    if not uploads:
        raise HttpError(400, "no images in the request; send one or more 'file' fields or a non-empty 'images' list")
    if len(uploads) > config.max_images:
        raise HttpError(413, f"{len(uploads)} images is over the limit of {config.max_images} per request")
    return uploads, fields


async def read_body(request: Request, config: ServeConfig) -> bytes:
    """The whole body, refused as soon as it passes ``max_body`` and cut off after ``timeout`` seconds."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > config.max_body:
        raise HttpError(413, f"request body of {declared} bytes is over the {config.max_body}-byte limit")

    async def collect() -> bytes:
        chunks, total = [], 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > config.max_body:
                raise HttpError(413, f"request body is over the {config.max_body}-byte limit")
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        return await asyncio.wait_for(collect(), config.timeout)
    except (asyncio.TimeoutError, TimeoutError):
        raise HttpError(408, f"the request body did not arrive within {config.timeout:g} s") from None


async def _read_form(request: Request, body: bytes, config: ServeConfig) -> tuple[list[Upload], dict[str, Any]]:
    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=config.max_images, max_fields=20)
    except StarletteHTTPException as error:  # Starlette's parser refuses too many parts with a bare 400
        if "Too many files" in str(error.detail):
            raise HttpError(413, f"over the limit of {config.max_images} images per request") from None
        raise HttpError(400, f"unreadable multipart body: {error.detail}") from None
    try:
        uploads, fields = [], {}
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                if key != "file":
                    raise HttpError(400, f"unexpected file field '{key}'; send images as 'file' fields")
                label = value.filename or f"file[{len(uploads)}]"
                uploads.append(Upload(label, check_size(await value.read(), label, config)))
            else:
                fields[key] = value
        return uploads, fields
    finally:
        await form.close()


def _read_json(body: bytes, config: ServeConfig) -> tuple[list[Upload], dict[str, Any]]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: [[[[... nested past the limit
        raise HttpError(400, "the body is not valid JSON; send {\"images\": [base64, ...]}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise HttpError(400, "JSON body must be an object with an 'images' list of base64 strings")
    if len(data["images"]) > config.max_images:
        raise HttpError(413, f"{len(data['images'])} images is over the limit of {config.max_images} per request")
    uploads = [Upload(f"images[{i}]", decode_base64(item, f"images[{i}]", config)) for i, item in
               enumerate(data["images"])]
    return uploads, {key: value for key, value in data.items() if key != "images"}


def decode_base64(item: Any, label: str, config: ServeConfig) -> bytes:
    if not isinstance(item, str):
        raise HttpError(400, f"{label}: expected a base64 string, got {type(item).__name__}")
    text = item.split(",", 1)[1] if item.startswith("data:") else item  # data URLs are welcome
    text = "".join(text.split())
    if len(text) > (config.max_bytes + 2) // 3 * 4:
        raise HttpError(413, f"{label}: over the {config.max_bytes}-byte limit per image")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise HttpError(400, f"{label}: not valid base64") from None
    return check_size(data, label, config)


def check_size(data: bytes, label: str, config: ServeConfig) -> bytes:
    if not data:
        raise HttpError(400, f"{label}: empty upload")
    if len(data) > config.max_bytes:
        raise HttpError(413, f"{label}: {len(data)} bytes is over the {config.max_bytes}-byte limit per image")
    return data


def _install_error_handlers(app: FastAPI) -> None:
    """Every error leaves as ``{"error": "..."}``: ours, Starlette's 404/405, validation, and crashes."""

    def reply(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    async def http_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, HttpError)
        return reply(error.status, error.message)

    async def starlette_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, StarletteHTTPException)
        messages = {404: f"no such endpoint {request.url.path}; use POST /solve, GET /model or GET /healthz",
                    405: f"{request.method} is not allowed on {request.url.path}"}
        message = messages.get(error.status_code, str(error.detail))
        return JSONResponse({"error": message}, status_code=error.status_code, headers=error.headers)

    async def validation_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)
        problems = "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg')}" for e in error.errors())
        return reply(400, f"invalid request ({problems})")

    async def captchalab_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, CaptchaLabError)
        status = 404 if isinstance(error, UnknownModel) else 400 if isinstance(error, ImageError | UsageError) else 500
        return reply(status, str(error))

    async def crash(request: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=error)
        return reply(500, "internal error; the server log has the details")

    app.add_exception_handler(HttpError, http_error)
    app.add_exception_handler(StarletteHTTPException, starlette_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(CaptchaLabError, captchalab_error)
    app.add_exception_handler(Exception, crash)


def serve(
    model: ModelSpec = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    max_loaded: int = 4,
    threads: int = 1,
    max_bytes: int = ServeConfig.max_bytes,
    max_pixels: int = ServeConfig.max_pixels,
    max_images: int = ServeConfig.max_images,
    timeout: float = ServeConfig.timeout,
    log_level: str = "info",
) -> None:
    """Run the HTTP API until interrupted (``captchalab serve``)."""
    import uvicorn

    models, default = parse_models(model)
    config = ServeConfig(models, default, host, port, workers, max_bytes, max_pixels, ServeConfig.max_side,
                         max_images, max_loaded, threads, timeout, log_level)
    check_models(config)
    os.environ[ENV_VAR] = config.to_json()
    uvicorn.run("captchalab.inference.http:app_from_env", factory=True, host=host, port=port, workers=workers,
                log_level=log_level, timeout_keep_alive=5, timeout_graceful_shutdown=int(timeout))
