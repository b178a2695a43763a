"""Keep TensorFlow, Keras, tf2onnx and absl chatter off the user's terminal.

TensorFlow's C++ side logs (oneDNN notices, absl warnings, grappler's "Starting new session")
straight to file descriptor 2, and reads ``TF_CPP_MIN_LOG_LEVEL`` once, when it loads: the
variable must be set before anything imports it. The Python side warns (Keras
``UserWarning``/``FutureWarning`` about its own internals) and logs (tf2onnx's "TF freezing
failed... Removed Mul ..." while exporting). Users of a CLI should see progress, results and
errors in the project's own words, not that. Real errors still surface as Python exceptions.

Importing this module sets the environment; ``quiet_python`` silences the Python side (the CLI
calls both first thing); ``import_quietly`` imports TensorFlow with descriptor 2 closed.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

NOISY_LOGGERS = ("tf2onnx", "absl", "tensorflow", "h5py")
NOISY_MODULES = r"(keras|tensorflow|tf2onnx|onnx|absl|h5py)(\.|$)"


def quiet_python() -> None:
    """Silence the libraries' own warnings and log records (not the project's: it never uses them)."""
    warnings.filterwarnings("ignore", message=".*shuffle=True.*tf.data.Dataset.*")
    for category in (FutureWarning, DeprecationWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category, module=NOISY_MODULES)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def import_quietly() -> None:
    quiet_python()
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import keras  # noqa: F401
            import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
