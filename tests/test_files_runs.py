"""Files a command leaves behind, and files it reads from a folder (issue 16, items 12 and 14):
an interrupted `generate` is no dataset and continues on a rerun; Ctrl-C says how to continue;
hidden files are never data; one file is one output line; a failed `solve --out` leaves no file."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from captchalab import runs
from captchalab.data import synthetic
from captchalab.data.folder import load_dataset
from captchalab.errors import DataError, Interrupted, RunFolderError
from captchalab.inference import bulk
from clirun import run_cli

OPTIONS = {"count": 130, "length": "4", "charset": "0-9A-F", "size": "64x24", "seed": 5}


def contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def stop_after(images: int):
    done = [0]

    def progress(step: int) -> None:
        done[0] += step
        if done[0] >= images:
            raise KeyboardInterrupt

    return progress


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    return contents(synthetic.generate(tmp_path_factory.mktemp("whole") / "set", **OPTIONS))


def test_an_interrupted_generate_is_no_dataset_and_a_rerun_continues(tmp_path: Path, uninterrupted):
    """It left images without labels.csv, which `evaluate` read with file names as labels (n=749)."""
    out = tmp_path / "set"
    with pytest.raises(Interrupted, match="100 of 130 images kept"):
        synthetic.generate(out, **OPTIONS, progress=stop_after(120))  # checkpoints at 50 and 100
    assert not out.exists()
    with pytest.raises(DataError, match="no such file or folder"):
        load_dataset(out)
    partial = tmp_path / f".set{synthetic.PARTIAL}"
    assert (partial / synthetic.PROGRESS).exists() and not (partial / "labels.csv").exists()
    seen = []
    assert synthetic.generate(out, **OPTIONS, progress=seen.append) == out
    assert seen[0] == 100 and sum(seen) == OPTIONS["count"]  # the rerun started at the checkpoint
    assert contents(out) == uninterrupted  # the same images and labels as one run makes
    assert not partial.exists()


def test_a_rerun_with_other_options_is_refused_until_forced(tmp_path: Path, uninterrupted):
    out = tmp_path / "set"
    with pytest.raises(Interrupted):
        synthetic.generate(out, **{**OPTIONS, "seed": 6}, progress=stop_after(60))
    with pytest.raises(RunFolderError, match=r"holds an interrupted generate with other options.*--force"):
        synthetic.generate(out, **OPTIONS)
    assert contents(synthetic.generate(out, **OPTIONS, force=True)) == uninterrupted


def test_a_kill_before_the_first_checkpoint_starts_over(tmp_path: Path, uninterrupted):
    out = tmp_path / "set"
    with pytest.raises(Interrupted, match="0 of 130"):
        synthetic.generate(out, **OPTIONS, progress=stop_after(20))
    assert contents(synthetic.generate(out, **OPTIONS)) == uninterrupted


def test_generate_still_never_overwrites(tmp_path: Path):
    (tmp_path / "set").mkdir()
    (tmp_path / "set" / "mine.txt").write_text("x")
    result = run_cli("generate", tmp_path / "set", "-n", "2", "-q")
    assert result.failed_cleanly(5, "already holds files"), result.text
    result = run_cli("generate", tmp_path / "set", "-n", "2", "-q", "--force")  # --force is for a partial set
    assert result.failed_cleanly(5, "already holds files"), result.text
    assert [p.name for p in (tmp_path / "set").iterdir()] == ["mine.txt"]


def test_ctrl_c_in_generate_says_how_to_continue(tmp_path: Path):
    """A real SIGINT: the command exited 130 without a word."""
    out = tmp_path / "set"
    command = [sys.executable, "-m", "captchalab", "generate", str(out), "-n", "100000", "--size", "64x24", "-q"]
    # A child inherits an ignored SIGINT, and Python then never raises KeyboardInterrupt: an earlier test in
    # the same pytest process (a server) can leave SIGINT ignored, so the child gets the default back, as a shell's has.
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    progress = tmp_path / f".set{synthetic.PARTIAL}" / synthetic.PROGRESS
    deadline = time.monotonic() + 120
    while not progress.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert progress.exists(), "generate wrote no progress in 120 s"
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)  # a hang guard; it exits in under a second on an idle machine
    assert process.returncode == 130, stderr
    assert "interrupted; " in stderr and "run the same command again to continue" in stderr, stderr
    assert "Traceback" not in stderr and not out.exists()


# ------------------------------------------------------------------ train and Ctrl-C


def test_ctrl_c_in_train_says_how_to_continue(tiny_set: Path, tiny_run: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch):
    from captchalab import training

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "_fit", interrupted)
    fresh = tmp_path / "fresh"
    result = run_cli("train", tiny_set, "--out", fresh, "-q", "--epochs", "2")
    assert result.code == 130 and "Traceback" not in result.text, result.text
    assert f"interrupted; no epoch had finished; start again with '--out {fresh} --force'" in result.stderr
    copy = tmp_path / "run"
    subprocess.run(["cp", "-r", str(tiny_run), str(copy)], check=True)
    result = run_cli("train", "--resume", copy, "--epochs", "3", "-q")
    assert result.code == 130, result.text
    assert f"interrupted; resume with 'captchalab train --resume {copy}'" in result.stderr


# ------------------------------------------------------------------ folders and names


def test_hidden_files_are_not_data(tmp_path: Path, tiny_run: Path):
    """`.hidden_X.png` got the label '.hidden'."""
    for name in ("AB12.png", ".hidden_X.png", ".tmp-AB12-x.png"):
        Image.new("L", (40, 20), 255).save(tmp_path / name)
    (tmp_path / ".cache").mkdir()
    Image.new("L", (40, 20), 255).save(tmp_path / ".cache" / "CD34.png")
    assert load_dataset(tmp_path).labels == ("AB12",)
    result = run_cli("solve", tmp_path, "--model", tiny_run, "--json")
    assert [Path(json.loads(line)["file"]).name for line in result.stdout.splitlines()] == ["AB12.png"]


def test_a_file_is_one_line_whatever_its_name(tmp_path: Path, tiny_run: Path):
    """A newline or tab in a file name broke the text output into extra lines and columns."""
    names = ["line\nbreak.png", "tab\there.png", "bell\x07.png"]
    for name in names:
        Image.new("L", (40, 20), 255).save(tmp_path / name)
    (tmp_path / "bad\nname.png").write_bytes(b"not an image")
    result = run_cli("solve", tmp_path, "--model", tiny_run, "--skip-bad")
    lines = result.stdout.splitlines()
    assert result.code == 0 and len(lines) == 4, result.text
    assert all(line.count("\t") in (2, 3) for line in lines), lines  # file, text, confidence[, others]
    starts = sorted(line.split("\t")[0] for line in lines)
    assert starts == [f"{tmp_path}/bad\\nname.png", f"{tmp_path}/bell\\x07.png", f"{tmp_path}/line\\nbreak.png",
                      f"{tmp_path}/tab\\there.png"]
    error = next(line for line in lines if "ERROR" in line)
    assert error.split("\t")[2].startswith(f"{tmp_path}/bad\\nname.png: ")


def test_a_failed_solve_out_leaves_no_file(tiny_set: Path, tiny_run: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch):
    """A full disk left a 0-byte CSV, and the rerun said it already exists."""
    target = tmp_path / "readings.csv"
    real = bulk._csv_rows

    def full_disk(handle):
        write = real(handle)

        def failing(file, result):
            if file.name == "000003.png":
                raise OSError(errno.ENOSPC, "No space left on device")
            write(file, result)

        return failing

    monkeypatch.setattr(bulk, "_csv_rows", full_disk)
    result = run_cli("solve", tiny_set, "--model", tiny_run, "--out", target)
    assert result.failed_cleanly(5, "readings.csv: cannot write", "No space left on device"), result.text
    assert list(tmp_path.iterdir()) == []  # neither the CSV nor a temporary
    monkeypatch.setattr(bulk, "_csv_rows", real)
    assert run_cli("solve", tiny_set, "--model", tiny_run, "--out", target).code == 0
    assert len(target.read_text().splitlines()) == 41


def test_run_folder_checks_ignore_the_lock_file(tmp_path: Path):
    out = tmp_path / "run"
    with runs.locked(out):
        assert runs.create(out) == out  # the lock file alone is not "already holds files"
    assert os.path.exists(out / runs.LOCK)
