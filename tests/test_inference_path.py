"""The inference path (Python API, bulk solving, HTTP app) never imports TensorFlow or Keras, and an
exported ONNX file carries everything needed to use it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

import captchalab
from captchalab.errors import ModelError, UsageError
from captchalab.inference.predictor import Predictor
from captchalab.runs import METADATA_KEY

SCRIPT = """
import sys
import captchalab
from captchalab.inference.bulk import solve_files
from captchalab.inference.http import ServeConfig, create_app

run, image = sys.argv[1], sys.argv[2]
predictor = captchalab.load(run)
reading = predictor.solve(image)
assert isinstance(reading.text, str) and 0.0 <= reading.confidence <= 1.0
assert captchalab.solve(image, model=run).text == reading.text
assert solve_files([image], run, as_json=True) == 0

from fastapi.testclient import TestClient

app = create_app(ServeConfig(models=(("default", run),)))
with TestClient(app, base_url="http://localhost") as client, open(image, "rb") as handle:
    response = client.post("/solve", files={"file": ("a.png", handle.read())})
assert response.status_code == 200 and response.json()["results"][0]["text"] == reading.text, response.text
heavy = sorted(name for name in sys.modules if name.split(".")[0] in ("tensorflow", "keras", "tf2onnx"))
print("HEAVY", heavy)
"""


def test_solving_and_serving_never_import_tensorflow(tiny_run: Path, tiny_set: Path) -> None:
    image = sorted(tiny_set.glob("*.png"))[0]
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tiny_run), str(image)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "HEAVY []" in done.stdout, done.stdout


def test_exported_onnx_file_alone_is_enough(tiny_run: Path, tiny_set: Path, tmp_path: Path) -> None:
    lone = captchalab.export(tiny_run, out=tmp_path / "elsewhere" / "solver.onnx")
    assert sorted(p.name for p in lone.parent.iterdir()) == ["solver.onnx"]
    meta = json.loads({p.key: p.value for p in onnx.load(str(lone)).metadata_props}[METADATA_KEY])
    assert meta["charset"]["symbols"] and "grayscale" in meta["image"]["preprocessing"]
    alone, original = Predictor.load(lone), Predictor.load(tiny_run)
    assert alone.config == original.config
    pixels = np.stack([alone.prepare(f) for f in sorted(tiny_set.glob("*.png"))[:6]])
    np.testing.assert_allclose(alone.logits(pixels), original.logits(pixels), atol=1e-5)
    with pytest.raises(UsageError, match="onnx"):
        captchalab.export(tiny_run, format="tflite")
    (tmp_path / "damaged.onnx").write_bytes(lone.read_bytes()[:1000])
    with pytest.raises(ModelError, match="not a loadable ONNX model"):
        Predictor.load(tmp_path / "damaged.onnx")
    bare = onnx.load(str(lone))
    del bare.metadata_props[:]
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    with pytest.raises(ModelError, match="no captchalab metadata"):
        Predictor.load(tmp_path / "bare.onnx")
