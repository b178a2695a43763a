"""The tuning study behind the crnn defaults (alignment_weight 2.0, rnn_layers 1).

Each row trains captchalab's crnn on captcha_images_v2 ``train.csv`` and scores it on
``test.csv``, through ``bench/crnn_vs_keras.py --child crnn`` (one process per row), from the
baseline the study started at: the crnn defaults before it (alignment_weight 1.0, rnn_layers 2)
and the training rules of that time (100 epochs with early stopping, the plateau rule, no precise
batch norm), every one pinned here so that today's defaults do not change the rows. A row's own
``set`` is applied over that baseline.

    .venv/bin/python bench/tuning_crnn_defaults.py             # 12 trainings of 2-4 CPU minutes each, ~1 h
    .venv/bin/python bench/tuning_crnn_defaults.py --jobs 3    # as recorded: rows side by side

Writes bench/results/tuning/crnn_defaults.json. CPU seconds depend on what runs beside the
rows (the recorded file ran them 2-3 at a time next to another training): compare them only
within one file.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from machine import machine_info

ROOT = Path(__file__).resolve().parent.parent
RESULT = ROOT / "bench" / "results" / "tuning" / "crnn_defaults.json"
# The crnn and training defaults when the study ran (git show d7d7241^:src/captchalab/config.py and
# models/crnn.py), plus the settings added since, at the values that reproduce those rules.
BASELINE = [
    "model.filters=32,48,64", "model.rnn_units=64", "model.rnn_layers=2", "model.dropout=0.25",
    "model.batch_norm=true", "model.alignment_weight=1.0",
    "train.epochs=100", "train.batch_size=16", "train.learning_rate=0.002", "train.patience=10",
    "train.val_fraction=0.1", "train.seed=0", "train.augment=true", "train.threads=0", "train.max_minutes=0",
    "train.max_cpu_minutes=0", "train.min_epochs=0",
    "train.schedule=plateau",  # the cosine schedule came later (33c3447)
    "train.precise_bn=false",  # so did precise batch norm (a2a5d1b)
    "train.min_steps=2500",  # unused: the epochs are given
]
WEIGHT_2 = "model.alignment_weight=2.0"
# The rows in the recorded order: the baseline and two probes, alignment weight 2.0 (C0-C2 seeds),
# then one BiLSTM layer (L0-L3 seeds). A second baseline-seed row of weight 2.0 repeats the
# combined crnn_vs_keras.py run the file also holds.
ROWS: list[list[str]] = [
    [], ["train.seed=1"], ["train.learning_rate=0.003"], [WEIGHT_2],
    *[[WEIGHT_2, f"train.seed={seed}"] for seed in range(3)],
    [WEIGHT_2],
    *[[WEIGHT_2, "model.rnn_layers=1", f"train.seed={seed}"] for seed in range(4)],
]


def run_row(index: int, items: list[str], work: Path) -> dict:
    """One crnn_vs_keras.py child: train, score on test.csv; plus the run's per-epoch CPU seconds."""
    command = [sys.executable, str(ROOT / "bench" / "crnn_vs_keras.py"), "--child", "crnn",
               "--work", str(work / f"row-{index}"), "--init", "none"]  # the scratch recipe's settings
    for item in [*BASELINE, *items]:
        command += ["--set", item]
    output = subprocess.run(command, check=True, text=True, stdout=subprocess.PIPE).stdout
    result = json.loads(next(x for x in output.splitlines()[::-1] if x.startswith("RESULT "))[len("RESULT "):])
    history = json.loads((work / f"row-{index}" / "crnn" / "history.json").read_text())
    return {"set": items, "sequence_accuracy": result["sequence_accuracy"], "char_accuracy": result["char_accuracy"],
            "epochs_run": result["epochs_run"], "train_cpu_seconds": result["train_cpu_seconds"],
            "_epoch_cpu": [epoch["cpu_seconds"] for epoch in history]}


def per_epoch_cpu(runs: list[dict]) -> dict:
    """The range of per-epoch CPU seconds, after the first epoch (tracing), for each BiLSTM depth."""
    summary: dict[str, str] = {}
    for layers in (2, 1):
        rows = [r for r in runs if (f"model.rnn_layers={layers}" in r["set"]) == (layers == 1)]
        later = [s for r in rows for s in r["_epoch_cpu"][1:]]
        first = [r["_epoch_cpu"][0] for r in rows]
        if later:
            summary[f"rnn_layers {layers}"] = (f"{min(later):.1f}-{max(later):.1f} (after the first epoch's "
                                               f"{min(first):.0f}-{max(first):.0f})")
    summary["source"] = "history.json cpu_seconds of the runs above"
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "tuning-crnn-defaults")
    parser.add_argument("--jobs", type=int, default=1, help="rows trained at once (CPU seconds grow with it)")
    args = parser.parse_args()
    with ThreadPoolExecutor(args.jobs) as pool:
        runs = list(pool.map(lambda row: run_row(row[0], row[1], args.work), enumerate(ROWS)))
    report = {
        "purpose": "choose crnn defaults (alignment_weight, rnn_layers): captchalab crnn on captcha_images_v2 "
                   "train.csv -> test.csv",
        "command": "bench/crnn_vs_keras.py --child crnn --work DIR --set KEY=VALUE ... (one process per row; "
                   "bench/tuning_crnn_defaults.py)",
        "baseline_options": "alignment_weight 1.0, rnn_layers 2, learning_rate 0.002, seed 0",
        "baseline_set": BASELINE,
        "note": f"rows ran {args.jobs} at a time: CPU seconds are comparable only within this file",
        "runs": [{k: v for k, v in run.items() if not k.startswith("_")} for run in runs],
        "machine": machine_info(),
        "per_epoch_cpu_seconds": per_epoch_cpu(runs),
    }
    RESULT.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["runs"], indent=2))


if __name__ == "__main__":
    main()
