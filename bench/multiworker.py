"""Does Keras 3 train under tf.distribute.MultiWorkerMirroredStrategy here? Two local worker processes.

keras-team/keras issue 20585 reports TensorFlow's multi-worker Keras tutorial broken since TF 2.16
(Keras 3). This starts two workers on 127.0.0.1 with TF_CONFIG, each building and fitting a tiny
Keras model under the strategy (as the tutorial does), and records what each printed: the number of
replicas, and the losses or the error. captchalab's ``train.devices`` uses MirroredStrategy (one
machine) only; docs/scale.md says what to use across machines, from this result.

    .venv/bin/python bench/multiworker.py        # a minute or two; loopback only

Writes bench/results/multiworker.json.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from machine import machine_info

ROOT = Path(__file__).resolve().parent.parent
RESULT = ROOT / "bench" / "results" / "multiworker.json"
WORKER = r"""
import json, os, sys
os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": sys.argv[2].split(",")},
                                      "task": {"type": "worker", "index": int(sys.argv[1])}})
import numpy as np, tensorflow as tf, keras
strategy = tf.distribute.MultiWorkerMirroredStrategy()
print("REPLICAS", strategy.num_replicas_in_sync, flush=True)
with strategy.scope():
    model = keras.Sequential([keras.Input((20,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(5)])
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
rng = np.random.default_rng(0)
x, y = rng.normal(size=(64, 20)).astype("float32"), rng.integers(0, 5, 64)
history = model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(16), epochs=2, verbose=0)
print("LOSS", json.dumps(history.history["loss"]), flush=True)
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> None:
    cluster = ",".join(f"127.0.0.1:{free_port()}" for _ in range(2))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, str(i), cluster], env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(2)]
    outcomes = []
    for index, worker in enumerate(workers):
        try:
            stdout, stderr = worker.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            worker.kill()
            stdout, stderr = worker.communicate()
        lines = [line for line in stderr.splitlines() if line.strip()]
        at = next((i for i in range(len(lines) - 1, -1, -1) if "Error" in lines[i].split(":")[0]), None)
        # a message that spans lines (a tensor printed inside it): its first and last line
        error = None if at is None else lines[at][:300] + (f" ... {lines[-1][:300]}" if at < len(lines) - 1 else "")
        outcomes.append({"worker": index, "exit_code": worker.returncode, "stdout": stdout.strip().splitlines(),
                         "error": error,
                         "traceback_tail": [line[:300] for line in lines if line.startswith("  File")][-3:]})
    record = {"machine": machine_info(), "works": all(o["exit_code"] == 0 for o in outcomes), "workers": outcomes}
    RESULT.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({"works": record["works"], "errors": [o["error"] for o in outcomes]}, indent=2))


if __name__ == "__main__":
    main()
