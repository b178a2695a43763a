"""The package's API functions: real signatures that match what they call, and no module of the
same name to replace them once it is imported."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable
from pathlib import Path

import pytest

import captchalab

# API function -> (module, function) it calls. The package cannot import these at its top (training
# imports TensorFlow, serving FastAPI), so its functions repeat their signatures: this keeps them equal.
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


def _shape(function: object) -> list[tuple[str, object, object]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


@pytest.mark.parametrize("name", sorted(IMPLEMENTATIONS))
def test_api_function_has_the_signature_of_what_it_calls(name: str) -> None:
    module, attribute = IMPLEMENTATIONS[name]
    implementation = getattr(importlib.import_module(module), attribute)
    api = getattr(captchalab, name)
    assert inspect.isfunction(api)
    assert not any(p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) for p in inspect.signature(api).parameters.values())
    assert _shape(api) == _shape(implementation)


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
