"""The original question, measured: can a fully-connected network read 5-character captchas?

Every number in docs/fully-connected.md comes from this script. Stages, each appending one
record per configuration to bench/results/fully_connected.json (a rerun of the same
configuration replaces its record), so the expensive ones can run separately:

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
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from machine import machine_info

ROOT = Path(__file__).resolve().parent.parent
RESULT = ROOT / "bench" / "results" / "fully_connected.json"
TRAIN_SEED, TEST_SEED, DIAGNOSE_SEED = 101, 202, 303
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
    args = parser.parse_args()
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
    data = json.loads(RESULT.read_text()) if RESULT.exists() else {"records": []}
    return any(r["stage"] == stage and r["key"] == key for r in data["records"])


def train_and_test(data: Path, test: Path, model: str, out: Path, epochs: int, overrides: list[str]) -> dict:
    """captchalab train (the default command plus ``overrides``), then a test-set evaluation."""
    from captchalab import metrics
    from captchalab.data.folder import load_dataset
    from captchalab.inference.predictor import Predictor
    from captchalab.train import train

    started_wall, started_cpu = time.time(), time.process_time()
    if (out / "checkpoints" / "state.json").exists() and not (out / "model.onnx").exists():
        print(f"resuming {out}", file=sys.stderr, flush=True)  # a run killed earlier goes on where it stopped
        folder = train(data, resume=out, quiet=True)
    else:
        folder = train(data, model=model, out=out, epochs=epochs or None, overrides=overrides, force=True,
                       quiet=True)
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
    config = record.get("train_config") or _train_config(Path(record.get("run", "/nonexistent")))
    return f"{config['batch_size']}" if config else "?"


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
    from captchalab.train import build_model, predict_texts

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
            out = args.data / "runs" / f"size-{model}-{size}"
            record("size", key, train_and_test(data, test, model, out, args.epochs, []))


_LOADED: dict[Path, Any] = {}


def harness_run(args: argparse.Namespace, stage: str, key: dict[str, Any], folder: Path, setup: Any,
                hidden: tuple[int, ...] = (256, 256)) -> None:
    """One ``captchalab diagnose`` setup on the first ``args.harness_images`` images of ``folder``."""
    from captchalab.data.folder import load_dataset
    from captchalab.data.pipeline import encode_labels
    from captchalab.diagnose import DiagnoseConfig, run_setup

    if done(stage, key):
        return
    config = DiagnoseConfig(limit=args.harness_images, epochs=args.harness_epochs, hidden=hidden)
    source = prefix(folder, args.harness_images)
    if source not in _LOADED:
        _LOADED.clear()
        _LOADED[source] = load_dataset(source)
    data = _LOADED[source]

    targets = encode_labels(data.labels, data.charset, data.max_length)
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

    from captchalab.diagnose import FIX

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

    from captchalab.diagnose import FIX

    folder = dataset(args, "train50k", 50000, TRAIN_SEED)
    for hidden, batch_norm, inputs, pool in NETWORKS:
        key = {"hidden": list(hidden), "batch_norm": batch_norm, "inputs": inputs, "pool": pool}
        setup = replace(FIX, name="network", batch_norm=batch_norm, inputs=inputs, pool=pool)
        harness_run(args, "network", key, folder, setup, hidden)


def stage_positions(args: argparse.Namespace) -> None:
    from dataclasses import replace

    from captchalab.diagnose import ASKER, FIX

    folders = {"jittered": dataset(args, "train50k", 50000, TRAIN_SEED),
               "fixed": dataset(args, "fixed10k", 10000, TRAIN_SEED, positions="fixed")}
    for placement, folder in folders.items():
        for setup in (FIX, replace(FIX, name="fix+batchnorm", batch_norm=True), ASKER):
            harness_run(args, "positions", {"placement": placement, "setup": setup.name}, folder, setup)
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
    from captchalab.diagnose import diagnose

    if done("diagnose", {"data": "fresh 10k set", "seed": DIAGNOSE_SEED}):
        return
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


def _records_by_stage() -> dict[str, list[dict]]:
    records = json.loads(RESULT.read_text())["records"] if RESULT.exists() else []
    by_stage: dict[str, list[dict]] = {}
    for r in records:
        by_stage.setdefault(r["stage"], []).append(r)
    return by_stage


def _pos(values: list[float]) -> str:
    return " | ".join(f"{v:.3f}" for v in values)


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
    from captchalab.diagnose import Outcome, Setup, verdict

    runs = {run["setup"]["name"]: Outcome(Setup(**run["setup"]), run["history"], run["losses"],
                                          run["init_activation_std"], run["dead_units"], run["cpu_seconds"])
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
    for r in by_stage.get("positions", []):
        k = r["key"]
        if "setup" in k:
            print(f"| {k['placement']} | harness: {k['setup']} | {_pos(r['per_position'])} | {r['mean']:.3f} | - |")
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
        precise = "yes" if (r.get("train_config") or {}).get("precise_bn") else "no"
        print(f"| {k['model']} | {k['train_images']} | {r['epochs_run']} ({k['epochs_cap'] or 'none'}) | {_batch(r)} | "
              f"{precise} | "
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


REPORTS: dict[str, Callable[[dict[str, list[dict]]], None]] = {
    "diagnose": report_diagnose, "loss": report_loss, "network": report_network,
    "positions": report_positions, "size": report_size, "snapshot": report_snapshot, "errors": report_errors,
}


STAGES: dict[str, Callable[[argparse.Namespace], None]] = {
    "size": stage_size, "acceptance": stage_acceptance, "loss": stage_loss, "network": stage_network,
    "positions": stage_positions, "diagnose": stage_diagnose, "snapshot": stage_snapshot, "report": stage_report,
}

if __name__ == "__main__":
    main()
