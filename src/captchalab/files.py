"""Reading files the user gives: regular files only, bounded reads, bounded JSON, schema-checked.

Every file captchalab reads (images, labels.csv, config.json, model.onnx, calibration and
resume state) comes through here, so no read can be pointed at ``/dev/zero`` (endless), a
named pipe (blocks forever) or a socket, and no JSON file can nest deep enough to exhaust
Python's stack. Sits at the bottom of the import chain: errors only, and pydantic.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
from pathlib import Path
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError

from captchalab.errors import CaptchaLabError

MAX_JSON_BYTES = 4 * 1024 * 1024  # config, calibration, metadata, state: kilobytes in practice
MAX_JSON_DEPTH = 32  # config.json nests 3 deep; anything near Python's recursion limit is hostile
MAX_ERRORS_SHOWN = 3
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(r"[\[\]{}]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}
T = TypeVar("T")


def regular_file(path: str | Path, error: type[CaptchaLabError], label: str | None = None) -> os.stat_result:
    """The file's status after following symlinks; a device, pipe or socket is refused with ``error``.

    A missing file or a folder raise FileNotFoundError / IsADirectoryError for the caller's message.
    """
    label = label or str(path)
    info = os.stat(path)  # follows symlinks: what a read would open
    _check_kind(info, path, error, label)
    return info


def _check_kind(info: os.stat_result, path: str | Path, error: type[CaptchaLabError], label: str) -> None:
    if stat.S_ISDIR(info.st_mode):
        raise IsADirectoryError(errno.EISDIR, "is a folder", str(path))
    if not stat.S_ISREG(info.st_mode):
        raise error(f"{printable(label)}: not a regular file (a device, pipe or socket); give a regular file")


def read_bytes(path: str | Path, limit: int, error: type[CaptchaLabError], label: str | None = None,
               fix: str = "check that it is the right file") -> bytes:
    """At most ``limit`` bytes of a regular file; a bigger file is refused with ``error``.

    The type is checked before opening (opening a pipe blocks, a tape device rewinds) and again
    on the open descriptor (the path may have been swapped in between), and the read stops at
    the limit whatever the size said (``/proc`` files report 0).
    """
    label = label or str(path)
    regular_file(path, error, label)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(fd)
        _check_kind(info, path, error, label)
        if info.st_size > limit:
            raise error(f"{printable(label)}: {info.st_size} bytes is over the {limit}-byte limit; {fix}")
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > limit:
        raise error(f"{printable(label)}: over the {limit}-byte limit; {fix}")
    return b"".join(chunks)


def read_text(path: str | Path, limit: int, error: type[CaptchaLabError], label: str | None = None,
              encoding: str = "utf-8", fix: str = "check that it is the right file") -> str:
    """``read_bytes`` decoded; UnicodeDecodeError is the caller's to word."""
    return read_bytes(path, limit, error, label, fix).decode(encoding)


def parse_json(text: str, source: str, error: type[CaptchaLabError], fix: str) -> Any:
    """JSON text to Python values, refusing nesting deeper than MAX_JSON_DEPTH before parsing."""
    depth = deepest(text)
    if depth > MAX_JSON_DEPTH:
        raise error(f"{printable(source)}: JSON nested {depth} levels deep (at most {MAX_JSON_DEPTH}); {fix}")
    try:
        return json.loads(text)
    except json.JSONDecodeError as problem:
        raise error(f"{printable(source)}: not valid JSON ({problem}); {fix}") from None


def deepest(text: str) -> int:
    """How deep the brackets of a JSON text nest, strings left out (an upper bound when unbalanced)."""
    depth = top = 0
    for match in _BRACKETS.finditer(_STRINGS.sub("", text)):
        depth += 1 if match.group() in "[{" else -1
        top = max(top, depth)
    return top


# What the system's refusal means to the user and what they can do: {fix} is the caller's advice.
_REFUSALS: tuple[tuple[type[OSError], str], ...] = (
    (FileNotFoundError, "no such file; check the path"),
    (IsADirectoryError, "is a folder, not a file; {fix}"),
    (PermissionError, "permission denied; make the file readable"),
)


def unreadable(problem: OSError, label: str, fix: str) -> str:
    """The one message for a file the system would not let us read."""
    known = next((text.format(fix=fix) for kind, text in _REFUSALS if isinstance(problem, kind)), None)
    # else a symlink loop, a name too long, an I/O error: the system's own words
    return f"{printable(label)}: {known or f'cannot be read ({problem.strerror}); check the file'}"


def read_json(path: Path, error: type[CaptchaLabError], fix: str, limit: int = MAX_JSON_BYTES) -> Any:
    """A small JSON file of ours (config, calibration, state), read safely. Missing: FileNotFoundError."""
    try:
        text = read_text(path, limit, error, fix=fix)
    except UnicodeDecodeError:
        raise error(f"{printable(str(path))}: not UTF-8 text; {fix}") from None
    except (IsADirectoryError, PermissionError) as problem:
        raise error(unreadable(problem, str(path), fix)) from None
    return parse_json(text, str(path), error, fix)


def validate(schema: type[T] | Any, data: Any, source: str, error: type[CaptchaLabError], what: str,
             fix: str) -> T:
    """``data`` checked against a pydantic schema (a model, a pydantic dataclass or a type).

    The message names the file, the fields at fault and the values found.
    """
    try:
        return TypeAdapter(schema).validate_python(data)
    except ValidationError as problem:
        raise error(f"{printable(source)}: invalid {what} ({describe(problem)}); {fix}") from None


def describe(problem: ValidationError, prefix: str = "") -> str:
    """A pydantic error as one line: ``'field.sub': message, got VALUE`` for the first few faults."""
    parts = []
    for item in problem.errors()[:MAX_ERRORS_SHOWN]:
        where = ".".join(str(part) for part in ([prefix] if prefix else []) + list(item["loc"]))
        got = item.get("input")
        shown = "" if item["type"] == "missing" or isinstance(got, dict | list) else f", got {_short(got)}"
        parts.append(f"'{where}': {item['msg']}{shown}" if where else f"{item['msg']}{shown}")
    more = problem.error_count() - MAX_ERRORS_SHOWN
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def printable(text: str) -> str:
    """``text`` on one line: control characters (newline, tab...) and undecodable bytes of a
    file name (non-UTF-8, shown as \\udcXX) escaped, so one file is always one output line."""
    escaped = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return _CONTROL.sub(lambda m: _NAMED.get(m.group(), f"\\x{ord(m.group()):02x}"), escaped)
