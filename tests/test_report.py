"""evaluate --report: the HTML page and the analysis behind it."""

from __future__ import annotations

import base64
import html
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from captchalab import report
from captchalab.decoding import Prediction
from clirun import run_cli


@pytest.mark.parametrize(("label", "prediction", "pairs"), [
    ("abc", "abc", [("a", "a"), ("b", "b"), ("c", "c")]),
    ("abc", "axc", [("a", "a"), ("b", "x"), ("c", "c")]),
    ("abc", "ac", [("a", "a"), ("b", report.GAP), ("c", "c")]),
    ("ab", "abb", [("a", "a"), (report.GAP, "b"), ("b", "b")]),
    ("", "x", [(report.GAP, "x")]),
])
def test_align(label: str, prediction: str, pairs: list) -> None:
    assert report.align(label, prediction) == pairs


def test_coverage_curve_keeps_the_most_confident_first() -> None:
    curve = report.coverage_curve([0.9, 0.2, 0.8, 0.1], [True, False, True, True])
    assert [round(p["coverage"], 2) for p in curve] == [0.25, 0.5, 0.75, 1.0]
    assert [p["accuracy"] for p in curve] == [1.0, 1.0, pytest.approx(2 / 3), 0.75]
    assert curve[1]["min_confidence"] == 0.8


def test_worst_puts_confident_mistakes_first() -> None:
    pixels = np.zeros((4, 4), np.uint8)
    examples = [report.Example(None, pixels, "AB", Prediction(text, c))
                for text, c in (("AB", 0.3), ("AX", 0.2), ("XB", 0.9), ("AB", 0.99))]
    order = [(e.prediction.text, e.prediction.confidence) for e in report.worst(examples, 3)]
    assert order == [("XB", 0.9), ("AX", 0.2), ("AB", 0.3)]


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.headings: list[str] = []
        self.images: list[str] = []
        self._in_heading = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self._in_heading = tag in ("h1", "h2", "h3")
        if tag == "img":
            self.images.append(dict(attrs)["src"])

    def handle_data(self, data: str) -> None:
        if self._in_heading:
            self.headings.append(data)
            self._in_heading = False


def test_evaluate_report_has_every_section(tiny_run: Path, tiny_set: Path, tmp_path: Path) -> None:
    outcome = run_cli("evaluate", tiny_run, tiny_set, "--report", tmp_path / "rep")
    assert outcome.code == 0, outcome.text
    page = (tmp_path / "rep" / "index.html").read_text(encoding="utf-8")
    parser = _Page()
    parser.feed(page)
    for section in ("Metrics", "Per-position accuracy", "Character confusions", "Accuracy vs coverage",
                    "Worst examples", "Training"):
        assert section in parser.headings, section
    assert "<script" not in page
    assert len(parser.images) >= 24 + 3  # the worst examples and the plots
    for src in parser.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:4] == b"\x89PNG"
    summary = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert summary["metrics"]["n"] == 40 and summary["coverage"][0]["coverage"] == 1.0
    for key in ("sequence_accuracy", "char_accuracy", "cer"):  # the page shows the measured values
        shown = re.search(rf"{key}</td><td class=\"num\">([0-9.]+)</td>", page)
        assert shown and shown.group(1) == f"{summary['metrics'][key]:.4f}", key
    assert ("No character errors" in page) == (not summary["confusions"])


def test_report_into_a_file_path_fails_cleanly(tiny_run: Path, tiny_set: Path, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    outcome = run_cli("evaluate", tiny_run, tiny_set, "--report", tmp_path / "file")
    assert outcome.failed_cleanly(5, "report")


def test_training_writes_curves(tiny_run: Path) -> None:
    assert (tiny_run / report.CURVES).read_bytes()[:4] == b"\x89PNG"


def test_the_adapt_sheet_names_what_round_0_s_estimate_came_from(tmp_path: Path) -> None:
    from PIL import Image

    image = tmp_path / "a.png"
    Image.new("L", (60, 20), 255).save(image)
    round_0 = {"round": 0, "kept": 3, "images": 10, "mean_confidence": 0.61, "consistency": 0.9,
               "thresholded_share": 0.55, "confidence_threshold": 0.62, "estimate": 0.425,
               "least_certain": [{"file": str(image), "text": "AB12", "confidence": 0.2}]}
    record = {"images": 10, "model": str(tmp_path / "model"), "model_round": 0, "estimated_accuracy": 0.425,
              "estimate_range": [0.3, 0.55], "cpu_seconds": 60.0, "stopped": "rounds done",
              "check_csv": str(tmp_path / "check.csv"), "rounds": [round_0]}
    page = report.write_adapt_sheet(tmp_path, record).read_text()
    assert "55.0% above 0.62" in page and "share above threshold" in page
    assert "the middle of its range, 30.0%-55.0%: one end the share read above the reference look-alikes' " \
        "confidence threshold, the other" in html.unescape(page)
