"""Training-time augmentation on and off, where labels are few: cells of the efficiency curve.

The bundled model's last stage gained 4 points of sequence accuracy by switching
augmentation off (bench/results/bundled.json), but it trains on unlimited fresh images from
the generator its test set comes from. Here the regime the default is for: a few dozen to a
few hundred real labelled images. Cells of bench/efficiency.py (captcha_images_v2, same
subsets, schedules and pretraining run, which must exist: run bench/efficiency.py first),
each trained with ``train.augment`` true and false in this one run.

    .venv/bin/python bench/augment.py --cells scratch:100,scratch:200,pretrained:25 --seeds 0,1

Writes bench/results/tuning/augment.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from captchalab import auditing
from data import captcha_images_v2
from efficiency import ROOT
from machine import machine_info

RESULT = ROOT / "bench" / "results" / "tuning" / "augment.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", default="scratch:100,scratch:200,pretrained:25", help="method:labels, ...")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--efficiency-work", type=Path, default=ROOT / "runs" / "efficiency")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "tuning" / "augment")
    args = parser.parse_args()
    config = auditing.AuditConfig()
    data = captcha_images_v2()
    splits = auditing.make_splits(data / "train.csv", data / "test.csv", 0.2, 500, 0)
    test = auditing.TestSet(splits.test, args.work)
    init = args.efficiency_work / "pretrained"
    rows = []
    for item in args.cells.split(","):
        method, n = item.split(":")
        for seed in (int(s) for s in args.seeds.split(",")):
            for augment in ("true", "false"):
                cell = auditing.run_cell(splits.pool, int(n), seed, method, init, test,
                                         args.work / f"augment-{augment}", config, max_minutes=120,
                                         extra=[f"train.augment={augment}"])
                rows.append({**cell, "augment": augment == "true"})
                print(json.dumps({k: rows[-1][k] for k in ("method", "n", "seed", "augment", "sequence_accuracy")}),
                      flush=True)
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps({"purpose": __doc__.splitlines()[0], "data": "captcha_images_v2 train.csv -> test.csv",
                                  "command": "bench/augment.py --cells " + args.cells + " --seeds " + args.seeds,
                                  "cells": rows, "machine": machine_info()}, indent=1) + "\n")


if __name__ == "__main__":
    main()
