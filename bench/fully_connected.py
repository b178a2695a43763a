"""The original question, measured: can a fully-connected network read 5-character captchas?

Every number in docs/fully-connected.md comes from this script. Stages, each appending one
record per configuration to bench/results/fully_connected.json (a rerun of the same
configuration replaces its record), so the expensive ones can run separately:

- ``asker``     the asker's report searched for: TF1-tutorial settings, one change at a time from
                ``diagnosis.ASKER``, each with position 1 alone, position 2 alone, positions 1+2 and
                all five in the summed loss, several seeds, diagnose's budget (8 epochs of 10k).
- ``mechanism`` for ``diagnosis.ASKER`` with 1, 2 and 5 heads: live first-layer ReLUs, and how much
                of each Adam step goes along position 1's own gradient, over the first steps; and
                how far each character's left edge moves between images (segmentation's boxes).
- ``diagnose``  ``captchalab diagnose`` with its defaults on a fresh 10k set (plot to docs/).
- ``loss``      MSE vs summed vs averaged per-position cross-entropy (the diagnose harness).
- ``network``   MLP depth, width, batch normalization, input inversion and pooling.
- ``positions`` the same models on characters at fixed positions vs the usual jitter.
- ``size``      mlp / cnn / crnn / segment trained with the default command (--epochs caps it)
                on 2k, 10k and 50k images; sequence, char and per-position accuracy, CER, CPU
                time, and the shape of the errors: edit distance vs positional (Hamming)
                errors, which differ when a reading is shifted (CTC has no fixed alignment).
- ``acceptance`` mlp with the default command (no --epochs) on 50k images; a killed run is
                resumed where it stopped (``captchalab train --resume``).
- ``snapshot``  while ``acceptance`` trains: its best checkpoint so far on the test set.
- ``report``    markdown tables of everything recorded so far.

Data: generated once with ``captchalab generate`` (seeded) into --data; the test set is a
separate fresh seed. Examples:

    nice -n 10 .venv/bin/python bench/fully_connected.py acceptance
    nice -n 10 .venv/bin/python bench/fully_connected.py size --sizes 2000 --epochs 15
    nice -n 10 .venv/bin/python bench/fully_connected.py loss network positions --models mlp,segment --epochs 8
    .venv/bin/python bench/fully_connected.py report
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from machine import machine_info

ROOT = Path(__file__).resolve().parent.parent
RESULT = ROOT / "bench" / "results" / "fully_connected.json"
TRAIN_SEED, TEST_SEED, DIAGNOSE_SEED = 101, 202, 303
REDO_SINCE = ""  # records made before this time are measured again (--redo)
NOTE = "CPU shared with other engineers' jobs on a 2-core machine: wall times are noisy, CPU times less so"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stages", nargs="+", choices=sorted(STAGES))
    parser.add_argument("--data", type=Path, default=Path("/tmp/captchalab-fc"), help="generated data lives here")
    parser.add_argument("--sizes", default="2000,10000,50000")
    parser.add_argument("--models", default="mlp,cnn,crnn,segment")
    parser.add_argument("--epochs", type=int, default=0, help="cap for the size stage (0: the default command)")
    parser.add_argument("--test-count", type=int, default=5000)
    parser.add_argument("--harness-images", type=int, default=10000, help="images for loss/network/positions")
    parser.add_argument("--harness-epochs", type=int, default=10)
    parser.add_argument("--doc", type=Path, default=None, help="report: write the tables into this markdown file")
    parser.add_argument("--seeds", type=int, default=2, help="asker and positions stages: seeds per cell")
    parser.add_argument("--redo", metavar="TIME", help="measure again what was recorded before TIME "
                        "(ISO, e.g. 2026-12-07T11:00); a killed rerun given the same TIME resumes")
    parser.add_argument("--shard", default="0/1", help="asker stage: K/N runs every N-th cell from the K-th, so "
                        "N processes can share the search")
    args = parser.parse_args()
    global REDO_SINCE
    # as record() writes its times, so that they compare as strings
    REDO_SINCE = datetime.fromisoformat(args.redo).strftime("%Y-%m-%dT%H:%M:%S") if args.redo else ""
    for stage in args.stages:
        STAGES[stage](args)


# --- data -------------------------------------------------------------------------------------


def dataset(args: argparse.Namespace, name: str, count: int, seed: int, positions: str = "jittered") -> Path:
    """A generated set, made once; ``count`` may be a prefix of a larger set of the same seed."""
    from captchalab.data.synthetic import generate

    folder = args.data / name
    if not (folder / "labels.csv").exists():
        print(f"generating {folder} ({count} images, seed {seed}, {positions})", file=sys.stderr, flush=True)
        if positions == "fixed":
            generate_fixed(folder, count, seed)
        else:
            generate(folder, count, seed=seed)
    return folder


def prefix(folder: Path, count: int) -> Path:
    """The first ``count`` rows of a set, as a CSV beside its labels (paths stay relative)."""
    with open(folder / "labels.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    if count > len(rows) - 1:
        raise SystemExit(f"{folder} has {len(rows) - 1} images, fewer than {count}")
    target = folder / f"first_{count}.csv"
    if not target.exists():
        with open(target, "w", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerows(rows[: count + 1])
    return target


def train_set(args: argparse.Namespace, count: int) -> Path:
    return prefix(dataset(args, "train50k", 50000, TRAIN_SEED), count)


def test_set(args: argparse.Namespace) -> Path:
    return dataset(args, f"test{args.test_count}", args.test_count, TEST_SEED)


def generate_fixed(folder: Path, count: int, seed: int) -> None:
    """Like ``captchalab generate`` but every character centred in its own fifth of the image.

    Same generator, fonts, rotation, warping, noise and colours; only the placement differs
    (no random spaces, no overlap, no squeezing of a too-wide text).
    """
    import random

    from captcha import image as captcha_image
    from PIL import Image

    from captchalab.charset import Charset
    from captchalab.data import synthetic

    class FixedSlots(captcha_image.ImageCaptcha):
        def create_captcha_image(self, chars: str, color: Any, background: Any) -> Image.Image:
            image = captcha_image.createImage("RGB", (self._width, self._height), background)
            draw = captcha_image.Draw(image)
            slot = self._width / len(chars)
            for index, char in enumerate(chars):
                glyph = self._draw_character(char, draw, color)
                glyph.thumbnail((int(slot), self._height))
                w, h = glyph.size
                mask = glyph.convert("L").point(self.lookup_table)
                image.paste(glyph, (int(index * slot + (slot - w) / 2), (self._height - h) // 2), mask)
            return image

    renderer = synthetic.Renderer(Charset.parse("0-9A-Z"), 5, synthetic.DEFAULT_SIZE, seed)
    renderer._generator = FixedSlots(160, 60, None, synthetic._font_sizes_for(60))
    folder.mkdir(parents=True, exist_ok=False)
    rows = []
    for i in range(count):
        text = renderer.label()
        with synthetic._seeded(random.Random(renderer.rng.getrandbits(64))):
            image = renderer._generator.generate_image(text)
        image.save(folder / f"{i:06d}.png")
        rows.append((f"{i:06d}.png", text))
    with open(folder / "labels.csv", "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("file", "label"), *rows])


# --- records ----------------------------------------------------------------------------------


def record(stage: str, key: dict[str, Any], values: dict[str, Any]) -> None:
    """Append (or replace) one configuration's result in the results file."""
    import fcntl

    RESULT.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULT.with_suffix(".lock"), "w") as lock:  # stages may run in parallel processes
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = json.loads(RESULT.read_text()) if RESULT.exists() else {"records": []}
        data["records"] = [r for r in data["records"] if not (r["stage"] == stage and r["key"] == key)]
        data["records"].append({"stage": stage, "key": key, **values, "machine": machine_info(), "note": NOTE,
                                "recorded": time.strftime("%Y-%m-%dT%H:%M:%S")})
        RESULT.write_text(json.dumps(data, indent=1) + "\n")
    print(json.dumps({"stage": stage, **key, **{k: v for k, v in values.items() if k != "history"}}), flush=True)


def done(stage: str, key: dict[str, Any]) -> bool:
    """Recorded already (with --redo: since the given time, so a killed rerun resumes)."""
    data = json.loads(RESULT.read_text()) if RESULT.exists() else {"records": []}
    return any(r["stage"] == stage and r["key"] == key and r["recorded"] >= REDO_SINCE for r in data["records"])


def train_and_test(data: Path, test: Path, model: str, out: Path, epochs: int, overrides: list[str]) -> dict:
    """captchalab train (the default command plus ``overrides``), then a test-set evaluation."""
    from captchalab import metrics
    from captchalab.data.folder import load_dataset
    from captchalab.inference.predictor import Predictor
    from captchalab.training import train

    started_wall, started_cpu = time.time(), time.process_time()
    if (out / "checkpoints" / "state.json").exists() and not (out / "model.onnx").exists():
        print(f"resuming {out}", file=sys.stderr, flush=True)  # a run killed earlier goes on where it stopped
        folder = train(data, resume=out, quiet=True)
    else:
        folder = train(data, model=model, out=out, epochs=epochs or None, overrides=overrides, force=True,
                       quiet=True, init=None)  # every architecture from random weights, as in the question
    train_wall, train_cpu = time.time() - started_wall, time.process_time() - started_cpu
    train_cpu = json.loads((folder / "metrics.json").read_text()).get("train_cpu_seconds", train_cpu)
    predictor = Predictor.load(folder)
    test_data = load_dataset(test, predictor.config.charset, predictor.config.image)
    began = time.process_time()
    texts = [r[0].text for r in predictor.predict_pixels(test_data.pixels)]
    infer_cpu = time.process_time() - began
    summary = metrics.summarize(texts, test_data.labels, 5)
    history = json.loads((folder / "history.json").read_text())
    return {**summary, "train_cpu_seconds": round(train_cpu, 1),
            "train_wall_seconds_last_process": round(train_wall, 1),
            "epochs_run": len(history), "test_cpu_ms_per_image": round(1000 * infer_cpu / len(texts), 3),
            "errors": error_shapes(texts, test_data.labels), "run": str(folder), "train_config": _train_config(folder),
            "history": [{k: h[k] for k in ("epoch", "loss", "val_char_accuracy")} for h in history]}


def _train_config(folder: Path) -> dict[str, Any] | None:
    """The run's training settings as its config.json recorded them (the defaults changed over time)."""
    try:
        return json.loads((folder / "config.json").read_text())["train"]
    except (OSError, ValueError, KeyError):
        return None


def _batch(record: dict) -> str:
    """From the record alone (its run folder lies outside the repository and may be gone): the report
    renders the same from bench/results/fully_connected.json on any checkout."""
    config = record.get("train_config") or {}
    return f"{config['batch_size']}" if "batch_size" in config else "?"


def _precise_bn(record: dict) -> str:
    """A recorded config without the key predates the setting (a2a5d1b): that run trained without it."""
    config = record.get("train_config")
    return "?" if config is None else "yes" if config.get("precise_bn", False) else "no"


def error_shapes(texts: list[str], labels: tuple[str, ...]) -> dict[str, Any]:
    """Edit distance vs positional (Hamming) errors over the wrong readings."""
    from captchalab.metrics import edit_distance

    wrong = [(t, y) for t, y in zip(texts, labels) if t != y]
    hamming = [sum(a != b for a, b in zip(t.ljust(len(y)), y)) + max(0, len(t) - len(y)) for t, y in wrong]
    edits = [edit_distance(t, y) for t, y in wrong]
    return {"wrong": len(wrong), "mean_edit_distance": float(np.mean(edits)) if wrong else 0.0,
            "mean_positional_errors": float(np.mean(hamming)) if wrong else 0.0,
            "length_errors": sum(len(t) != len(y) for t, y in wrong),
            "shifted": sum(h > e for h, e in zip(hamming, edits))}


# --- stages -----------------------------------------------------------------------------------


def stage_acceptance(args: argparse.Namespace) -> None:
    """mlp with every default (no --epochs) on 50k images; resumes a killed run where it stopped."""
    key = {"model": "mlp", "train_images": 50000, "epochs_cap": 0}
    if not done("size", key):
        out = args.data / "runs" / "size-mlp-50000-default"
        record("size", key, train_and_test(train_set(args, 50000), test_set(args), "mlp", out, 0, []))


def stage_snapshot(args: argparse.Namespace) -> None:
    """The unfinished acceptance run's best checkpoint so far, on the test set (run it while training)."""
    from captchalab import metrics, runs
    from captchalab.data.folder import load_dataset
    from captchalab.models.build import build_model
    from captchalab.training import predict_texts

    out = args.data / "runs" / "size-mlp-50000-default"
    state = json.loads((out / "checkpoints" / "state.json").read_text())
    config = runs.read_config(out)
    model = build_model(config)
    model.load_weights(out / "checkpoints" / "best.weights.h5")
    test_data = load_dataset(test_set(args), config.charset, config.image)
    texts = [p.text for p in predict_texts(model, config, test_data.pixels)]
    best = max(state["history"], key=lambda h: (h["val_sequence_accuracy"], -h["val_loss"]))
    record("snapshot", {"model": "mlp", "train_images": 50000, "epochs_cap": 0, "after_epoch": state["epoch"]},
           {**metrics.summarize(texts, test_data.labels, 5), "best_epoch": best["epoch"],
            "history": [{k: h[k] for k in ("epoch", "loss", "val_char_accuracy")} for h in state["history"]]})


def stage_size(args: argparse.Namespace) -> None:
    test = test_set(args)
    for size in (int(s) for s in args.sizes.split(",")):
        data = train_set(args, size)
        for model in args.models.split(","):
            key = {"model": model, "train_images": size, "epochs_cap": args.epochs}
            if done("size", key):
                continue
            # a capped run has a folder of its own: it must never resume (or clobber) the default command's
            out = args.data / "runs" / (f"size-{model}-{size}" + (f"-cap{args.epochs}" if args.epochs else ""))
            record("size", key, train_and_test(data, test, model, out, args.epochs, []))


_LOADED: dict[Path, Any] = {}


def _loaded(source: Path) -> Any:
    """The dataset at ``source``, loaded once (stages run many setups on the same images)."""
    from captchalab.data.folder import load_dataset

    if source not in _LOADED:
        _LOADED.clear()
        _LOADED[source] = load_dataset(source)
    return _LOADED[source]


def harness_run(args: argparse.Namespace, stage: str, key: dict[str, Any], folder: Path, setup: Any,
                hidden: tuple[int, ...] = (256, 256), seed: int = 0) -> None:
    """One ``captchalab diagnose`` setup on the first ``args.harness_images`` images of ``folder``."""
    from captchalab.diagnosis import DiagnoseConfig, run_setup

    if done(stage, key):
        return
    config = DiagnoseConfig(limit=args.harness_images, epochs=args.harness_epochs, hidden=hidden, seed=seed)
    data = _loaded(prefix(folder, args.harness_images))

    targets = data.charset.encode_batch(data.labels, data.max_length)
    outcome = run_setup(setup, data.pixels, targets, data.charset.num_classes, config)
    chance = 1 / len(data.charset.symbols)
    record(stage, key, {"per_position": outcome.final, "mean": outcome.mean, "learned": outcome.learned(chance),
                        "chance": chance, "history": outcome.history, "losses": outcome.losses,
                        "dead_units": outcome.dead_units, "cpu_seconds": round(outcome.cpu_seconds, 1),
                        "images": args.harness_images, "epochs": args.harness_epochs,
                        "validation": "first 1/6 of the images held out", "setup": asdict(setup),
                        "hidden": list(hidden)})


def stage_loss(args: argparse.Namespace) -> None:
    from dataclasses import replace

    from captchalab.diagnosis import FIX

    folder = dataset(args, "train50k", 50000, TRAIN_SEED)
    for optimizer, rate in (("adam", 1e-3), ("sgd", 0.5)):
        for loss in ("mse", "sum", "mean"):
            setup = replace(FIX, name=f"{loss}-{optimizer}", loss=loss, optimizer=optimizer, learning_rate=rate)
            harness_run(args, "loss", {"loss": loss, "optimizer": optimizer, "learning_rate": rate}, folder, setup)


NETWORKS = [  # (hidden, batch_norm, inputs, pool)
    ((256,), False, "inverted", 4), ((256, 256), False, "inverted", 4), ((1024, 512), False, "inverted", 4),
    ((512, 512, 512), False, "inverted", 4), ((256, 256), True, "inverted", 4), ((1024, 512), True, "inverted", 4),
    ((256, 256), False, "scaled", 4), ((256, 256), True, "scaled", 4), ((256, 256), False, "inverted", 2),
    ((256, 256), False, "inverted", 1),
]


def stage_network(args: argparse.Namespace) -> None:
    from dataclasses import replace

    from captchalab.diagnosis import FIX

    folder = dataset(args, "train50k", 50000, TRAIN_SEED)
    for hidden, batch_norm, inputs, pool in NETWORKS:
        key = {"hidden": list(hidden), "batch_norm": batch_norm, "inputs": inputs, "pool": pool}
        setup = replace(FIX, name="network", batch_norm=batch_norm, inputs=inputs, pool=pool)
        harness_run(args, "network", key, folder, setup, hidden)


def stage_positions(args: argparse.Namespace) -> None:
    from dataclasses import replace

    from captchalab.diagnosis import ASKER, FIX

    folders = {"jittered": dataset(args, "train50k", 50000, TRAIN_SEED),
               "fixed": dataset(args, "fixed10k", 10000, TRAIN_SEED, positions="fixed")}
    for placement, folder in folders.items():  # --seeds of each: the asker's setup learns on some seeds only
        for setup, seed in itertools.product((FIX, replace(FIX, name="fix+batchnorm", batch_norm=True), ASKER),
                                             range(args.seeds)):
            # seed 0's key has no seed: the records made before --seeds applied here keep matching
            key = {"placement": placement, "setup": setup.name, **({"seed": seed} if seed else {})}
            harness_run(args, "positions", key, folder, setup, seed=seed)
    test = dataset(args, "fixed-test2000", 2000, TEST_SEED, positions="fixed")
    for model in args.models.split(","):
        for placement, folder in folders.items():
            key = {"placement": placement, "model": model, "train_images": args.harness_images,
                   "epochs_cap": args.epochs}
            if done("positions", key):
                continue
            out = args.data / "runs" / f"positions-{model}-{placement}"
            test_folder = test if placement == "fixed" else test_set(args)
            record("positions", key, train_and_test(prefix(folder, args.harness_images), test_folder, model, out,
                                                    args.epochs, []))


def stage_diagnose(args: argparse.Namespace) -> None:
    """``captchalab diagnose`` with its defaults on a fresh 10k set; the plot goes to docs/."""
    from captchalab.diagnosis import default_setups, diagnose

    recorded = [r for r in _records_by_stage().get("diagnose", []) if r["key"]["seed"] == DIAGNOSE_SEED]
    if recorded and recorded[0]["recorded"] >= REDO_SINCE and \
            {s.name for s in default_setups()} <= {run["setup"]["name"] for run in recorded[0]["runs"]}:
        return  # a run with every current setup is recorded (since --redo's time)
    folder = dataset(args, "diagnose10k", 10000, DIAGNOSE_SEED)
    started = time.process_time()
    result = diagnose(folder, plot=ROOT / "docs" / "fully-connected-diagnose.png")
    result["plot"] = "docs/fully-connected-diagnose.png"
    record("diagnose", {"data": "fresh 10k set", "seed": DIAGNOSE_SEED},
           {**result, "process_cpu_seconds": round(time.process_time() - started, 1)})


def stage_report(args: argparse.Namespace) -> None:
    """Markdown tables of everything measured so far; with --doc, written between the doc's
    ``<!-- name -->`` and ``<!-- /name -->`` markers."""
    import contextlib
    import io

    sections: dict[str, str] = {}
    for name, render in REPORTS.items():
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            render(_records_by_stage())
        sections[name] = buffer.getvalue().strip()
        print(f"\n<!-- {name} -->\n{sections[name]}")
    if args.doc:
        text = args.doc.read_text(encoding="utf-8")
        for name, body in sections.items():
            start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
            if start in text and end in text:
                text = text[: text.index(start) + len(start)] + "\n" + body + "\n" + text[text.index(end):]
        args.doc.write_text(text, encoding="utf-8")
        plot_asker(_records_by_stage(), args.doc.parent / "fully-connected-asker.png")


def _records_by_stage() -> dict[str, list[dict]]:
    records = json.loads(RESULT.read_text())["records"] if RESULT.exists() else []
    by_stage: dict[str, list[dict]] = {}
    for r in records:
        by_stage.setdefault(r["stage"], []).append(r)
    return by_stage


def _pos(values: list[float]) -> str:
    return " | ".join(f"{v:.3f}" for v in values)


# --- the asker's report -------------------------------------------------------------------------

ASKER_CHANGES: dict[str, dict[str, Any]] = {  # one change at a time from diagnosis.ASKER, cheapest first
    "as TF1 tutorials": {},
    "inputs /255": {"inputs": "scaled"},
    "Adam 1e-3": {"learning_rate": 1e-3},
    "SGD 1e-3": {"optimizer": "sgd", "learning_rate": 1e-3},
    "weights stddev 0.01": {"init_std": 0.01},
    "batch 128": {"batch_size": 128},
    "hidden 1024": {"hidden": (1024,)},
}
ASKER_LOSSES = {"position 1": (1,), "position 2": (2,), "positions 1+2": (1, 2), "all five": ()}
ASKER_EPOCHS = 8  # diagnose's default budget


def _diagnose_data(args: argparse.Namespace) -> Any:
    return _loaded(prefix(dataset(args, "diagnose10k", 10000, DIAGNOSE_SEED), args.harness_images))


def stage_asker(args: argparse.Namespace) -> None:
    """Every change x loss x seed cell of the search, shared between processes by --shard."""
    from dataclasses import replace

    from captchalab.diagnosis import ASKER, DiagnoseConfig, run_setup

    shard, shards = (int(v) for v in args.shard.split("/"))
    # The tutorials' settings: every loss, --seeds seeds. Each change from them: both halves of the report
    # (position 1 alone, all five), seed 0 only: what a 2-core machine affords.
    center = "as TF1 tutorials"
    cells = [(center, lo, seed) for seed in range(args.seeds) for lo in ASKER_LOSSES]
    cells += [(c, lo, 0) for c in ASKER_CHANGES if c != center for lo in ("position 1", "all five")]
    for change, loss, seed in cells[shard::shards]:
        key = {"change": change, "loss": loss, "seed": seed}
        if done("asker", key):
            continue
        data = _diagnose_data(args)
        setup = replace(ASKER, name=f"{change}: {loss}", positions=ASKER_LOSSES[loss], **ASKER_CHANGES[change])
        config = DiagnoseConfig(limit=args.harness_images, epochs=ASKER_EPOCHS, seed=seed)
        targets = data.charset.encode_batch(data.labels, data.max_length)
        outcome = run_setup(setup, data.pixels, targets, data.charset.num_classes, config)
        chance = 1 / len(data.charset.symbols)
        record("asker", key, {"trained": outcome.trained, "per_position": outcome.final, "chance": chance,
                              "history": outcome.history, "losses": outcome.losses, "alive": outcome.alive,
                              "steps_per_epoch": outcome.steps_per_epoch, "cpu_seconds": round(outcome.cpu_seconds, 1),
                              "images": args.harness_images, "epochs": ASKER_EPOCHS, "setup": asdict(setup)})


def stage_mechanism(args: argparse.Namespace) -> None:
    """Live ReLUs and position 1's share of each Adam step, with 1, 2 and 5 heads; characters' left edges."""
    data = _diagnose_data(args)
    targets = data.charset.encode_batch(data.labels, data.max_length)
    if not done("mechanism", {"measure": "left edges"}):
        record("mechanism", {"measure": "left edges"}, left_edges(data.pixels[:2000]))
    for loss in ("position 1", "positions 1+2", "all five"):
        key = {"measure": "gradients", "loss": loss}
        if not done("mechanism", key):
            record("mechanism", key, head_gradients(data, targets, ASKER_LOSSES[loss]))


def left_edges(pixels: np.ndarray) -> dict[str, Any]:
    """Where each character starts (segmentation's boxes, in pixels): its spread over images."""
    from captchalab.segmentation import character_boxes, ink_map, ink_mask

    starts = []
    for image in pixels:
        ink = ink_map(image)
        starts.append([a for a, _ in character_boxes(ink_mask(ink), 5)])
    starts_array = np.array(starts, dtype=float)
    return {"images": len(pixels), "mean": starts_array.mean(0).round(1).tolist(),
            "std": starts_array.std(0).round(1).tolist(),
            "p5_p95": np.percentile(starts_array, [5, 95], axis=0).round(0).T.tolist()}


def head_gradients(data: Any, targets: np.ndarray, positions: tuple[int, ...], steps: int = 600,
                   every: int = 25) -> dict[str, Any]:
    """Train diagnosis.ASKER with ``positions`` in the loss; at probe steps, each head's gradient on the
    first layer's weights (a fixed batch of 256 training images) and the live ReLUs."""
    from dataclasses import replace

    import keras
    import tensorflow as tf

    from captchalab.diagnosis import ASKER, build_network, prepare_inputs, train_step

    keras.utils.set_random_seed(0)
    x = prepare_inputs(data.pixels, ASKER)
    x_fit, y_fit, x_val = x[len(x) // 6:], targets[len(x) // 6:], x[: len(x) // 6]
    slots, classes = targets.shape[1], data.charset.num_classes
    model, _, first_relu = build_network(ASKER, x.shape[1], slots * classes, ASKER.hidden)
    step_once = train_step(model, keras.optimizers.Adam(ASKER.learning_rate), replace(ASKER, positions=positions),
                           slots, classes)  # the same step diagnose trains with
    used = [p - 1 for p in positions] or list(range(slots))
    probe_x, probe_y = tf.constant(x_fit[:256]), tf.constant(y_fit[:256])
    kernel = model.trainable_variables[0]

    def per_head() -> np.ndarray:
        with tf.GradientTape(persistent=True) as tape:
            logits = tf.reshape(model(probe_x, training=True), (-1, slots, classes))
            ce = tf.nn.softmax_cross_entropy_with_logits(labels=tf.one_hot(probe_y, classes), logits=logits)
            heads = [tf.reduce_sum(ce[:, k]) for k in range(slots)]
        grads = np.stack([np.asarray(tape.gradient(h, kernel)).ravel() for h in heads])
        del tape
        return grads

    rng = np.random.default_rng(0)
    rows = []
    for step in range(steps + 1):
        if step % every == 0:
            grads = per_head()
            total = grads[used].sum(0)
            alive = float(np.mean((np.asarray(first_relu(x_val, training=False)) > 0).any(axis=0)))
            rows.append({"step": step, "alive": alive,
                         "norms": np.linalg.norm(grads, axis=1).round(4).tolist(),
                         "cos_position1_total": _cos(grads[0], total),
                         "cos_between_heads": [_cos(grads[0], grads[k]) for k in range(1, slots)]})
        batch = rng.integers(0, len(x_fit), ASKER.batch_size)
        step_once(tf.constant(x_fit[batch]), tf.constant(y_fit[batch]))
    return {"positions": list(positions), "probe_images": 256, "rows": rows}


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    return round(float(a @ b) / norm, 4) if norm else 0.0


HEAD = "pos 1 | pos 2 | pos 3 | pos 4 | pos 5 |"


def report_diagnose(by_stage: dict[str, list[dict]]) -> None:
    for r in by_stage.get("diagnose", []):
        print(f"{r['images']} images, {r['process_cpu_seconds']} CPU seconds for all {len(r['runs'])} runs; chance "
              f"{r['chance']:.3f}.\n\n| setup | what | {HEAD} mean | first-layer std at init | dead ReLUs |\n|"
              + "---|" * 10)
        for run in r["runs"]:
            print(f"| {run['setup']['name']} | {run['setup']['about']} | {_pos(run['per_position'])} | "
                  f"{run['mean']:.3f} | {run['init_activation_std']:.3g} | {run['dead_units']:.0%} |")
        print("\nVerdict, as `diagnose` prints it (regenerated from these runs by the current code):\n\n"
              + "\n".join(f"> {line}  " for line in _verdict(r)))


def _verdict(record: dict) -> list[str]:
    from captchalab.diagnosis import Outcome, Setup, verdict

    def setup(fields: dict) -> Setup:  # JSON gave lists where the dataclass holds tuples
        return Setup(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})

    runs = {run["setup"]["name"]: Outcome(setup(run["setup"]), run["history"], run["losses"],
                                          run["init_activation_std"], run["dead_units"], run["cpu_seconds"],
                                          run.get("alive", []), run.get("steps_per_epoch", 0))
            for run in record["runs"]}
    return verdict(runs, record["chance"])


def report_loss(by_stage: dict[str, list[dict]]) -> None:
    print(f"| optimizer | loss | {HEAD} mean | dead ReLUs | CPU s |\n|" + "---|" * 10)
    for r in by_stage.get("loss", []):
        k = r["key"]
        print(f"| {k['optimizer']} (lr {k['learning_rate']}) | {k['loss']} | {_pos(r['per_position'])} | "
              f"{r['mean']:.3f} | {r['dead_units']:.0%} | {r['cpu_seconds']} |")


def report_network(by_stage: dict[str, list[dict]]) -> None:
    print(f"| hidden | batch norm | inputs | pool | {HEAD} mean | CPU s |\n|" + "---|" * 11)
    for r in by_stage.get("network", []):
        k = r["key"]
        print(f"| {k['hidden']} | {k['batch_norm']} | {k['inputs']} | {k['pool']} | {_pos(r['per_position'])} | "
              f"{r['mean']:.3f} | {r['cpu_seconds']} |")


def report_positions(by_stage: dict[str, list[dict]]) -> None:
    print(f"| placement | model | {HEAD} mean (char acc) | sequence acc |\n|" + "---|" * 9)
    rows = sorted(by_stage.get("positions", []), key=lambda r: (
        "setup" not in r["key"], r["key"].get("model", ""), r["key"]["placement"] != "jittered",
        r["key"].get("setup", ""), r["key"].get("seed", 0), r["key"].get("epochs_cap", 0)))
    for r in rows:
        k = r["key"]
        if "setup" in k:
            print(f"| {k['placement']} | harness: {k['setup']}, seed {k.get('seed', 0)} | {_pos(r['per_position'])} | "
                  f"{r['mean']:.3f} | - |")
        else:
            print(f"| {k['placement']} | {k['model']} (train, {r['epochs_run']} epochs, batch {_batch(r)}) | "
                  f"{_pos(r['per_position_accuracy'])} | {r['char_accuracy']:.3f} | {r['sequence_accuracy']:.3f} |")


def _size_rows(by_stage: dict[str, list[dict]]) -> list[dict]:
    return sorted(by_stage.get("size", []), key=lambda r: (r["key"]["train_images"], r["key"]["model"],
                                                             r["key"]["epochs_cap"] or 999))


def report_size(by_stage: dict[str, list[dict]]) -> None:
    print(f"| model | train images | epochs run (cap) | batch | precise BN | sequence acc | char acc | CER | {HEAD} "
          "train CPU s | test CPU ms/image |\n|" + "---|" * 15)
    for r in _size_rows(by_stage):
        k = r["key"]
        print(f"| {k['model']} | {k['train_images']} | {r['epochs_run']} ({k['epochs_cap'] or 'none'}) | {_batch(r)} | "
              f"{_precise_bn(r)} | "
              f"{r['sequence_accuracy']:.3f} | {r['char_accuracy']:.3f} | {r['cer']:.3f} | "
              f"{_pos(r['per_position_accuracy'])} | {r['train_cpu_seconds'] or '-'} | {r['test_cpu_ms_per_image']} |")


def report_snapshot(by_stage: dict[str, list[dict]]) -> None:
    print(f"| default run after epoch | best epoch | sequence acc | char acc | CER | {HEAD}\n|" + "---|" * 10)
    for r in by_stage.get("snapshot", []):
        print(f"| {r['key']['after_epoch']} | {r['best_epoch']} | {r['sequence_accuracy']:.3f} | "
              f"{r['char_accuracy']:.3f} | {r['cer']:.3f} | {_pos(r['per_position_accuracy'])} |")


def report_errors(by_stage: dict[str, list[dict]]) -> None:
    print("| model | train images | CER | wrong readings | mean edit distance | mean positional errors "
          "| wrong length | shifted |\n|" + "---|" * 8)
    for r in _size_rows(by_stage):
        e = r["errors"]
        print(f"| {r['key']['model']} | {r['key']['train_images']} | {r['cer']:.3f} | {e['wrong']} | "
              f"{e['mean_edit_distance']:.2f} | {e['mean_positional_errors']:.2f} | {e['length_errors']} | "
              f"{e['shifted']} |")


def report_asker(by_stage: dict[str, list[dict]]) -> None:
    records = by_stage.get("asker", [])
    if not records:
        return
    chance = records[0]["chance"]
    cells: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        cells.setdefault((r["key"]["change"], r["key"]["loss"]), []).append(r)
    print(f"Accuracy on the held-out 1/6 after {records[0]['epochs']} epochs of {records[0]['images']} images "
          f"(min-max over seeds; chance {chance:.3f}, learned = 3x chance = {3 * chance:.3f}):\n\n"
          "| change from the TF1 settings | seeds | position 1 alone | all five: mean | all five: position 1 | "
          "live ReLUs, 1 head / 5 heads | both halves of the report |\n|" + "---|" * 7)
    for change in ASKER_CHANGES:
        one, five = cells.get((change, "position 1"), []), cells.get((change, "all five"), [])
        if not one or not five:
            continue
        p1 = [r["trained"][0] for r in one]
        means = [float(np.mean(r["trained"])) for r in five]
        in_five = [r["trained"][0] for r in five]
        both = min(p1) >= 3 * chance and max(means) < 1.5 * chance
        print(f"| {change} | {min(len(one), len(five))} | {_span(p1)} | {_span(means)} | {_span(in_five)} | "
              f"{_span([r['alive'][-1][1] for r in one], '.0%')} / {_span([r['alive'][-1][1] for r in five], '.0%')}"
              f" | {'yes' if both else 'no'} |")
    rows = [(loss, cells.get(("as TF1 tutorials", loss), [])) for loss in ASKER_LOSSES]
    print("\nThe TF1 settings, every loss (per trained position, min-max over seeds):\n\n"
          "| in the loss | position 1 | position 2 | positions 3-5 (mean) | live ReLUs at the end |\n|" + "---|" * 5)
    for loss, rs in rows:
        if not rs:
            continue
        first = [r["per_position"][0] for r in rs]
        second = [r["per_position"][1] for r in rs]
        rest = [float(np.mean(r["per_position"][2:])) for r in rs]
        print(f"| {loss} | {_span(first)} | {_span(second)} | {_span(rest)} | "
              f"{_span([r['alive'][-1][1] for r in rs], '.0%')} |")


def _span(values: list[float], fmt: str = ".3f") -> str:
    low, high = min(values), max(values)
    return f"{low:{fmt}}" if f"{low:{fmt}}" == f"{high:{fmt}}" else f"{low:{fmt}}-{high:{fmt}}"


def report_mechanism(by_stage: dict[str, list[dict]]) -> None:
    records = {r["key"].get("loss", r["key"]["measure"]): r for r in by_stage.get("mechanism", [])}
    edges = records.get("left edges")
    if edges:
        print(f"Left edge of each character (x in pixels, segmentation's boxes on {edges['images']} images):\n\n"
              f"| | {HEAD}\n|" + "---|" * 6)
        print(f"| mean | {' | '.join(f'{v:.1f}' for v in edges['mean'])} |")
        print(f"| standard deviation | {' | '.join(f'{v:.1f}' for v in edges['std'])} |")
        print(f"| 5th-95th percentile | {' | '.join(f'{a:.0f}-{b:.0f}' for a, b in edges['p5_p95'])} |\n")
    losses = [loss for loss in ("position 1", "positions 1+2", "all five") if loss in records]
    if not losses:
        return
    print("The TF1 settings over the first steps: share of first-layer ReLUs alive; the cosine between "
          "position 1's gradient on the first layer and the gradient of the whole loss (how much of each step "
          "serves position 1); the size (norm) of position 1's gradient; and, with all five in the loss, the "
          "cosines between position 1's gradient and each other head's. Gradients on a fixed batch of 256 "
          "training images:\n\n| step | " + " | ".join(f"{loss}: alive | cosine | size" for loss in losses)
          + " | all five: cosines between heads |\n|" + "---|" * (2 + 3 * len(losses)))
    steps = [row["step"] for row in records[losses[0]]["rows"]]
    for index, step in enumerate(steps):
        if step not in (0, 25, 50, 100, 200, 300, 400, 600):
            continue
        cells = [records[loss]["rows"][index] for loss in losses]
        between = cells[-1]["cos_between_heads"]
        print(f"| {step} | " + " | ".join(f"{c['alive']:.0%} | {c['cos_position1_total']:.2f} | {c['norms'][0]:.0f}"
                                         for c in cells)
              + f" | {min(between):.2f} to {max(between):.2f} |")


def plot_asker(by_stage: dict[str, list[dict]], path: Path) -> None:
    """Position 1's accuracy and the live ReLUs over steps, with 1, 2 and 5 heads (TF1 settings, seed 0);
    and position 1's share of each step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {r["key"]["loss"]: r for r in by_stage.get("asker", [])
            if r["key"]["change"] == "as TF1 tutorials" and r["key"]["seed"] == 0}
    mechanism = {r["key"]["loss"]: r for r in by_stage.get("mechanism", []) if "loss" in r["key"]}
    figure, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    colour = {loss: f"C{i}" for i, loss in enumerate(ASKER_LOSSES)}  # one colour per loss in every panel
    for loss, run in runs.items():
        steps = np.arange(1, len(run["history"]) + 1) * run["steps_per_epoch"]
        trained = ASKER_LOSSES[loss] or (1, 2, 3, 4, 5)
        axes[0].plot(steps, [np.mean([h[p - 1] for p in trained]) for h in run["history"]], marker=".", label=loss,
                     color=colour[loss])
        live = np.array(run["alive"])
        axes[1].plot(live[:, 0], live[:, 1], marker=".", label=loss, color=colour[loss])
    axes[0].axhline(runs[next(iter(runs))]["chance"] if runs else 0, color="grey", linestyle="--", linewidth=1)
    axes[0].set(title="accuracy of the positions in the loss (mean)", xlabel="step")
    axes[1].set(title="first-layer ReLUs alive", xlabel="step", ylim=(0, 1.05))
    for loss, record_ in mechanism.items():
        rows = record_["rows"]
        axes[2].plot([r["step"] for r in rows], [r["cos_position1_total"] for r in rows], marker=".", label=loss,
                     color=colour[loss])
    axes[2].set(title="cosine(position 1's gradient, the loss's gradient)", xlabel="step", ylim=(-0.1, 1.05))
    for ax in axes:
        ax.legend(fontsize=7)
    figure.suptitle("The asker's report reproduced: TF1 settings, one network, different losses (dashed: chance)")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


REPORTS: dict[str, Callable[[dict[str, list[dict]]], None]] = {
    "asker": report_asker, "mechanism": report_mechanism, "diagnose": report_diagnose, "loss": report_loss,
    "network": report_network,
    "positions": report_positions, "size": report_size, "snapshot": report_snapshot, "errors": report_errors,
}


STAGES: dict[str, Callable[[argparse.Namespace], None]] = {
    "size": stage_size, "acceptance": stage_acceptance, "loss": stage_loss, "network": stage_network,
    "positions": stage_positions, "diagnose": stage_diagnose, "snapshot": stage_snapshot, "report": stage_report,
    "asker": stage_asker, "mechanism": stage_mechanism,
}

if __name__ == "__main__":
    main()
