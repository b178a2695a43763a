"""The server's own failures: a model error is a 500 that says little and logs the rest; inference
past --timeout is a 503; the server answers the next request either way."""

from __future__ import annotations

import base64
import logging
import time
import warnings
from pathlib import Path

import pytest

from captchalab.errors import ModelError
from captchalab.inference import http
from captchalab.inference.http import ServeConfig, create_app

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient


@pytest.fixture(scope="module")
def b64(tiny_set: Path) -> str:
    return base64.b64encode(sorted(tiny_set.glob("*.png"))[0].read_bytes()).decode()


def _client(run: Path, timeout: float = ServeConfig.timeout) -> TestClient:
    app = create_app(ServeConfig(models=(("default", str(run)),), timeout=timeout))
    app.state.pool.get("default")  # loaded now: only the patched inference runs against the timeout
    return TestClient(app, base_url="http://localhost", raise_server_exceptions=False)


def test_a_model_error_is_a_500_that_names_no_server_file(tiny_run: Path, b64: str, monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture):
    def fail(*args: object) -> None:
        raise ModelError("/srv/secret-folder/model.onnx: ONNX Runtime failed on this batch")

    with _client(tiny_run) as client:
        with monkeypatch.context() as patch, caplog.at_level(logging.ERROR, logger=http.log.name):
            patch.setattr(http, "solve_uploads", fail)
            reply = client.post("/solve", json={"images": [b64]})
        assert reply.status_code == 500
        assert reply.json() == {"error": "the model failed on this request; the server log has the details"}
        assert "ModelError on /solve: /srv/secret-folder/model.onnx: ONNX Runtime failed" in caplog.text
        assert client.post("/solve", json={"images": [b64]}).status_code == 200


def test_inference_past_the_timeout_is_a_503(tiny_run: Path, b64: str, monkeypatch: pytest.MonkeyPatch):
    original = http.solve_uploads

    def slow(*args: object) -> object:
        time.sleep(4.0)
        return original(*args)

    with _client(tiny_run, timeout=2.0) as client:
        with monkeypatch.context() as patch:
            patch.setattr(http, "solve_uploads", slow)
            began = time.monotonic()
            reply = client.post("/solve", json={"images": [b64]})
            waited = time.monotonic() - began
        assert reply.status_code == 503, reply.text
        assert reply.json() == {"error": "the server took longer than 2 s; retry later"}
        assert waited < 3.9  # answered at the timeout, not when the work ended
        assert client.get("/healthz").status_code == 200
        assert client.post("/solve", json={"images": [b64]}).status_code == 200  # the other worker thread
