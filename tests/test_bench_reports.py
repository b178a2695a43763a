"""The tables of docs/fully-connected.md are what bench/fully_connected.py's report stage renders
from the committed bench/results/fully_connected.json alone: no cell needs a run folder outside
the repository (those cells rendered as "?" once the folders were gone)."""

from __future__ import annotations

import contextlib
import io
import json
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


def test_general_reader_goes_on_from_the_committed_stage_on_a_fresh_machine(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch):
    """runs/ is gone on a fresh machine: the newest stage copied to bench/results/general/ is where training
    resumes, and the best stage's copy stays beside it, to be shipped."""
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import train_general

    monkeypatch.setattr(train_general, "SNAPSHOT", tmp_path / "committed")
    monkeypatch.setattr(train_general, "weights_only", lambda run, target: None)  # the files here are text
    for k, accuracy in ((3, 0.40), (4, 0.44), (5, 0.42)):  # three stages finish on one machine; 004 reads best
        run = tmp_path / "old" / "stages" / f"{k:03d}"
        (run / "checkpoints").mkdir(parents=True)
        for name in ("model.keras", "model.onnx", "config.json", "checkpoints/last.weights.h5"):
            (run / name).write_text(f"stage {k}")
        (run / "history.json").write_text("[{}]")
        (run / "metrics.json").write_text(json.dumps({"sequence_accuracy": accuracy, "char_accuracy": 0.7}))
        train_general.snapshot(tmp_path / "old")
    assert sorted(p.name for p in (tmp_path / "committed").iterdir()) == ["004", "005"]  # best and newest
    assert not (tmp_path / "committed" / "005" / "checkpoints").exists()
    fresh = tmp_path / "fresh"
    assert train_general.best(fresh).name == "004"  # found in the committed copy alone
    assert train_general.restore(fresh) == 6
    assert (fresh / "stages" / "005" / "model.keras").read_text() == "stage 5"
    assert train_general.restore(tmp_path / "empty-too") == 6 and train_general.restore(fresh) == 6
    assert [run.name for run in train_general.finished_stages(tmp_path / "empty-too")] == ["004", "005"]
