"""What a new user meets first: a base install without the extras, a quiet terminal, plain mistakes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from clirun import run_cli

NOISE = ("oneDNN", "absl", "cpu_feature_guard", "Warning", "TF freezing", "Removed ", "I0000", "W0000",
         "Traceback", "tensorflow/", "keras/src")


def _cli(*args: str | Path, hide: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """The CLI in a fresh process; ``hide`` modules behave as not installed (None in sys.modules)."""
    code = ("import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in hide)
            + "from captchalab.cli import main\nsys.argv = ['captchalab', *sys.argv[1:]]\nmain()\n")
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize(("hide", "args", "extra"), [
    (("tensorflow", "keras"), ["train", "DATA"], "train"),
    (("fastapi",), ["serve"], "serve"),
    (("matplotlib",), ["evaluate", "RUN", "DATA", "--report", "REPORT"], "train"),
])
def test_a_missing_optional_dependency_names_the_extra(hide: tuple[str, ...], args: list[str], extra: str,
                                                       tiny_run: Path, tiny_set: Path, tmp_path: Path) -> None:
    fill = {"DATA": tiny_set, "RUN": tiny_run, "REPORT": tmp_path / "report"}
    done = _cli(*(fill.get(a, a) for a in args), hide=hide)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr  # also: no work done before the error
    assert lines[0].startswith("error: this needs the [") and f"pip install 'captchalab[{extra}]'" in lines[0]
    assert any(f"({name} is not installed)" in lines[0] for name in hide)


def test_export_prints_nothing_but_its_result(tiny_run: Path, tmp_path: Path) -> None:
    done = _cli("export", tiny_run, "--out", tmp_path / "model.onnx")
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == f"wrote {tmp_path / 'model.onnx'}" and done.stdout == ""


def test_models_loads_keras_quietly() -> None:
    done = _cli("models")
    assert done.returncode == 0 and not [n for n in NOISE if n in done.stdout + done.stderr], done.stderr
    assert "model.rnn_units=" in done.stdout


def test_a_model_address_is_refused_without_suggesting_to_train_into_it(tiny_set: Path) -> None:
    image = sorted(tiny_set.glob("*.png"))[0]
    outcome = run_cli("solve", image, "--model", "https://example.com/model.onnx")
    assert outcome.failed_cleanly(2, "https://example.com/model.onnx", "never loads a model over the network")
    assert "--out" not in outcome.stderr


def test_training_says_when_its_time_limit_stopped_it_and_keeps_one_checkpoint(tiny_set: Path,
                                                                                  tmp_path: Path) -> None:
    outcome = run_cli("train", tiny_set, "--out", tmp_path / "r", "--epochs", "3", "-q",
                      "--set", "train.max_minutes=0.0001", "--set", "train.patience=50")
    assert outcome.code == 0, outcome.text
    assert "stopped after epoch 1 of 3: train.max_minutes=0.0001 reached" in " ".join(outcome.stderr.split())
    assert not [n for n in NOISE if n in outcome.text], outcome.text
    checkpoints = sorted(p.name for p in (tmp_path / "r" / "checkpoints").iterdir())
    assert checkpoints == ["best.weights.h5", "state.json"]


def test_the_base_install_solves_and_serve_help_without_tensorflow(tiny_set: Path) -> None:
    image = sorted(tiny_set.glob("*.png"))[0]
    training = ("tensorflow", "keras", "tf2onnx", "onnx", "matplotlib", "h5py")
    done = _cli("solve", image, "--json", hide=training)
    assert done.returncode == 0 and '"text"' in done.stdout, done.stderr
    assert _cli("serve", "--help", hide=training).returncode == 0


def test_the_python_api_raises_the_error_that_names_the_extra(tiny_set: Path) -> None:
    code = ("import sys\nsys.modules['tensorflow'] = sys.modules['keras'] = None\nimport captchalab\n"
            "try:\n    captchalab.train(sys.argv[1])\nexcept captchalab.CaptchaLabError as error:\n    print(error)\n")
    done = subprocess.run([sys.executable, "-c", code, str(tiny_set)], capture_output=True, text=True, timeout=300)
    assert "pip install 'captchalab[train]'" in done.stdout, done.stderr
