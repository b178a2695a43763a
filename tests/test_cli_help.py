"""`--help` explains every command and option."""

from __future__ import annotations

from typing import Annotated

import click
import pytest
import typer.main

from captchalab.cli import app

COMMAND = typer.main.get_command(app)


def unexplained(command: click.Command) -> list[str]:
    """The parameters (options and arguments) of ``command`` without help text. Typer's own classes
    (TyperOption, TyperArgument) are not click.Option subclasses everywhere: read ``help`` off any parameter."""
    return [param.name or "?" for param in command.params if not (getattr(param, "help", None) or "").strip()]


def test_every_parameter_is_seen() -> None:
    """The walk finds every option and argument (an isinstance filter once matched none of them)."""
    params = [p for c in COMMAND.commands.values() for p in c.params]
    assert len(params) >= 60 and {"--batch-size", "--port", "--model"} <= {o for p in params for o in p.opts}
    assert any(p.param_type_name == "argument" for p in params)


def test_the_check_fails_on_a_parameter_without_help() -> None:
    probe = typer.Typer()

    @probe.command()
    def demo(path: Annotated[str, typer.Argument()], count: Annotated[int, typer.Option()] = 1) -> None:
        """A command."""

    assert unexplained(typer.main.get_command(probe)) == ["path", "count"]


@pytest.mark.parametrize("name", ["", *sorted(COMMAND.commands)])
def test_every_command_option_and_argument_has_help(name: str) -> None:
    command = COMMAND.commands[name] if name else COMMAND
    assert command.help, f"captchalab {name} has no help text"
    assert not unexplained(command), f"captchalab {name}: parameters without help: {unexplained(command)}"


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
