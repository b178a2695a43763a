"""``captchalab serve``: the HTTP API on top of the one Predictor (docs/serving.md).

``POST /solve`` takes multipart ``file`` fields, JSON ``{"images": [base64, ...]}`` or one raw
``image/*`` body and answers ``{"model": NAME, "results": [{"text", "confidence"}, ...]}``;
``GET /healthz``; ``GET /model`` (name, charset, size, metrics); ``/docs``, ``/redoc`` and
``/openapi.json`` describe them. Every error is JSON ``{"error": "..."}``.

What a request may cost is bounded before the work starts: the edge (``http_guard``) checks Host,
Origin, API key, body size, body time and buffered bytes; pydantic models (``http_schema``) bound
every option; counts and sizes are checked before an image is decoded. Parsing JSON, decoding
base64 and images, and running the model happen on worker threads, never on the event loop.
Several models can be served at once; they load on first use and at most ``max_loaded`` stay in
memory. No TensorFlow is imported unless a served run has no ``model.onnx``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import os
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import numpy as np
from fastapi import FastAPI, Form, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from captchalab import runs
from captchalab.data import images
from captchalab.decoding import Constraints
from captchalab.errors import CaptchaLabError, DataError, ModelError, UsageError
from captchalab.inference.http_config import (
    API_KEY_ENV,
    DEFAULT_NAME,
    ENV_VAR,
    LOCAL_HOSTS,
    NAME_PATTERN,
    ModelSpec,
    ServeConfig,
    parse_models,
)
from captchalab.inference.http_guard import Guard, GuardedH11Protocol, error_body, quiet_repeats
from captchalab.inference.http_schema import (
    ERRORS_DOC,
    SOLVE_BODY_DOC,
    Health,
    ModelInfo,
    Reading,
    SolveForm,
    SolveJSON,
    SolveOptions,
    SolveResponse,
    SolveResult,
)
from captchalab.inference.predictor import Predictor, bundled_model_path

__all__ = ["DEFAULT_NAME", "ENV_VAR", "ModelPool", "ServeConfig", "app_from_env", "create_app", "parse_models",
           "serve", "uvicorn_options"]
log = logging.getLogger("captchalab.serve")
T = TypeVar("T")
API_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, description="Only when the server has a key.")


class UnknownModel(CaptchaLabError):
    exit_code = 2


class ModelUnavailable(ModelError):
    """A served model that cannot be loaded; its message names the model, never the server's paths."""


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
            predictor = self._load(name)
            with self._lock:
                self._loaded[name] = predictor
                while len(self._loaded) > self.max_loaded:
                    dropped, _ = self._loaded.popitem(last=False)
                    log.info("unloaded model %s (max-loaded %d)", dropped, self.max_loaded)
            return predictor

    def _load(self, name: str) -> Predictor:
        try:
            return Predictor.load(self.paths[name], threads=self.threads)
        except ModelError as error:  # the message names files of this machine: the log may see it, clients not
            log.error("model %s could not be loaded: %s", name, error)
            raise ModelUnavailable(f"model '{name}' could not be loaded; the server log says why") from None

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
    label: str  # how errors name it: the uploaded file name, images[i] or "body"
    data: bytes
    file: str | None = None  # the multipart file name, echoed in the result


def check_models(config: ServeConfig) -> None:
    """Fail before serving: every model path exists, the default model loads."""
    for name, path in config.models:
        if not runs.named_run(path).exists():
            raise ModelError(f"--model {name}={path}: no such run folder or .onnx file")
    if not config.models and not bundled_model_path().exists():
        raise ModelError("no bundled model in this installation; pass --model RUN")
    Predictor.load(dict(_paths(config))[config.default], threads=config.threads)


def _paths(config: ServeConfig) -> dict[str, str | None]:
    return dict(config.models) if config.models else {DEFAULT_NAME: None}


class AsciiJSON(JSONResponse):
    """JSON with non-ASCII escaped: a lone surrogate echoed from a request cannot fail the encoding."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def create_app(config: ServeConfig) -> FastAPI:
    """The ASGI app for ``config``; models load on first use."""
    pool = ModelPool(_paths(config), config.max_loaded, config.threads)
    executor = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="captchalab-infer")
    quiet_repeats()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="captchalab", summary="Read text CAPTCHAs.", version=_version(), lifespan=lifespan,
                  default_response_class=AsciiJSON)
    app.state.pool, app.state.config = pool, config
    if config.cors_origins:  # none by default: no web page of another origin may read the answers
        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Content-Type", "X-API-Key", "Authorization"])
    app.add_middleware(Guard, config=config)  # added last: the outermost, before any body is read
    _install_error_handlers(app)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]

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

    protected = [Security(API_KEY_HEADER)] if config.api_key else []  # declared for /docs; checked by Guard

    @app.get("/healthz", response_model=Health)
    async def healthz() -> Health:
        """Liveness: the served model names and those loaded now. Never needs the API key."""
        return Health(status="ok", default=config.default, models=list(pool.paths), loaded=pool.loaded())

    @app.get("/model", response_model=ModelInfo, responses=_errors(401, 404, 500), dependencies=protected)
    async def model_info(
        model: Annotated[str | None, Query(max_length=64, pattern=NAME_PATTERN, description="A served model.")]
        = None,
    ) -> ModelInfo:
        """Describe a served model: charset, input size, head, metrics of its run."""
        name = model or config.default
        predictor = await in_thread(lambda: pool.get(name))
        return ModelInfo.model_validate(describe(name, predictor))

    @app.post("/solve", response_model=SolveResponse, response_model_exclude_unset=True, dependencies=protected,
              openapi_extra=SOLVE_BODY_DOC, responses=_errors(400, 401, 403, 404, 408, 413, 415, 500, 503))
    async def solve(
        request: Request,
        query: Annotated[SolveOptions, Query()],
        form: Annotated[SolveForm, Form(media_type="multipart/form-data")],
    ) -> SolveResponse:
        """Read one or more images: multipart `file` fields, JSON base64 `images`, or one raw image body.

        All images of a request go through the model as one batch; results come in the order sent."""
        uploads, options = await read_request(request, query, form, config, in_thread)
        name = options.model or config.default
        predictor = pool.ready(name) or await in_thread(lambda: pool.get(name))
        results = await in_thread(lambda: solve_uploads(predictor, uploads, options, config))
        return SolveResponse(model=name, results=results)

    return app


def app_from_env() -> FastAPI:
    """App factory for uvicorn workers: settings come from the ``CAPTCHALAB_SERVE`` environment variable."""
    # Worker threads decode and read in Python while the event loop answers; let the loop have the GIL
    # back within 1 ms of asking rather than 5 ms, so /healthz and small requests wait less behind them.
    sys.setswitchinterval(0.001)
    _return_big_buffers()
    return create_app(ServeConfig.from_env())


def _return_big_buffers() -> None:
    """Fix glibc's mmap threshold at 64 KiB: request bodies, base64 text and decoded images are then mapped
    on their own and unmapped when freed. Left to adapt, glibc raises the threshold after the first big
    buffer is freed and keeps later ones in per-thread heaps (bench/server_attack.py: peak memory 1.75x
    idle under large bodies instead of 1.35x)."""
    import ctypes
    import ctypes.util

    # Not glibc (macOS, musl, Windows): no mallopt, or no such option; that allocator keeps its own policy.
    with contextlib.suppress(OSError, AttributeError, TypeError):
        ctypes.CDLL(ctypes.util.find_library("c")).mallopt(-3, 64 * 1024)  # -3: M_MMAP_THRESHOLD


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("captchalab")
    except metadata.PackageNotFoundError:
        return "0"


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: ERRORS_DOC[status] for status in statuses}


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, less the 422 it adds to every route: this API answers validation errors with 400."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
        for path in schema["paths"].values():
            for operation in path.values():
                operation.get("responses", {}).pop("422", None)
        for unused in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(unused, None)
        app.openapi_schema = schema
    return app.openapi_schema


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
    except (OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


# --------------------------------------------------------------------------- reading a request


async def read_request(
    request: Request, query: SolveOptions, form: SolveForm, config: ServeConfig,
    in_thread: Callable[[Callable[[], Any]], Any],
) -> tuple[list[Upload], SolveOptions]:
    """The uploads and the options (body fields over query parameters) of a multipart, JSON or image request."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        uploads, body_options = await _read_form(request, form, config), form
    elif kind == "application/json" or kind.endswith("+json"):
        body = await read_body(request)
        uploads, body_options = await in_thread(lambda: parse_json(body, config))
    elif kind.startswith("image/"):
        uploads, body_options = [Upload("body", check_size(bytes(await read_body(request)), "body", config))], None
    else:
        raise HttpError(415, "send multipart/form-data with 'file' fields, JSON {\"images\": [base64, ...]}, "
                             "or one image as an image/* body")
    if not uploads:
        raise HttpError(400, "no images in the request; send one or more 'file' fields or a non-empty 'images' list")
    if len(uploads) > config.max_images:
        raise HttpError(413, f"{len(uploads)} images is over the limit of {config.max_images} per request")
    return uploads, merge_options(query, body_options)


async def read_body(request: Request) -> bytearray:
    """The body in one growing buffer (``request.body()`` holds its chunks and their join at once);
    its size and arrival time are bounded by ``Guard`` as it streams in."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
    return body


def merge_options(query: SolveOptions, body: SolveOptions | None) -> SolveOptions:
    fields = query.model_dump(exclude_unset=True)
    if body is not None:
        fields.update(body.model_dump(exclude_unset=True, include=set(SolveOptions.model_fields)))
    return SolveOptions.model_construct(**fields)


async def _read_form(request: Request, form: SolveForm, config: ServeConfig) -> list[Upload]:
    for key, value in (await request.form()).multi_items():  # parsed already, by FastAPI; this is its cache
        if isinstance(value, UploadFile) and key != "file":
            raise HttpError(400, f"unexpected file field '{key}'; send images as 'file' fields")
    if len(form.file) > config.max_images:
        raise HttpError(413, f"{len(form.file)} images is over the limit of {config.max_images} per request")
    uploads = []
    for index, upload in enumerate(form.file):
        label = upload.filename or f"file[{index}]"
        data = await upload.read(config.max_bytes + 1)  # never more than one byte past the limit
        uploads.append(Upload(label, check_size(data, label, config), label))
    return uploads


def parse_json(body: bytes | bytearray, config: ServeConfig) -> tuple[list[Upload], SolveJSON]:
    """A JSON body to uploads and options; runs on a worker thread."""
    check_json_shape(body, config)
    try:
        data = SolveJSON.model_validate_json(body)
    except ValidationError as error:
        if any(e["type"] == "json_invalid" for e in error.errors()):
            raise HttpError(400, "the body is not valid JSON; send {\"images\": [base64, ...]}") from None
        raise HttpError(400, "JSON body must be an object with an 'images' list of base64 strings "
                             f"({problems(error.errors())})") from None
    if isinstance(body, bytearray):
        body.clear()  # parsed: free the raw bytes before the images are decoded beside their base64
    if len(data.images) > config.max_images:
        raise HttpError(413, f"{len(data.images)} images is over the limit of {config.max_images} per request")
    uploads = [Upload(f"images[{i}]", decode_base64(item, f"images[{i}]", config)) for i, item in
               enumerate(data.images)]
    return uploads, data


def check_json_shape(body: bytes | bytearray, config: ServeConfig) -> None:
    """Refuse, before parsing, JSON the parser would turn into far more memory than an image request needs.

    In a list or an object every value but the first follows a comma, and nesting is capped by the
    parser; so counting commas (at memchr speed) bounds the values it would build: 20 MB of [0,0,0,...]
    is refused here rather than becoming 7 million objects (and 400 MB) there. And no run of bytes
    between two quotes may be longer than an image in base64 (plus a data: prefix and line breaks):
    a 10 MB string is refused before it is copied into a Python string."""
    values = 4 * config.max_images + 1024
    if body.count(b",") > values or body.count(b'"') > 2 * values:
        raise HttpError(413, f"the JSON body holds too many values; send at most {config.max_images} images "
                             "and the options")
    longest = (config.max_bytes + 2) // 3 * 4 * 21 // 20 + 1024
    start = body.find(b'"')
    while start != -1:
        end = body.find(b'"', start + 1)
        if end - start > longest or (end == -1 and len(body) - start > longest):
            raise HttpError(413, f"the JSON body holds a value longer than an image of {config.max_bytes} bytes "
                                 "can be in base64")
        start = -1 if end == -1 else body.find(b'"', end + 1)


def decode_base64(text: str, label: str, config: ServeConfig) -> bytes:
    if text.startswith("data:"):  # data URLs are welcome: data:image/png;base64,<data>
        _, comma, text = text.partition(",")
        if not comma:
            raise HttpError(400, f"{label}: a data: URL needs a ',' before its base64 data")
    spaces = sum(text.count(space) for space in " \t\r\n")  # counted, not stripped: no copy before the check
    if len(text) - spaces > (config.max_bytes + 2) // 3 * 4:
        raise HttpError(413, f"{label}: over the {config.max_bytes}-byte limit per image")
    if spaces:
        text = "".join(text.split())
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):  # ValueError: characters outside ASCII
        raise HttpError(400, f"{label}: not valid base64") from None
    return check_size(data, label, config)


def check_size(data: bytes, label: str, config: ServeConfig) -> bytes:
    if not data:
        raise HttpError(400, f"{label}: empty upload")
    if len(data) > config.max_bytes:
        raise HttpError(413, f"{label}: {len(data)} bytes is over the {config.max_bytes}-byte limit per image")
    return data


def problems(errors: Sequence[Any]) -> str:
    """Pydantic's errors as ``where: what; ...``: the first three, without the values sent."""
    listed = [f"{'.'.join(map(str, e.get('loc', ()))) or 'body'}: {e.get('msg')}" for e in errors[:3]]
    return "; ".join(listed) + (f"; and {len(errors) - 3} more" if len(errors) > 3 else "")


# --------------------------------------------------------------------------- solving


def solve_uploads(predictor: Predictor, uploads: Sequence[Upload], options: SolveOptions,
                  config: ServeConfig) -> list[SolveResult]:
    """Decode (within the limits) and read all uploads in one batch; a bad image fails the request.

    A best reading under ``min_confidence`` comes back as ``"text": null, "abstained": true`` with its ``guess``."""
    length = None if options.length is None else str(options.length)
    constraints = Constraints.parse(length, options.allowed, options.case, predictor.config.charset)
    top_k = options.top_k or 1
    pixels = []
    for upload in uploads:
        image = images.open_image(upload.data, upload.label, config.max_bytes, config.max_pixels, config.max_side)
        pixels.append(predictor.prepare(image))
    readings = predictor.predict_pixels(np.stack(pixels), top_k, constraints, options.min_confidence)
    results = []
    for upload, reading in zip(uploads, readings):
        best = reading[0]
        fields: dict[str, Any] = {"text": best.text, "confidence": round(best.confidence, 4)}
        if best.abstained:
            fields.update(text=None, abstained=True, guess=best.text)
        if best.ood is not None:  # as solve --json says it
            fields["ood"] = best.ood
        if upload.file is not None:
            fields["file"] = upload.file
        if top_k > 1:
            fields["top_k"] = [Reading(text=p.text, confidence=round(p.confidence, 4)) for p in reading]
        results.append(SolveResult(**fields))
    return results


# --------------------------------------------------------------------------- errors


def _install_error_handlers(app: FastAPI) -> None:
    """Every error leaves as ``{"error": "..."}``: ours, Starlette's, validation, and captchalab's.
    An unexpected exception is answered by ``Guard`` (Starlette's own 500 handler would drop the connection)."""

    def reply(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
        return JSONResponse(json.loads(error_body(message)), status_code=status, headers=headers)

    async def http_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, HttpError)
        return reply(error.status, error.message)

    async def starlette_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, StarletteHTTPException)
        detail = str(error.detail)
        if error.status_code == 400 and "multipart" in request.headers.get("content-type", ""):
            # Starlette's multipart parser refuses a broken body, or too many parts, with a bare 400
            if "Too many files" in detail:
                return reply(413, f"over the limit of {app.state.config.max_images} images per request")
            detail = f"unreadable multipart body: {detail}"
        messages = {404: f"no such endpoint {request.url.path[:200]}; use POST /solve, GET /model or GET /healthz",
                    405: f"{request.method} is not allowed on {request.url.path[:200]}"}
        return reply(error.status_code, messages.get(error.status_code, detail), error.headers)

    async def validation_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)
        return reply(400, f"invalid request ({problems(error.errors())})")

    async def captchalab_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, CaptchaLabError)
        if isinstance(error, UnknownModel):
            return reply(404, str(error))
        if isinstance(error, DataError | UsageError):  # the client's images or options
            return reply(400, str(error))
        if not isinstance(error, ModelUnavailable):  # may name the server's files: log it, say less
            log.error("%s on %s: %s", type(error).__name__, request.url.path, error)
            return reply(500, "the model failed on this request; the server log has the details")
        return reply(500, str(error))

    app.add_exception_handler(HttpError, http_error)
    app.add_exception_handler(StarletteHTTPException, starlette_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(CaptchaLabError, captchalab_error)


# --------------------------------------------------------------------------- running


def uvicorn_options(config: ServeConfig) -> dict[str, Any]:
    """What ``serve`` passes to ``uvicorn.run``: the app factory and every network limit."""
    return {
        "factory": True, "host": config.host, "port": config.port, "workers": config.workers,
        "log_level": config.log_level,
        "http": GuardedH11Protocol,  # header timeout, connection cap (reads ServeConfig.from_env())
        "timeout_keep_alive": config.keep_alive,  # idle keep-alive connections close after this
        "limit_concurrency": config.max_connections,  # requests past it get 503, not a queue
        "backlog": 128,  # connections waiting for accept(); more are refused by the kernel, not logged
        "h11_max_incomplete_event_size": 16 * 1024,  # request line + headers; more is a 400
        "timeout_graceful_shutdown": int(config.timeout),
        "server_header": False,
    }


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
    *,
    allowed_hosts: Sequence[str] = (),
    cors_origins: Sequence[str] = (),
    api_key: str | None = None,
    max_connections: int = ServeConfig.max_connections,
    header_timeout: float = ServeConfig.header_timeout,
) -> None:
    """Run the HTTP API until interrupted (``captchalab serve``). ``api_key`` defaults to the
    ``CAPTCHALAB_API_KEY`` environment variable; without one, anyone who can connect may use the API."""
    import uvicorn

    models, default = parse_models(model)
    key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
    config = ServeConfig(models, default, host, port, workers, max_bytes, max_pixels, ServeConfig.max_side,
                         max_images, max_loaded, threads, timeout, log_level, header_timeout=header_timeout,
                         max_connections=max_connections, allowed_hosts=tuple(allowed_hosts),
                         cors_origins=tuple(cors_origins), api_key=key)
    check_models(config)
    if host not in LOCAL_HOSTS and key is None:
        log.warning("serving on %s without an API key: anyone who can reach this address can use it; "
                    "see docs/serving.md for --api-key and a reverse proxy", host)
    os.environ[ENV_VAR] = config.to_json()
    uvicorn.run("captchalab.inference.http:app_from_env", **uvicorn_options(config))
