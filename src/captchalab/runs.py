"""Run folders: atomic writes, safe creation, and reading a run's config.

A run folder holds ``config.json``, ``model.keras``, ``history.json``, ``metrics.json``,
``model.onnx`` and ``checkpoints/``. Nothing in it is ever executed or unpickled.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from captchalab import files
from captchalab.config import RunConfig, from_dict, read_json
from captchalab.errors import ModelError, RunFolderError
from captchalab.models import registry
from captchalab.models.build import build_model

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; runs are not protected against a second process
    fcntl = None  # type: ignore[assignment]

MIN_FREE_BYTES = 50 * 1024 * 1024
CHECKPOINTS = "checkpoints"
TMP_PREFIX = ".tmp-"  # atomic_write's temporary files: ".tmp-<name>-<random><suffix>"
LOCK = ".lock"  # held (flock) by the process training in the folder; holds its PID
METADATA_KEY = "captchalab_config"  # the ONNX metadata entry that carries config.json (exporting writes it)


def general_reader_path() -> Path:
    """The general reader shipped with the package (a run folder: bench/train_general.py --ship), where
    ``adapt`` and ``train`` (--init auto, its default) start; it reads any style a little, not yet well
    enough to be the bundled model."""
    return Path(str(resources.files("captchalab") / "general"))


GENERAL = "general"  # the name --model and --init give the shipped general reader; a folder so named: ./general
AUTO = "auto"  # train's default --init: the general reader where it fits (training._auto_init)


def named_run(model: str | Path) -> Path:
    """A run folder or model file as given, or the shipped general reader for the bare name "general"."""
    return general_reader_path() if str(model) == GENERAL and not isinstance(model, Path) else Path(model)


def init_run(init: str | Path | None) -> Path | None:
    """What ``--init`` names: "general" (the shipped general reader), a run folder, or "none"/None."""
    if init is None or str(init) == "none":
        return None
    return named_run(init).resolve()


def start_name(init: str | Path | None) -> str | None:
    """How a run's recorded start (metrics.json "init", as train resolved it) is named: "general" for the
    shipped general reader, the path otherwise, None for random weights."""
    if init is None or str(init) == "none":
        return None
    return GENERAL if Path(init).resolve() == general_reader_path().resolve() else str(init)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary file in the same folder, then rename over ``path``.

    A kill at any moment leaves either the old file or the new one, never half of one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # Keep the full suffix (".weights.h5", ".keras"): Keras picks the format by it.
    suffix = "".join(path.suffixes)
    stem = path.name[: len(path.name) - len(suffix)]
    try:
        handle, tmp_name = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{stem}-", suffix=suffix, dir=path.parent)
    except OSError as error:
        raise _write_error(path, error) from None
    os.close(handle)
    os.chmod(tmp_name, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the mode a plain open() would
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb") as written:
            os.fsync(written.fileno())
        os.replace(tmp, path)
    except OSError as error:  # disk full, quota, permissions changed under us: the old file is intact
        raise _write_error(path, error) from None
    finally:
        tmp.unlink(missing_ok=True)


def _write_error(path: Path, error: OSError) -> RunFolderError:
    reason = error.strerror or str(error)
    return RunFolderError(f"{path}: cannot write ({reason}); the previous version is intact. Free some space "
                          "or fix permissions, then run again (training: --resume the run folder)")


def remove_temporaries(folder: Path) -> list[Path]:
    """Delete the half-written temporary files a kill can leave; returns what was removed."""
    stale = [p for p in folder.rglob(f"{TMP_PREFIX}*") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: Path, data: Any) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8"))


def default_out(model: str) -> Path:
    return Path("runs") / f"{model}-{time.strftime('%Y%m%d-%H%M%S')}"


@contextmanager
def locked(folder: Path) -> Iterator[Path]:
    """Hold an OS lock on the run folder for the whole block: a second ``train --force`` or
    ``--resume`` of the same folder is refused with the PID of the process that has it.

    The lock (flock on ``FOLDER/.lock``) goes with the process, so a killed run never leaves a
    stale one. The folder is created if missing; a block that writes nothing in it (a refused
    start) leaves it as it was, so a retry does not find it taken.
    """
    created, lock_created = not folder.exists(), not (folder / LOCK).exists()
    claim_folder(folder, reuse=True)
    if fcntl is None:
        yield folder
        return
    try:
        fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC, 0o644)
    except OSError as error:
        raise RunFolderError(f"{folder}: cannot write here ({error.strerror}); choose another --out") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            raise RunFolderError(f"{folder}: in use by PID {holder} (a training writes there); wait for it to "
                                 "finish or stop it, or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield folder
    finally:
        if lock_created and _contents(folder) == [LOCK]:  # nothing was written: leave no trace
            (folder / LOCK).unlink(missing_ok=True)
            if created:
                folder.rmdir()
        os.close(fd)


def _contents(folder: Path) -> list[str]:
    try:
        return sorted(p.name for p in folder.iterdir())
    except OSError:
        return []


def create(out: Path, force: bool = False) -> Path:
    """Make a new, writable run folder with room to write; never overwrite without ``force``.

    Refused (not writable, disk full), it leaves the folder as it found it.
    """
    check_new(out, force)
    if force and out.is_dir():
        _empty(out)
    existed = out.is_dir()
    claim_folder(out, reuse=True)
    try:
        (out / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"ok")
        probe.unlink()
        check_free_space(out)
    except (OSError, RunFolderError) as error:
        shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
        if not existed:
            shutil.rmtree(out, ignore_errors=True)
        if isinstance(error, RunFolderError):
            raise
        raise RunFolderError(f"{out}: cannot write here ({error.strerror}); choose another --out") from None
    return out


def check_new(out: Path, force: bool = False) -> None:
    """Refuse, without touching anything, an ``--out`` that holds files (unless ``force``) or is a file."""
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"{out}: exists and is a file; choose another folder")
    if not force and out.is_dir() and [name for name in _contents(out) if name != LOCK]:
        raise RunFolderError(f"{out}: already holds files; pass --force to replace them, --resume {out} to "
                             "continue that run, or choose another --out")


def _empty(folder: Path) -> None:
    """Remove a folder's contents for --force, keeping the lock file another process may wait on."""
    for child in folder.iterdir():
        if child.name == LOCK:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def claim_folder(folder: Path, reuse: bool = False, advice: str = "choose another --out") -> Path:
    """Create ``folder`` for output; one that already holds files is refused unless ``reuse``."""
    if folder.exists() and not folder.is_dir():
        raise RunFolderError(f"{folder}: exists and is a file; choose another folder")
    if not reuse and folder.exists() and [name for name in _contents(folder) if name != LOCK]:
        raise RunFolderError(f"{folder}: already holds files; {advice}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RunFolderError(f"{folder}: cannot create it ({error.strerror}); choose another folder") from None
    return folder


def check_free_space(folder: Path) -> None:
    free = shutil.disk_usage(folder).free
    if free < MIN_FREE_BYTES:
        raise RunFolderError(
            f"{folder}: only {free // 2**20} MiB free; training needs at least "
            f"{MIN_FREE_BYTES // 2**20} MiB for checkpoints. Free some space or choose another --out"
        )


def read_config(run: str | Path, with_options: bool = True) -> RunConfig:
    """The validated config of a run folder (or of the folder holding a model file).

    ``with_options=False`` skips the model's options, which needs the registry and so
    Keras; the inference path does not need them.
    """
    folder = run_folder(run)
    data = read_json(folder / "config.json")
    options_type = None
    if with_options and isinstance(data, dict) and isinstance(data.get("model"), str):
        try:
            options_type = registry.get(data["model"]).options_type
        except Exception as error:  # unknown model name in the file
            raise ModelError(f"{folder / 'config.json'}: {error}") from None
    return from_dict(data, folder / "config.json", options_type)


def run_folder(run: str | Path) -> Path:
    path = Path(run)
    if path.exists() and not path.is_dir():  # a model file (or something posing as one): its folder
        path = path.parent
    if not path.exists():
        raise ModelError(f"{run}: no such run folder; train one with 'captchalab train DATA --out {run}'")
    return path


def load_keras(run: str | Path, config: RunConfig | None = None) -> Any:
    """Rebuild the network from config.json and load weights: no code is read from the file."""
    folder = run_folder(run)
    config = config or read_config(folder)
    weights = folder / "model.keras"
    if not weights.exists():
        raise ModelError(f"{weights}: missing; finish training or resume it with --resume {folder}")
    files.regular_file(weights, ModelError)  # Keras would block forever on a pipe
    model = build_model(config)
    try:
        with warnings.catch_warnings():
            # Keras only warns when part of the file does not fit ("...retain their freshly-initialized
            # weights"): a half-loaded model must be an error, not a silently random one.
            warnings.simplefilter("error", UserWarning)
            model.load_weights(weights)
    except Exception as error:  # Keras raises many types for damaged or mismatched files
        raise ModelError(
            f"{weights}: cannot load weights ({type(error).__name__}); the file is damaged or "
            "does not match config.json. Retrain, or restore both files from the same run"
        ) from None
    return model
