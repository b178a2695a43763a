"""Errors a user can cause. The CLI prints their message and exits with their code."""

from __future__ import annotations


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


class Interrupted(KeyboardInterrupt):
    """Ctrl-C in the middle of a command; the message says how to continue. The CLI exits 130.

    A KeyboardInterrupt still, so Python callers who catch that keep working.
    """
