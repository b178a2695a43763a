"""captchalab's crnn next to the Keras "OCR model for reading Captchas" recipe, one run.

Both train on captcha_images_v2 ``train.csv`` and are scored on ``test.csv`` (the fixed
split of bench/data.py). Each side runs in its own subprocess, one after the other, with
the same thread settings, so their CPU times are comparable. The Keras recipe uses
test.csv for early stopping, as the example does with its 10% split; captchalab holds
out 10% of train.csv instead and never sees test.csv before scoring.

    .venv/bin/python bench/crnn_vs_keras.py            # about an hour of CPU
    .venv/bin/python bench/crnn_vs_keras.py --only crnn

Writes bench/results/crnn_vs_keras.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from data import captcha_images_v2 as DATA
from machine import machine_info

ROOT = Path(__file__).resolve().parent.parent
RESULT = ROOT / "bench" / "results" / "crnn_vs_keras.json"


def run_crnn(train_csv: Path, test_csv: Path, out: Path, overrides: list[str], init: str = "auto") -> dict:
    """Train and score captchalab's default crnn (``init``: train --init; "auto", its default, fine-tunes the
    shipped general reader); CPU time of training as measured by train()."""
    import numpy as np

    import captchalab
    from captchalab import runs
    from captchalab.data.folder import load_dataset

    began, cpu = time.time(), time.process_time()
    run = captchalab.train(train_csv, out=out, force=True, quiet=True, overrides=overrides, init=init)
    total_cpu, total_wall = time.process_time() - cpu, time.time() - began
    trained = json.loads((run / "metrics.json").read_text())
    result = captchalab.evaluate(run, test_csv, save=False)
    predictor = captchalab.load(run / "model.onnx", threads=1)
    pixels = load_dataset(test_csv, predictor.config.charset, predictor.config.image).pixels
    latencies = []
    for i in range(3 * len(pixels)):
        start = time.perf_counter()
        predictor.predict_pixels(pixels[i % len(pixels)][None])
        latencies.append((time.perf_counter() - start) * 1000)
    return {
        "sequence_accuracy": result["sequence_accuracy"],
        "char_accuracy": result["char_accuracy"],
        "cer": result["cer"],
        "n_test": result["n"],
        "epochs_run": trained["epochs_run"],
        "init": runs.start_name(trained.get("init")),
        "train_cpu_seconds": trained["train_cpu_seconds"],
        "train_cpu_seconds_including_data_and_export": round(total_cpu, 1),
        "train_wall_seconds": round(total_wall, 1),
        "inference_ms_per_image": round(statistics.median(latencies[len(pixels):]), 3),
        "inference": "ONNX Runtime, 1 thread, batch 1, median over 2 passes after a warm-up pass",
        "onnx_bytes": (run / "model.onnx").stat().st_size,
        "parameters": int(sum(np.prod(w.shape) for w in _weights(run))),
    }


def _weights(run: Path) -> list:
    from captchalab.runs import load_keras

    return load_keras(run).weights


def child(side: str, args: argparse.Namespace) -> None:
    if side == "keras":
        from keras_reference import run_reference

        result = run_reference(DATA() / "train.csv", DATA() / "test.csv", epochs=args.epochs, patience=10)
    else:
        result = run_crnn(DATA() / "train.csv", DATA() / "test.csv", args.work / "crnn", args.set or [], args.init)
    print("RESULT " + json.dumps(result))


def run_side(side: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--child", side, "--epochs", str(args.epochs), "--work", str(args.work),
               "--init", args.init]
    for item in args.set or []:
        command += ["--set", item]
    output = subprocess.run(command, check=True, text=True, stdout=subprocess.PIPE).stdout
    line = next(x for x in output.splitlines()[::-1] if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["keras", "crnn"])
    parser.add_argument("--epochs", type=int, default=100, help="Keras recipe's maximum epochs")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench")
    parser.add_argument("--set", action="append", help="override for captchalab's crnn, key=value")
    parser.add_argument("--init", default="auto", help="captchalab's start (train --init): auto (its default: "
                        "the shipped general reader), none (random weights) or a run")
    parser.add_argument("--child", choices=["keras", "crnn"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args)
        return
    previous = json.loads(RESULT.read_text()) if RESULT.exists() and args.only else {}
    sides = [args.only] if args.only else ["keras", "crnn"]
    results = dict(previous.get("results", {}))
    for side in sides:
        results[side] = run_side(side, args)
        print(side, json.dumps(results[side]), flush=True)
    report = {"data": "captcha_images_v2 train.csv (936) -> test.csv (104)", "results": results,
              "machine": machine_info()}
    if "keras" in results and "crnn" in results:
        report["crnn_cpu_share_of_keras"] = round(
            results["crnn"]["train_cpu_seconds"] / results["keras"]["train_cpu_seconds"], 3)
    RESULT.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
