"""Reading within the training labels' length range: what it does on the style zoo's test sets.

Since ``train`` records the shortest and longest training label (config.json ``label_lengths``),
``solve``, ``evaluate`` and the server keep a run's readings to that range unless ``--length``
says otherwise. This script measures the rule on the zoo's finished default cells, side by side:
each run's test set read plainly and read within the range of the labels it was trained on (the
same constrained search that ``--length LOW-HIGH`` runs). A cell whose run folder no longer
reads what ``bench/results/zoo.json`` recorded for it (trained over since) is skipped, and so
named.

    .venv/bin/python bench/lengths.py                 # the 1,200-label cells
    .venv/bin/python bench/lengths.py --sizes 500,1200

Writes bench/results/lengths.json (per cell: both accuracies, how many plain readings had a
length outside the range; the machine, commit and library versions).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from machine import machine_info
from zoo import RESULT as ZOO
from zoo import read_csv, test_data

ROOT = Path(__file__).resolve().parent.parent
RESULT = ROOT / "bench" / "results" / "lengths.json"


def measure(cell: dict, work: Path) -> dict:
    from captchalab.decoding import Constraints
    from captchalab.inference.predictor import Predictor

    style, n = cell["style"], cell["n"]
    trained = [label for _, label in read_csv(work / "subsets" / style / f"first{n}.csv")]
    test = test_data(style, work)
    rows = read_csv(test)
    reader = Predictor.load(work / "cells" / "default" / f"{style}-{n}", threads=1)
    pixels = np.stack([reader.prepare(test.parent / file) for file, _ in rows])
    labels = [label for _, label in rows]
    low, high = min(map(len, trained)), max(map(len, trained))
    plain = [r[0].text for r in reader.predict_pixels(pixels, 1)]
    within = [r[0].text for r in reader.predict_pixels(pixels, 1, Constraints(low, high))]
    accuracy = lambda texts: sum(t == label for t, label in zip(texts, labels)) / len(labels)  # noqa: E731
    return {"style": style, "n": n, "label_lengths": [low, high], "test_images": len(labels),
            "recorded_sequence_accuracy": cell["sequence_accuracy"],
            "plain": accuracy(plain), "within_range": accuracy(within),
            "plain_outside_range": sum(not low <= len(t) <= high for t in plain) / len(plain)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1200")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "zoo")
    args = parser.parse_args()
    from captchalab import runs

    sizes = {int(s) for s in args.sizes.split(",")}
    cells = [c for c in json.loads(ZOO.read_text())["cells"]
             if c["tag"] == "default" and c["n"] in sizes and c["model"] == "crnn"]
    measured, skipped = [], []
    for cell in sorted(cells, key=lambda c: (c["n"], c["style"])):
        folder = args.work / "cells" / "default" / f"{cell['style']}-{cell['n']}"
        if not (folder / "model.onnx").exists() or runs.read_config(folder).label_lengths:
            skipped.append(f"{cell['style']}-{cell['n']}: no run folder, or trained with the range already")
            continue
        row = measure(cell, args.work)
        if abs(row["plain"] - cell["sequence_accuracy"]) > 1e-9:
            skipped.append(f"{cell['style']}-{cell['n']}: its folder reads {row['plain']:.3f}, the record "
                           f"{cell['sequence_accuracy']:.3f} (trained over since)")
            continue
        measured.append(row)
        print(f"{row['style']} n={row['n']}: {row['plain']:.3f} plain, {row['within_range']:.3f} within "
              f"{row['label_lengths']}", flush=True)
    gains = [r["within_range"] - r["plain"] for r in measured]
    runs.write_json(RESULT, {
        "benchmark": "reading within the training labels' length range (zoo default cells)",
        "cells": measured, "skipped": skipped,
        "summary": {"cells": len(measured), "mean_gain": float(np.mean(gains)) if gains else None,
                    "smallest_gain": min(gains, default=None), "largest_gain": max(gains, default=None)},
        "machine": machine_info()})


if __name__ == "__main__":
    main()
