"""Batch-norm statistics recomputed before each validation ("precise BN"), on and off.

The default crnn on captcha_images_v2 ``train.csv``, scored on ``test.csv``, with
``train.precise_bn`` true and false, same seeds, one process per run (the crnn side of
bench/crnn_vs_keras.py). Records test accuracy, epochs, training CPU time and the
validation curve, whose swings (largest drop between two epochs) are what the moving
statistics' lag looks like from outside.

    .venv/bin/python bench/precise_bn.py --seeds 0,1     # about 10 CPU minutes

``--dropout-check RUN TRAIN TEST`` measures instead what switching dropout off during the
statistics pass is worth for a trained model with a batch norm behind a dropout layer (mlp,
cnn): test accuracy with the statistics stored in RUN, recomputed with dropout on (the code
before that change) and recomputed with dropout off (the code now), on 1,024 TRAIN images.
No training; seconds per run.

Writes bench/results/tuning/precise_bn.json (its "dropout_check" entries for --dropout-check).
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
from pathlib import Path

from machine import machine_info

ROOT = Path(__file__).resolve().parent.parent
RESULT = ROOT / "bench" / "results" / "tuning" / "precise_bn.json"


def one_run(seed: int, precise: bool, work: Path) -> dict:
    folder = work / f"seed{seed}-precise_bn-{str(precise).lower()}"
    command = [sys.executable, str(ROOT / "bench" / "crnn_vs_keras.py"), "--child", "crnn", "--work", str(folder),
               "--init", "none",  # measured from random weights, before train's default start changed
               "--set", f"train.seed={seed}", "--set", f"train.precise_bn={str(precise).lower()}"]
    output = subprocess.run(command, check=True, text=True, stdout=subprocess.PIPE).stdout
    result = json.loads(next(x for x in output.splitlines()[::-1] if x.startswith("RESULT "))[len("RESULT "):])
    curve = [h["val_sequence_accuracy"] for h in json.loads((folder / "crnn" / "history.json").read_text())]
    drops = [a - b for a, b in itertools.pairwise(curve)]
    return {"seed": seed, "precise_bn": precise, **{k: result[k] for k in (
        "sequence_accuracy", "char_accuracy", "epochs_run", "train_cpu_seconds")},
        "largest_val_drop": round(max(drops, default=0.0), 4), "val_sequence_accuracy": curve}


def dropout_check(run: Path, train_data: Path, test_data: Path) -> dict:
    from captchalab import metrics, runs
    from captchalab.data.folder import load_dataset
    from captchalab.runs import load_keras
    from captchalab.training import predict_texts, refresh_batch_norm

    config = runs.read_config(run)
    model = load_keras(run, config)
    train_x = load_dataset(train_data, config.charset, config.image).pixels[:1024]
    test = load_dataset(test_data, config.charset, config.image)

    def score() -> float:
        texts = [p.text for p in predict_texts(model, config, test.pixels)]
        return round(metrics.summarize(texts, test.labels)["sequence_accuracy"], 4)

    stored = score()
    refresh_batch_norm(model, train_x)
    dropout_off = score()
    refresh_batch_norm(model, train_x, keep_dropout=True)  # what the pass did before
    return {"run": str(run), "model": config.model, "test_images": len(test), "test_sequence_accuracy": {
        "stored_statistics": stored, "recomputed_dropout_on": score(), "recomputed_dropout_off": dropout_off}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "tuning" / "precise_bn")
    parser.add_argument("--dropout-check", nargs=3, type=Path, metavar=("RUN", "TRAIN", "TEST"))
    args = parser.parse_args()
    if args.dropout_check:
        record = json.loads(RESULT.read_text())
        entry = {**dropout_check(*args.dropout_check), "machine": machine_info()}
        checks = [c for c in record.get("dropout_check", []) if c["run"] != entry["run"]]
        RESULT.write_text(json.dumps({**record, "dropout_check": [*checks, entry]}, indent=1) + "\n")
        print(json.dumps(entry["test_sequence_accuracy"]))
        return
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for precise in (False, True):
            rows.append(one_run(seed, precise, args.work))
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "val_sequence_accuracy"}), flush=True)
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    checks = json.loads(RESULT.read_text()).get("dropout_check", []) if RESULT.exists() else []  # kept: own runs
    RESULT.write_text(json.dumps({"purpose": __doc__.splitlines()[0], "data": "captcha_images_v2 train.csv -> test.csv",
                                  "runs": rows, "machine": machine_info(),
                                  **({"dropout_check": checks} if checks else {})}, indent=1) + "\n")


if __name__ == "__main__":
    main()
