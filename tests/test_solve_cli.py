"""`captchalab solve` as a user runs it: a subprocess, its stdout, stderr, exit code and files."""

from __future__ import annotations

import csv
import json
import os
import pty
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from captchalab.data.synthetic import generate
from captchalab.inference.predictor import Predictor

CLI = [sys.executable, "-c", "from captchalab.cli import main; main()"]


def _solve(*args: str | Path, stderr: int | None = subprocess.PIPE) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, "solve", *map(str, args)], stdout=subprocess.PIPE, stderr=stderr, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def local(tiny_run: Path) -> Predictor:
    return Predictor.load(tiny_run)


@pytest.fixture(scope="module")
def folder_with_bad_image(tiny_set: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("mixed")
    for image in sorted(tiny_set.glob("*.png"))[:5]:
        shutil.copy(image, folder / image.name)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n but then nothing useful")
    return folder


def test_json_lines_match_the_predictor(tiny_set: Path, tiny_run: Path, local: Predictor) -> None:
    files = sorted(tiny_set.glob("*.png"))
    done = _solve(tiny_set, "--model", tiny_run, "--json")
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [Path(r["file"]).name for r in records] == [f.name for f in files]
    for file, record in zip(files, records):
        assert set(record) == {"file", "text", "confidence", "ood"}  # ood: the run recorded its reference
        assert record["text"] == local.solve(file).text


def test_top_k(tiny_set: Path, tiny_run: Path) -> None:
    image = sorted(tiny_set.glob("*.png"))[0]
    done = _solve(image, "--model", tiny_run, "--json", "--top-k", "3")
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    options = record["top_k"]
    assert 1 <= len(options) <= 3 and options[0]["text"] == record["text"]
    assert [o["confidence"] for o in options] == sorted((o["confidence"] for o in options), reverse=True)
    assert len({o["text"] for o in options}) == len(options)


def test_csv_is_written_and_never_overwritten(tiny_set: Path, tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "results.csv"
    done = _solve(tiny_set, "--model", tiny_run, "--out", out)
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert len(rows) == len(list(tiny_set.glob("*.png")))
    assert list(rows[0]) == ["file", "text", "confidence", "error"]
    assert all(row["error"] == "" and 0 <= float(row["confidence"]) <= 1 for row in rows)
    before = out.read_bytes()
    again = _solve(tiny_set, "--model", tiny_run, "--out", out)
    assert again.returncode == 5
    assert "already exists" in again.stderr and "Traceback" not in again.stderr
    assert out.read_bytes() == before


def test_bad_image_gives_an_error_line_and_exit_code(folder_with_bad_image: Path, tiny_run: Path,
                                                     tmp_path: Path) -> None:
    out = tmp_path / "mixed.csv"
    done = _solve(folder_with_bad_image, "--model", tiny_run, "--json", "--out", out)
    assert done.returncode == 3
    records = {Path(r["file"]).name: r for r in map(json.loads, done.stdout.splitlines())}
    assert len(records) == 6
    assert "not a readable image" in records["broken.png"]["error"] or "damaged" in records["broken.png"]["error"]
    assert all("text" in r for name, r in records.items() if name != "broken.png")
    assert "1 image(s) could not be read" in done.stderr and "Traceback" not in done.stderr
    rows = {Path(row["file"]).name: row for row in csv.DictReader(out.open(encoding="utf-8"))}
    assert rows["broken.png"]["error"] and rows["broken.png"]["text"] == ""
    assert _solve(folder_with_bad_image, "--model", tiny_run, "--skip-bad").returncode == 0


def test_results_go_to_redirected_stdout_while_the_bar_is_on_a_terminal(tiny_run: Path, tmp_path: Path) -> None:
    """With stderr on a terminal Rich shows a bar; results must still reach stdout, not the terminal."""
    folder = generate(tmp_path / "many", 55, length="4-5", charset="0-9A-F", size="96x32", seed=2)
    primary, secondary = pty.openpty()
    drained: list[bytes] = []
    reader = threading.Thread(target=_drain, args=(primary, drained), daemon=True)
    reader.start()
    try:
        done = _solve(folder, "--model", tiny_run, stderr=secondary)
    finally:
        os.close(secondary)
        reader.join(timeout=10)
        os.close(primary)
    assert done.returncode == 0
    lines = done.stdout.splitlines()
    assert len(lines) == 55 and all(line.startswith(str(folder)) for line in lines)
    assert b"solving" in b"".join(drained)  # the bar was shown on the terminal


def _drain(fd: int, into: list[bytes]) -> None:
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            return
        if not chunk:
            return
        into.append(chunk)


def test_no_images_is_a_usage_error(tmp_path: Path, tiny_run: Path) -> None:
    done = _solve(tmp_path, "--model", tiny_run)
    assert done.returncode == 2 and "no images found" in done.stderr
