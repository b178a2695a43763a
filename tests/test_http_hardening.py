"""Hostile requests to the HTTP API (in-process): every one a 4xx JSON error, never a 5xx."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from PIL import Image

from badinput.make_corpus import bilevel_png
from captchalab.inference.http import ServeConfig, create_app


@pytest.fixture(scope="module")
def client(tiny_run: Path):
    from fastapi.testclient import TestClient

    with TestClient(create_app(ServeConfig(models=(("default", str(tiny_run)),))), base_url="http://localhost",
                    raise_server_exceptions=False) as test_client:
        yield test_client


def png() -> str:
    buffer = io.BytesIO()
    Image.new("L", (96, 32), 200).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


JSON = {"content-type": "application/json"}
HOSTILE = {
    "nested past the recursion limit": ({"content": b'{"images": ' + b"[" * 100_000, "headers": JSON}, 400),
    "infinite top_k": ({"content": b'{"images": ["' + png().encode() + b'"], "top_k": 1e999}', "headers": JSON},
                       400),
    "NaN top_k": ({"content": b'{"images": ["' + png().encode() + b'"], "top_k": NaN}', "headers": JSON}, 400),
    "fractional top_k": ({"json": {"images": [png()], "top_k": 2.5}}, 400),
    "boolean top_k": ({"json": {"images": [png()], "top_k": True}}, 400),
    "far too many files": ({"files": [("file", ("a.png", base64.b64decode(png()), "image/png"))] * 200}, 413),
    "pixel bomb": ({"files": {"file": ("bomb.png", bilevel_png(100_000, 100_000, rows=8), "image/png")}}, 400),
    "truncated image": ({"json": {"images": [png()[:60]]}}, 400),
    "multipart without boundary": ({"content": b"xx", "headers": {"content-type": "multipart/form-data"}}, 400),
    "model name as a list": ({"json": {"images": [png()], "model": ["default"]}}, 400),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_request_gets_a_json_4xx(name: str, client):
    request, status = HOSTILE[name]
    response = client.post("/solve", **request)
    assert response.status_code == status, response.text
    assert list(response.json()) == ["error"]
