"""The inference path (Python API, bulk solving, HTTP app) never imports TensorFlow or Keras."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
with TestClient(app) as client, open(image, "rb") as handle:
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
