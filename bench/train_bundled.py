"""Train the model bundled with the package, and measure it on a fresh synthetic set.

The bundled model reads captchas in the style of the PyPI ``captcha`` generator: 4-6
characters from 0-9A-Z, 160x60. Letters are drawn in lowercase 30% of the time and the
model is case-insensitive (it answers in uppercase): in the generator's warped fonts many
lowercase letters (c o s u v w x z k p) are indistinguishable from their capitals, so
one symbol per letter is the honest charset. The letter O and the digit 0 are a harder case:
the generator's one font (DroidSansMono) draws them almost alike, and its random warps blur
the small width difference. Both stay in the charset (0-9A-Z is what users of the generator
draw from); the error analysis in bench/results/bundled.json counts what they cost.

Three stages. The first trains the crnn below at 32x120. The second fine-tunes it at the
generator's full width (32x160) on a second, fresh set of images: O and the narrower 0 differ
mostly in width, which the first stage's input had squeezed by a quarter; the conv trunk and
the BiLSTMs do not depend on the width, so every layer carries over. The third fine-tunes
again on a third fresh set, without augmentation (see FRESH).

    .venv/bin/python bench/train_bundled.py            # ~4 h of CPU
    .venv/bin/python bench/train_bundled.py --resume   # continue after a kill (any stage)
    .venv/bin/python bench/train_bundled.py --resume --epochs 20   # or end stage 1 there, keeping its best epoch
    .venv/bin/python bench/train_bundled.py --resume --stage-epochs 3:10   # or move stage 3's limit

Writes src/captchalab/bundled/{model.onnx,config.json} and bench/results/bundled.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import time
from pathlib import Path

from captchalab.charset import Charset
from captchalab.data.images import ImageSize
from captchalab.data.synthetic import Renderer
from machine import machine_info

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "src" / "captchalab" / "bundled"
CHARSET = "0-9A-Z"
SIZE = ImageSize(height=60, width=160)
LENGTH = "4-6"
LOWERCASE_SHARE = 0.3
SEEDS = {"train": 1, "val": 2, "test": 3, "wide": 4, "fresh": 5}
# The bundled model is a larger crnn than the default (wider layers, two BiLSTM layers: it must
# read every style the generator draws, not one site's), fed larger batches for CPU throughput.
# 32x120 is the crnn's default input for 160x60, 6 characters. Every setting is pinned so that
# later changes of the defaults do not alter this recipe.
RECIPE = ["image.height=32", "image.width=120", "model.filters=32,64,96", "model.rnn_units=96",
          "model.rnn_layers=2", "model.alignment_weight=1.0", "train.batch_size=32", "train.patience=9"]
# Stage 2 (train --init stage 1): full width; CTC alone, since the slot head's input grows with
# the width and would start from scratch; a lower learning rate for a trained network.
WIDE = ["image.width=160", "model.alignment_weight=0", "train.batch_size=32", "train.learning_rate=5e-4",
        "train.patience=6"]
# Stage 3 (train --init stage 2): a third set of fresh images, a lower rate again, and no
# augmentation: the test distribution is the generator itself, which fresh images already
# sample. The last is what counts: the same stage with augmentation reached 92.3%, not 97.4%
# (--ablate-augment).
FRESH = ["image.width=160", "model.alignment_weight=0", "train.batch_size=32", "train.learning_rate=3e-4",
         "train.patience=6", "train.augment=false"]
# Fine-tuning stages after stage 1: (run folder, training-set seed, recipe, default epochs).
STAGES = [("run-wide", "wide", WIDE, 12), ("run-fresh", "fresh", FRESH, 8)]


def render_set(folder: Path, count: int, seed: int) -> Path:
    """A dataset folder of ``count`` look-alike captchas; reused if already complete."""
    labels = folder / "labels.csv"
    if labels.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    renderer = Renderer(Charset.parse(CHARSET), LENGTH, SIZE, seed, lowercase_share=LOWERCASE_SHARE)
    rows = []
    for i in range(count):
        text, image = renderer.sample()
        image.save(folder / f"{i:06d}.png")
        rows.append((f"{i:06d}.png", text))
    tmp = folder / "labels.csv.tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("file", "label"), *rows])
    tmp.replace(labels)
    return folder


def error_analysis(test_set: Path) -> dict:
    """Which characters the bundled model confuses on the test set, and what O/0 costs."""
    from captchalab.data.folder import load_dataset
    from captchalab.inference.predictor import Predictor
    from captchalab.report import confusion

    predictor = Predictor.load(BUNDLED / "model.onnx", threads=1)
    data = load_dataset(test_set, predictor.config.charset, predictor.config.image, case_insensitive=True)
    texts = [r[0].text for r in predictor.predict_pixels(data.pixels)]
    wrong = [(y, t) for y, t in zip(data.labels, texts) if y != t]
    pairs = confusion([y for y, _ in wrong], [t for _, t in wrong])
    mistakes = sorted(((n, a, b) for (a, b), n in pairs.items() if a != b), reverse=True)
    only_o_zero = sum(all({a, b} == {"O", "0"} for a, b in zip(y, t) if a != b) and len(y) == len(t)
                      for y, t in wrong)
    return {"wrong_readings": len(wrong), "top_confusions": [f"{a}->{b}: {n}" for n, a, b in mistakes[:12]],
            "wrong_only_by_O_vs_0": only_o_zero, "wrong_length": sum(len(y) != len(t) for y, t in wrong)}


def stage_one(args: argparse.Namespace, val_set: Path) -> Path:
    """The 32x120 crnn; a finished run is reused unless --resume --epochs moves its limit."""
    from captchalab.training import train

    run = args.work / "run"
    started = (run / "checkpoints" / "state.json").exists()
    if (run / "model.keras").exists() and not (args.resume and args.epochs):
        return run
    train_set = render_set(args.work / f"train-{args.train_count}", args.train_count, SEEDS["train"])
    if args.resume and started:
        return train(train_set, resume=run, epochs=args.epochs)
    return train(train_set, val=val_set, out=run, epochs=args.epochs or 40, charset=CHARSET, case_insensitive=True,
                 force=True, overrides=[*RECIPE, f"train.max_cpu_minutes={args.max_cpu_minutes}"])


def fine_tune(args: argparse.Namespace, stage: int, init: Path, val_set: Path) -> Path:
    """Stage ``stage`` (2, 3, ...): train --init the previous stage on its own fresh set."""
    name, seed, recipe, default_epochs = STAGES[stage - 2]
    return _fine_tune_run(args, args.work / name, seed, recipe, init, val_set, default_epochs,
                          args.stage_epochs.get(stage))


def _fine_tune_run(args: argparse.Namespace, run: Path, seed: str, recipe: list[str], init: Path, val_set: Path,
                   default_epochs: int, epochs: int | None = None) -> Path:
    """Reused when finished (unless --resume with a new epoch limit), resumed when killed, started otherwise."""
    from captchalab.training import train

    if (run / "model.keras").exists() and not (args.resume and epochs):
        return run
    train_set = render_set(_train_folder(args, seed), args.train_count, SEEDS[seed])
    if (run / "checkpoints" / "state.json").exists():
        return train(train_set, resume=run, epochs=epochs)
    return train(train_set, val=val_set, out=run, epochs=epochs or default_epochs, charset=CHARSET,
                 case_insensitive=True, init=init,
                 overrides=[*recipe, f"train.max_cpu_minutes={args.max_cpu_minutes}"])


def _train_folder(args: argparse.Namespace, seed: str) -> Path:
    return args.work / ("train-wide" if seed == "wide" else f"train-{seed}")  # stage 2's name predates stage 3


def _stage_epochs(text: str) -> dict[int, int]:
    """``"2:15,3:10"`` -> {2: 15, 3: 10}."""
    pairs = (item.split(":") for item in text.split(",") if item)
    return {int(stage): int(epochs) for stage, epochs in pairs}


def ablate_augment(args: argparse.Namespace, val_set: Path, test_set: Path) -> dict:
    """The last stage again, from the same start on the same images, with augmentation on:
    what switching it off was worth, apart from the fresh images and the lower rate."""
    import captchalab

    _, seed, recipe, epochs = STAGES[-1]
    previous = args.work / (STAGES[-2][0] if len(STAGES) > 1 else "run")
    changed = [item for item in recipe if not item.startswith("train.augment=")] + ["train.augment=true"]
    run = _fine_tune_run(args, args.work / "ablation-augment", seed, changed, previous, val_set, epochs)
    return {"stage": len(STAGES) + 1, "recipe": changed, **_summary(run),
            "test": captchalab.evaluate(run / "model.onnx", test_set, save=False), "machine": machine_info()}


def _summary(run: Path) -> dict:
    history = _history(run)
    return {"epochs_run": len(history), "train_cpu_seconds": _cpu(run),
            "best_val_sequence_accuracy": max(e["val_sequence_accuracy"] for e in history)}


def _history(run: Path) -> list[dict]:
    return json.loads((run / "history.json").read_text())


def _cpu(run: Path) -> float:
    return float(json.loads((run / "metrics.json").read_text()).get("train_cpu_seconds", 0.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bundled")
    parser.add_argument("--train-count", type=int, default=32000)
    parser.add_argument("--test-count", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=None,
                        help="maximum epochs (default 40); with --resume, the run's new limit (at or below the "
                             "epochs done: finish now from the best epoch)")
    parser.add_argument("--stage-epochs", type=_stage_epochs, default={},
                        help="maximum epochs of later stages, e.g. 2:12,3:8 (the defaults); with --resume, "
                             "a stage's new limit")
    parser.add_argument("--max-cpu-minutes", type=float, default=150.0, help="stop a stage after the epoch past this")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--earlier-cpu-seconds", type=float, default=0.0,
                        help="CPU time of an earlier training process that did not record it (utime+stime from "
                             "/proc/PID/stat, read just before stopping it); added to the run's own count")
    parser.add_argument("--measure-only", action="store_true", help="print the shipped model's scores; no training")
    parser.add_argument("--ablate-augment", action="store_true",
                        help="train the last stage again with augmentation on (into WORK/ablation-augment) and "
                             "add its scores to bench/results/bundled.json; the shipped model is not touched")
    args = parser.parse_args()

    import captchalab

    started = time.time()
    test_set = render_set(args.work / "test", args.test_count, SEEDS["test"])
    if args.measure_only:  # prints, writes nothing; needs only the test set
        result = captchalab.evaluate(BUNDLED / "model.onnx", test_set, save=False)
        print(json.dumps({"metrics": result, "errors": error_analysis(test_set)}, indent=2))
        return
    val_set = render_set(args.work / "val", 2000, SEEDS["val"])
    if args.ablate_augment:
        out = ROOT / "bench" / "results" / "bundled.json"
        record = json.loads(out.read_text())
        record["ablation_last_stage_with_augmentation"] = ablate_augment(args, val_set, test_set)
        out.write_text(json.dumps(record, indent=2) + "\n")
        print(json.dumps(record["ablation_last_stage_with_augmentation"]["test"], indent=2))
        return
    runs = [stage_one(args, val_set)]
    for stage in range(2, len(STAGES) + 2):
        runs.append(fine_tune(args, stage, runs[-1], val_set))
    first, run = runs[0], runs[-1]
    BUNDLED.mkdir(exist_ok=True)
    for name in ("model.onnx", "config.json"):
        shutil.copy2(run / name, BUNDLED / name)
    result = captchalab.evaluate(BUNDLED / "model.onnx", test_set, save=False)
    report = {
        "test_set": {"count": args.test_count, "seed": SEEDS["test"], "length": LENGTH, "size": str(SIZE),
                     "charset": CHARSET, "lowercase_share": LOWERCASE_SHARE},
        "train_count": args.train_count,
        "recipe": RECIPE,
        "epochs_run": len(_history(first)),
        "stages": [{"recipe": recipe, "train_seed": SEEDS[seed], **_summary(later)}
                   for (_, seed, recipe, _), later in zip(STAGES, runs[1:])],
        "train_cpu_seconds": round(args.earlier_cpu_seconds + sum(_cpu(r) for r in runs), 1),
        "earlier_cpu_seconds": args.earlier_cpu_seconds,
        "wall_seconds_this_invocation": round(time.time() - started, 1),
        "onnx_bytes": (BUNDLED / "model.onnx").stat().st_size,
        "metrics": result,
        "errors": error_analysis(test_set),
        "machine": machine_info(),
    }
    out = ROOT / "bench" / "results" / "bundled.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["metrics"], indent=2))


if __name__ == "__main__":
    main()
