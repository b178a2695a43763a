"""The bundled model reads captchas of the generator it was trained on (bench/train_bundled.py:
4-6 of 0-9A-Z, 160x60), through the Python API, `solve` and `serve` without --model; and the
recipe in bench/train_bundled.py is the one the shipped model ran with."""

from __future__ import annotations

import hashlib
import json
import sys
import warnings
from pathlib import Path

import pytest

import captchalab
from captchalab.charset import Charset
from captchalab.config import RunConfig, TrainConfig, apply_overrides
from captchalab.data.images import ImageSize
from captchalab.data.synthetic import generate
from captchalab.inference.predictor import bundled_model_path
from captchalab.models.crnn import CrnnOptions
from clirun import run_cli

ROOT = Path(__file__).resolve().parents[1]
COUNT = 12


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], list[str]]:
    """Fresh images of the bundled model's style (a seed none of train_bundled's sets use), with labels."""
    folder = generate(tmp_path_factory.mktemp("bundled") / "set", COUNT, length="4-6", charset="0-9A-Z",
                      size="160x60", seed=21)
    rows = [line.split(",") for line in (folder / "labels.csv").read_text().split()[1:]]
    return [folder / name for name, _ in rows], [label for _, label in rows]


def _correct(texts: list[str], labels: list[str]) -> int:
    return sum(text == label for text, label in zip(texts, labels))


def test_the_bundled_model_reads_generated_captchas(generated):
    """97.4% on 1,000 such images (bench/results/bundled.json); 11 of these 12 (one O/0 slip) when recorded."""
    files, labels = generated
    texts = [reading.text for reading in captchalab.solve(files)]
    assert _correct(texts, labels) >= COUNT - 2, list(zip(labels, texts))
    assert all(len(text) == len(label) for text, label in zip(texts, labels))


def test_solve_without_model_uses_the_bundled_one(generated):
    files, labels = generated
    outcome = run_cli("solve", *files, "--json")
    assert outcome.code == 0, outcome.text
    records = [json.loads(line) for line in outcome.stdout.splitlines()]
    assert [r["file"] for r in records] == [str(f) for f in files]
    assert [r["text"] for r in records] == [reading.text for reading in captchalab.solve(files)]
    assert _correct([r["text"] for r in records], labels) >= COUNT - 2


def test_serve_without_model_serves_the_bundled_one(generated, monkeypatch: pytest.MonkeyPatch):
    """`captchalab serve` with no --model: the factory uvicorn would start serves the bundled model."""
    import base64

    import uvicorn

    from captchalab.inference import http
    from captchalab.inference.http_config import ENV_VAR

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    started: dict = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: started.update(app=app, **options))
    monkeypatch.setenv(ENV_VAR, "")  # serve sets it; monkeypatch restores it afterwards
    interval = sys.getswitchinterval()
    outcome = run_cli("serve", "--port", "8123")
    assert outcome.code == 0 and started["app"] == "captchalab.inference.http:app_from_env", outcome.text
    try:
        app = http.app_from_env()
    finally:
        sys.setswitchinterval(interval)
    files, labels = generated
    images = [base64.b64encode(f.read_bytes()).decode() for f in files]
    with TestClient(app, base_url="http://localhost") as client:
        reply = client.post("/solve", json={"images": images})
        assert reply.status_code == 200, reply.text
        texts = [r["text"] for r in reply.json()["results"]]
        info = client.get("/model").json()
    assert texts == [reading.text for reading in captchalab.solve(files)]
    assert _correct(texts, labels) >= COUNT - 2
    assert info["name"] == "default" and info["architecture"] == "crnn" and info["size"] == "160x32"
    assert info["metrics"] is None  # the package holds no metrics.json (evaluate never writes one there)


def test_the_shipped_onnx_is_the_one_recorded():
    record = json.loads((ROOT / "bench" / "results" / "bundled.json").read_text())
    shipped = hashlib.sha256(bundled_model_path().read_bytes()).hexdigest()
    assert record["onnx_sha256"] == record["stages"][-1]["onnx_sha256"] == shipped
    assert record["onnx_bytes"] == bundled_model_path().stat().st_size


def test_the_recipe_is_the_one_the_shipped_model_ran_with(monkeypatch: pytest.MonkeyPatch):
    """The last stage's pinned settings give the shipped config.json, but for the differences the
    script explains: no CPU limit (150 stopped no stage), and the settings that came later (the
    plateau rule they ran with, min_steps unused with given epochs, one device, the clipping
    constant of the time, no distortion)."""
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import train_bundled

    shipped = json.loads((bundled_model_path().parent / "config.json").read_text())
    start = RunConfig("crnn", "ctc", Charset.parse("0-9A-Z", True), ImageSize(32, 120), 6, CrnnOptions(),
                      TrainConfig())
    made = json.loads(json.dumps(apply_overrides(start, train_bundled.overrides(train_bundled.FRESH)).to_dict()))
    assert made["image"] == shipped["image"] and made["options"] == shipped["options"]
    differences = {key: (shipped["train"].get(key), value) for key, value in made["train"].items()
                   if shipped["train"].get(key) != value}
    assert differences == {"max_cpu_minutes": (150.0, 0.0), "schedule": (None, "plateau"), "min_steps": (None, 2500),
                           "devices": (None, 1), "clipnorm": (None, 5.0), "distort": (None, False)}
    recorded = json.loads((ROOT / "bench" / "results" / "bundled.json").read_text())["stages"]
    assert [stage["settings"] for stage in recorded] == [train_bundled.overrides(s.settings)
                                                         for s in train_bundled.STAGES]


def test_an_unpinned_setting_stops_the_recipe(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import train_bundled

    settings = {k: v for k, v in train_bundled.FRESH.items() if k != "train.precise_bn"}
    with pytest.raises(SystemExit, match=r"train\.precise_bn"):
        train_bundled.overrides(settings)
