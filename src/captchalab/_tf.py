"""Import TensorFlow without the C++ start-up chatter it writes straight to file descriptor 2.

TensorFlow logs (oneDNN notices, absl warnings) before ``TF_CPP_MIN_LOG_LEVEL`` takes
effect; users of a CLI should see progress and errors, not that. Real errors raised by
the import still surface as Python exceptions.
"""

from __future__ import annotations

import os
import sys
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def import_quietly() -> None:
    if "tensorflow" in sys.modules:
        return
    warnings.filterwarnings("ignore", message=".*shuffle=True.*tf.data.Dataset.*")
    warnings.filterwarnings("ignore", category=FutureWarning, module="keras")
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
