"""Loading never executes code from a run folder or model file, and config.json is schema-checked."""

from __future__ import annotations

import contextlib
import copy
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from badinput import make_corpus as mc
from captchalab import config as config_module
from captchalab import runs
from captchalab.errors import ModelError
from captchalab.inference.predictor import Predictor

SRC = Path(__file__).resolve().parents[1] / "src" / "captchalab"


@pytest.fixture(scope="module")
def tampered(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """tiny_run whose model.keras carries a Lambda payload in its config; weights untouched."""
    root = tmp_path_factory.mktemp("tampered")
    mc.build(root / "corpus", tiny_run, groups=())  # the good images only
    ctx = mc.Context(root / "corpus", mc.reference_image(), tiny_run)
    return mc._lambda_config(ctx), root / "corpus" / "PAYLOAD_RAN"


def test_the_payload_is_real(tampered: tuple[Path, Path], tmp_path: Path):
    """Guard against a test that cannot fail: Keras' own loader, unsafe, does run it."""
    import keras

    run, marker = tampered
    probe = tmp_path / "probe.keras"
    shutil.copy(run / "model.keras", probe)
    with pytest.raises(ValueError, match=r"(?i)lambda|unsafe|safe_mode"):
        keras.saving.load_model(probe)  # safe_mode=True refuses the bytecode
    assert not marker.exists()
    with contextlib.suppress(Exception):  # the weights belong to another network; the code runs before that
        keras.saving.load_model(probe, safe_mode=False, compile=False)
    assert marker.exists()
    marker.unlink()


def test_rebuild_from_config_json_never_runs_the_payload(tampered: tuple[Path, Path], tiny_run: Path):
    run, marker = tampered
    pixels = np.random.default_rng(0).integers(0, 256, (2, 32, 96), dtype=np.uint8)
    loaded = Predictor.load(run, backend="keras")
    assert not marker.exists()
    expected = Predictor.load(tiny_run, backend="keras").logits(pixels)
    np.testing.assert_array_equal(loaded.logits(pixels), expected)
    assert not marker.exists()


def test_onnx_with_an_unknown_custom_op_is_refused(tmp_path: Path):
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("PyOp", ["image"], ["logits"], domain="ai.onnx.contrib")
    graph = helper.make_graph([node], "payload", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("ai.onnx.contrib", 1)])
    onnx.save(model, str(tmp_path / "custom.onnx"))
    with pytest.raises(ModelError, match="not a loadable ONNX model"):
        Predictor.load(tmp_path / "custom.onnx")


def test_no_unsafe_loader_in_the_package():
    """No pickle, eval/exec, marshal, YAML or Keras whole-model loading anywhere in src/."""
    unsafe = re.compile(r"\bpickle\b|\beval\(|\bexec\(|\bmarshal\b|yaml\.load|load_model\(|allow_pickle\s*=\s*True"
                        r"|safe_mode\s*=\s*False|torch\.load|\bshelve\b|\bdill\b")
    hits = [f"{path.relative_to(SRC)}:{number}: {line.strip()}"
            for path in SRC.rglob("*.py")
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
            if unsafe.search(line) and "Nothing in it is ever executed or unpickled" not in line]
    assert hits == []


# ------------------------------------------------------------- config.json schema


@pytest.fixture(scope="module")
def good_config(tiny_run: Path) -> dict:
    return json.loads((tiny_run / "config.json").read_text())


def test_config_round_trips(tiny_run: Path, good_config: dict):
    config = runs.read_config(tiny_run)
    assert json.loads(json.dumps(config.to_dict())) == good_config


BAD = {
    "wrong version": (lambda c: c.update(version=2), "version must be 1"),
    "no version": (lambda c: c.pop("version"), "version must be 1"),
    "unknown top-level field": (lambda c: c.update(code="__import__('os')"), "unknown field(s) ['code']"),
    "unknown option": (lambda c: c["options"].update(activation="lambda x: x"), "unknown field(s) ['activation']"),
    "unknown train field": (lambda c: c["train"].update(callbacks=["x"]), "unknown field(s) ['callbacks']"),
    "missing field": (lambda c: c.pop("head"), "missing field 'head'"),
    "head": (lambda c: c.update(head="lambda"), "'head' must be 'ctc'"),
    "string for int": (lambda c: c.update(max_length="5"), "'max_length' must be int"),
    "bool for int": (lambda c: c.update(max_length=True), "'max_length' must be int"),
    "float for int": (lambda c: c["train"].update(epochs=1.5), "'epochs' must be int"),
    "zero length": (lambda c: c.update(max_length=0), "'max_length' must be between 1"),
    "huge image": (lambda c: c["image"].update(width=10**9), "'image.width' must be between 8"),
    "image not an object": (lambda c: c.update(image=[32, 96]), "'image' must be dict"),
    "charset not an object": (lambda c: c.update(charset="0-9"), "'charset' must be dict"),
    "repeated symbol": (lambda c: c["charset"].update(symbols="AA"), "repeats a symbol"),
    "options not an object": (lambda c: c.update(options=[1]), "must be an object"),
    "tuple option not a list": (lambda c: c["options"].update(filters=7), "must be a list"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_config_is_a_model_error_naming_the_file(name: str, good_config: dict, tmp_path: Path):
    edit, fragment = BAD[name]
    data = copy.deepcopy(good_config)
    edit(data)
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(ModelError) as caught:
        runs.read_config(tmp_path)
    assert str(tmp_path / "config.json") in str(caught.value)
    assert fragment in str(caught.value)


def test_not_an_object(tmp_path: Path):
    with pytest.raises(ModelError, match="must be a JSON object"):
        config_module.from_dict([1, 2], tmp_path / "config.json", None)
