"""The server's edge: what every connection and request passes before any endpoint runs.

- ``Guard`` (ASGI middleware): Host allow-list (DNS rebinding), foreign ``Origin`` refused (web pages
  posting to a local server), optional API key (constant-time compare), body size, body time and a
  process-wide budget of buffered body bytes; an unexpected exception becomes a JSON 500 sent on a
  connection that stays usable.
- ``GuardedH11Protocol`` (uvicorn's h11 protocol): a connection whose request headers do not arrive
  within ``header_timeout`` is closed, and connections past ``max_connections`` are closed as soon as
  they are accepted, so idle half-sent requests cannot use up file descriptors.
- ``RepeatFilter``: a log message that repeats (a failed accept, an invalid request) is written
  once a minute with a count, never once per event and never with a traceback per event.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

from starlette.exceptions import HTTPException
from uvicorn.protocols.http.h11_impl import H11Protocol

from captchalab.inference.http_config import ServeConfig, host_name

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
OPEN_PATHS = ("/healthz", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json")  # no API key needed
CLOSE = (b"connection", b"close")
SMALL_BODY = 64 * 1024  # a body this small is never refused as "busy"
log = logging.getLogger("captchalab.serve")


def error_body(message: str) -> bytes:
    """``{"error": message}``; ASCII-escaped, so even a lone surrogate a client sent cannot break encoding."""
    return json.dumps({"error": message}, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def key_matches(given: str | None, expected: str) -> bool:
    """Constant-time comparison of API keys (as UTF-8 bytes: compare_digest refuses non-ASCII str)."""
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode("utf-8"))


class BodyBudget:
    """Body bytes buffered by all requests of this process together (one event loop: no lock needed)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0

    def take(self, count: int, small: bool = False) -> bool:
        """Count ``count`` more bytes; False (not counted) when over the limit, unless the body is ``small``:
        small requests (a captcha or two) always pass, so big uploads cannot lock everyone out. Their
        share is bounded apart: SMALL_BODY per connection, and connections are capped."""
        if self.used + count > self.limit and not small:
            return False
        self.used += count
        return True

    def give_back(self, count: int) -> None:
        self.used -= count


class Guard:
    """Pure ASGI middleware; see the module docstring. Refusals are ``{"error": ...}`` JSON."""

    def __init__(self, app: ASGIApp, config: ServeConfig) -> None:
        self.app, self.config = app, config
        self.hosts = config.hosts
        self.origins = {o.lower() for o in config.cors_origins}
        self.budget = BodyBudget(config.max_pending)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        refusal = self.refuse(scope, headers)
        if refusal is not None:
            status, message = refusal
            await _reply(send, status, message, close=_may_have_body(headers))
            return
        state = _Exchange(self, headers, receive)
        try:
            await self.app(scope, state.receive, state.wrap(send))
        except Exception as error:  # a bug: answer 500 and keep the connection (Starlette would re-raise)
            log.error("unexpected error on %s %s", scope.get("method"), scope.get("path"), exc_info=error)
            if state.started:
                raise  # half a response is out: only closing the connection can end it
            await _reply(send, 500, "internal error; the server log has the details", close=not state.body_done)
        finally:
            self.budget.give_back(state.taken)

    def refuse(self, scope: Scope, headers: dict[str, str]) -> tuple[int, str] | None:
        """Why a request is refused before its body is read, or None."""
        host = host_name(headers.get("host", ""))
        if "*" not in self.hosts and host not in self.hosts:
            return 400, (f"Host '{host[:100]}' is not served here; start the server with --allowed-host NAME "
                         "for each name clients use")
        origin = headers.get("origin")
        if origin is not None and not self._origin_ok(origin):
            return 403, "requests from web pages of other origins are refused; start the server with --cors-origin"
        if self.config.api_key is not None and scope.get("path") not in OPEN_PATHS:
            given = headers.get("x-api-key") or _bearer(headers.get("authorization"))
            if not key_matches(given, self.config.api_key):
                return 401, "missing or wrong API key; send it in the X-API-Key header"
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.config.max_body:
            return 413, f"request body of {declared} bytes is over the {self.config.max_body}-byte limit"
        return None

    def _origin_ok(self, origin: str) -> bool:
        origin = origin.lower()
        if origin in self.origins or "*" in self.origins:
            return True
        if origin == "null":  # sandboxed frames, file:// pages
            return False
        return host_name(urlsplit(origin).netloc) in self.hosts  # the server's own pages (/docs)


class _Exchange:
    """One request's body accounting: size limit, deadline, shared budget; and whether a response began."""

    def __init__(self, guard: Guard, headers: dict[str, str], receive: Receive) -> None:
        self.guard, self.config, self._receive = guard, guard.config, receive
        self.taken, self.received, self.started = 0, 0, False
        self.body_done = not _may_have_body(headers)
        self.deadline = time.monotonic() + self.config.timeout

    async def receive(self) -> Message:
        if self.body_done:  # only a disconnect can come now; do not bound the wait for it
            return await self._receive()
        try:
            message = await asyncio.wait_for(self._receive(), max(0.0, self.deadline - time.monotonic()))
        except (asyncio.TimeoutError, TimeoutError):
            raise _closing(408, f"the request body did not arrive within {self.config.timeout:g} s") from None
        if message["type"] == "http.request":
            self._count(len(message.get("body", b"")))
            self.body_done = not message.get("more_body", False)
        return message

    def _count(self, size: int) -> None:
        self.received += size
        if self.received > self.config.max_body:
            raise _closing(413, f"request body is over the {self.config.max_body}-byte limit")
        if not self.guard.budget.take(size, small=self.received <= SMALL_BODY):
            raise _closing(503, "the server is busy receiving other uploads; retry in a moment")
        self.taken += size

    def wrap(self, send: Send) -> Send:
        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.started = True
                if not self.body_done:  # answered before the body was read: the rest is not wanted
                    message["headers"] = [*message.get("headers", []), CLOSE]
            await send(message)

        return sending


def _closing(status: int, message: str) -> HTTPException:
    return HTTPException(status, message, headers={"Connection": "close"})


async def _reply(send: Send, status: int, message: str, close: bool) -> None:
    body = error_body(message)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + ([CLOSE] if close else [])})
    await send({"type": "http.response.body", "body": body})


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}


def _may_have_body(headers: dict[str, str]) -> bool:
    return headers.get("content-length", "0") not in ("", "0") or "transfer-encoding" in headers


def _bearer(value: str | None) -> str | None:
    scheme, _, token = (value or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header timeout and a cap on open connections (uvicorn has neither:
    its keep-alive timer starts only after a first response, and ``limit_concurrency`` only answers 503
    to requests that arrive, not to connections that never finish their headers).

    Its limits come from ``ServeConfig.from_env()``: uvicorn builds protocols in each worker process
    from the class alone, so they cannot be passed in as arguments."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = ServeConfig.from_env()
        self.header_timeout = settings.header_timeout
        self.max_connections = min(settings.max_connections, _descriptor_room())

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            transport.abort()  # no reply: the peer is one of too many; answering would cost more
            return
        self._arm_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_header_timer()

    def _arm_header_timer(self) -> None:
        self.loop.call_later(self.header_timeout, self._header_timeout, self.cycle)

    def _header_timeout(self, cycle: Any) -> None:
        waiting = self.cycle is cycle and (cycle is None or cycle.response_complete)  # no new request began
        if waiting and not self.transport.is_closing():
            self.transport.close()


def _descriptor_room() -> int:
    """Connections this process can hold with file descriptors to spare for models, logs and threads:
    capping below the limit means accept() never fails for want of one (EMFILE)."""
    try:
        import resource
    except ImportError:  # not on this platform (Windows): no such limit to respect
        return 1 << 30
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1 << 30 if soft == resource.RLIM_INFINITY else max(1, soft - 64)


class RepeatFilter(logging.Filter):
    """Lets a repeating message through at most once per ``every`` seconds, without its traceback."""

    REPEATING = ("socket.accept() out of system resource", "Invalid HTTP request received",
                 "Exceeded concurrency limit", "Accept failed on a socket")

    def __init__(self, every: float = 60.0) -> None:
        super().__init__()
        self.every, self.last, self.dropped = every, {}, {}  # type: ignore[var-annotated]

    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.msg)
        kind = next((k for k in self.REPEATING if k in text), None)
        if kind is None:
            return True
        now = time.monotonic()
        if now - self.last.get(kind, -self.every) < self.every:
            self.dropped[kind] = self.dropped.get(kind, 0) + 1
            return False
        self.last[kind] = now
        dropped = self.dropped.pop(kind, 0)
        record.msg = f"{kind} (repeats are logged once a minute; {dropped} since the last one)"
        record.args, record.exc_info, record.exc_text = (), None, None
        return True


def quiet_repeats(loggers: Iterable[str] = ("asyncio", "uvicorn.error")) -> None:
    """Install one ``RepeatFilter`` on each logger (idempotent)."""
    for name in loggers:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RepeatFilter) for f in logger.filters):
            logger.addFilter(RepeatFilter())
