"""`evaluate` never clobbers: train's metrics.json stays the validation metrics, each dataset's
result goes to its own file that names the data, and nothing is written into the package."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

import captchalab
from captchalab.evaluation import EVALUATIONS, dataset_name, evaluate
from captchalab.inference.http import describe
from captchalab.inference.predictor import Predictor, bundled_model_path
from clirun import run_cli

PACKAGE = Path(captchalab.__file__).resolve().parent


@pytest.fixture
def run(tiny_run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_run, tmp_path / "run"))


def _subset(tiny_set: Path, out: Path, count: int) -> Path:
    """The first ``count`` rows of tiny_set as a file,label CSV in another folder."""
    with open(tiny_set / "labels.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))[1 : count + 1]
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("file", "label"), *[(str(tiny_set / f), label) for f, label in rows]])
    return out


def test_evaluate_keeps_train_metrics_and_files_each_dataset_apart(run: Path, tiny_set: Path, tmp_path: Path):
    trained = (run / "metrics.json").read_bytes()
    subset = _subset(tiny_set, tmp_path / "sets" / "few.csv", 10)
    outcome = run_cli("evaluate", run, tiny_set, "--json")
    assert outcome.code == 0, outcome.text
    printed = json.loads(outcome.stdout)
    few = evaluate(run, subset)
    assert (run / "metrics.json").read_bytes() == trained  # train's validation metrics survive both
    whole = json.loads((run / EVALUATIONS / f"{tiny_set.name}.json").read_text())
    part = json.loads((run / EVALUATIONS / "sets-few.json").read_text())
    assert whole["n"] == printed["n"] == 40 and part["n"] == few["n"] == 10
    assert whole["data"] == str(tiny_set.resolve()) and part["data"] == str(subset.resolve())
    assert printed["saved"] == str((run / EVALUATIONS / f"{tiny_set.name}.json").resolve())
    # GET /model shows the run's validation metrics, whatever was evaluated since
    served = describe("default", Predictor.load(run))["metrics"]
    assert served == json.loads(trained) and served["split"] == "validation"


def test_evaluating_the_same_set_again_replaces_only_its_own_file(run: Path, tiny_set: Path, tmp_path: Path):
    subset = _subset(tiny_set, tmp_path / "other" / "few.csv", 5)
    evaluate(run, tiny_set)
    evaluate(run, subset)
    evaluate(run, tiny_set)
    assert sorted(p.name for p in (run / EVALUATIONS).iterdir()) == sorted([f"{tiny_set.name}.json", "other-few.json"])


def test_out_file_and_no_save(run: Path, tiny_set: Path, tmp_path: Path):
    outcome = run_cli("evaluate", run / "model.onnx", tiny_set, "--out", tmp_path / "result.json")
    assert outcome.code == 0 and "saved:" not in outcome.stderr, outcome.text
    assert json.loads((tmp_path / "result.json").read_text())["data"] == str(tiny_set.resolve())
    assert not (run / EVALUATIONS).exists()  # a model file: only printed and --out
    evaluate(run, tiny_set, save=False)
    assert not (run / EVALUATIONS).exists()


def test_dataset_names():
    assert dataset_name(Path(__file__).parent) == "tests"
    assert dataset_name(Path(__file__)) == "tests-test_evaluate"
    assert dataset_name("/no/such/place with spaces") == "place_with_spaces"


def _package_files() -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in PACKAGE.rglob("*") if p.is_file()}


def test_evaluating_the_bundled_model_writes_nothing_into_the_package(tmp_path: Path):
    """It wrote bundled/metrics.json into the installed package (and GET /model then served it)."""
    from captchalab.data.synthetic import generate

    data = generate(tmp_path / "set", 4, length="4-6", seed=11)
    before = _package_files()
    for model in (None, bundled_model_path(), bundled_model_path().parent):
        result = evaluate(model, data)
        assert result["n"] == 4 and "saved" not in result and result["data"] == str(data.resolve())
    outcome = run_cli("evaluate", bundled_model_path().parent, data, "--out", tmp_path / "bundled.json")
    assert outcome.code == 0 and "saved:" not in outcome.stderr, outcome.text
    assert json.loads((tmp_path / "bundled.json").read_text())["n"] == 4
    assert _package_files() == before
