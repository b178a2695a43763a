"""The server's edge (issue 16, items 1-6; issue 17, item 2): what a hostile or careless client
cannot do to `captchalab serve`. Real uvicorn servers on 127.0.0.1 where the network matters."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from captchalab.charset import Charset, expand_ranges
from captchalab.decoding import Constraints
from captchalab.errors import UsageError
from captchalab.inference import http
from captchalab.inference.http import ServeConfig, create_app, uvicorn_options
from captchalab.inference.http_config import ENV_VAR, host_name
from captchalab.inference.http_guard import GuardedH11Protocol, RepeatFilter, key_matches

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

HUGE_RANGE = "\u0001-\U0010ffff"
KEY = "k" * 24


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def b64(tiny_set: Path) -> str:
    return base64.b64encode(sorted(tiny_set.glob("*.png"))[0].read_bytes()).decode()


def _client(config: ServeConfig) -> TestClient:
    return TestClient(create_app(config), base_url="http://localhost", raise_server_exceptions=False)


@pytest.fixture(scope="module")
def client(tiny_run: Path) -> Iterator[TestClient]:
    with _client(ServeConfig(models=(("default", str(tiny_run)),))) as test_client:
        yield test_client


@contextlib.contextmanager
def live(config: ServeConfig, monkeypatch: pytest.MonkeyPatch, app=None) -> Iterator[int]:
    """``config`` served by uvicorn with the options ``serve`` passes (protocol, limits) in a thread."""
    monkeypatch.setenv(ENV_VAR, config.to_json())  # GuardedH11Protocol reads its limits from here
    options = {**uvicorn_options(config), "factory": False, "workers": None, "log_config": None}
    server = uvicorn.Server(uvicorn.Config(app or create_app(config), **options))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield config.port
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _exchange(sock: socket.socket, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send one request on an open connection and read one response (status, headers, body)."""
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers.get("content-length", 0)):
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection mid-body"
        body += chunk
    return int(lines[0].split()[1]), headers, body


def _post_json(body: bytes, path: str = "/solve") -> bytes:
    return (b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (path.encode(), len(body), body))


GET_HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


# --------------------------------------------------------------------------- item 1: allowed


def test_ranges_are_expanded_within_the_charset_only() -> None:
    assert expand_ranges("a-z0-9", within="AB3x") == "x3"
    assert expand_ranges("-a-c", within="-b") == "-b"
    started = time.perf_counter()
    charset = Charset("0123456789ABCDEF")
    constraints = Constraints.parse("5", HUGE_RANGE * 20, "lower", charset)
    assert time.perf_counter() - started < 0.05  # was: a million symbols per range, 14 s in the server
    assert set(constraints.allowed or "") == set("0123456789ABCDEFabcdef")
    with pytest.raises(UsageError, match="none of the allowed characters"):
        Constraints.parse(None, "xyz", None, charset)


def test_absurd_constraints_are_answered_at_once(client: TestClient, b64: str) -> None:
    started = time.perf_counter()
    ok = client.post("/solve", json={"images": [b64], "allowed": HUGE_RANGE * 20})
    assert ok.status_code == 200, ok.text
    too_long = client.post("/solve", json={"images": [b64], "allowed": HUGE_RANGE * 200})
    assert too_long.status_code == 400 and "allowed" in too_long.json()["error"]
    assert client.post("/solve", json={"images": [b64], "length": "4" * 17}).status_code == 400
    assert client.post(f"/solve?allowed={'a-z' * 100}", json={"images": [b64]}).status_code == 400
    assert time.perf_counter() - started < 5


# --------------------------------------------------------------------------- item 2: connections


def test_serve_passes_the_network_limits_to_uvicorn(tiny_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: seen.update(app=app, **options))
    monkeypatch.setenv("CAPTCHALAB_API_KEY", KEY)
    monkeypatch.setenv(ENV_VAR, "")  # serve() sets it; monkeypatch puts the old value back
    http.serve(str(tiny_run), port=9, max_connections=300, allowed_hosts=["solver.internal"])
    assert seen["app"] == "captchalab.inference.http:app_from_env" and seen["factory"]
    assert seen["http"] is GuardedH11Protocol  # header timeout and connection cap
    assert seen["timeout_keep_alive"] == 5 and seen["limit_concurrency"] == 300
    assert seen["h11_max_incomplete_event_size"] == 16 * 1024 and seen["backlog"] <= 1024
    settings = ServeConfig.from_env()
    assert settings.api_key == KEY and "solver.internal" in settings.hosts and settings.max_connections == 300


def test_half_sent_requests_are_closed_and_counted(tiny_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = ServeConfig(models=(("default", str(tiny_run)),), port=_free_port(), header_timeout=1.0,
                         max_connections=40)
    with live(config, monkeypatch) as port:
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(30)]
        for sock in idle:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")  # half a header, then nothing
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        time.sleep(1.8)
        for sock in idle:  # the header timeout closed every one of them
            sock.settimeout(2)
            assert sock.recv(100) == b""
            sock.close()
        flood = [socket.create_connection(("127.0.0.1", port)) for _ in range(80)]
        time.sleep(0.3)
        closed = 0
        for sock in flood:
            sock.settimeout(0.2)
            try:
                closed += sock.recv(100) == b""
            except TimeoutError:
                pass  # one of the 40 the server holds
            except ConnectionResetError:
                closed += 1
        assert closed >= 80 - 40, closed  # past max_connections: closed on accept
        for sock in flood:
            sock.close()
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200


def test_repeated_accept_failures_log_once_without_traceback() -> None:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("test.asyncio.accept")
    logger.addHandler(Keep())
    logger.addFilter(RepeatFilter())
    loop = asyncio.new_event_loop()
    try:
        for _ in range(1000):  # what asyncio does on each accept() that fails with EMFILE
            try:
                raise OSError(24, "Too many open files")
            except OSError as error:
                logger.error("socket.accept() out of system resource\nsocket: <socket>", exc_info=error)
    finally:
        loop.close()
    assert len(records) == 1 and records[0].exc_info is None
    assert "once a minute" in records[0].getMessage()


# --------------------------------------------------------------------------- item 3: JSON bodies


def test_default_body_limit_follows_the_image_limits() -> None:
    config = ServeConfig()
    assert config.max_body == config.max_images * (config.max_bytes * 4 // 3 + 1024) + 64 * 1024
    assert config.max_body < 30 * 2**20  # 64 images at the per-image limit, not 85 MB


def test_json_is_parsed_on_a_worker_thread(client: TestClient, b64: str, monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[str] = []
    parse = http.parse_json

    def spy(body: bytes, config: ServeConfig):
        threads.append(threading.current_thread().name)
        return parse(body, config)

    monkeypatch.setattr(http, "parse_json", spy)
    assert client.post("/solve", json={"images": [b64]}).status_code == 200
    assert threads and threads[0].startswith("captchalab-infer")


def test_many_tiny_json_values_are_refused_before_parsing(client: TestClient) -> None:
    body = b'{"images": [' + b"0," * 500_000 + b"0]}"
    started = time.perf_counter()
    reply = client.post("/solve", content=body, headers={"content-type": "application/json"})
    assert reply.status_code == 413 and "too many values" in reply.json()["error"]
    assert time.perf_counter() - started < 2


def test_bodies_in_flight_share_one_budget(tiny_run: Path, monkeypatch: pytest.MonkeyPatch, b64: str) -> None:
    config = ServeConfig(models=(("default", str(tiny_run)),), port=_free_port(), max_bytes=30_000, max_images=2,
                         timeout=5)
    part = int(config.max_body * 0.8)
    with live(config, monkeypatch) as port:
        holders = []
        for _ in range(config.max_pending // part):  # as many such bodies as fit in max_pending; one more does not
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(b"POST /solve HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n" % config.max_body + b"x" * part)
            holders.append(sock)
        time.sleep(0.5)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as third:
            status, headers, body = _exchange(third, b"POST /solve HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                                                     b"application/json\r\nContent-Length: %d\r\n\r\n"
                                                     % config.max_body + b"x" * part)
        assert status == 503 and b"busy" in body and headers.get("connection") == "close"
        for sock in holders:
            sock.close()
        time.sleep(0.5)
        reply = httpx.post(f"http://127.0.0.1:{port}/solve", json={"images": [b64]}, timeout=30)
        assert reply.status_code == 200, reply.text  # the budget came back when those requests ended


# --------------------------------------------------------------------------- item 4: 400s, keep-alive


@pytest.mark.parametrize("body", [
    b'{"images": ["data:x"]}',
    b'{"images": ["%s"], "allowed": "z-a"}',
    b'{"images": ["%s"], "model": "\\ud800"}',
    b'{"images": ["%s"], "allowed": "\\ud800"}',
    b'{"images": ["%s"], "length": "\\ud800"}',
    b'{"images": ["%s"], "case": "\\ud800"}',
], ids=["data-url", "backwards-range", "surrogate-model", "surrogate-allowed", "surrogate-length",
        "surrogate-case"])
def test_client_mistakes_are_400(client: TestClient, b64: str, body: bytes) -> None:
    reply = client.post("/solve", content=body.replace(b"%s", b64.encode()),
                        headers={"content-type": "application/json"})
    assert reply.status_code == 400, reply.text
    assert list(reply.json()) == ["error"]


def test_surrogates_in_query_and_form_are_400(client: TestClient, b64: str, tiny_set: Path) -> None:
    png = sorted(tiny_set.glob("*.png"))[0].read_bytes()
    for key in ("model", "allowed", "length", "case"):
        assert client.post(f"/solve?{key}=%ED%A0%80", json={"images": [b64]}).status_code == 400, key
        reply = client.post("/solve", files={"file": ("a.png", png)}, data={key: b"\xed\xa0\x80"})
        assert reply.status_code == 400, (key, reply.text)


def test_an_error_never_breaks_its_keep_alive_connection(tiny_run: Path, monkeypatch: pytest.MonkeyPatch,
                                                         b64: str) -> None:
    config = ServeConfig(models=(("default", str(tiny_run)),), port=_free_port())
    app = create_app(config)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    bad = [b'{"images": ["data:x"]}', b'{"images": ["%s"], "allowed": "z-a"}' % b64.encode(),
           b'{"images": ["a"], "model": "\\ud800"}', b'{"images": []}', b"{not json"]
    with live(config, monkeypatch, app) as port, socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        status, headers, body = _exchange(sock, b"GET /boom HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert status == 500 and b'"error"' in body and b"a bug" not in body
        assert "close" not in headers.get("connection", "")
        for request in bad:
            status, headers, body = _exchange(sock, _post_json(request))
            assert status == 400 and b'"error"' in body and "close" not in headers.get("connection", "")
        good = _post_json(b'{"images": ["%s"]}' % b64.encode())
        for _ in range(20):  # the same connection, after every kind of error
            status, _, body = _exchange(sock, good)
            assert status == 200, body
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", limits=httpx.Limits(max_connections=1)) as pooled:
            for request in bad * 4:
                assert pooled.post("/solve", content=request, headers={"content-type": "application/json"}
                                   ).status_code == 400
                assert pooled.get("/healthz").status_code == 200


# --------------------------------------------------------------------------- item 5: no server paths


def test_a_broken_model_is_named_not_its_path(tiny_run: Path, tmp_path: Path, b64: str) -> None:
    broken = tmp_path / "secret-folder" / "model.onnx"
    broken.parent.mkdir()
    broken.write_bytes(b"not an onnx model")
    with _client(ServeConfig(models=(("default", str(tiny_run)), ("broken", str(broken))))) as client:
        reply = client.post("/solve?model=broken", json={"images": [b64]})
        assert reply.status_code == 500 and "broken" in reply.json()["error"]
        assert "secret-folder" not in reply.text and str(tmp_path) not in reply.text
        assert client.get("/model?model=broken").status_code == 500
        assert "secret-folder" not in client.get("/model?model=broken").text


# --------------------------------------------------------------------------- item 6: browsers, DNS rebinding


def test_host_names_are_an_allow_list(client: TestClient, tiny_run: Path) -> None:
    assert client.get("/healthz").status_code == 200
    for host in ("127.0.0.1:8000", "[::1]:8000", "LOCALHOST"):
        assert client.get("/healthz", headers={"host": host}).status_code == 200, host
    for host in ("evil.example", "evil.example:8000", "localhost.evil.example", ""):
        reply = client.get("/healthz", headers={"host": host})
        assert reply.status_code == 400 and "--allowed-host" in reply.json()["error"], host
    config = ServeConfig(models=(("default", str(tiny_run)),), host="0.0.0.0", allowed_hosts=("solver.lan",))
    with _client(config) as lan:
        assert lan.get("/healthz", headers={"host": "solver.lan:8000"}).status_code == 200
        assert lan.get("/healthz", headers={"host": "evil.example"}).status_code == 400
    assert host_name("[::1]:80") == "::1" and host_name("::1") == "::1" and host_name("A.b:1") == "a.b"


def test_other_origins_are_refused_and_no_cors_by_default(client: TestClient, b64: str, tiny_run: Path) -> None:
    foreign = {"origin": "http://evil.example"}
    assert client.post("/solve", json={"images": [b64]}, headers=foreign).status_code == 403
    preflight = client.options("/solve", headers={**foreign, "access-control-request-method": "POST"})
    assert preflight.status_code == 403 and "access-control-allow-origin" not in preflight.headers
    own = client.post("/solve", json={"images": [b64]}, headers={"origin": "http://localhost:8000"})
    assert own.status_code == 200 and "access-control-allow-origin" not in own.headers
    config = ServeConfig(models=(("default", str(tiny_run)),), cors_origins=("https://app.example",))
    with _client(config) as shared:
        reply = shared.post("/solve", json={"images": [b64]}, headers={"origin": "https://app.example"})
        assert reply.status_code == 200 and reply.headers["access-control-allow-origin"] == "https://app.example"


def test_api_key(tiny_run: Path, b64: str) -> None:
    with _client(ServeConfig(models=(("default", str(tiny_run)),), api_key=KEY)) as keyed:
        assert keyed.get("/healthz").status_code == 200  # health checks need no key
        assert keyed.get("/openapi.json").status_code == 200
        for headers in ({}, {"x-api-key": "wrong"}, {"x-api-key": KEY[:-1]}, {"authorization": "Bearer nope"}):
            reply = keyed.post("/solve", json={"images": [b64]}, headers=headers)
            assert reply.status_code == 401 and "API key" in reply.json()["error"], headers
        assert keyed.get("/model").status_code == 401
        assert keyed.post("/solve", json={"images": [b64]}, headers={"x-api-key": KEY}).status_code == 200
        assert keyed.get("/model", headers={"authorization": f"Bearer {KEY}"}).status_code == 200
        assert "X-API-Key" in str(keyed.get("/openapi.json").json()["components"]["securitySchemes"])
    assert key_matches(KEY, KEY) and not key_matches("\udcff", KEY) and not key_matches(None, KEY)
    with pytest.raises(UsageError, match="at least 16"):
        ServeConfig(api_key="short")


# --------------------------------------------------------------------------- issue 17: FastAPI, OpenAPI


def test_openapi_describes_solve(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    solve = spec["paths"]["/solve"]["post"]
    content = solve["requestBody"]["content"]
    assert {"multipart/form-data", "application/json", "image/*"} <= set(content)
    form = spec["components"]["schemas"]["SolveForm"]["properties"]["file"]
    assert form["type"] == "array" and {"format", "contentMediaType"} & set(form["items"])  # binary (3.0 / 3.1)
    assert content["application/json"]["schema"]["properties"]["images"]["type"] == "array"
    assert content["application/json"]["schema"]["examples"]
    ok = solve["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert ok.endswith("/SolveResponse") and "results" in spec["components"]["schemas"]["SolveResponse"]["properties"]
    assert solve["responses"]["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    assert "422" not in solve["responses"]  # validation errors are 400 {"error"} here
    top_k = next(p for p in solve["parameters"] if p["name"] == "top_k")
    assert top_k["in"] == "query" and top_k["schema"]["anyOf"][0]["maximum"] == 20
    for page in ("/docs", "/redoc"):
        assert client.get(page).status_code == 200


def test_raw_image_body(client: TestClient, tiny_set: Path) -> None:
    png = sorted(tiny_set.glob("*.png"))[0].read_bytes()
    reply = client.post("/solve?top_k=2", content=png, headers={"content-type": "image/png"})
    assert reply.status_code == 200, reply.text
    result = reply.json()["results"][0]
    assert "file" not in result and len(result["top_k"]) <= 2
    assert client.post("/solve?top_k=21", content=png, headers={"content-type": "image/png"}).status_code == 400
    empty = client.post("/solve", content=b"", headers={"content-type": "image/png"})
    assert empty.status_code == 400
