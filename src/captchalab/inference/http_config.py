"""Settings of ``captchalab serve``: one frozen, JSON-serialisable ``ServeConfig`` and the ``--model`` parser.

Every limit the server enforces is a field here, so the CLI, the Python API, uvicorn workers
(which read the JSON from ``CAPTCHALAB_SERVE``) and the tests see the same values.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from captchalab.errors import UsageError

DEFAULT_NAME = "default"
NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
_NAME = re.compile(NAME_PATTERN)
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
WILDCARD_BINDS = ("0.0.0.0", "::", "")
API_KEY_ENV = "CAPTCHALAB_API_KEY"
ENV_VAR = "CAPTCHALAB_SERVE"  # serve() puts the settings here for uvicorn's worker processes


@dataclass(frozen=True)
class ServeConfig:
    """Everything a server process needs; JSON-serialisable so workers can read it from the environment."""

    models: tuple[tuple[str, str], ...] = ()  # (name, run folder or .onnx); empty: the bundled model
    default: str = DEFAULT_NAME
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    # A captcha is a few KB; 128 KiB per image leaves room for big ones and keeps max_body near 11 MB.
    max_bytes: int = 128 * 1024  # per image, as uploaded (before base64 encoding)
    max_pixels: int = 1_000_000  # width * height, read from the header before decoding
    max_side: int = 4096
    max_images: int = 64  # per request
    max_loaded: int = 4  # models kept in memory at once
    threads: int = 1  # ONNX Runtime intra-op threads per model
    timeout: float = 30.0  # seconds to receive a request body, and again to answer it
    log_level: str = "info"
    header_timeout: float = 10.0  # seconds for a new request's headers to arrive, else the connection is closed
    keep_alive: int = 5  # seconds an idle keep-alive connection is kept open
    max_connections: int = 512  # open connections per process; more are closed as soon as they are accepted
    allowed_hosts: tuple[str, ...] = ()  # Host names accepted besides the loopback names and --host; "*": any
    cors_origins: tuple[str, ...] = ()  # origins whose web pages may call the API; none by default
    api_key: str | None = field(default=None, repr=False)  # when set, /solve and /model need it

    def __post_init__(self) -> None:
        for key in ("port", "workers", "max_bytes", "max_pixels", "max_side", "max_images", "max_loaded",
                    "keep_alive", "max_connections"):
            if getattr(self, key) < (0 if key == "port" else 1):
                raise UsageError(f"serve: {key.replace('_', '-')} must be positive, not {getattr(self, key)}")
        if self.threads < 0 or self.timeout <= 0 or self.header_timeout <= 0:
            raise UsageError("serve: threads must be >= 0 and timeout > 0")
        if self.api_key is not None and len(self.api_key) < 16:
            raise UsageError("serve: the API key must be at least 16 characters; generate one with "
                             "'python -c \"import secrets; print(secrets.token_urlsafe())\"'")
        for origin in self.cors_origins:
            if origin != "*" and not re.match(r"^https?://[^/\s]+$", origin):
                raise UsageError(f"serve: CORS origin '{origin}' is not like https://example.com (no path)")

    @property
    def max_body(self) -> int:
        """Largest request body accepted: every image at the limit, base64-encoded, plus form overhead."""
        return self.max_images * (self.max_bytes * 4 // 3 + 1024) + 64 * 1024

    @property
    def max_pending(self) -> int:
        """Request bodies held in memory at once, all requests together: one of the largest and 4 MiB of
        small ones (a body in memory costs about three times its size while it is parsed and decoded)."""
        return self.max_body + 4 * 2**20

    @property
    def hosts(self) -> frozenset[str]:
        """Host header names served (lower case, no port): loopback names, the bound address, --allowed-host."""
        names = {*LOCAL_HOSTS, *(h.lower() for h in self.allowed_hosts)}
        if self.host not in WILDCARD_BINDS:
            names.add(self.host.lower().strip("[]"))
        return frozenset(names)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_env(cls) -> ServeConfig:
        """The settings ``serve`` left in ``CAPTCHALAB_SERVE``, or the defaults."""
        raw = os.environ.get(ENV_VAR)
        return cls.from_json(raw) if raw else cls()

    @classmethod
    def from_json(cls, text: str) -> ServeConfig:
        data = json.loads(text)
        data["models"] = tuple(tuple(pair) for pair in data.get("models", ()))
        for key in ("allowed_hosts", "cors_origins"):
            data[key] = tuple(data.get(key, ()))
        return cls(**data)


def host_name(header: str) -> str:
    """The name part of a Host header, lower case: ``Example.com:8000`` -> ``example.com``, ``[::1]:80`` -> ``::1``."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].partition("]")[0]
    name, _, port = header.rpartition(":")
    if name and port.isdigit():
        try:
            ipaddress.IPv6Address(header)  # a bare IPv6 address: its last group is not a port
            return header
        except ValueError:
            return name
    return header


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
