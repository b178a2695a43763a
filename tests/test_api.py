"""The package's API functions: real signatures that match what they call, and no module of the
same name to replace them once it is imported."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import captchalab

# API function -> (module, function) behind it. The package cannot import these at its top (training
# imports TensorFlow, serving FastAPI): it loads them on first use (PEP 562 __getattr__).
IMPLEMENTATIONS = {
    "train": ("captchalab.training", "train"),
    "audit": ("captchalab.auditing", "audit"),
    "diagnose": ("captchalab.diagnosis", "diagnose"),
    "export": ("captchalab.exporting", "export"),
    "serve": ("captchalab.inference.http", "serve"),
}

# Calls refused at once, after the function has imported its module.
REFUSED: dict[str, Callable[[Path], object]] = {
    "train": lambda tmp: captchalab.train(tmp / "missing", out=tmp / "run", quiet=True),
    "diagnose": lambda tmp: captchalab.diagnose(tmp / "missing", limit=1),
    "export": lambda tmp: captchalab.export(tmp / "missing"),
    "audit": lambda tmp: captchalab.audit(tmp / "missing", tmp / "audit", seeds=0),
    "evaluate": lambda tmp: captchalab.evaluate(tmp / "missing", tmp / "data"),
}


@pytest.mark.parametrize("name", sorted(IMPLEMENTATIONS))
def test_api_function_is_the_module_function_with_its_real_signature(name: str) -> None:
    module, attribute = IMPLEMENTATIONS[name]
    api = getattr(captchalab, name)
    assert api is getattr(importlib.import_module(module), attribute)  # one signature, not a copy
    assert inspect.isfunction(api) and name in dir(captchalab)
    assert not any(p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) for p in inspect.signature(api).parameters.values())


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'trian'"):
        captchalab.trian  # noqa: B018


def test_importing_the_package_loads_no_training_or_serving_module() -> None:
    code = ("import sys, captchalab; "
            "print(sorted(m for m in ('tensorflow', 'keras', 'fastapi', 'captchalab.training') if m in sys.modules))")
    outcome = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert outcome.stdout.strip() == "[]"


def test_no_module_of_the_package_is_named_like_an_api_function() -> None:
    modules = {module.name for module in pkgutil.iter_modules(captchalab.__path__)}
    assert modules.isdisjoint(captchalab.__all__)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_an_api_function_can_be_called_twice(name: str, tmp_path: Path) -> None:
    """The first call imports the module behind the function; the second must still reach the function
    (``captchalab.diagnose`` used to be replaced by its module: "'module' object is not callable")."""
    for _ in range(2):
        with pytest.raises(captchalab.CaptchaLabError):
            REFUSED[name](tmp_path)
        assert inspect.isfunction(getattr(captchalab, name))
