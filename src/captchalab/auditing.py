"""``captchalab audit DATA``: a captcha's strength, measured the way an attacker would.

The attacker's question is "how many images must I label before my solver works?". The
audit answers it with a learning curve: sequence accuracy on held-out images against the
number of labelled training images (25, 50, 100, 200, 400, all), for two attacks:

* ``scratch``: train the default model on the labelled images alone;
* ``pretrained``: first train on look-alike synthetic captchas rendered in the target's
  style (``generate --like``), then fine-tune on the labelled images (``train --init``).

Each point is repeated for several seeds (different images and initialisations). From the
mean curves it reads off the label count needed to pass 1%, 10%, 50% and 90% solve rates,
draws the curves and writes a short verdict. Everything stays within ``budget_minutes`` of
CPU time (this process, all threads): cells that would not fit are skipped and listed.

The style that the synthetic images copy is estimated from the smallest labelled subset
only (e.g. 25 images), so the pretraining knows nothing that a larger label count would
reveal. The same building blocks run ``bench/efficiency.py``.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from captchalab import metrics, report, runs
from captchalab.config import TrainConfig
from captchalab.data.folder import list_entries, load_dataset, write_labels_csv
from captchalab.data.style import generate_like
from captchalab.errors import DataError, UsageError
from captchalab.inference.predictor import Predictor
from captchalab.runs import claim_folder

RATES = (0.01, 0.10, 0.50, 0.90)
# Below this no pretraining starts (it needs a minute and 40% of the budget) and at most a few cells run.
MIN_BUDGET_MINUTES = 5.0
METHODS = ("pretrained", "scratch")
GENERAL = "general"  # a third way, measured by bench/efficiency.py --methods: fine-tune the shipped general reader
SECONDS_PER_SYNTHETIC_IMAGE = 0.01  # CPU cost of rendering one look-alike (measured: ~5 ms)
MIN_EPOCH_IMAGES = 1024  # small training sets are repeated up to this many images per epoch
Entry = tuple[str, str]  # (absolute image path, label)


@dataclass(frozen=True)
class AuditConfig:
    """How the learning curve is measured. Defaults suit a few hundred to a few thousand images."""

    counts: tuple[int, ...] = (25, 50, 100, 200, 400)
    include_all: bool = True  # also train on the whole pool when it is larger than the counts
    seeds: int = 3
    budget_minutes: float = 60.0  # CPU minutes for everything
    test_fraction: float = 0.2  # held out from DATA when no separate test set is given
    max_test: int = 500
    synthetic: int = 8000  # look-alike images for pretraining
    pretrain_share: float = 0.4  # of the budget
    pretrain_epochs: int = 12
    batch_size: int = 16
    min_steps: int = 1500  # training steps per cell at least ...
    epochs: int = 60  # ... or this many passes over the labelled images, if more (early stopping may end sooner)
    patience_steps: int = 1200  # early-stopping patience, in steps
    min_fit_steps: int = 1000  # no early stop before this many steps (validation starts perfect when fine-tuning)
    learning_rate: float = 2e-3  # from scratch
    finetune_learning_rate: float = 1e-3
    threads: int = 0  # TensorFlow threads per training run; 0: all cores
    seed: int = 0


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Splits:
    pool: tuple[Entry, ...]  # labelled training candidates, in a fixed order
    test: tuple[Entry, ...]


def make_splits(data: str | Path, test: str | Path | None, fraction: float, max_test: int, seed: int) -> Splits:
    """The labelled pool and the held-out test set (absolute paths)."""
    entries = _absolute(data)
    if test is not None:
        test_entries = _absolute(test)
        overlap = {p for p, _ in entries} & {p for p, _ in test_entries}
        if overlap:
            raise DataError(f"{test}: {len(overlap)} test image(s) are also in {data}; use disjoint sets")
        return Splits(tuple(entries), tuple(test_entries))
    if len(entries) < 10:
        raise DataError(f"{data}: {len(entries)} labelled images are too few to audit (need at least 10)")
    order = random.Random(seed).sample(entries, len(entries))
    n_test = max(5, min(max_test, round(len(entries) * fraction)))
    return Splits(tuple(order[n_test:]), tuple(order[:n_test]))


def _absolute(data: str | Path) -> list[Entry]:
    root, entries = list_entries(data)
    return [(str((root / name).resolve()), label) for name, label in entries]


def subset(pool: Sequence[Entry], n: int, seed: int) -> list[Entry]:
    """The first ``n`` of a seeded shuffle of the pool: counts are nested within a seed."""
    return random.Random(1000 + seed).sample(list(pool), len(pool))[:n]


def label_counts(config: AuditConfig, pool_size: int) -> list[int]:
    counts = sorted({n for n in config.counts if n < pool_size})
    if config.include_all or not counts:
        counts.append(pool_size)
    return counts


# --------------------------------------------------------------------------- training


class Clock:
    """CPU seconds (this process, all threads) and wall seconds since creation, against a budget."""

    def __init__(self, budget_minutes: float) -> None:
        self.budget = budget_minutes * 60
        self.cpu0, self.wall0 = time.process_time(), time.time()

    def cpu(self) -> float:
        return time.process_time() - self.cpu0

    def wall(self) -> float:
        return time.time() - self.wall0

    def left(self) -> float:
        return self.budget - self.cpu()



def held_out(n: int) -> int:
    """Validation images kept out of ``n`` labelled ones (early stopping, calibration)."""
    return max(3, round(0.1 * n))


def repeats(train_n: int) -> int:
    """Copies of each training image per epoch, so that an epoch has at least MIN_EPOCH_IMAGES."""
    return max(1, math.ceil(MIN_EPOCH_IMAGES / max(1, train_n)))


def cell_settings(
    n: int, config: AuditConfig, pretrained: bool, seed: int, max_minutes: float, cpu_minutes: float | None = None
) -> TrainConfig:
    """Training settings for ``n`` labelled images: the same schedule for both methods, except the
    learning rate. Up to ``min_steps`` steps (or ``epochs`` passes over the labelled images, if
    more); early stopping after ``patience_steps`` without improvement (the trainer halves the
    rate every third of that: the ``plateau`` learning-rate rule the efficiency curve was
    measured with, kept until bench/efficiency.py has measured the cosine one; what counts as
    progress has changed since that measurement (docs/recipe.md), and so has the stop on perfect
    validation, which now needs 400 validation images read perfectly in a row: with a handful,
    patience or the budget ends a cell), but not before ``min_fit_steps``: a fine-tuned model often
    reads its few validation images perfectly from the first epoch, which says nothing about how
    well it has adapted."""
    train_n = n - held_out(n)
    per_epoch = math.ceil(train_n * repeats(train_n) / config.batch_size)
    steps = max(config.min_steps, config.epochs * math.ceil(train_n / config.batch_size))
    epochs = math.ceil(steps / per_epoch)
    patience = max(3, math.ceil(config.patience_steps / per_epoch))
    least = math.ceil(config.min_fit_steps / per_epoch)
    rate = config.finetune_learning_rate if pretrained else config.learning_rate
    return TrainConfig(epochs=epochs, batch_size=config.batch_size, patience=patience, min_epochs=least,
                       schedule="plateau", learning_rate=rate, seed=seed, threads=config.threads,
                       max_minutes=round(max_minutes, 3), max_cpu_minutes=round(cpu_minutes or 0.0, 3))


def cell_data(pool: Sequence[Entry], n: int, seed: int, folder: Path) -> tuple[Path, Path]:
    """(train, validation) sets for a cell: the seed's first ``n`` images, a few held out; the
    training images linked ``repeats`` times under distinct names so that epochs are not tiny."""
    chosen = subset(pool, n, seed)
    val, fit = chosen[: held_out(n)], chosen[held_out(n) :]
    copies = repeats(len(fit))
    rows = []
    folder.mkdir(parents=True, exist_ok=True)
    for i, (path, label) in enumerate(fit):
        for k in range(copies):
            name = f"{i:05d}-{k}{Path(path).suffix}"
            _link(Path(path), folder / name)
            rows.append((name, label))
    train_csv = write_labels_csv(folder / "labels.csv", rows)
    return train_csv, write_labels_csv(folder.parent / f"{folder.name}-val.csv", val)


def charset_of(labels: Iterable[str]) -> str:
    """The symbols of these labels as a --charset value ('-' last, where it is literal, not a range)."""
    symbols = sorted(set("".join(labels)))
    return "".join(c for c in symbols if c != "-") + ("-" if "-" in symbols else "")


def _link(source: Path, target: Path) -> None:
    if target.is_symlink() or target.exists():
        target.unlink()
    try:
        target.symlink_to(source)
    except OSError:  # no symlinks here (some Windows set-ups): copy
        target.write_bytes(source.read_bytes())


def pretrain(
    style_source: Path, work: Path, config: AuditConfig, cpu_seconds: float, quiet: bool = True,
    wall_minutes: float | None = None, init: str | Path | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Render look-alikes of ``style_source`` and train on them, within ``cpu_seconds`` (or, when
    ``wall_minutes`` is given, ``config.synthetic`` images and training capped at that wall time),
    from random weights or from ``init`` (train --init: a run, or "general")."""
    from captchalab.training import train  # imports TensorFlow: only once something trains

    clock = Clock(cpu_seconds / 60)
    count = config.synthetic if wall_minutes is not None else int(
        min(config.synthetic, max(500, 0.15 * cpu_seconds / SECONDS_PER_SYNTHETIC_IMAGE)))
    synthetic = work / "synthetic"
    if not (synthetic / "labels.csv").exists():
        generate_like(synthetic, style_source, count, seed=config.seed)
    generated = clock.cpu()
    # a wall-clock cap for the benchmark; otherwise CPU time, with room for reading the images
    cap = {"max_minutes": round(wall_minutes, 3)} if wall_minutes is not None else \
        {"max_cpu_minutes": round(0.85 * clock.left() / 60, 3)}
    settings = TrainConfig(epochs=config.pretrain_epochs, patience=6, seed=config.seed, threads=config.threads, **cap)
    # the audit itself pretrains from random weights: its figures measure look-alike pretraining alone, until
    # bench/efficiency.py has compared it with starting from the general reader (issue 19)
    run = train(synthetic, out=work / "pretrained", train_config=settings, export_onnx=False, quiet=quiet,
                force=True, init=init)
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    record = {"synthetic_images": count, "generate_cpu_seconds": round(generated, 1),
              "train_cpu_seconds": round(clock.cpu() - generated, 1), "wall_seconds": round(clock.wall(), 1),
              "epochs": metrics.get("epochs_run"), "synthetic_val_sequence_accuracy": metrics["sequence_accuracy"],
              "style_source": str(style_source), "init": str(init) if init else None}
    return run, record


class TestSet:
    """Held-out images, decoded once per model input size."""

    def __init__(self, entries: Sequence[Entry], work: Path) -> None:
        self.csv = write_labels_csv(work / "test.csv", entries)
        self.size = len(entries)
        self._cache: dict[Any, tuple[np.ndarray, tuple[str, ...]]] = {}

    def at(self, size: Any) -> tuple[np.ndarray, tuple[str, ...]]:
        if size not in self._cache:
            dataset = load_dataset(self.csv, None, size)
            self._cache[size] = (dataset.pixels, dataset.labels)
        return self._cache[size]


def score(run: Path, test: TestSet) -> dict[str, float]:
    """Sequence and character accuracy of a run on the test set (any charset: strings are compared)."""
    predictor = Predictor.load(run, backend="keras")
    pixels, raw_labels = test.at(predictor.config.image)
    texts = [r[0].text for r in predictor.predict_pixels(pixels, batch_size=128)]
    labels = [predictor.config.charset.normalize(label) for label in raw_labels]
    summary = metrics.summarize(texts, labels)
    return {"sequence_accuracy": summary["sequence_accuracy"], "char_accuracy": summary["char_accuracy"]}


def run_cell(
    pool: Sequence[Entry], n: int, seed: int, method: str, init: Path | None, test: TestSet, work: Path,
    config: AuditConfig, max_minutes: float, quiet: bool = True, cpu_minutes: float | None = None,
    extra: Sequence[str] = (),
) -> dict[str, Any]:
    """Train one learning-curve point and score it on the test set; ``extra``: more ``--set``
    overrides, applied last (for benchmarks that vary one setting)."""
    import keras

    from captchalab.training import train  # imports TensorFlow: only once something trains

    began_cpu, began_wall = time.process_time(), time.time()
    name = f"{method}-n{n}-s{seed}"
    data, val = cell_data(pool, n, seed, work / "subsets" / f"n{n}-s{seed}")
    settings = cell_settings(n, config, method != "scratch", seed, max_minutes, cpu_minutes)
    start = init if method == "pretrained" else runs.GENERAL if method == GENERAL else None
    run = train(data, val=val, out=work / "cells" / name, train_config=settings, overrides=list(extra),
                export_onnx=False, quiet=quiet, force=True, init=start,
                charset=charset_of(label for _, label in subset(pool, n, seed)))
    result = score(run, test)
    history = json.loads((run / "history.json").read_text(encoding="utf-8"))
    keras.utils.clear_session(free_memory=True)
    return {"n": n, "seed": seed, "method": method, **result, "epochs": len(history),
            "best_val_sequence_accuracy": max((h["val_sequence_accuracy"] for h in history), default=0.0),
            "epochs_cpu_seconds": round(sum(h.get("cpu_seconds", 0.0) for h in history), 1),
            "epoch_cpu_seconds": max((h.get("cpu_seconds", 0.0) for h in history), default=0.0),
            "cpu_seconds": round(time.process_time() - began_cpu, 1),
            "wall_seconds": round(time.time() - began_wall, 1), "test_images": test.size}


# --------------------------------------------------------------------------- reading the curve


def curves(cells: Sequence[dict[str, Any]]) -> dict[str, dict[int, dict[str, float]]]:
    """Per method and label count: mean, min, max sequence accuracy and number of seeds."""
    out: dict[str, dict[int, dict[str, float]]] = {}
    for method in [*METHODS, *({GENERAL} & {cell["method"] for cell in cells})]:
        by_n: dict[int, list[float]] = {}
        for cell in cells:
            if cell["method"] == method:
                by_n.setdefault(int(cell["n"]), []).append(float(cell["sequence_accuracy"]))
        out[method] = {n: {"mean": float(np.mean(v)), "min": float(min(v)), "max": float(max(v)), "seeds": len(v)}
                       for n, v in sorted(by_n.items())}
    return out


def labels_needed(curve: dict[int, dict[str, float]], rate: float) -> dict[str, Any]:
    """Labels needed for a mean solve rate of ``rate``: interpolated on log(count) between measured points.

    ``{"labels": x, "bound": "="}``; "<=" when the smallest count already passes, ">" when none does.
    """
    points = sorted((n, c["mean"]) for n, c in curve.items())
    if not points:
        return {"labels": None, "bound": "unmeasured"}
    if points[0][1] >= rate:
        return {"labels": points[0][0], "bound": "<="}
    for (n0, a0), (n1, a1) in itertools.pairwise(points):
        if a1 >= rate > a0:
            t = (rate - a0) / (a1 - a0)
            return {"labels": round(math.exp(math.log(n0) + t * (math.log(n1) - math.log(n0)))), "bound": "="}
    return {"labels": points[-1][0], "bound": ">"}


def thresholds(table: dict[str, dict[int, dict[str, float]]]) -> dict[str, dict[str, dict[str, Any]]]:
    return {method: {f"{rate:.0%}": labels_needed(curve, rate) for rate in RATES} for method, curve in table.items()}


def _describe(need: dict[str, Any]) -> str:
    if need["bound"] == "=":
        return f"about {need['labels']}"
    if need["bound"] == "<=":
        return f"at most {need['labels']}"
    if need["bound"] == ">":
        return f"more than {need['labels']}"
    return "not measured"


def _labels(need: dict[str, Any]) -> float:
    return math.inf if need["bound"] in (">", "unmeasured") else float(need["labels"])


def verdict(needs: dict[str, dict[str, dict[str, Any]]]) -> dict[str, str]:
    """A level and a sentence from the attacker's best method at each rate."""
    # the fewest labels; among methods that never got there, a measured "more than N" before "not measured"
    best = {rate: min((needs[m][rate] for m in needs), key=lambda need: (_labels(need), need["bound"] == "unmeasured"))
            for rate in needs[next(iter(needs))]}
    ten, ninety, one = _labels(best["10%"]), _labels(best["90%"]), _labels(best["1%"])
    if ninety <= 200:
        level = "broken"
    elif ten <= 400:
        level = "weak"
    elif one < math.inf:
        level = "moderate"
    else:
        level = "resisted"
    lines = {
        "broken": "an attacker solves 90% of these captchas after labelling {90%} images.",
        "weak": "an attacker solves 10% of these captchas after labelling {10%} images; "
                "that is enough for automated abuse.",
        "moderate": "an attacker needs {10%} labelled images for a 10% solve rate "
                    "(1% after {1%}).",
        "resisted": "no attack measured here reached a 1% solve rate with {1%} labelled images; "
                    "more labels or stronger models may still break it.",
    }
    text = lines[level].format(**{rate: _describe(need) for rate, need in best.items()})
    return {"level": level, "text": f"{level.upper()}: {text}"}


def plot(table: dict[str, dict[int, dict[str, float]]], path: Path, title: str) -> None:
    plt = report._pyplot()
    figure, axis = plt.subplots(figsize=(7, 4.2))
    colours = {"pretrained": "#228833", "scratch": "#4477aa", GENERAL: "#cc6677"}
    labels = {"pretrained": "synthetic pretraining + fine-tuning", "scratch": "from scratch",
              GENERAL: "fine-tuning the general reader"}
    for method, curve in table.items():
        if not curve:
            continue
        ns = sorted(curve)
        axis.plot(ns, [curve[n]["mean"] for n in ns], marker="o", color=colours[method], label=labels[method])
        axis.fill_between(ns, [curve[n]["min"] for n in ns], [curve[n]["max"] for n in ns],
                          color=colours[method], alpha=0.15)
    for rate in RATES:
        axis.axhline(rate, color="grey", linestyle=":", linewidth=0.8)
        axis.text(axis.get_xlim()[0] if axis.lines else 1, rate, f" {rate:.0%}", va="bottom", fontsize=7,
                  color="grey")
    axis.set_xscale("log")
    axis.set_xlabel("labelled training images")
    axis.set_ylabel("sequence accuracy on held-out images")
    axis.set_ylim(0, 1.02)
    axis.set_title(title, fontsize=10)
    if any(table.values()):
        axis.legend(loc="best", fontsize=8)
    png = report._png(figure)
    runs.atomic_write(path, lambda tmp: tmp.write_bytes(png))


def summary(cells: Sequence[dict[str, Any]], skipped: Sequence[dict[str, Any]] = (),
            pretraining: dict[str, Any] | None = None, budget_minutes: float | None = None) -> dict[str, Any]:
    """Curves, labels needed and the verdict. With ``skipped`` cells (or pretraining) only BROKEN
    stands, since the missing measurements could only show an attack that needs fewer labels:
    any other verdict is INCONCLUSIVE, with the budget that would run every cell."""
    table = curves(cells)
    needs = thresholds(table)
    judged = verdict(needs) if cells else {
        "level": "unmeasured", "text": "UNMEASURED: the budget ran out before any point of the learning curve was "
                                       f"measured; raise --budget (at least {MIN_BUDGET_MINUTES:g} CPU minutes)."}
    missing = len(skipped) + bool(pretraining and "skipped" in pretraining)
    if cells and missing and judged["level"] != "broken":
        judged = inconclusive(judged, cells, skipped, pretraining, budget_minutes)
    return {"curves": {m: {str(n): v for n, v in c.items()} for m, c in table.items()}, "labels_needed": needs,
            "verdict": judged}


def inconclusive(measured: dict[str, str], cells: Sequence[dict[str, Any]], skipped: Sequence[dict[str, Any]],
                 pretraining: dict[str, Any] | None, budget_minutes: float | None) -> dict[str, str]:
    """The verdict when measurements are missing: what was found so far, and what would settle it."""
    no_pretraining = bool(pretraining and "skipped" in pretraining)
    what = [f"{len(skipped)} of {len(skipped) + len(cells)} measurements"] if skipped else []
    what += ["the synthetic pretraining"] if no_pretraining else []
    needed = settling_budget(cells, len(skipped), pretraining)
    so_far = measured["text"].split(": ", 1)[1]
    text = (f"INCONCLUSIVE: {' and '.join(what)} did not fit in the budget"
            f"{f' of {budget_minutes:g} CPU minutes' if budget_minutes else ''}, and they could only show an "
            f"attack that needs fewer labels. So far ({measured['level'].upper()} on what was measured): {so_far} "
            f"About {needed:g} CPU minutes would run them all on this machine (--budget {needed:g}; fewer --seeds "
            "or --counts need less).")
    return {"level": "inconclusive", "measured_level": measured["level"], "text": text,
            "budget_to_settle_minutes": needed}


def settling_budget(cells: Sequence[dict[str, Any]], skipped: int, pretraining: dict[str, Any] | None) -> float:
    """CPU minutes for every cell (at the costliest measured cell's price) plus the pretraining, rounded up to 5,
    with a fifth more for the budget's safety margins."""
    per_cell = max(float(c["cpu_seconds"]) for c in cells)
    cells_cost = per_cell * (len(cells) + skipped)
    if pretraining and "train_cpu_seconds" in pretraining:
        total = cells_cost + float(pretraining["train_cpu_seconds"]) + float(pretraining.get("generate_cpu_seconds", 0))
    else:  # pretraining gets its share of the budget: the cells get the rest
        total = cells_cost / (1 - AuditConfig.pretrain_share)
    return float(max(MIN_BUDGET_MINUTES, 5 * math.ceil(1.2 * total / 60 / 5)))


# --------------------------------------------------------------------------- the command


def plan(counts: Sequence[int], seeds: int, methods: Sequence[str] = METHODS) -> list[tuple[int, int, str]]:
    """Cells in the order they are run: a whole curve per seed, cheap counts first."""
    return [(n, seed, method) for seed in range(seeds) for n in counts for method in methods]


def audit(
    data: str | Path,
    out: str | Path,
    test: str | Path | None = None,
    budget_minutes: float = 60.0,
    counts: Sequence[int] | None = None,
    seeds: int = 3,
    pretrain_images: int | None = None,
    quiet: bool = False,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Measure the learning curve of DATA within ``budget_minutes`` CPU minutes; writes OUT/audit.json,
    OUT/learning_curve.png and OUT/index.html and returns the audit record."""
    config = _config(budget_minutes, counts, seeds, pretrain_images)
    folder = _out_folder(Path(out), force)
    say = progress or (lambda message: None)
    clock = Clock(config.budget_minutes)
    splits = make_splits(data, test, config.test_fraction, config.max_test, config.seed)
    sizes = label_counts(config, len(splits.pool))
    work = folder / "work"
    style_source = write_labels_csv(work / "style-source.csv", subset(splits.pool, sizes[0], 0))
    test_set = TestSet(splits.test, work)
    say(f"pool {len(splits.pool)} labelled images, test {len(splits.test)}; counts {sizes}, {config.seeds} seed(s)")
    record: dict[str, Any] = {"data": str(data), "test": str(test) if test else f"{len(splits.test)} held out",
                              "config": asdict(config), "counts": sizes, "cells": [], "skipped": []}
    init = _pretrain_within(style_source, work, config, clock, record, quiet, say)
    for n, seed, method in plan(sizes, config.seeds):
        _run_within(splits.pool, n, seed, method, init, test_set, work, config, clock, record, quiet, say)
    record.update(summary(record["cells"], record["skipped"], record.get("pretraining"), config.budget_minutes),
                  cpu_seconds=round(clock.cpu(), 1), wall_seconds=round(clock.wall(), 1))
    _write(folder, record, dataset_name(data))
    return record


def _config(budget: float, counts: Sequence[int] | None, seeds: int, images: int | None) -> AuditConfig:
    if budget <= 0:
        raise UsageError(f"--budget must be positive (CPU minutes), got {budget}")
    if seeds < 1:
        raise UsageError(f"--seeds must be at least 1, got {seeds}")
    config = AuditConfig(budget_minutes=budget, seeds=seeds)
    if counts:
        if min(counts) < 5:
            raise UsageError("label counts must be at least 5 (a few images are held out for validation)")
        config = replace(config, counts=tuple(sorted(set(counts))))
    if images is not None:
        config = replace(config, synthetic=images)
    return config


def _out_folder(folder: Path, force: bool) -> Path:
    return claim_folder(folder, reuse=force, advice="pass --force to replace them or choose another --out")


def _pretrain_within(style_source: Path, work: Path, config: AuditConfig, clock: Clock, record: dict,
                     quiet: bool, say: Callable[[str], None]) -> Path | None:
    allowance = min(config.pretrain_share * config.budget_minutes * 60, clock.left())
    if allowance < 60:
        record["pretraining"] = {"skipped": "budget too small for pretraining"}
        return None
    say(f"pretraining on look-alike images (up to {allowance / 60:.1f} CPU minutes)")
    run, info = pretrain(style_source, work, config, allowance, quiet)
    record["pretraining"] = info
    return run


def _run_within(pool: Sequence[Entry], n: int, seed: int, method: str, init: Path | None, test: TestSet,
                work: Path, config: AuditConfig, clock: Clock, record: dict, quiet: bool,
                say: Callable[[str], None]) -> None:
    if method == "pretrained" and init is None:
        record["skipped"].append({"n": n, "seed": seed, "method": method, "why": "no pretrained run"})
        return
    expected = _expected_cost(record["cells"], n)
    room = clock.left() - _reserve(record["cells"], clock.left())
    if room < max(30.0, 0.5 * expected):
        record["skipped"].append({"n": n, "seed": seed, "method": method, "why": "budget"})
        return
    cell = run_cell(pool, n, seed, method, init, test, work, config, 0.0, quiet, cpu_minutes=room / 60)
    record["cells"].append(cell)
    say(f"{method:10} n={n:<5} seed {seed}: sequence accuracy {cell['sequence_accuracy']:.3f} "
        f"({cell['cpu_seconds']:.0f} CPU s; {clock.left() / 60:.1f} CPU min left)")


def _reserve(cells: Sequence[dict[str, Any]], left: float) -> float:
    """CPU seconds a cell may spend beyond its training cap: training checks the cap after each epoch, so
    it can run one epoch over, and whatever is not an epoch (reading the images, building the model,
    scoring it) comes on top. The largest of each measured so far; before any cell, a twentieth of what is
    left."""
    if not cells:
        return 0.05 * left
    epoch = max(c.get("epoch_cpu_seconds", 0.0) for c in cells)
    return epoch + max(c["cpu_seconds"] - c.get("epochs_cpu_seconds", 0.0) for c in cells)


def _expected_cost(cells: Sequence[dict[str, Any]], n: int) -> float:
    same = [c["cpu_seconds"] for c in cells if c["n"] == n]
    return float(np.mean(same)) if same else 0.0


def dataset_name(data: str | Path) -> str:
    """What a report calls the data set: its folder's name (a split CSV: the folder and the file), never a full path."""
    path = Path(data)
    return path.name if path.is_dir() or path.suffix.lower() != ".csv" else f"{path.parent.name}/{path.name}"


def _write(folder: Path, record: dict[str, Any], name: str) -> None:
    table = {m: {int(n): v for n, v in c.items()} for m, c in record["curves"].items()}
    plot(table, folder / "learning_curve.png", f"{name}: {record['verdict']['level']}")
    runs.write_json(folder / "audit.json", record)
    page = render_page(record, folder / "learning_curve.png", name)
    runs.atomic_write(folder / "index.html", lambda tmp: tmp.write_text(page, encoding="utf-8"))


def render_page(record: dict[str, Any], png: Path, name: str) -> str:
    import html

    needs = record["labels_needed"]
    rows = [(rate, *(_describe(needs[m][rate]) for m in METHODS)) for rate in needs[METHODS[0]]]
    table = report._table(rows, ("solve rate", "labels needed: pretrained", "labels needed: from scratch"))
    cells = [(c["method"], c["n"], c["seed"], float(c["sequence_accuracy"]), float(c["cpu_seconds"]))
             for c in record["cells"]]
    skipped = "".join(f"<li>{html.escape(line)}</li>" for line in skipped_lines(record)) or "<li>none</li>"
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>audit {html.escape(name)}</title>"
            f"<style>{report.STYLE}</style></head><body><h1>Captcha audit: {html.escape(name)}</h1>"
            f"<p><b>{html.escape(record['verdict']['text'])}</b></p>"
            f"<img src='{report.data_uri(png.read_bytes())}' alt='learning curve'>{table}"
            f"<h2>Cells</h2>{report._table(cells, ('method', 'labels', 'seed', 'sequence accuracy', 'CPU s'))}"
            f"<h2>Skipped</h2><ul>{skipped}</ul>"
            f"<p class='note'>{record['cpu_seconds'] / 60:.1f} of {record['config']['budget_minutes']:g} CPU minutes "
            f"used. {html.escape(_pretraining_line(record.get('pretraining')))}</p></body></html>")


def skipped_lines(record: dict[str, Any]) -> list[str]:
    """The skipped measurements, grouped, in words: "scratch at 100, 200 labels (seed 0): out of budget"."""
    reasons = {"budget": "did not fit in the budget", "no pretrained run": "no pretrained run to fine-tune"}
    groups: dict[tuple[str, int, str], list[int]] = {}
    for s in record["skipped"]:
        groups.setdefault((s["method"], s["seed"], s["why"]), []).append(int(s["n"]))
    lines = [f"{'from scratch' if method == 'scratch' else method} at {', '.join(map(str, sorted(ns)))} labels "
             f"(seed {seed}): {reasons.get(why, why)}" for (method, seed, why), ns in groups.items()]
    pretraining = record.get("pretraining") or {}
    return ([f"synthetic pretraining: {pretraining['skipped']}"] if "skipped" in pretraining else []) + lines


def _pretraining_line(info: dict[str, Any] | None) -> str:
    if not info:
        return "No pretraining."
    if "skipped" in info:
        return f"Pretraining skipped: {info['skipped']}."
    return (f"Pretraining: {info.get('synthetic_images')} look-alike images, {info.get('epochs')} epochs, "
            f"{float(info.get('train_cpu_seconds', 0)) / 60:.1f} CPU minutes, validation sequence accuracy "
            f"{float(info.get('synthetic_val_sequence_accuracy', 0)):.1%}.")
