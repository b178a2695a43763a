"""Label efficiency on captcha_images_v2: the audit's learning curve, measured cell by cell.

Sequence accuracy on ``test.csv`` (104 images) after training on 25, 50, 100, 200, 400 and
all 936 labelled images of ``train.csv``, three seeds each, two ways (a third on request):

* ``scratch``: the default crnn trained on the labelled images only;
* ``pretrained``: the same crnn first trained on look-alike synthetic captchas
  (``generate --like``), then fine-tuned on the labelled images (``train --init``);
* ``general`` (``--methods general``): the general reader shipped with captchalab fine-tuned on
  the labelled images (``train --init general``, train's default start), no look-alikes.

The look-alikes copy the style estimated from 25 labelled images only (the seed-0 subset of
the smallest count), so pretraining knows nothing that the larger label counts add. The
pretraining run is trained here, once, so the benchmark is self-contained. Cell schedules
are the audit's (captchalab.auditing.AuditConfig): the same for both methods, except the
fine-tuning learning rate.

Resumable: every finished cell is appended to bench/results/efficiency.json at once, and a
rerun skips the cells already there (and reuses the pretraining run in --work).

    nice -n 10 .venv/bin/python bench/efficiency.py              # hours of CPU on 2 cores
    nice -n 10 .venv/bin/python bench/efficiency.py --seeds 1    # one curve first
    nice -n 10 .venv/bin/python bench/efficiency.py --methods general --counts 25,50,100 --seeds 2
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

from captchalab import auditing
from data import captcha_images_v2
from machine import machine_info

ROOT = Path(__file__).resolve().parent.parent
RESULT = ROOT / "bench" / "results" / "efficiency.json"
PLOT = ROOT / "bench" / "results" / "efficiency.png"
NOTE = ("CPU seconds are process CPU time (all threads); wall seconds are longer because other jobs shared "
        "the 2 cores of this machine throughout.")


def load(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def save(record: dict) -> None:
    from captchalab import runs

    RESULT.parent.mkdir(parents=True, exist_ok=True)
    runs.write_json(RESULT, record)


def pretrained_run(style_source: Path, work: Path, config, record: dict, wall_minutes: float) -> Path:
    """The pretraining run: reused when finished, resumed when killed, trained otherwise."""
    from captchalab.training import train

    run = work / "pretrained"
    if (run / "model.keras").exists() and "pretraining" in record:
        return run
    began_cpu, began_wall = time.process_time(), time.time()
    if (run / "checkpoints" / "state.json").exists() and not (run / "model.keras").exists():
        train(run, resume=run, export_onnx=False, quiet=False)
        info = {"resumed": True}
    else:
        run, info = auditing.pretrain(style_source, work, config, math.inf, quiet=False, wall_minutes=wall_minutes)
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    info.update(total_cpu_seconds_this_session=round(time.process_time() - began_cpu, 1),
                total_wall_seconds_this_session=round(time.time() - began_wall, 1),
                train_cpu_seconds=metrics.get("train_cpu_seconds"), epochs=metrics.get("epochs_run"),
                synthetic_val_sequence_accuracy=metrics["sequence_accuracy"])
    record["pretraining"] = {**record.get("pretraining", {}), **info}
    save(record)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "efficiency")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--counts", default="25,50,100,200,400")
    parser.add_argument("--synthetic", type=int, default=8000, help="look-alike images for pretraining")
    parser.add_argument("--pretrain-wall-minutes", type=float, default=360.0,
                        help="wall-clock cap on pretraining (it stops earlier on its epoch limit or early stopping)")
    parser.add_argument("--methods", default=",".join(auditing.METHODS),
                        help=f"comma-separated: {', '.join(auditing.METHODS)}, {auditing.GENERAL} (fine-tune the "
                        "shipped general reader on the labelled images, no look-alikes)")
    parser.add_argument("--max-cells", type=int, default=0, help="stop after this many new cells (0: all)")
    args = parser.parse_args()
    from captchalab.data.folder import write_labels_csv

    config = replace(auditing.AuditConfig(), counts=tuple(int(c) for c in args.counts.split(",")),
                     seeds=args.seeds, synthetic=args.synthetic)
    record = load(RESULT) or {"benchmark": "efficiency", "data": "captcha_images_v2 train.csv -> test.csv",
                              "cells": []}
    record.update(config=asdict(config), pretrain_wall_minutes_cap=args.pretrain_wall_minutes, note=NOTE,
                  command=" ".join(["bench/efficiency.py", *sys.argv[1:]]))
    data = captcha_images_v2()
    splits = auditing.make_splits(data / "train.csv", data / "test.csv", 0.2, 500, 0)
    pool, test = splits.pool, auditing.TestSet(splits.test, args.work)
    counts = auditing.label_counts(config, len(pool))
    style_source = write_labels_csv(args.work / "style-source.csv", auditing.subset(pool, counts[0], 0))
    methods = [m for m in args.methods.split(",") if m]
    needs_pretraining = "pretrained" in methods
    init = pretrained_run(style_source, args.work, config, record, args.pretrain_wall_minutes) \
        if needs_pretraining else None
    done = {(c["n"], c["seed"], c["method"]) for c in record["cells"]}
    new = 0
    for n, seed, method in auditing.plan(counts, config.seeds, methods):
        if (n, seed, method) in done or (args.max_cells and new >= args.max_cells):
            continue
        cell = auditing.run_cell(pool, n, seed, method, init, test, args.work, config, max_minutes=120, quiet=True)
        record["cells"].append({**cell, "cpu_model": machine_info()["cpu_model"]})
        new += 1
        finish(record)
        print(f"{method:10} n={n:<4} seed {seed}: {cell['sequence_accuracy']:.3f} "
              f"({cell['cpu_seconds']:.0f} CPU s, {cell['epochs']} epochs)", flush=True)
    finish(record)


def finish(record: dict) -> None:
    """Summary, plot and machine facts, rewritten after every cell."""
    record.update(auditing.summary(record["cells"]), machine=machine_info())
    table = {m: {int(n): v for n, v in c.items()} for m, c in record["curves"].items()}
    auditing.plot(table, PLOT, "captcha_images_v2: sequence accuracy on test.csv (mean, min-max over seeds)")
    record["comparison"] = compare(record["cells"])
    record["beats_scratch_at_every_count"] = {n: c["outcome"] == "ahead" for n, c in record["comparison"].items()}
    save(record)


def compare(cells: list[dict]) -> dict[str, dict]:
    """Per label count measured by both methods: means over seeds of sequence accuracy (the
    criterion), char accuracy and CPU seconds, and whether pretraining is ahead, tied or behind
    on sequence accuracy (ties happen at the top, where both read all 104 test images)."""
    def mean(n: int, method: str, key: str) -> float:
        values = [c[key] for c in cells if c["n"] == n and c["method"] == method]
        return sum(values) / len(values)

    counts = {m: {c["n"] for c in cells if c["method"] == m} for m in ("pretrained", "scratch")}
    both = sorted(counts["pretrained"] & counts["scratch"])
    table = {}
    for n in both:
        row = {key: {m: round(mean(n, m, key), 4) for m in ("pretrained", "scratch")}
               for key in ("sequence_accuracy", "char_accuracy", "cpu_seconds")}
        ahead = row["sequence_accuracy"]["pretrained"] - row["sequence_accuracy"]["scratch"]
        row["outcome"] = "ahead" if ahead > 1e-9 else "behind" if ahead < -1e-9 else "tied"
        table[str(n)] = row
    return table


if __name__ == "__main__":
    main()
