"""An ONNX file checked before ONNX Runtime sees it: no weights read from outside its folder.

An ONNX tensor may keep its data in another file ("external data", a path relative to the
model). ONNX Runtime up to 1.23 follows ``../../etc/passwd`` or a symlink out of the folder
and hands the bytes to the graph; 1.24 refuses. So the check does not depend on the installed
version, every external-data location in the model is checked here: a relative path that,
symlinks resolved, is a regular file inside the model's folder.

The protobuf is read from its wire format, only the few fields of ``onnx.proto`` that can hold
a tensor, so the check works without the ``onnx`` package (a solve-only install lacks it).
``tests/test_onnx_external.py`` checks the field numbers against ``onnx`` itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from captchalab import files
from captchalab.errors import ModelError

MAX_MODEL_BYTES = 1 << 30  # protobuf itself stops at 2 GiB; captchalab's models are megabytes
MAX_NESTING = 64  # graphs inside If/Loop attributes inside graphs...
EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL

# Which fields of a message hold which messages (onnx.proto field numbers). Only these paths reach
# a TensorProto: initializers, sparse initializers, tensor attributes of nodes (Constant), and the
# graphs of control-flow attributes, functions and training info, recursively.
CHILDREN: dict[str, dict[int, str]] = {
    "model": {7: "graph", 20: "training", 25: "function"},
    "training": {1: "graph", 2: "graph"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "function": {7: "node"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
}
TENSOR_EXTERNAL_DATA, TENSOR_DATA_LOCATION = 13, 14
ENTRY_KEY, ENTRY_VALUE = 1, 2


class _Damaged(Exception):
    """The bytes are not a well-formed protobuf message."""


def read_model(path: Path) -> tuple[bytes, list[str]]:
    """The model's bytes (bounded read of a regular file) and its external-data locations, each
    checked to be a regular file inside the model's folder."""
    data = files.read_bytes(path, MAX_MODEL_BYTES, ModelError, fix="re-export it")
    try:
        locations = list(_locations("model", memoryview(data), 0))
    except _Damaged:
        raise ModelError(f"{files.printable(str(path))}: not a loadable ONNX model (damaged protobuf); "
                         "re-export it") from None
    for location in locations:
        _check_location(path, location)
    return data, locations


def _check_location(model: Path, location: str | None) -> None:
    shown = files.printable(str(model))
    if not location:
        raise ModelError(f"{shown}: a tensor's external data has no location; re-export the model")
    folder = model.parent.resolve()
    target = (folder / location).resolve()  # symlinks followed: where a read would land
    if Path(location).is_absolute() or not target.is_relative_to(folder):
        raise ModelError(f"{shown}: external data '{files.printable(location)}' is outside the model's folder; "
                         "a model may only read files beside it. Re-export it without external data")
    try:
        files.regular_file(target, ModelError, f"{shown}: external data '{location}'")
    except (FileNotFoundError, IsADirectoryError):
        raise ModelError(f"{shown}: external data '{files.printable(location)}' is missing or a folder; "
                         "restore it or re-export the model") from None


def _locations(kind: str, message: memoryview, depth: int) -> Iterator[str | None]:
    if depth > MAX_NESTING:
        raise _Damaged
    if kind == "tensor":
        yield from _tensor_locations(message)
        return
    children = CHILDREN[kind]
    for number, value in _fields(message):
        if number in children and isinstance(value, memoryview):
            yield from _locations(children[number], value, depth + 1)


def _tensor_locations(tensor: memoryview) -> Iterator[str | None]:
    external, entries = False, []
    for number, value in _fields(tensor):
        if number == TENSOR_DATA_LOCATION and value == EXTERNAL:
            external = True
        elif number == TENSOR_EXTERNAL_DATA and isinstance(value, memoryview):
            entry = dict(_fields(value))
            entries.append((_text(entry.get(ENTRY_KEY)), _text(entry.get(ENTRY_VALUE))))
    if external or entries:
        yield next((value for key, value in entries if key == "location"), None)


def _text(value: object) -> str | None:
    if not isinstance(value, memoryview):
        return None
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        raise _Damaged from None


def _fields(message: memoryview) -> Iterator[tuple[int, int | memoryview]]:
    """(field number, value) of each field: an int for varints, a view for length-delimited ones."""
    position, end = 0, len(message)
    while position < end:
        key, position = _varint(message, position)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, position = _varint(message, position)
            yield number, value
        elif wire == 2:
            size, position = _varint(message, position)
            if position + size > end:
                raise _Damaged
            yield number, message[position : position + size]
            position += size
        elif wire in (1, 5):
            position += 8 if wire == 1 else 4
        else:  # groups (3, 4) are not used by onnx.proto
            raise _Damaged
    if position != end:
        raise _Damaged


def _varint(buffer: memoryview, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if position >= len(buffer) or shift > 63:
            raise _Damaged
        byte = buffer[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7
