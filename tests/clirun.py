"""Run ``captchalab`` in-process through ``cli.main`` (the real entry point: it maps errors to
exit codes), with stdout and stderr as strict UTF-8 streams like a terminal's."""

from __future__ import annotations

import io
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

from captchalab import cli


@dataclass(frozen=True)
class Outcome:
    code: int
    stdout: str
    stderr: str

    @property
    def text(self) -> str:
        return self.stdout + self.stderr

    def failed_cleanly(self, code: int, *fragments: str) -> bool:
        """Exit ``code``, one ``error:`` line first, no traceback, every fragment in the message."""
        errors = [line for line in self.stderr.splitlines() if line.startswith("error:")]
        message = self.stderr[self.stderr.find("error:"):].lower()
        return (self.code == code and len(errors) == 1 and "Traceback" not in self.text
                and all(f.lower() in message for f in fragments))


def run_cli(*args: str | Path) -> Outcome:
    out, err = io.BytesIO(), io.BytesIO()
    stdout = io.TextIOWrapper(out, encoding="utf-8", errors="strict", write_through=True)
    stderr = io.TextIOWrapper(err, encoding="utf-8", errors="strict", write_through=True)
    code = 0
    with mock.patch.object(sys, "argv", ["captchalab", *map(str, args)]), \
            redirect_stdout(stdout), redirect_stderr(stderr):
        try:
            cli.main()
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    return Outcome(code, out.getvalue().decode("utf-8"), err.getvalue().decode("utf-8"))
