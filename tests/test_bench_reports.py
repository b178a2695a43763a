"""The tables of docs/fully-connected.md are what bench/fully_connected.py's report stage renders
from the committed bench/results/fully_connected.json alone: no cell needs a run folder outside
the repository (those cells rendered as "?" once the folders were gone)."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_fully_connected_doc_tables_regenerate_from_committed_results(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import fully_connected

    monkeypatch.setattr(fully_connected, "_train_config", lambda folder: pytest.fail(f"read {folder}"))
    doc = (ROOT / "docs" / "fully-connected.md").read_text(encoding="utf-8")
    for name, render in fully_connected.REPORTS.items():
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            render(fully_connected._records_by_stage())
        table = buffer.getvalue().strip()
        assert f"<!-- {name} -->\n{table}\n<!-- /{name} -->" in doc, name
        assert "| ? |" not in table and " ?)" not in table, name
