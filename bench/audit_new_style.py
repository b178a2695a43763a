"""``captchalab audit`` on a captcha style it has not been tuned on, within a CPU budget.

The set: 500 captchas from the PyPI ``captcha`` generator in colour (random text and
background colours, noise curve and dots, warped characters), 4-6 characters of 0-9A-Z,
160x60, seed 11 -- a different look from captcha_images_v2 (grey gradient, one dark font,
thick lines), on which the audit's defaults were chosen. The audit holds out 20% for
testing, estimates the style from the 25-image subset, pretrains, and measures the curve
within ``--budget`` CPU minutes.

    nice -n 10 .venv/bin/python bench/audit_new_style.py --budget 30

Writes bench/results/audit_new_style.json and bench/results/audit_new_style.png.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from machine import machine_info

ROOT = Path(__file__).resolve().parent.parent
RESULT = ROOT / "bench" / "results" / "audit_new_style.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "audit-new-style")
    parser.add_argument("--budget", type=float, default=30.0, help="CPU minutes")
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()
    import captchalab
    from captchalab.data.synthetic import generate

    data = args.work / "data"
    if not (data / "labels.csv").exists():
        shutil.rmtree(data, ignore_errors=True)
        generate(data, 500, length="4-6", charset="0-9A-Z", size="160x60", seed=11)
    began_cpu, began_wall = time.process_time(), time.time()
    record = captchalab.audit(data, args.work / "audit", budget_minutes=args.budget, counts=[25, 50, 100, 200],
                              seeds=args.seeds, force=True, progress=lambda message: print(message, flush=True))
    shutil.copy(args.work / "audit" / "learning_curve.png", RESULT.with_suffix(".png"))
    summary = {key: record[key] for key in ("verdict", "labels_needed", "curves", "cells", "skipped", "pretraining",
                                            "counts", "cpu_seconds", "wall_seconds")}
    summary.update(
        benchmark="audit_new_style", budget_cpu_minutes=args.budget, seeds=args.seeds,
        data="500 PyPI captcha images, 4-6 of 0-9A-Z, 160x60, seed 11 (400 labelled pool, 100 test)",
        process_cpu_seconds=round(time.process_time() - began_cpu, 1),
        process_wall_seconds=round(time.time() - began_wall, 1),
        within_budget=record["cpu_seconds"] <= args.budget * 60,
        note="CPU seconds are process CPU time (all threads); other jobs shared the 2 cores throughout.",
        machine=machine_info(),
    )
    RESULT.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(record["verdict"]["text"])


if __name__ == "__main__":
    main()
