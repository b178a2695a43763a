"""`captchalab serve` end to end: a real uvicorn server in a subprocess, spoken to over loopback HTTP."""

from __future__ import annotations

import base64
import io
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from captchalab.errors import UsageError
from captchalab.inference.http import DEFAULT_NAME, ModelPool, ServeConfig, Upload, parse_models, solve_uploads
from captchalab.inference.http_schema import SolveOptions
from captchalab.inference.predictor import Predictor

MAX_BYTES, MAX_PIXELS, MAX_IMAGES, TIMEOUT = 20_000, 20_000, 8, 5.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_run: Path) -> Iterator[httpx.Client]:
    """One server for the module: the tiny run as the default, and again as 'other'; one model in memory."""
    port = _free_port()
    command = [sys.executable, "-c", "from captchalab.cli import main; main()", "serve",
               "--model", str(tiny_run), "--model", f"other={tiny_run / 'model.onnx'}", "--port", str(port),
               "--max-loaded", "1", "--max-bytes", str(MAX_BYTES), "--max-pixels", str(MAX_PIXELS),
               "--max-images", str(MAX_IMAGES), "--timeout", str(TIMEOUT), "--log-level", "warning"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    try:
        _wait_until_up(client, process)
        yield client
    finally:
        client.close()
        process.terminate()
        process.wait(timeout=20)


def _wait_until_up(client: httpx.Client, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {process.stdout.read() if process.stdout else ''}")
        try:
            if client.get("/healthz").status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    raise RuntimeError("server did not start within 60 s")


@pytest.fixture(scope="module")
def local(tiny_run: Path) -> Predictor:
    return Predictor.load(tiny_run)


def _images(tiny_set: Path, count: int) -> list[Path]:
    return sorted(tiny_set.glob("*.png"))[:count]


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _error(response: httpx.Response, status: int, *words: str) -> None:
    """An error is exactly {"error": message} with the expected status, and says what went wrong."""
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"] and isinstance(body["error"], str)
    for word in words:
        assert word in body["error"], body["error"]


def test_healthz_lists_the_models(server: httpx.Client) -> None:
    body = server.get("/healthz").json()
    assert body["status"] == "ok"
    assert body["default"] == DEFAULT_NAME and body["models"] == [DEFAULT_NAME, "other"]


def test_multipart_batch_matches_the_local_predictor(server: httpx.Client, tiny_set: Path, local: Predictor) -> None:
    files = _images(tiny_set, 3)
    response = server.post("/solve", files=[("file", (f.name, f.read_bytes(), "image/png")) for f in files])
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == DEFAULT_NAME
    assert [r["file"] for r in body["results"]] == [f.name for f in files]
    for file, result in zip(files, body["results"]):
        expected = local.solve(file)
        assert result["text"] == expected.text
        assert result["confidence"] == pytest.approx(expected.confidence, abs=1e-3)
        assert 0.0 <= result["confidence"] <= 1.0
        assert result["ood"] is expected.ood and isinstance(expected.ood, bool)


def test_the_ood_flag_reaches_the_response(tiny_run: Path, tiny_set: Path) -> None:
    """A reference no image can meet flags every image: the response says so, as solve --json does."""
    predictor = Predictor.load(tiny_run)
    predictor.ood_reference = {**predictor.ood_reference, "threshold": 1e9}
    upload = Upload("a.png", _images(tiny_set, 1)[0].read_bytes(), "a.png")
    [result] = solve_uploads(predictor, [upload], SolveOptions(), ServeConfig())
    assert result.ood is True and predictor.solve(_images(tiny_set, 1)[0]).ood is True


def test_base64_json_and_data_urls(server: httpx.Client, tiny_set: Path, local: Predictor) -> None:
    first, second = _images(tiny_set, 2)
    encoded = [base64.b64encode(f.read_bytes()).decode() for f in (first, second)]
    payload = {"images": [encoded[0], "data:image/png;base64," + encoded[1]]}
    results = server.post("/solve", json=payload).json()["results"]
    assert [r["text"] for r in results] == [local.solve(first).text, local.solve(second).text]


def test_top_k_and_model_choice(server: httpx.Client, tiny_set: Path) -> None:
    file = _images(tiny_set, 1)[0]
    response = server.post("/solve", files={"file": (file.name, file.read_bytes())},
                           data={"model": "other", "top_k": "3"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "other"
    result = body["results"][0]
    assert 1 <= len(result["top_k"]) <= 3 and result["top_k"][0]["text"] == result["text"]
    confidences = [option["confidence"] for option in result["top_k"]]
    assert confidences == sorted(confidences, reverse=True)
    # --max-loaded 1: using 'other' unloaded the default model.
    assert server.get("/healthz").json()["loaded"] == ["other"]
    query = server.post("/solve?model=default", json={"images": [base64.b64encode(file.read_bytes()).decode()]})
    assert query.json()["model"] == DEFAULT_NAME
    assert server.get("/healthz").json()["loaded"] == [DEFAULT_NAME]


def test_model_description(server: httpx.Client, tiny_run: Path, local: Predictor) -> None:
    body = server.get("/model").json()
    assert body["name"] == DEFAULT_NAME and body["architecture"] == "crnn"
    assert body["charset"] == local.config.charset.symbols
    assert body["size"] == "96x32"
    assert isinstance(body["metrics"], dict) and "sequence_accuracy" in body["metrics"]
    assert "source" not in body  # no server paths leak
    _error(server.get("/model?model=nope"), 404, "nope", "other")


def test_bad_images_and_limits(server: httpx.Client) -> None:
    _error(server.post("/solve", json={"images": ["not base64!"]}), 400, "images[0]", "base64")
    _error(server.post("/solve", files={"file": ("notes.txt", b"hello, not an image")}), 400, "notes.txt",
           "not a readable image")
    noise = np.random.default_rng(0).integers(0, 256, (120, 120, 3), dtype=np.uint8)
    big = _png(Image.fromarray(noise))
    assert len(big) > MAX_BYTES
    _error(server.post("/solve", files={"file": ("big.png", big)}), 413, "big.png", str(MAX_BYTES))
    _error(server.post("/solve", json={"images": [base64.b64encode(big).decode()]}), 413, str(MAX_BYTES))
    wide = _png(Image.new("1", (400, 300)))  # a few hundred bytes, 120,000 pixels
    assert len(wide) < MAX_BYTES
    _error(server.post("/solve", files={"file": ("wide.png", wide)}), 400, "400x300", str(MAX_PIXELS))


def test_request_shape_errors(server: httpx.Client, tiny_set: Path) -> None:
    png = _images(tiny_set, 1)[0].read_bytes()
    _error(server.post("/solve", files={"file": ("a.png", png)}, data={"model": "nope"}), 404, "nope")
    _error(server.post("/solve", json={"images": [base64.b64encode(png).decode()], "model": "nope"}), 404)
    _error(server.post("/solve?model=nope", files={"file": ("a.png", png)}), 404, "nope")
    _error(server.post("/solve", files={"file": ("a.png", png)}, data={"top_k": "many"}), 400, "top_k")
    _error(server.post("/solve", files=[("file", ("a.png", png))] * (MAX_IMAGES + 1)), 413, str(MAX_IMAGES))
    _error(server.post("/solve", files={"image": ("a.png", png)}), 400, "'file'")
    _error(server.post("/solve", json={"images": []}), 400, "no images")
    _error(server.post("/solve", json=["x"]), 400, "images")
    _error(server.post("/solve", content=b"{not json", headers={"content-type": "application/json"}), 400, "JSON")
    _error(server.post("/solve", content=png, headers={"content-type": "text/plain"}), 415, "multipart")
    _error(server.get("/nowhere"), 404, "/nowhere")
    _error(server.get("/solve"), 405, "GET")


def _raw_post(server: httpx.Client, length: int, body: bytes) -> str:
    """A request whose Content-Length need not match its body (httpx refuses to send one)."""
    with socket.create_connection((server.base_url.host, server.base_url.port), timeout=TIMEOUT + 10) as raw:
        raw.sendall(b"POST /solve HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (length, body))
        reply = b""
        while b"\r\n\r\n" not in reply or len(reply.partition(b"\r\n\r\n")[2]) < _length(reply):
            chunk = raw.recv(4096)
            if not chunk:
                break
            reply += chunk
        return reply.decode()


def _length(reply: bytes) -> int:
    for line in reply.partition(b"\r\n\r\n")[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


def test_huge_declared_body_is_refused_unread(server: httpx.Client) -> None:
    reply = _raw_post(server, 10**9, b"{")
    assert reply.startswith("HTTP/1.1 413"), reply
    assert '{"error":"request body of 1000000000 bytes is over the' in reply


def test_slow_request_body_times_out(server: httpx.Client) -> None:
    started = time.monotonic()
    reply = _raw_post(server, 100, b'{"images": [')
    assert reply.startswith("HTTP/1.1 408"), reply
    assert '{"error":' in reply and time.monotonic() - started >= TIMEOUT - 0.5


def test_parse_models() -> None:
    assert parse_models(None) == ((), DEFAULT_NAME)
    assert parse_models("runs/a") == ((("default", "runs/a"),), DEFAULT_NAME)
    assert parse_models(["site_a=runs/a", "site_b=runs/b"]) == ((("site_a", "runs/a"), ("site_b", "runs/b")), "site_a")
    assert parse_models(["site_a=runs/a", "runs/x"])[1] == DEFAULT_NAME
    assert parse_models({"s": Path("r")}) == ((("s", "r"),), "s")
    with pytest.raises(UsageError, match="more than once"):
        parse_models(["runs/a", "runs/b"])
    with pytest.raises(UsageError, match="usable name"):
        parse_models({"bad name": "r"})


def test_serve_config_round_trips_and_validates() -> None:
    config = ServeConfig(models=(("a", "r"),), default="a", max_loaded=2)
    assert ServeConfig.from_json(config.to_json()) == config
    with pytest.raises(UsageError, match="max-loaded"):
        ServeConfig(max_loaded=0)


def test_model_pool_keeps_at_most_max_loaded(tiny_run: Path) -> None:
    onnx = str(tiny_run / "model.onnx")
    pool = ModelPool({"a": onnx, "b": onnx, "c": onnx}, max_loaded=2)
    first = pool.get("a")
    pool.get("b")
    assert pool.get("a") is first  # cached, and now the most recently used
    pool.get("c")
    assert pool.loaded() == ["a", "c"]
    assert pool.get("b") is not None and pool.loaded() == ["c", "b"]
