"""Train the general reader: one crnn for captchas of any style, on fresh world images.

The world generator (captchalab/data/world.py) draws a new style for every image. The
reader is trained in stages so that the work survives any number of sessions: stage k is
one ``captchalab train`` run on shard k (SHARD images no stage has seen), started from
stage k-1's weights (``train --init``), with a cosine learning-rate cycle of its own. A
killed stage resumes from its last epoch; finished stages and shards are reused.

Shards are written by ``generate --world`` (data/world.py) and read at the reader's input size
(grey, 32x160), the conversion ``solve`` applies.

    .venv/bin/python bench/train_general.py --stages 4        # render and train up to 4 stages
    .venv/bin/python bench/train_general.py --status          # what is done, no work
    .venv/bin/python bench/train_general.py --ship            # the best stage into the package
    .venv/bin/python bench/train_general.py --ship --stage 8  # that stage instead

Writes runs/general/ (shards, stage runs) and bench/results/general.json (per stage: images,
epochs, CPU seconds, validation accuracy, commit and library versions; the ONNX SHA-256). The newest
finished stage's run folder (no checkpoints, about 3 MB) is copied to bench/results/general/ to be
committed, and so is the best one: runs/ does not outlive a machine, so a later session on a fresh one
goes on from the newest copy and can still ship the best.

"Best" is the highest sequence accuracy on the world's validation set (2,000 images of the
generator's own, never a zoo style or a real set), the newest of equals: later stages stopped
gaining (bench/results/general.json), and shipping the newest would ship a worse reader.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import time
from pathlib import Path

import numpy as np

from machine import machine_info

ROOT = Path(__file__).resolve().parent.parent
RESULT = ROOT / "bench" / "results" / "general.json"
SNAPSHOT = ROOT / "bench" / "results" / "general"  # holds NNN/: the newest finished stage and the best
SHIPPED = ROOT / "src" / "captchalab" / "general"  # the package's general reader (adapt starts from it)
SHIPPED_FILES = ("config.json", "model.keras", "model.onnx", "calibration.json", "ood.json", "metrics.json")
CHARSET = "0-9a-zA-Z"  # exact case: folding to one case is a decode-time choice
LENGTH = (1, 10)
HEIGHT, WIDTH = 32, 160  # 40 CTC steps: room for 10 characters and the blanks between repeats
SHARD = 25_000
VAL = 2_000
VAL_SEED = 1_000_000  # shard k is seed k; the validation set's seed is far from any shard's
# Pinned, so that a later change of the defaults does not alter this recipe.
RECIPE = [f"image.height={HEIGHT}", f"image.width={WIDTH}",
          "model.filters=32,48,64,96", "model.rnn_units=96", "model.rnn_layers=1", "model.dropout=0.1",
          "model.batch_norm=true", "train.batch_size=32", "train.augment=true", "train.distort=false",
          "train.schedule=cosine", "train.precise_bn=true", "train.threads=0", "train.min_epochs=0"]
# Stage 0 starts from random weights, with the per-slot head that shortens CTC's start-up plateau
# (models/crnn.py); later stages continue a trained network on a smaller cycle, CTC alone.
FIRST = ["model.alignment_weight=1.0", "train.learning_rate=2e-3", "train.epochs=3"]
LATER = ["model.alignment_weight=0", "train.learning_rate=1e-3", "train.epochs=2"]
# Stages 9 and 10 gained nothing on stage 8 at that rate (44.2%, then 44.0% and 42.7%: general.json), while
# the network read its own training images no better than the validation set (44.8% against 42.6% at
# stage 10): the noise of each new cycle, not overfitting. From FINE_FROM on, a third of the rate.
FINE_FROM = 11
FINE = ["model.alignment_weight=0", "train.learning_rate=3e-4", "train.epochs=2"]


def stage_overrides(k: int) -> list[str]:
    """What stage ``k`` trains with beyond RECIPE."""
    return FIRST if k == 0 else LATER if k < FINE_FROM else FINE


def render(folder: Path, count: int, seed: int) -> Path:
    """``count`` world images with labels.csv (``generate --world``: on every core, written
    complete or not at all, resumed after a kill); reused when complete."""
    from captchalab.data.world import generate_world

    if (folder / "labels.csv").exists():
        return folder
    return generate_world(folder, count, seed, charset=CHARSET, length=f"{LENGTH[0]}-{LENGTH[1]}")


def stage(work: Path, k: int, val: Path, cpu_minutes: float) -> Path:
    """Stage ``k``'s run folder: reused when finished, resumed when killed, started otherwise."""
    import captchalab

    run = work / "stages" / f"{k:03d}"
    if (run / "model.onnx").exists():
        return run
    data = render(work / "shards" / f"{k:04d}", SHARD, k)
    if (run / "checkpoints" / "state.json").exists():
        captchalab.train(data, resume=run, quiet=True)
    else:
        init = work / "stages" / f"{k - 1:03d}" if k else None
        budget = [f"train.max_cpu_minutes={cpu_minutes}"] if cpu_minutes else []
        captchalab.train(data, val=val, out=run, charset=CHARSET, init=init, force=True, quiet=True,
                         overrides=[*RECIPE, *stage_overrides(k), *budget])
    shutil.rmtree(data)  # 300 MB, and seed k renders it again
    return run


def summary(run: Path) -> dict:
    history = json.loads((run / "history.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    return {"run": run.name, "epochs": len(history),
            "train_cpu_seconds": metrics.get("train_cpu_seconds"),
            "val_sequence_accuracy": metrics["sequence_accuracy"], "val_char_accuracy": metrics["char_accuracy"],
            "onnx_sha256": hashlib.sha256((run / "model.onnx").read_bytes()).hexdigest()}


def record(finished: list[Path]) -> None:
    """general.json: every stage measured so far, this machine's and those of earlier sessions."""
    from captchalab import runs
    from captchalab.data.world import provenance

    stages = {s["run"]: s for s in json.loads(RESULT.read_text())["stages"]} if RESULT.exists() else {}
    stages.update({run.name: {**summary(run), "machine": machine_info(), "fonts": provenance()["families"]}
                   for run in finished})
    runs.write_json(RESULT, {
        "benchmark": "general reader", "charset": CHARSET, "length": list(LENGTH),
        "input": {"height": HEIGHT, "width": WIDTH}, "shard_images": SHARD, "val_images": VAL,
        "recipe": RECIPE, "first_stage": FIRST, "later_stages": LATER, "fine_from": FINE_FROM, "fine_stages": FINE,
        "distinct_training_images": SHARD * len(stages), "stages": [stages[k] for k in sorted(stages)]})


def snapshot(work: Path) -> None:
    """Copy the newest finished stage and the best to bench/results/general/, checkpoints left out;
    older copies go."""
    keep = {best(work), finished_stages(work)[-1]}  # best() first: it says so when nothing is finished
    for run in keep:
        if (SNAPSHOT / run.name / "model.onnx").exists():  # copied already (or only there)
            continue
        staging = SNAPSHOT / f".{run.name}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(run, staging, ignore=shutil.ignore_patterns("checkpoints", ".lock"))
        weights_only(run, staging / "model.keras")
        shutil.rmtree(SNAPSHOT / run.name, ignore_errors=True)
        staging.replace(SNAPSHOT / run.name)
    for old in [*SNAPSHOT.glob("[0-9]*"), *SNAPSHOT.glob(".*.partial")]:  # and copies a kill left half-made
        if old.name not in {run.name for run in keep}:
            shutil.rmtree(old)


def finished_stages(work: Path) -> list[Path]:
    """Every finished stage, here or only in the committed copy (a fresh machine has just that)."""
    here = {p.parent.name: p.parent for p in (work / "stages").glob("*/model.onnx")}
    copies = {p.parent.name: p.parent for p in SNAPSHOT.glob("[0-9]*/model.onnx")}
    return [({**copies, **here})[name] for name in sorted({*here, *copies})]


def best(work: Path) -> Path:
    """The finished stage that reads the world's validation set best, the newest of equals."""
    finished = finished_stages(work)
    if not finished:
        raise SystemExit(f"no finished stage in {work / 'stages'} or {SNAPSHOT}; train one first")
    return max(reversed(finished), key=lambda run: summary(run)["val_sequence_accuracy"])


def ship(work: Path, stage: int | None = None) -> Path:
    """Copy a finished stage (the best unless ``stage`` names one) into the package
    (src/captchalab/general/), with its provenance."""
    from captchalab import runs

    if stage is None:
        run = best(work)
    else:
        named = [run for run in finished_stages(work) if int(run.name) == stage]
        if not named:
            raise SystemExit(f"stage {stage:03d} is not finished here ({work / 'stages'}) or in {SNAPSHOT}")
        run = named[0]
    staging = SHIPPED.with_name(".general.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    for name in SHIPPED_FILES:
        if (run / name).exists():
            shutil.copy2(run / name, staging / name)
    weights_only(run, staging / "model.keras")
    metrics = json.loads((staging / "metrics.json").read_text())
    if metrics.get("init"):  # a path on the training machine: the package names the stage instead
        runs.write_json(staging / "metrics.json", {**metrics, "init": f"stage {Path(metrics['init']).name}"})
    runs.write_json(staging / "general.json", {
        "trained_by": "bench/train_general.py", "stage": run.name, **summary(run),
        "distinct_training_images": SHARD * (int(run.name) + 1), "machine": machine_info()})
    shutil.rmtree(SHIPPED, ignore_errors=True)
    staging.replace(SHIPPED)
    return SHIPPED


def weights_only(run: Path, target: Path) -> None:
    """model.keras without the optimizer state that runs trained before commit 'model.keras holds weights
    only' saved beside the weights (three times the size)."""
    from captchalab import runs

    runs.load_keras(run).save(target)


def restore(work: Path) -> int:
    """The next stage to train: after the newest finished one here or in the committed copy."""
    copies = sorted(SNAPSHOT.glob("[0-9]*/model.keras"))
    if copies:
        copy = copies[-1].parent
        run = work / "stages" / copy.name
        if not (run / "model.onnx").exists():
            shutil.rmtree(run, ignore_errors=True)
            shutil.copytree(copy, run)
    finished = [int(p.parent.name) for p in (work / "stages").glob("*/model.onnx")]
    return max(finished, default=-1) + 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stages", type=int, default=20, help="train up to this many stages")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "general")
    parser.add_argument("--stage-cpu-minutes", type=float, default=0.0, help="cut a stage after this CPU time")
    parser.add_argument("--status", action="store_true", help="print the finished stages; no work")
    parser.add_argument("--ship", action="store_true",
                        help="copy the finished stage that reads the world's validation set best into the package")
    parser.add_argument("--stage", type=int, help="with --ship: this stage instead of the best")
    args = parser.parse_args()
    if args.stage is not None and not args.ship:
        parser.error("--stage names the stage to ship: use it with --ship")
    if args.ship:
        restore(args.work)
        print(f"shipped {ship(args.work, args.stage)}")
        return
    if args.status:
        finished = finished_stages(args.work)
        top = best(args.work).name if finished else None
        print(json.dumps([{**summary(run), "best": run.name == top, "where": str(run.parent)}
                          for run in finished], indent=1))
        return
    val = render(args.work / "val", VAL, VAL_SEED)
    for k in range(restore(args.work), args.stages):
        started = time.time()
        run = stage(args.work, k, val, args.stage_cpu_minutes)
        record([run])
        snapshot(args.work)
        print(f"stage {k}: {summary(run)['val_sequence_accuracy']:.3f} val seq "
              f"({time.time() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
