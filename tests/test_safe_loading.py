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
    "wrong version": (lambda c: c.update(version=2), "'version': Input should be 1, got 2"),
    "no version": (lambda c: c.pop("version"), "'version': Field required"),
    "unknown top-level field": (lambda c: c.update(code="__import__('os')"), "'code': Extra inputs are not permitted"),
    "unknown option": (lambda c: c["options"].update(activation="lambda x: x"),
                       "'options.activation': Unexpected keyword argument"),
    "unknown train field": (lambda c: c["train"].update(callbacks=["x"]), "'train.callbacks': Unexpected keyword"),
    "missing field": (lambda c: c.pop("head"), "'head': Field required"),
    "head": (lambda c: c.update(head="lambda"), "'head': Input should be 'ctc'"),
    "string for int": (lambda c: c.update(max_length="5"), "'max_length': Input should be a valid integer, got '5'"),
    "bool for int": (lambda c: c.update(max_length=True), "'max_length': Input should be a valid integer, got True"),
    "float for int": (lambda c: c["train"].update(epochs=1.5), "'train.epochs': Input should be a valid integer"),
    "zero length": (lambda c: c.update(max_length=0), "'max_length': Input should be greater than or equal to 1"),
    "label too long": (lambda c: c.update(max_length=300), "'max_length': Input should be less than or equal to 256"),
    "huge image": (lambda c: c["image"].update(width=10**9), "'image.width': Input should be less than or equal"),
    "image not an object": (lambda c: c.update(image=[32, 96]), "'image': Input should be a valid dictionary"),
    "charset not an object": (lambda c: c.update(charset="0-9"), "'charset': Input should be a valid dictionary"),
    "repeated symbol": (lambda c: c["charset"].update(symbols="AA"), "repeats a symbol"),
    "options not an object": (lambda c: c.update(options=[1]), "'options': Input should be a valid dictionary"),
    "tuple option not a list": (lambda c: c["options"].update(filters=7), "'options.filters': Input should be a"),
    # option values out of range were ValueError or out-of-memory tracebacks in Keras (issue 16, item 13)
    "dropout 5": (lambda c: c["options"].update(dropout=5.0), "'options.dropout': Input should be less than 1"),
    "dropout NaN": (lambda c: c["options"].update(dropout=float("nan")), "'options.dropout': Input should be a "
                                                                         "finite number"),
    "negative filters": (lambda c: c["options"].update(filters=[-1]), "'options.filters.0': Input should be greater"),
    "huge filters": (lambda c: c["options"].update(filters=[100000]), "'options.filters.0': Input should be less"),
    "huge rnn_units": (lambda c: c["options"].update(rnn_units=10**8), "'options.rnn_units': Input should be less"),
    "float rnn_units": (lambda c: c["options"].update(rnn_units=1e8), "'options.rnn_units': Input should be a valid"),
    "label lengths reversed": (lambda c: c.update(label_lengths=[6, 4]), "'label_lengths': [6, 4] is not shortest"),
    "label lengths not a pair": (lambda c: c.update(label_lengths=[4]), "'label_lengths': List should have at least"),
    "negative learning rate": (lambda c: c["train"].update(learning_rate=-1), "'train.learning_rate': Input should "
                                                                              "be greater than 0"),
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


DEEP = "[" * 100_000 + "]" * 100_000  # past Python's recursion limit: a RecursionError traceback before


def test_deeply_nested_config_is_refused_before_parsing(good_config: dict, tmp_path: Path):
    text = json.dumps({**good_config, "options": "HERE"}).replace('"HERE"', DEEP)
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(ModelError, match=r"config.json: JSON nested 100001 levels deep \(at most 32\)"):
        runs.read_config(tmp_path)


def test_deeply_nested_calibration_is_refused(tmp_path: Path):
    from captchalab import calibration

    (tmp_path / calibration.FILE).write_text('{"temperature": ' + DEEP + "}")
    with pytest.raises(ModelError, match=r"calibration\.json: JSON nested"):
        calibration.read(tmp_path)
    with pytest.raises(ModelError, match="metadata: JSON nested"):
        calibration.parse('{"temperature": ' + DEEP + "}", "model.onnx metadata")


@pytest.mark.parametrize("text", ['{"a": "[[[[", "b": "]]]]"}', '["\\"[[[[["]'])
def test_brackets_inside_strings_do_not_count_as_nesting(text: str):
    from captchalab import files

    assert files.deepest(text) == 1
    assert files.parse_json(text, "x", ModelError, "fix") == json.loads(text)


@pytest.mark.parametrize(("override", "fragment"), [
    ("model.dropout=5", "'dropout': Input should be less than 1"),
    ("model.dropout=nan", "'dropout': Input should be a finite number"),
    ("model.filters=-1", "'filters.0': Input should be greater than or equal to 1"),
    ("model.rnn_units=100000000", "'rnn_units': Input should be less than or equal to 4096"),
    ("train.batch_size=0", "'batch_size': Input should be greater than or equal to 1"),
])
def test_out_of_range_settings_are_refused_when_set(override: str, fragment: str, tiny_run: Path):
    """The settings dataclasses check their ranges when made, so `--set` fails before any work."""
    from captchalab.errors import UsageError

    with pytest.raises(UsageError, match=re.escape(f"--set {override}: {fragment}")):
        config_module.apply_overrides(runs.read_config(tiny_run), [override])


def test_train_checks_its_config_with_the_loaders_schema(tiny_run: Path, tmp_path: Path):
    """One rule: what train would write is validated by the function that reads it back."""
    import dataclasses

    config = runs.read_config(tiny_run)
    assert config_module.check(config, tmp_path / "config.json") == config
    with pytest.raises(ModelError, match="'max_length': Input should be less than or equal to 256, got 300"):
        config_module.check(dataclasses.replace(config, max_length=300), tmp_path / "config.json")
