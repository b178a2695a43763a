"""Faults during training: a SIGKILL mid-epoch then --resume, atomic writes, run folders never
overwritten without --force, unwritable or full output refused before training starts."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from captchalab import runs
from captchalab.errors import RunFolderError
from captchalab.inference.predictor import Predictor
from clirun import run_cli

EPOCHS = 5
KILL_AFTER_EPOCH = 2  # epoch 1's time includes tracing; from epoch 2 on it is steady


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def wait_for_epoch(state: Path, epoch: int, process: subprocess.Popen, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"training ended before epoch {epoch}: {process.stderr.read().decode()[-2000:]}")
        if state.exists():
            current = json.loads(state.read_text())  # never half-written: atomic_write
            if current["epoch"] >= epoch:
                return current
        time.sleep(0.02)
    pytest.fail(f"no checkpoint for epoch {epoch} within {timeout} s")


def test_sigkill_mid_epoch_then_resume_finishes_a_valid_run(tiny_set: Path, tmp_path: Path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "captchalab", "train", str(tiny_set), "--out", str(out), "-q",
               "--epochs", str(EPOCHS), "--set", "train.batch_size=4", "--set", "train.patience=100"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        state = wait_for_epoch(out / runs.CHECKPOINTS / "state.json", KILL_AFTER_EPOCH, process)
        time.sleep(state["history"][-1]["seconds"] * 0.3)  # about a third into the next epoch
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL
    killed_at = json.loads((out / runs.CHECKPOINTS / "state.json").read_text())["epoch"]
    assert KILL_AFTER_EPOCH <= killed_at < EPOCHS, "the kill must land before training finished"
    stale = out / runs.CHECKPOINTS / f"{runs.TMP_PREFIX}last-stale.weights.h5"
    stale.write_bytes(b"half a file, as a kill inside atomic_write leaves it")

    assert run_cli("train", tiny_set, "--out", out, "-q").failed_cleanly(5, "--resume")  # never overwritten
    resumed = run_cli("train", "--resume", out, "-q")  # DATA comes from the run's state
    assert resumed.code == 0 and "Traceback" not in resumed.text, resumed.text

    history = json.loads((out / "history.json").read_text())
    assert [record["epoch"] for record in history] == list(range(1, EPOCHS + 1))
    assert json.loads((out / "metrics.json").read_text())["epochs_run"] == EPOCHS
    assert not stale.exists() and not list(out.rglob(f"{runs.TMP_PREFIX}*"))
    runs.read_config(out)
    keras_reading = Predictor.load(out, backend="keras").solve(sorted(tiny_set.glob("*.png"))[0])
    assert Predictor.load(out / "model.onnx").solve(sorted(tiny_set.glob("*.png"))[0]).text == keras_reading.text


def test_existing_run_folder_is_never_overwritten(tiny_set: Path, tmp_path: Path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "model.keras").write_bytes(b"precious")
    before = digest(out)
    result = run_cli("train", tiny_set, "--out", out, "--epochs", "1", "-q")
    assert result.failed_cleanly(5, str(out), "--force", "--resume"), result.text
    assert digest(out) == before
    (tmp_path / "file").write_text("x")
    assert run_cli("train", tiny_set, "--out", tmp_path / "file", "-q").failed_cleanly(5, "is a file")


def test_force_replaces_an_existing_run_folder(tmp_path: Path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RunFolderError):
        runs.create(out)
    assert runs.create(out, force=True) == out and not (out / "old.txt").exists()


def test_unwritable_output_is_refused_before_training(tiny_set: Path, tmp_path: Path):
    """A path under a regular file can never be created, even by root."""
    (tmp_path / "a_file").write_text("x")
    started = time.monotonic()
    result = run_cli("train", tiny_set, "--out", tmp_path / "a_file" / "run", "--epochs", "50", "-q")
    assert result.failed_cleanly(5, "cannot create it", "choose another folder"), result.text
    assert time.monotonic() - started < 60  # refused at once, not after 50 epochs


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root writes into read-only folders; the path-under-a-file test covers root")
def test_read_only_folder_is_refused(tmp_path: Path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(RunFolderError, match=r"cannot create it|cannot write here"):
            runs.create(locked / "run")
    finally:
        locked.chmod(0o700)


def test_full_disk_is_refused_before_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(runs.shutil, "disk_usage", lambda _: usage._replace(free=10 * 2**20))
    with pytest.raises(RunFolderError, match="only 10 MiB free"):
        runs.create(tmp_path / "run")


def test_failed_write_keeps_the_old_file_and_no_temporary(tmp_path: Path):
    target = tmp_path / "checkpoints" / "last.weights.h5"
    runs.atomic_write(target, lambda tmp: tmp.write_bytes(b"epoch 3"))

    def disk_full(tmp: Path) -> None:
        tmp.write_bytes(b"half of epo")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(RunFolderError, match=r"No space left on device.*previous version is intact"):
        runs.atomic_write(target, disk_full)
    assert target.read_bytes() == b"epoch 3"
    assert [p.name for p in target.parent.iterdir()] == ["last.weights.h5"]


# ------------------------------------------------------------- resume errors


def test_resume_without_a_finished_epoch(tiny_set: Path, tmp_path: Path):
    runs.create(tmp_path / "run")
    result = run_cli("train", tiny_set, "--resume", tmp_path / "run", "-q")
    assert result.failed_cleanly(5, "nothing to resume", "--force"), result.text
    assert run_cli("train", tiny_set, "--resume", tmp_path / "nowhere", "-q").failed_cleanly(5, "no such run")
    assert run_cli("train", "-q").failed_cleanly(2, "train needs DATA", "--resume RUN")


@pytest.mark.parametrize("damage", ["state", "checkpoint"])
def test_resume_a_damaged_run(damage: str, tiny_run: Path, tiny_set: Path, tmp_path: Path):
    run = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    if damage == "state":
        (run / runs.CHECKPOINTS / "state.json").write_text('{"epoch": ')
        fragment = "state.json: not valid json"
    else:
        checkpoint = run / runs.CHECKPOINTS / "best.weights.h5"  # a finished run keeps only its best epoch's
        assert not (run / runs.CHECKPOINTS / "last.weights.h5").exists()
        checkpoint.write_bytes(checkpoint.read_bytes()[:100])
        fragment = "cannot load the checkpoint"
    result = run_cli("train", tiny_set, "--resume", run, "-q")
    assert result.failed_cleanly(5, fragment, "--force"), result.text


STATE_DAMAGE = {  # each was a KeyError/TypeError traceback, or a run resumed at a negative epoch (issue 16, item 13)
    "missing epoch": (lambda s: s.pop("epoch"), "'epoch': Field required"),
    "missing history": (lambda s: s.pop("history"), "'history': Field required"),
    "string epoch": (lambda s: s.update(epoch="2"), "'epoch': Input should be a valid integer"),
    "negative epoch": (lambda s: s.update(epoch=-3), "'epoch': Input should be greater than or equal to 0"),
    "history of strings": (lambda s: s.update(history=["x"]), "'history.0': Input should be a valid dictionary"),
    "record without loss": (lambda s: s["history"][0].pop("val_loss"), "'history.0.val_loss': Field required"),
    "zero learning rate": (lambda s: s.update(learning_rate=0), "'learning_rate': Input should be greater than 0"),
    "not an object": (lambda s: s.clear() or s.update(x=1) or None, "'data': Field required"),
}


@pytest.mark.parametrize("name", list(STATE_DAMAGE))
def test_resume_state_is_checked_against_its_schema(name: str, tiny_run: Path, tmp_path: Path):
    run = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    state_file = run / runs.CHECKPOINTS / "state.json"
    state = json.loads(state_file.read_text())
    edit, fragment = STATE_DAMAGE[name]
    edit(state)
    state_file.write_text(json.dumps(state))
    result = run_cli("train", "--resume", run, "-q")
    assert result.failed_cleanly(5, "state.json: invalid resume state", fragment, "--force"), result.text


# ------------------------------------------------------------- one process per run folder


HOLDER = """
import sys, time
from pathlib import Path
from captchalab import runs
with runs.locked(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def held(tmp_path: Path):
    """Another process holding the run folder's lock, as a training in it does."""
    out = tmp_path / "run"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(runs.__file__).parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, env=env)
    try:
        assert process.stdout.readline().strip() == b"locked"
        yield out, process.pid
    finally:
        process.kill()
        process.wait()


def test_a_second_train_force_is_refused_while_one_runs(held: tuple[Path, int], tiny_set: Path):
    """Two `train --force` on one --out both exited 0 and left crnn's config with cnn's weights."""
    out, pid = held
    (out / "config.json").write_text("{}")  # what the running training wrote
    result = run_cli("train", tiny_set, "--out", out, "--force", "--epochs", "1", "-q")
    assert result.failed_cleanly(5, str(out), f"in use by PID {pid}"), result.text
    assert (out / "config.json").read_text() == "{}"  # --force removed nothing of the running one's


def test_a_second_resume_is_refused_while_one_runs(held: tuple[Path, int], tiny_run: Path):
    out, pid = held
    for item in tiny_run.iterdir():
        if item.name != runs.LOCK:
            (shutil.copytree if item.is_dir() else shutil.copy)(item, out / item.name)
    result = run_cli("train", "--resume", out, "-q")
    assert result.failed_cleanly(5, f"in use by PID {pid}"), result.text


def test_the_lock_goes_with_its_process(tmp_path: Path):
    out = tmp_path / "run"
    with runs.locked(out):
        (out / "config.json").write_text("{}")
    with runs.locked(out):  # released at the end of the block (and by the OS when a process dies)
        pass
    assert sorted(p.name for p in out.iterdir()) == [runs.LOCK, "config.json"]


def test_a_refused_start_leaves_no_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A train refused for a full disk left out/checkpoints, and the retry said 'already holds files'."""
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(runs.shutil, "disk_usage", lambda _: usage._replace(free=10 * 2**20))
    out = tmp_path / "run"
    with pytest.raises(RunFolderError, match="only 10 MiB free"), runs.locked(out):
        runs.create(out)
    assert not out.exists()
    kept = tmp_path / "given"
    kept.mkdir()
    with pytest.raises(RunFolderError, match="only 10 MiB free"), runs.locked(kept):
        runs.create(kept)
    assert list(kept.iterdir()) == []  # the user's empty folder stays, empty
