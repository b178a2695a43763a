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
