"""Zero labels: ``captchalab adapt`` on captcha_images_v2, the labels hidden from it, used only to score.

The 936 images of ``train.csv`` are linked into a folder under neutral names (``00000.png``...;
captcha_images_v2 names each file by its label) with no labels.csv, and adapted to with what a
user would know: 5 characters of ``0-9a-z`` (the set really uses 19 of those 36 symbols). Then,
with the truth this bench alone holds:

* each round's model on ``test.csv`` (104 images, never seen by adapt): sequence and character accuracy;
* each round's kept readings: how many, and how many of them are right (a confident pseudo-label
  that is wrong teaches the next round a mistake);
* the model's own estimate of its accuracy (its mean calibrated confidence over the images) next
  to its true accuracy on them.

    nice -n 10 .venv/bin/python bench/adapt.py                 # the default 30 CPU-minute budget
    nice -n 10 .venv/bin/python bench/adapt.py --budget 20 --tag budget20

Writes bench/results/adapt.json (one entry per --tag; a rerun continues an interrupted adapt in --work).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from data import captcha_images_v2
from machine import machine_info

ROOT = Path(__file__).resolve().parent.parent
RESULT = ROOT / "bench" / "results" / "adapt.json"


def hidden_labels(v2: Path, folder: Path) -> dict[str, str]:
    """train.csv's images linked as NNNNN.png, no labels.csv; the truth by path, for scoring only."""
    from captchalab.data.folder import read_labels_csv

    folder.mkdir(parents=True, exist_ok=True)
    truth = {}
    for i, (name, label) in enumerate(read_labels_csv(v2 / "train.csv")):
        link = folder / f"{i:05d}.png"
        if not link.exists():
            link.symlink_to((v2 / name).resolve())
        truth[str(link)] = label
    return truth


def score_rounds(out: Path, truth: dict[str, str], test_csv: Path) -> list[dict]:
    import captchalab

    record = json.loads((out / "adapt.json").read_text(encoding="utf-8"))
    rows = []
    for r in record["rounds"]:
        test = captchalab.evaluate(Path(r["run"]), test_csv, save=False)
        on_images = captchalab.evaluate(Path(r["run"]), _truth_csv(out, truth), save=False)
        kept = _kept(out, r["round"], truth)
        rows.append({"round": r["round"], "test_sequence_accuracy": test["sequence_accuracy"],
                     "test_char_accuracy": test["char_accuracy"],
                     "accuracy_on_the_adapted_images": on_images["sequence_accuracy"],
                     "estimated_accuracy": r["mean_confidence"], "kept": r["kept"], **kept})
    return rows


def first_reader(out: Path) -> list[dict]:
    """Round 0's runs (rounds/0, then 0-1, 0-2, ... where it trained on): epochs and its look-alikes' validation."""
    found = []
    for run in sorted((out / "rounds").glob("0*/"), key=lambda p: (len(p.name), p.name)):
        metrics_file = run / "metrics.json"
        if metrics_file.exists():
            m = json.loads(metrics_file.read_text(encoding="utf-8"))
            found.append({"run": run.name, "epochs": m["epochs_run"], "val_cer": round(m["cer"], 4),
                          "val_sequence_accuracy": m["sequence_accuracy"], "train_cpu_seconds": m["train_cpu_seconds"]})
    return found


def _truth_csv(out: Path, truth: dict[str, str]) -> Path:
    from captchalab.data.folder import write_labels_csv

    path = out.parent / "truth.csv"
    if not path.exists():
        write_labels_csv(path, sorted(truth.items()))
    return path


def _kept(out: Path, number: int, truth: dict[str, str]) -> dict:
    """How many of the readings round ``number`` kept (the CSV that trained the next round) were right."""
    from captchalab.data.folder import read_labels_csv

    csv_path = out / "rounds" / f"{number + 1}.csv"
    if not csv_path.exists():
        return {}
    real = [(f, t) for f, t in read_labels_csv(csv_path) if f in truth]
    right = sum(truth[f] == t for f, t in real)
    return {"kept_right": right, "kept_precision": round(right / max(1, len(real)), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=30.0, help="adapt's CPU minutes")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--synthetic", type=int, default=4000, help="look-alikes")
    parser.add_argument("--tag", default="default")
    parser.add_argument("--init", type=Path, help="adapt --init: start from this run (a general reader)")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "adapt")
    parser.add_argument("--first-reader-only", action="store_true",
                        help="only add round 0's record to an existing entry of --tag (its OUT kept in --work)")
    args = parser.parse_args()
    if args.first_reader_only:
        results = json.loads(RESULT.read_text(encoding="utf-8"))
        for entry in results["runs"]:
            if entry["tag"] == args.tag:
                entry["first_reader"] = first_reader(args.work / args.tag / "out")
        RESULT.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        return
    import captchalab

    v2 = captcha_images_v2()
    work = args.work / args.tag
    truth = hidden_labels(v2, work / "images")
    began = time.process_time(), time.time()
    out = captchalab.adapt(work / "images", work / "out", length=5, charset="0-9a-z", budget_minutes=args.budget,
                           rounds=args.rounds, synthetic=args.synthetic, init=args.init, quiet=True)
    adapt_cpu, adapt_wall = time.process_time() - began[0], time.time() - began[1]
    record = json.loads((out / "adapt.json").read_text(encoding="utf-8"))
    entry = {"tag": args.tag, "budget_minutes": args.budget, "rounds_asked": args.rounds, "synthetic": args.synthetic,
             "init": str(args.init) if args.init else None,
             "data": "captcha_images_v2: train.csv's 936 images, labels hidden; scored on test.csv (104)",
             "told": {"length": 5, "charset": "0-9a-z"}, "adapt_config": record["config"], "stopped": record["stopped"],
             "adapt_cpu_seconds": round(adapt_cpu, 1), "adapt_wall_seconds": round(adapt_wall, 1),
             "adapt_cpu_seconds_recorded": record["cpu_seconds"],
             "rounds": score_rounds(out, truth, v2 / "test.csv"), "first_reader": first_reader(out),
             "machine": machine_info()}
    results = json.loads(RESULT.read_text(encoding="utf-8")) if RESULT.exists() else {"benchmark": "adapt", "runs": []}
    results["runs"] = [r for r in results["runs"] if r["tag"] != args.tag] + [entry]
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(entry["rounds"], indent=1))


if __name__ == "__main__":
    sys.exit(main())
