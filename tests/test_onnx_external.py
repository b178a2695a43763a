"""A model reads nothing outside its folder: every ONNX external-data location is checked by
captchalab before ONNX Runtime sees the file, whatever ONNX Runtime's version (up to 1.23 it
followed ``../`` and symlinks out of the folder; issue 16, item 9)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from captchalab.errors import ModelError
from captchalab.inference import onnxfile
from captchalab.inference.predictor import Predictor

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

SECRET = b"root:x:0:0:root:/root:/bin/bash\n" * 2  # 64 bytes: 16 float32 values


def external(name: str, location: str) -> TensorProto:
    """A 16-float tensor whose data lives in the file ``location`` (relative to the model)."""
    tensor = numpy_helper.from_array(np.zeros(16, np.float32), name)
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "64")):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def graph(initializers: list[TensorProto], nodes: list | None = None, name: str = "g") -> onnx.GraphProto:
    nodes = nodes if nodes is not None else [helper.make_node("Add", ["x", "w"], ["y"])]
    return helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [16])],
                             [helper.make_tensor_value_info("y", TensorProto.FLOAT, [16])], initializers)


def save(folder: Path, model_graph: onnx.GraphProto) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    model = helper.make_model(model_graph, opset_imports=[helper.make_opsetid("", 17)])
    path.write_bytes(model.SerializeToString())  # onnx.save would try to resolve the external data
    return path


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    secret = tmp_path / "outside.bin"
    secret.write_bytes(SECRET)
    return secret


def test_traversal_out_of_the_folder_is_refused(tmp_path: Path, outside: Path):
    path = save(tmp_path / "run", graph([external("w", "../outside.bin")]))
    with pytest.raises(ModelError, match=r"external data '../outside.bin' is outside the model's folder"):
        Predictor.load(path)


def test_absolute_location_is_refused(tmp_path: Path, outside: Path):
    path = save(tmp_path / "run", graph([external("w", str(outside))]))
    with pytest.raises(ModelError, match="is outside the model's folder"):
        Predictor.load(path)


def test_symlink_out_of_the_folder_is_refused(tmp_path: Path, outside: Path):
    path = save(tmp_path / "run", graph([external("w", "weights.bin")]))
    (tmp_path / "run" / "weights.bin").symlink_to(outside)
    with pytest.raises(ModelError, match=r"external data 'weights.bin' is outside the model's folder"):
        Predictor.load(path)
    with pytest.raises(ModelError, match="is outside the model's folder"):
        Predictor.load(tmp_path / "run")  # the run folder: the same check


def test_external_data_that_is_a_pipe_is_refused(tmp_path: Path):
    path = save(tmp_path / "run", graph([external("w", "weights.bin")]))
    os.mkfifo(tmp_path / "run" / "weights.bin")
    with pytest.raises(ModelError, match="not a regular file"):
        Predictor.load(path)


def test_missing_external_data(tmp_path: Path):
    path = save(tmp_path / "run", graph([external("w", "gone.bin")]))
    with pytest.raises(ModelError, match=r"external data 'gone\.bin' is missing"):
        Predictor.load(path)


def test_external_data_in_a_constant_inside_a_subgraph_is_found(tmp_path: Path, outside: Path):
    """Not only initializers: a Constant node's tensor, inside an If branch, inside the graph."""
    constant = helper.make_node("Constant", [], ["w"], value=external("c", "../outside.bin"))
    branch = helper.make_graph([constant], "then", [], [helper.make_tensor_value_info("w", TensorProto.FLOAT, [16])])
    condition = numpy_helper.from_array(np.array(True), "cond")
    node = helper.make_node("If", ["cond"], ["w"], then_branch=branch, else_branch=branch)
    path = save(tmp_path / "run", graph([condition], [node, helper.make_node("Add", ["x", "w"], ["y"])]))
    with pytest.raises(ModelError, match="is outside the model's folder"):
        Predictor.load(path)


def test_external_data_inside_the_folder_is_allowed(tmp_path: Path):
    """The check refuses only what it must: ONNX Runtime loads this model (it has no captchalab metadata)."""
    path = save(tmp_path / "run", graph([external("w", "weights.bin")]))
    (tmp_path / "run" / "weights.bin").write_bytes(np.arange(16, dtype=np.float32).tobytes())
    assert onnxfile.read_model(path)[1] == ["weights.bin"]
    with pytest.raises(ModelError, match="has no captchalab metadata"):
        Predictor.load(path)


def test_damaged_protobuf(tmp_path: Path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\x3a\xff\xff\xff\xff\x0f")  # field 7 (graph) claiming 4 GB
    with pytest.raises(ModelError, match="not a loadable ONNX model"):
        Predictor.load(path)


def test_field_numbers_match_onnx_proto():
    """onnxfile reads the wire format by field number: they must be onnx.proto's."""
    def number(message: type, field: str) -> int:
        return message.DESCRIPTOR.fields_by_name[field].number

    expected = {
        "model": {number(onnx.ModelProto, "graph"): "graph", number(onnx.ModelProto, "training_info"): "training",
                  number(onnx.ModelProto, "functions"): "function"},
        "training": {number(onnx.TrainingInfoProto, "initialization"): "graph",
                     number(onnx.TrainingInfoProto, "algorithm"): "graph"},
        "graph": {number(onnx.GraphProto, "node"): "node", number(onnx.GraphProto, "initializer"): "tensor",
                  number(onnx.GraphProto, "sparse_initializer"): "sparse"},
        "function": {number(onnx.FunctionProto, "node"): "node"},
        "node": {number(onnx.NodeProto, "attribute"): "attribute"},
        "attribute": {number(onnx.AttributeProto, name): kind for name, kind in
                      (("t", "tensor"), ("g", "graph"), ("tensors", "tensor"), ("graphs", "graph"),
                       ("sparse_tensor", "sparse"), ("sparse_tensors", "sparse"))},
        "sparse": {number(onnx.SparseTensorProto, "values"): "tensor",
                   number(onnx.SparseTensorProto, "indices"): "tensor"},
    }
    assert expected == onnxfile.CHILDREN
    found = (onnxfile.TENSOR_EXTERNAL_DATA, onnxfile.TENSOR_DATA_LOCATION, onnxfile.EXTERNAL,
             onnxfile.ENTRY_KEY, onnxfile.ENTRY_VALUE)
    assert found == (number(onnx.TensorProto, "external_data"), number(onnx.TensorProto, "data_location"),
                     TensorProto.EXTERNAL, number(onnx.StringStringEntryProto, "key"),
                     number(onnx.StringStringEntryProto, "value"))
