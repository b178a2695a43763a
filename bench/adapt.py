"""Zero labels: ``captchalab adapt`` on captcha_images_v2 or a zoo style, the labels hidden from it, used only to score.

captcha_images_v2: the 936 images of ``train.csv`` are linked into a folder under neutral names
(``00000.png``...; captcha_images_v2 names each file by its label) with no labels.csv, and adapted
to with what a user would know: 5 characters of ``0-9a-z`` (the set really uses 19 of those 36
symbols). A zoo style (``--style``, bench/zoo.py): the first 1,200 images of its pool alike, told
the lengths and symbols its labels use; scored on its 500 test images. Then, with the truth this
bench alone holds:

* each round's model on ``test.csv`` (104 images, never seen by adapt): sequence and character accuracy;
* each round's kept readings: how many, and how many of them are right (a confident pseudo-label
  that is wrong teaches the next round a mistake);
* the model's own estimate of its accuracy (``adapting.estimate``; round 0: the middle of the thresholded
  share and the mean confidence times the consistency) next to its true accuracy on them, and the
  estimate of the rule before (round 0: the mean confidence times the consistency alone).

    nice -n 10 .venv/bin/python bench/adapt.py                 # the default 30 CPU-minute budget
    nice -n 10 .venv/bin/python bench/adapt.py --budget 20 --tag budget20
    nice -n 10 .venv/bin/python bench/adapt.py --style tiny-jpeg   # a zoo style
    nice -n 10 .venv/bin/python bench/adapt.py --label      # then a person's corrections of check.csv

``--label`` plays the person of ``captchalab label``: the rows of the finished --tag's check.csv (its
least certain readings) get their true labels, ``label`` fine-tunes on them within its default 10 CPU
minutes, and the new OUT/model is scored on ``test.csv``.

Writes bench/results/adapt.json (one entry per --style and --tag; a rerun continues an interrupted
adapt in --work).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from data import captcha_images_v2
from machine import machine_info

ROOT = Path(__file__).resolve().parent.parent
RESULT = ROOT / "bench" / "results" / "adapt.json"


V2 = "captcha_images_v2"
ZOO_IMAGES = 1200  # of a zoo style's pool: the size of its 1,200-label cell, labels hidden


@dataclass(frozen=True)
class Target:
    """What is adapted to: the labelled images (labels hidden from adapt), the test CSV, what the user says."""

    style: str
    labelled: Path  # a labels CSV; its first ``count`` rows are adapted to
    count: int
    test_csv: Path
    length: str
    charset: str

    @property
    def data(self) -> str:
        return (f"{self.style}: {self.count} images of {self.labelled.name}, labels hidden; scored on "
                f"{self.test_csv.parent.name}/{self.test_csv.name}")


def target(style: str, work: Path) -> Target:
    if style == V2:
        v2 = captcha_images_v2()
        return Target(V2, v2 / "train.csv", 936, v2 / "test.csv", "5", "0-9a-z")
    from zero_shot import site_knowledge
    from zoo import read_csv, style_data

    pool, test = style_data(style, work)
    knowledge = site_knowledge([(Path(f), b"", label) for f, label in read_csv(pool)[:ZOO_IMAGES]])
    return Target(style, pool, ZOO_IMAGES, test, knowledge["length"], knowledge["charset"])


def hidden_labels(source: Target, folder: Path) -> dict[str, str]:
    """The target's images linked as NNNNN.png, no labels.csv; the truth by path, for scoring only."""
    from captchalab.data.folder import read_labels_csv

    folder.mkdir(parents=True, exist_ok=True)
    truth = {}
    for i, (name, label) in enumerate(read_labels_csv(source.labelled)[: source.count]):
        link = folder / f"{i:05d}.png"
        if not link.exists():
            link.symlink_to((source.labelled.parent / name).resolve())
        truth[str(link)] = truth[str(link.resolve())] = label  # adapt may resolve the links
    return truth


def score_rounds(out: Path, truth: dict[str, str], test_csv: Path, reread: bool = False) -> list[dict]:
    """Each round's model on the test set and on the adapted images, beside adapt's own estimate; ``reread``:
    read every round again as adapt now reads one (its estimate as adapt now makes it)."""
    import captchalab
    from captchalab.adapting import read_again

    record = json.loads((out / "adapt.json").read_text(encoding="utf-8"))
    again = read_again(out) if reread or "thresholded_share" not in record["rounds"][0] else None
    rows = []
    for r in record["rounds"]:
        test = captchalab.evaluate(Path(r["run"]), test_csv, save=False)
        on_images = captchalab.evaluate(Path(r["run"]), _truth_csv(out, truth), save=False)
        read = again(r) if again else r
        rows.append({"round": r["round"], "test_sequence_accuracy": test["sequence_accuracy"],
                     "test_char_accuracy": test["char_accuracy"],
                     "accuracy_on_the_adapted_images": on_images["sequence_accuracy"],
                     "kept": read["kept"], "images": read["images"], **_estimated(read),
                     **_kept(out, r["round"], truth)})
    return rows


def _estimated(read: dict) -> dict:
    """adapt's own estimate of its accuracy (adapting.estimate) and what it comes from, beside the estimate
    of the rule before (round 0: the mean calibrated confidence times the consistency; unchanged after)."""
    from captchalab.adapting import estimate

    ceiling = read["mean_confidence"] * read["consistency"]
    before = estimate(read["kept"], read["images"], ceiling, ceiling, read["round"] > 0)
    keys = ("mean_confidence", "stable_share", "reference_stable_share", "consistency", "reference_accuracy",
            "confidence_threshold", "thresholded_share")
    return {**{k: read[k] for k in keys}, "estimated_accuracy": read["estimate"],
            "estimate_range": read["estimate_range"], "estimate_by_consistency": before["estimate"]}


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
        write_labels_csv(path, sorted((f, t) for f, t in truth.items() if f.startswith(str(out.parent))))
    return path


def _kept(out: Path, number: int, truth: dict[str, str]) -> dict:
    """How many of the readings round ``number`` kept (rounds/kept-N.csv) were right."""
    from captchalab.data.folder import read_labels_csv

    csv_path = out / "rounds" / f"kept-{number}.csv"
    if not csv_path.exists():
        return {"kept_right": 0, "kept_precision": None}  # nothing kept
    real = [(f, t) for f, t in read_labels_csv(csv_path) if f in truth]
    right = sum(truth[f] == t for f, t in real)
    return {"kept_right": right, "kept_precision": round(right / max(1, len(real)), 4)}


def add_labelled(source: Target, tag: str, work: Path) -> None:
    """``captchalab label`` on the finished adapt of ``tag``, its check sheet corrected with the truth."""
    import captchalab
    from captchalab.data.folder import read_labels_csv, write_labels_csv

    out = work / "out"
    truth = hidden_labels(source, work / "images")
    rows = read_labels_csv(out / "check.csv")
    sheet = work / "corrected.csv"  # outside OUT: adapt's check.csv stays as it wrote it
    write_labels_csv(sheet, [(f, truth[f]) for f, _ in rows])
    began = time.process_time()
    captchalab.label(out, sheet, quiet=True)
    cpu = time.process_time() - began
    test = captchalab.evaluate(out / "model", source.test_csv, save=False)
    results = json.loads(RESULT.read_text(encoding="utf-8"))
    entry = next(r for r in results["runs"] if _key(r) == (source.style, tag))
    entry["labelled"] = {"labels": len(rows), "wrong_in_the_sheet": sum(truth[f] != t for f, t in rows),
                         "test_sequence_accuracy": test["sequence_accuracy"],
                         "test_char_accuracy": test["char_accuracy"], "label_cpu_seconds": round(cpu, 1),
                         "record": json.loads((out / "adapt.json").read_text(encoding="utf-8"))["labelled"],
                         "machine": machine_info()}
    RESULT.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(entry["labelled"], indent=1))


def _key(entry: dict) -> tuple[str, str]:
    return entry.get("style", V2), entry["tag"]


def _save(entry: dict) -> None:
    results = json.loads(RESULT.read_text(encoding="utf-8")) if RESULT.exists() else {"benchmark": "adapt", "runs": []}
    results["runs"] = [r for r in results["runs"] if _key(r) != _key(entry)] + [entry]
    _write(results)


def _write(results: dict) -> None:
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


def _init_record(init: str) -> dict:
    """Which reader round 0 started from: for 'general', the shipped general reader's stage and ONNX hash (those
    of the reader shipped now: record or rescore a run while the reader it started from is still shipped)."""
    if init != "general":
        return {"init": init}
    shipped = json.loads((ROOT / "src" / "captchalab" / "general" / "general.json").read_text(encoding="utf-8"))
    return {"init": init, "general_stage": shipped["stage"], "general_onnx_sha256": shipped["onnx_sha256"]}


def _finished_entry(args: argparse.Namespace, source: Target, out: Path) -> dict:
    """The record of an adapt that finished but was never recorded (this script stopped while scoring it):
    everything from its OUT/adapt.json; the CPU time is adapt's own count, the wall time is unknown."""
    record = json.loads((out / "adapt.json").read_text(encoding="utf-8"))
    return {"style": args.style, "tag": args.tag, "budget_minutes": record["config"]["budget_minutes"],
            "rounds_asked": record["config"]["rounds"], "synthetic": record["config"]["synthetic"],
            **_init_record(args.init), "data": source.data,
            "told": {"length": source.length, "charset": source.charset}, "adapt_config": record["config"],
            "stopped": record["stopped"],
            "adapt_cpu_seconds": record["cpu_seconds"], "adapt_wall_seconds": None,
            "adapt_cpu_seconds_recorded": record["cpu_seconds"], "machine": machine_info(),
            "note": "recorded afterwards from OUT/adapt.json (--rescore): the run that adapted stopped while scoring"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--style", default=V2, help="captcha_images_v2 or a style of bench/zoo.py")
    parser.add_argument("--budget", type=float, default=30.0, help="adapt's CPU minutes")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--synthetic", type=int, default=4000, help="look-alikes")
    parser.add_argument("--tag", default="default")
    parser.add_argument("--init", default="general",
                        help="adapt --init: 'general' (the shipped general reader), a run folder or 'none'")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "adapt")
    parser.add_argument("--zoo-work", type=Path, default=ROOT / "runs" / "zoo", help="where zoo styles are rendered")
    parser.add_argument("--label", action="store_true",
                        help="correct --tag's check.csv with the truth, run captchalab label, score it; no adapting")
    parser.add_argument("--rescore", action="store_true",
                        help="score the rounds of --tag's finished OUT (in --work) again, each round read "
                             "again for adapt's estimate; no adapting")
    args = parser.parse_args()
    args.work = args.work.resolve()  # truth.csv names images by path, read from its own folder
    source = target(args.style, args.zoo_work)
    work = args.work / (args.tag if args.style == V2 else f"{args.style}-{args.tag}")
    truth = hidden_labels(source, work / "images")
    if args.label:
        add_labelled(source, args.tag, work)
        return
    if args.rescore:
        entry = next((r for r in json.loads(RESULT.read_text(encoding="utf-8"))["runs"]
                      if _key(r) == (args.style, args.tag)), None) or _finished_entry(args, source, work / "out")
        _save({**entry, "rounds": score_rounds(work / "out", truth, source.test_csv, reread=True),
               "first_reader": first_reader(work / "out"), "rescored_on": machine_info()})
        return
    import captchalab

    began = time.process_time(), time.time()
    out = captchalab.adapt(work / "images", work / "out", length=source.length, charset=source.charset,
                           budget_minutes=args.budget, rounds=args.rounds, synthetic=args.synthetic, init=args.init,
                           quiet=True)
    adapt_cpu, adapt_wall = time.process_time() - began[0], time.time() - began[1]
    record = json.loads((out / "adapt.json").read_text(encoding="utf-8"))
    entry = {"style": args.style, "tag": args.tag, "budget_minutes": args.budget, "rounds_asked": args.rounds,
             "synthetic": args.synthetic, **_init_record(args.init), "data": source.data,
             "told": {"length": source.length, "charset": source.charset}, "adapt_config": record["config"],
             "stopped": record["stopped"], "adapt_cpu_seconds": round(adapt_cpu, 1),
             "adapt_wall_seconds": round(adapt_wall, 1), "adapt_cpu_seconds_recorded": record["cpu_seconds"],
             "rounds": score_rounds(out, truth, source.test_csv), "first_reader": first_reader(out),
             "machine": machine_info()}
    _save(entry)
    print(json.dumps(entry["rounds"], indent=1))


if __name__ == "__main__":
    sys.exit(main())
