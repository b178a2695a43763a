"""The out-of-distribution signal (ood.py): recorded at training, carried by the ONNX file, used by solve."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import captchalab
from captchalab import ood
from captchalab.charset import Charset
from captchalab.data.images import ImageSize
from captchalab.data.synthetic import Renderer
from captchalab.decoding import Constraints
from captchalab.errors import ModelError
from captchalab.inference.predictor import Predictor

CLI = [sys.executable, "-c", "from captchalab.cli import main; main()"]


def test_scores_are_the_mean_log_sum_exp_and_the_threshold_the_first_percentile() -> None:
    logits = np.log(np.array([[[1.0, 1.0], [2.0, 2.0]]]))  # frames: log 2, log 4
    assert ood.scores(logits)[0] == pytest.approx((np.log(2) + np.log(4)) / 2)
    many = np.arange(1000, dtype=float).reshape(1000, 1, 1)  # one frame, one class: score = the logit
    record = ood.reference(many)
    assert record["threshold"] == pytest.approx(np.percentile(np.arange(1000), 1), abs=1e-3)
    assert ood.flags(np.array([[[5.0]], [[500.0]]]), record) == [True, False]
    assert ood.flags(many[:2], None) == [None, None]


@pytest.mark.parametrize("raw", ['{"threshold": "x", "score": "mean_logsumexp"}', '{"threshold": 1}', "[1]",
                                 '{"threshold": NaN, "score": "mean_logsumexp"}'])
def test_damaged_records_are_model_errors(raw: str) -> None:
    with pytest.raises(ModelError, match="OOD"):
        ood.parse(raw, "model.onnx")


def test_training_records_the_reference_and_the_onnx_file_carries_it(tiny_run: Path, tmp_path: Path) -> None:
    record = json.loads((tiny_run / "ood.json").read_text())
    assert record["score"] == ood.SCORE and record["n"] >= 1
    alone = tmp_path / "model.onnx"  # away from the run folder: only the metadata can say it
    alone.write_bytes((tiny_run / "model.onnx").read_bytes())
    assert Predictor.load(alone).ood_reference["threshold"] == pytest.approx(record["threshold"])


def test_the_bundled_model_flags_images_unlike_its_own_and_few_of_its_own() -> None:
    reader = captchalab.load()
    rng = np.random.default_rng(0)
    odd = [Image.fromarray(rng.integers(0, 256, (60, 160), dtype=np.uint8)), Image.new("L", (160, 60), 255)]
    assert [p.ood for p in reader.solve(odd)] == [True, True]
    renderer = Renderer(Charset.parse("0-9A-Z"), "4-6", ImageSize(60, 160), 3, lowercase_share=0.3)
    own = reader.solve([renderer.sample()[1] for _ in range(30)])
    assert sum(bool(p.ood) for p in own) <= 3  # about 1% by construction; measured: bench/results/ood.json


def test_min_confidence_abstains_on_an_ood_image_however_confident() -> None:
    reader = captchalab.load()
    noise = Image.fromarray(np.random.default_rng(1).integers(0, 256, (60, 160), dtype=np.uint8))
    reading = reader.solve(noise, min_confidence=1e-9)
    assert reading.ood and reading.abstained
    assert not reader.solve(noise).abstained  # flagged, not withheld, unless the caller asks


def test_a_case_insensitive_model_reads_lowercase_allowed_characters_as_its_letters() -> None:
    folded = Charset.parse("0-9A-Z", case_insensitive=True)
    assert Constraints.parse(None, "a-z0-9").unproducible(folded) is None
    plain = Charset.parse("0-9A-Z")
    warning = Constraints.parse(None, "a-z0-9").unproducible(plain)
    assert "'abcdefghijklmnopqrstuvwxyz'" in warning and "--case lower" in warning
    assert Constraints.parse(None, "a-z0-9", "lower").unproducible(plain) is None


def test_solve_warns_on_stderr_and_in_json_about_characters_the_model_cannot_produce(tiny_run: Path,
                                                                                      tiny_set: Path) -> None:
    image = sorted(tiny_set.glob("*.png"))[0]  # the tiny run reads 0-9A-F, case-sensitive
    done = subprocess.run([*CLI, "solve", str(image), "--model", str(tiny_run), "--json", "--allowed", "0-9A-Fxyz"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith("warning: the model cannot produce 'xyz'")
    record = json.loads(done.stdout)
    assert "cannot produce 'xyz'" in record["warning"] and isinstance(record["ood"], bool)


def test_the_python_api_warns_too_and_caches_the_model(tiny_run: Path, tiny_set: Path) -> None:
    image = sorted(tiny_set.glob("*.png"))[0]
    with pytest.warns(UserWarning, match="cannot produce 'xyz'"):
        captchalab.solve(image, model=tiny_run, allowed="0-9A-Fxyz")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first = captchalab._cached(tiny_run)
        assert captchalab._cached(tiny_run) is first  # same file, same mtime: not reloaded
        assert captchalab.solve([image, image], model=tiny_run)[0] == captchalab.solve(image, model=tiny_run)
