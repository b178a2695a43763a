"""Errors a user can cause. The CLI prints their message and exits with their code."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class CaptchaLabError(Exception):
    """Base class: a message a person can act on, and the CLI exit code for it."""

    exit_code = 1


class UsageError(CaptchaLabError):
    """A bad option or value on the command line or in the Python API."""

    exit_code = 2


class DataError(CaptchaLabError):
    """A dataset, label file or image that cannot be used as given."""

    exit_code = 3


class CharsetError(DataError):
    """A label or charset specification that does not fit the charset."""


class ImageError(DataError):
    """One image that cannot be decoded or is outside the size limits."""


class ModelError(CaptchaLabError):
    """A run folder or model file that is missing, damaged or inconsistent."""

    exit_code = 4


class RunFolderError(CaptchaLabError):
    """An output folder that exists, is not writable, or cannot be resumed."""

    exit_code = 5


class MissingExtra(CaptchaLabError):
    """An optional dependency of the command is not installed (exit code 1, the base's)."""


# Top-level module -> the extra of pyproject.toml that installs it.
EXTRAS = {"tensorflow": "train", "keras": "train", "tf2onnx": "train", "onnx": "train", "matplotlib": "train",
          "h5py": "train", "fastapi": "serve", "uvicorn": "serve", "starlette": "serve", "multipart": "serve",
          "python_multipart": "serve", "ray": "ray", "pyarrow": "ray"}


def missing_extra(error: ImportError) -> MissingExtra | None:
    """The error a user can act on for a missing optional module; None when no extra provides it."""
    module = (error.name or "").partition(".")[0]
    extra = EXTRAS.get(module)
    if extra is None:
        return None
    # [all] is train + serve + world; Ray is left out of it (a large install few users need)
    also = "" if extra == "ray" else " (or 'captchalab[all]' for train, serve and world)"
    return MissingExtra(f"this needs the [{extra}] extra ({module} is not installed); install it with "
                        f"pip install 'captchalab[{extra}]'{also}")


@contextmanager
def extras_named() -> Iterator[None]:
    """Turn a ModuleNotFoundError of an optional dependency into the MissingExtra that names its extra."""
    try:
        yield
    except ModuleNotFoundError as error:
        raise missing_extra(error) or error from None


class Interrupted(KeyboardInterrupt):
    """Ctrl-C in the middle of a command; the message says how to continue. The CLI exits 130.

    A KeyboardInterrupt still, so Python callers who catch that keep working.
    """
