"""The style zoo: one training recipe, every default, measured on many captcha styles.

Each style is a renderer (the PyPI generators ``captcha``, ``wheezy.captcha`` and
``multicolorcaptcha``; captchalab's own look-alike renderer with hand-set styles and fonts
the bundled model never saw) plus captcha_images_v2, a real set. For every style the script
renders a labelled pool (4,000 images, seed 1) and a test set (500 images, seed 2), then
trains ``captchalab train`` with every default on the first N images of the pool (N = 500,
1,200, 4,000; captcha_images_v2 has 936) and scores the run on the test set.

No setting is chosen per style: one recipe. The README table lists the worst cell first.

Resumable: every finished cell is written to bench/results/zoo.json at once, and a rerun
skips the cells already there (``--redo`` measures them again) and continues a killed cell
from its last epoch (``train --resume``). Rendered data and runs go
to ``--work`` (runs/zoo by default).

    .venv/bin/python bench/zoo.py                          # every style and size: hours of CPU
    .venv/bin/python bench/zoo.py --styles wheezy --sizes 1200
    .venv/bin/python bench/zoo.py --samples docs/zoo.png   # a grid of samples, no training
    .venv/bin/python bench/zoo.py --model cnn --tag cnn    # another model, its own result rows
    .venv/bin/python bench/zoo.py --init none --tag scratch      # from random weights (train --init none)
"""

from __future__ import annotations

import argparse
import csv
import fcntl
import io
import json
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from captchalab.data.folder import write_labels_csv
from data import captcha_images_v2
from machine import machine_info

ROOT = Path(__file__).resolve().parent.parent
RESULT = ROOT / "bench" / "results" / "zoo.json"
POOL, TEST = 4000, 500
SIZES = (500, 1200, 4000)
UPPER = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
DIGITS = "0123456789"
MIXED = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

Sampler = Iterator[tuple[str, Image.Image]]


# --------------------------------------------------------------------------- fonts


def mpl_fonts(*names: str) -> list[str]:
    """DejaVu fonts as matplotlib ships them (a dependency of captchalab[train])."""
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    return [str(folder / f"{name}.ttf") for name in names]


def google_fonts(*names: str) -> list[str]:
    """OFL fonts shipped inside the multicolorcaptcha package (licences beside each font)."""
    import multicolorcaptcha

    folder = Path(multicolorcaptcha.__file__).parent / "fonts" / "GoogleFonts" / "ofl"
    return [str(path) for name in names for path in sorted((folder / name).glob("*.ttf"))]


def text(rng: random.Random, charset: str, low: int, high: int) -> str:
    return "".join(rng.choice(charset) for _ in range(rng.randint(low, high)))


# --------------------------------------------------------------------------- styles


def pypi_serif(seed: int) -> Sampler:
    """The PyPI captcha generator (the bundled model's) in serif fonts it never saw; 4-6 of 0-9A-Z."""
    from captcha.image import ImageCaptcha

    from captchalab.data.synthetic import _seeded

    rng = random.Random(seed)
    generator = ImageCaptcha(160, 60, mpl_fonts("DejaVuSerif", "DejaVuSerif-Bold"), (40, 46, 52))
    while True:
        label = text(rng, UPPER, 4, 6)
        with _seeded(rng):
            yield label, generator.generate_image(label)


def wheezy(seed: int) -> Sampler:
    """wheezy.captcha's documented recipe: warped, rotated letters, a curve and noise; 4 of 0-9A-Z."""
    from wheezy.captcha import image as w

    fonts = mpl_fonts("DejaVuSans-Bold", "DejaVuSerif-Bold")
    draw = w.captcha(width=200, height=75, drawings=[
        w.background(), w.text(fonts=fonts, drawings=[w.warp(), w.rotate(), w.offset()]),
        w.curve(), w.noise(), w.smooth()])
    rng = random.Random(seed)
    while True:
        label = text(rng, UPPER, 4, 4)
        w.random.seed(rng.getrandbits(32))  # wheezy draws from the random module
        yield label, draw(label)


def multicolor(seed: int) -> Sampler:
    """multicolorcaptcha: 4 digits, each on its own colour, lines and circles, 18 Google fonts."""
    import multicolorcaptcha._generator as m

    generator = m.CaptchaGenerator(2)
    rng = random.Random(seed)
    while True:
        state = random.Random(rng.getrandbits(32))
        m.randint, m.choice = state.randint, state.choice  # the module imported them by name
        made = generator.gen_captcha_image(difficult_level=2, chars_mode="nums", multicolor=True, margin=False)
        yield made.characters, made.image.convert("RGB").resize((160, 40), Image.BILINEAR)


def _look(width: int, height: int, charset: str, lengths: dict[int, float], text_height: float,
          char_width: float, fonts: list[str], clutter: float = 0.02, speckle: float = 0.0,
          stroke: float = 3.0, colours: tuple = ((20, 20, 20),), backgrounds: tuple = ((250, 250, 250),),
          jpeg: tuple[int, int] | None = None, centred: bool = False) -> Callable[[int], Sampler]:
    """A style for captchalab's look-alike renderer, set by hand instead of estimated.

    The text starts where the longest label would start centred, or (``centred``) every
    label is centred, so that a character's position depends on the label's length."""

    def renderer(length_shares: dict[int, float], seed: int) -> Any:
        from captchalab.data.style import PROFILE_POINTS, LookAlike, Style, match_fonts

        left = (width - char_width * max(length_shares)) / 2
        style = Style(width=width, height=height, charset=charset, lengths=length_shares, text_height=text_height,
                      text_center=height / 2, text_left=max(2.0, left), text_right=width - max(2.0, left),
                      char_width=char_width, stroke=stroke, clutter=clutter, speckle=speckle,
                      spread={"text_height": 0.06 * text_height, "char_width": 0.08 * char_width},
                      text_colours=colours, backgrounds=tuple(tuple(b if isinstance(b[0], tuple) else
                                                                    (b,) * PROFILE_POINTS) for b in backgrounds))
        return LookAlike(style, seed=seed, fonts=match_fonts(style, fonts=fonts, keep=len(fonts), seed=seed))

    def sampler(seed: int) -> Sampler:
        rng = random.Random(seed + 7)
        if centred:
            by_length = {n: renderer({n: 1.0}, seed + n) for n in lengths}
            pick = lambda: by_length[rng.choices(list(lengths), list(lengths.values()))[0]]  # noqa: E731
        else:
            single = renderer(lengths, seed)
            pick = lambda: single  # noqa: E731
        while True:
            label, image = pick().sample()
            if jpeg:
                buffer = io.BytesIO()
                image.convert("RGB").save(buffer, "JPEG", quality=rng.randint(*jpeg))
                image = Image.open(io.BytesIO(buffer.getvalue()))
            yield label, image

    return sampler


GRADIENT = tuple(tuple((200 + 6 * i, 220 - 4 * i, 180 + 8 * i) for i in range(8)) for _ in range(1))
STYLES: dict[str, tuple[str, Callable[[int], Sampler] | None]] = {
    "captcha_images_v2": ("real: 5 of 2-8a-y (lower case), 200x50, one font, a line", None),
    "pypi-serif": ("PyPI captcha, serif fonts, 4-6 of 0-9A-Z, 160x60", pypi_serif),
    "wheezy": ("wheezy.captcha, warp + rotation + curve + noise, 4 of 0-9A-Z, 200x75", wheezy),
    "multicolor": ("multicolorcaptcha, 4 digits on 4 colours, lines, circles, 18 fonts, 160x40", multicolor),
    "long-thin": ("look-alike renderer, 4-8 of 0-9A-Z, 240x40, lines and arcs", _look(
        240, 40, UPPER, {4: 0.2, 5: 0.2, 6: 0.2, 7: 0.2, 8: 0.2}, 22, 25,
        mpl_fonts("DejaVuSans", "DejaVuSansMono-Bold"), clutter=0.04, stroke=2.5)),
    "long-centred": ("look-alike renderer, 4-8 of 0-9A-Z centred (positions shift with length), 240x40, clutter",
                     _look(240, 40, UPPER, {4: 0.2, 5: 0.2, 6: 0.2, 7: 0.2, 8: 0.2}, 24, 24,
                           mpl_fonts("DejaVuSerif", "DejaVuSans-Bold"), clutter=0.06, speckle=0.01, stroke=2.5,
                           centred=True)),
    "mixed-case": ("look-alike renderer, 5 of 0-9a-zA-Z case-sensitive, colour gradient, Google fonts, 150x50",
                   _look(150, 50, MIXED, {5: 1.0}, 28, 24, google_fonts("aldrich", "combo", "elsie"),
                         clutter=0.03, colours=((30, 30, 120), (120, 20, 20), (20, 90, 20)),
                         backgrounds=GRADIENT)),
    "tiny-jpeg": ("look-alike renderer, 5 digits, 80x26, JPEG quality 15-40", _look(
        80, 26, DIGITS, {5: 1.0}, 16, 13, mpl_fonts("DejaVuSans-Bold", "DejaVuSerif"), clutter=0.02, stroke=2.0,
        jpeg=(15, 40))),
    "overlap": ("look-alike renderer, 6 of 0-9A-Z crowded to overlap, arcs, speckle, 150x50", _look(
        150, 50, UPPER, {6: 1.0}, 32, 18, mpl_fonts("DejaVuSerif-Bold", "DejaVuSans-Bold"), clutter=0.06,
        speckle=0.02, stroke=3.5)),
    "outline": ("look-alike renderer, 5 of 0-9A-Z in outline and wide fonts, dark on light grey, 180x50", _look(
        180, 50, UPPER, {5: 1.0}, 26, 30, google_fonts("bungeeoutline", "londrinaoutline", "stalinistone"),
        clutter=0.03, backgrounds=((225, 225, 225),))),
}


# --------------------------------------------------------------------------- data


def render(name: str, folder: Path, count: int, seed: int) -> Path:
    """``count`` images of a style and their labels.csv in ``folder`` (reused when complete)."""
    labels = folder / "labels.csv"
    if labels.exists():
        return labels
    folder.mkdir(parents=True, exist_ok=True)
    sampler = STYLES[name][1]
    assert sampler is not None
    rows = []
    for i, (label, image) in zip(range(count), sampler(seed)):
        file = f"{i:05d}.png"
        image.save(folder / file)
        rows.append((file, label))
    write_labels_csv(labels, rows)  # last: its presence marks the style as rendered
    return labels


def read_csv(path: Path) -> list[tuple[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return [(row["file"], row["label"]) for row in csv.DictReader(handle)]


def style_data(name: str, work: Path) -> tuple[Path, Path]:
    """(the labelled pool's CSV, the test set's CSV) of one style."""
    if name == "captcha_images_v2":
        return captcha_images_v2() / "train.csv", test_data(name, work)
    return render(name, work / "data" / name / "pool", POOL, 1), test_data(name, work)


def test_data(name: str, work: Path) -> Path:
    """The test set's CSV of one style (rendered with seed 2 the first time)."""
    if name == "captcha_images_v2":
        return captcha_images_v2() / "test.csv"
    return render(name, work / "data" / name / "test", TEST, 2)


def first(pool: Path, n: int, folder: Path) -> Path:
    """A CSV of the pool's first ``n`` images (absolute paths: the CSV lives beside the runs)."""
    rows = read_csv(pool)[:n]
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"first{n}.csv"
    write_labels_csv(out, [(str((pool.parent / file).resolve()), label) for file, label in rows])
    return out


# --------------------------------------------------------------------------- cells


def run_cell(name: str, n: int, work: Path, model: str, tag: str, overrides: list[str],
             init: str | Path | None = None, pretrain_cpu: float = 0.0) -> dict:
    import keras

    import captchalab
    from captchalab import runs
    from captchalab.training import checkpoint_rank  # imports TensorFlow: workers only

    pool, test = style_data(name, work)
    n = min(n, len(read_csv(pool)))
    data = first(pool, n, work / "subsets" / name)
    code = code_version()  # before training: later commits must not be credited with this cell
    began = time.process_time(), time.time()
    folder = work / "cells" / tag / f"{name}-{n}"
    pretraining = None
    if pretrain_cpu:  # the few-label workflow: look-alikes of these labelled images first (auditing.pretrain)
        from captchalab import auditing

        # look-alike pretraining starts where --init says (random weights unless told); fine-tuning from it
        start = None if init in (None, "auto", "none") else init
        init, pretraining = auditing.pretrain(data, work / "cells" / tag / f"{name}-{n}-pretrain",
                                              auditing.AuditConfig(threads=1), pretrain_cpu, init=start)
    told = told_charset(pool, data)
    resumed = (folder / "checkpoints" / "state.json").exists() and not (folder / "model.onnx").exists()
    if resumed:  # a cell killed part-way (a session ended) goes on from its last epoch
        run = captchalab.train(folder, resume=folder, quiet=True)
    else:
        # "auto" (train's default) picks the network itself; an explicit start brings its own model
        run = captchalab.train(data, model=model if init in (None, "auto", "none") else None, out=folder,
                               force=True, quiet=True, overrides=overrides, init=init, charset=told)
    train_cpu = time.process_time() - began[0]
    scores = captchalab.evaluate(run, test, save=False)
    fit = captchalab.evaluate(run, data, save=False)  # its labelled images (train + validation): underfitting?
    history = json.loads((run / "history.json").read_text(encoding="utf-8"))
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    if resumed:  # every process's epochs, as the run counted them
        train_cpu = metrics["train_cpu_seconds"]
    keras.utils.clear_session(free_memory=True)
    best = max(range(len(history)), key=lambda i: checkpoint_rank(history[i])) if history else -1
    return {"style": name, "n": n, "model": model, "tag": tag,
            "sequence_accuracy": scores["sequence_accuracy"], "char_accuracy": scores["char_accuracy"],
            "cer": scores["cer"], "test_images": scores["n"],
            "train_sequence_accuracy": fit["sequence_accuracy"], "train_char_accuracy": fit["char_accuracy"],
            "epochs": len(history), "best_epoch": best + 1,
            "train_cpu_seconds": round(train_cpu, 1), "wall_seconds": round(time.time() - began[1], 1),
            "input_size": json.loads((run / "config.json").read_text(encoding="utf-8"))["image"],
            "diagnosis": metrics.get("diagnosis"), "overrides": overrides, "code": code, "resumed": resumed,
            "init": runs.start_name(metrics.get("init", init)), "general_stage": general_stage(metrics.get("init")),
            "pretraining": pretraining, "charset_told": told,
            "cpu_model": machine_info()["cpu_model"]}  # CPU seconds compare only on one kind of machine


def told_charset(pool: Path, subset: Path) -> str | None:
    """The style's symbols where the first N labels miss some (25 labels of 36 symbols often do): train
    is told them, as a user who knows the site's symbols would be, so that the test set can be scored.
    None (the charset from the labels, train's default) where the labels hold every symbol."""
    symbols = sorted({c for _, label in read_csv(pool) for c in label})
    seen = {c for _, label in read_csv(subset) for c in label}
    return "".join(symbols) if set(symbols) - seen else None


def general_stage(init: str | None) -> str | None:
    """Which stage of bench/train_general.py a run started from, when it started from the shipped general
    reader: the package ships a new stage now and then, and cells measured with different ones differ."""
    from captchalab import runs

    if runs.start_name(init) != runs.GENERAL:
        return None
    return json.loads((runs.general_reader_path() / "general.json").read_text(encoding="utf-8"))["stage"]


def rescore(work: Path) -> None:
    """Add the training-image scores to cells recorded before zoo.py measured them."""
    import captchalab

    for cell in load_record()["cells"]:
        run = work / "cells" / cell["tag"] / f"{cell['style']}-{cell['n']}"
        data = work / "subsets" / cell["style"] / f"first{cell['n']}.csv"
        if "train_sequence_accuracy" in cell or not (run / "model.onnx").exists() or not data.exists():
            continue
        fit = captchalab.evaluate(run, data, save=False)
        add_cell({**cell, "train_sequence_accuracy": fit["sequence_accuracy"],
                  "train_char_accuracy": fit["char_accuracy"]})


def code_version() -> dict:
    """The commit of the captchalab code this process imported (a baseline may import another checkout's)."""
    import captchalab

    src = Path(captchalab.__file__).parent
    git = ["git", "-C", str(src)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    status = subprocess.run([*git, "status", "--porcelain", "--", "."], capture_output=True, text=True, check=False)
    return {"path": str(src), "commit": commit.stdout.strip() or None, "uncommitted_changes": bool(status.stdout)}


def load_record() -> dict:
    if RESULT.exists():
        return json.loads(RESULT.read_text(encoding="utf-8"))
    return {"benchmark": "zoo", "cells": []}


def add_cell(cell: dict) -> None:
    """Write one finished cell into the results (cells finish in parallel processes)."""
    from captchalab import runs

    RESULT.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULT.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        record = load_record()
        key = (cell["style"], cell["n"], cell["tag"])
        record["cells"] = [c for c in record["cells"] if (c["style"], c["n"], c["tag"]) != key] + [cell]
        record["machine"] = machine_info()
        record["styles"] = {name: description for name, (description, _) in STYLES.items()}
        runs.write_json(RESULT, record)


def samples(path: Path, per_style: int = 4) -> None:
    """A grid: one row per style, ``per_style`` images each, every image scaled to 40 pixels high."""
    rows = []
    for _, sampler in STYLES.values():
        if sampler is None:
            v2 = captcha_images_v2()
            files = [v2 / f for f, _ in read_csv(v2 / "test.csv")[:per_style]]
            images = [Image.open(f).convert("RGB") for f in files]
        else:
            images = [image.convert("RGB") for _, (_, image) in zip(range(per_style), sampler(3))]
        scaled = [im.resize((round(im.width * 40 / im.height), 40)) for im in images]
        rows.append(np.concatenate([np.asarray(im) for im in scaled], axis=1) if scaled else None)
    width = max(r.shape[1] for r in rows if r is not None)
    canvas = np.full((44 * len(rows), width, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        if row is not None:
            canvas[44 * i : 44 * i + 40, : row.shape[1]] = row
    Image.fromarray(canvas).save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--styles", default=",".join(STYLES), help="comma-separated style names")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="labelled images per cell")
    parser.add_argument("--model", default="crnn")
    parser.add_argument("--tag", default="default", help="names this recipe's rows in the results")
    parser.add_argument("--set", action="append", default=[], dest="overrides", help="a train override (ablations)")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "zoo")
    parser.add_argument("--init", default="auto", help="where every cell starts (train --init): 'auto' (train's "
                        "default: the shipped general reader where it fits), 'general', 'none' (random weights) "
                        "or a run; give a non-default its own --tag")
    parser.add_argument("--pretrain", type=float, default=0.0, metavar="CPU_SECONDS",
                        help="first pretrain each cell on look-alikes of its own labelled images within this "
                        "CPU time (the few-label workflow, docs/few-labels.md), then fine-tune; the pretraining "
                        "starts from --init ('auto' and 'none': random weights); give it its own --tag")
    parser.add_argument("--redo", action="store_true", help="measure cells already in the results again")
    parser.add_argument("--samples", type=Path, help="only draw a grid of samples to this PNG")
    parser.add_argument("--rescore", action="store_true",
                        help="only score finished cells that lack it on their own training images")
    parser.add_argument("--jobs", type=int, default=2, help="cells trained side by side, one thread each")
    parser.add_argument("--cell", help=argparse.SUPPRESS)  # STYLE:N, one cell in this process (a worker)
    args = parser.parse_args()
    if args.samples:
        samples(args.samples)
        return
    if args.rescore:
        rescore(args.work)
        return
    names = [s for s in args.styles.split(",") if s]
    unknown = [s for s in names if s not in STYLES]
    if unknown:
        raise SystemExit(f"unknown style(s) {unknown}; known: {', '.join(STYLES)}")
    if args.cell:
        name, n = args.cell.split(":")
        finished = {(c["style"], c["n"], c["tag"]) for c in load_record()["cells"]}
        if not args.redo and (name, int(n), args.tag) in finished:
            return  # finished meanwhile by another invocation
        cell = run_cell(name, int(n), args.work, args.model, args.tag, args.overrides, args.init, args.pretrain)
        add_cell(cell)
        print(f"{args.tag} {name} n={n}: {cell['sequence_accuracy']:.3f} seq, {cell['epochs']} epochs, "
              f"{cell['train_cpu_seconds']:.0f} CPU s", flush=True)
        return
    for name in names:  # render every style's data once, before the workers need it
        style_data(name, args.work)
    done = {(c["style"], c["n"], c["tag"]) for c in load_record()["cells"]}
    todo = [(name, min(size, 936) if name == "captcha_images_v2" else size)
            for size in (int(s) for s in args.sizes.split(",")) for name in names]
    todo = [c for c in dict.fromkeys(todo) if args.redo or (*c, args.tag) not in done]
    run_parallel(todo, args)


def run_parallel(todo: list[tuple[str, int]], args: argparse.Namespace) -> None:
    """Each cell in its own process on one TensorFlow thread, ``--jobs`` at a time: the crnn's
    small convolutions and LSTM steps barely run faster on a second thread, so two cells side by
    side use two cores better than one cell on both (each cell's CPU and wall seconds are
    recorded). Run one invocation per tag at a time: two would train the same cell at once."""
    common = ["--model", args.model, "--tag", args.tag, "--work", str(args.work), *(["--redo"] if args.redo else []),
              *(["--init", str(args.init)] if args.init else []),
              *(["--pretrain", str(args.pretrain)] if args.pretrain else []),
              *(f"--set={o}" for o in [*args.overrides, "train.threads=1"])]
    pending, running = list(todo), []
    while pending or running:
        while pending and len(running) < args.jobs:
            name, n = pending.pop(0)
            running.append(subprocess.Popen([sys.executable, __file__, "--cell", f"{name}:{n}", *common]))
        time.sleep(2)
        for p in [p for p in running if p.poll() not in (None, 0)]:
            print(f"a cell failed (exit {p.returncode}): {' '.join(p.args[2:4])}", file=sys.stderr, flush=True)
        running = [p for p in running if p.poll() is None]


if __name__ == "__main__":
    sys.exit(main())
