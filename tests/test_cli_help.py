"""`--help` explains every command and option."""

from __future__ import annotations

import click
import pytest
import typer.main

from captchalab.cli import app

COMMAND = typer.main.get_command(app)


@pytest.mark.parametrize("name", sorted(COMMAND.commands))
def test_every_command_and_option_has_help(name: str) -> None:
    command = COMMAND.commands[name]
    assert command.help, f"captchalab {name} has no help text"
    unexplained = [p.name for p in command.params if isinstance(p, click.Option) and not p.help]
    assert not unexplained, f"captchalab {name}: options without help: {unexplained}"


def _help(*args: str) -> str:
    from clirun import run_cli

    outcome = run_cli(*args, "--help")
    assert outcome.code == 0, outcome.text
    return outcome.stdout


@pytest.mark.parametrize("name", ["", *sorted(COMMAND.commands)])
def test_flags_are_shown_as_flags_not_as_options_taking_a_bool(name: str) -> None:
    text = _help(*([name] if name else []))
    assert "--help" in text and "<bool>" not in text


def test_version() -> None:
    from captchalab import __version__
    from clirun import run_cli

    outcome = run_cli("--version")
    assert outcome.code == 0 and outcome.stdout.strip() == f"captchalab {__version__}"


def test_train_help_lists_the_set_keys_with_their_defaults() -> None:
    from captchalab.config import TrainConfig

    text = " ".join(_help("train").split())  # the terminal width wraps it anywhere
    for field in ("learning_rate", "max_minutes", "augment", "precise_bn"):
        value = getattr(TrainConfig(), field)
        shown = str(value).lower() if isinstance(value, bool) else f"{value:g}" if isinstance(value, float) else value
        assert f"train.{field}={shown}" in text
    assert "captchalab models" in text


def test_diagnose_help_lists_its_setups() -> None:
    from captchalab.diagnosis import default_setups

    text = " ".join(_help("diagnose").split())
    assert all(f"{setup.name}:" in text for setup in default_setups())
