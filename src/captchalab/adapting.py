"""Adapt to a captcha style with no labels: look-alikes first, then self-training (``captchalab adapt``).

1. The style is measured from the unlabelled images alone (``style.estimate_unlabelled``); the label
   lengths and charset are what the caller knows (``--length 5 --charset 0-9a-z``).
2. Look-alikes of that style train the first reader (round 0).
3. Each round reads every image with the last round's model and keeps the readings that are
   confident (calibrated confidence at least ``min_confidence``) and stable (a copy shifted by two
   pixels reads the same); the last model is fine-tuned on them plus as many look-alikes (which
   keep it from drifting into its own mistakes). Rounds stop when one keeps fewer than
   ``MIN_GAIN`` more images than the one before, or the CPU budget is spent.
4. ``adapt.json`` records each round: images kept, the model's own estimate of its accuracy
   (``estimate``) and the least certain readings, to check by eye. ``OUT/model`` is the round that
   kept the most readings.

Nothing here ever reads a label: a folder's labels.csv and file names are ignored.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import random
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from captchalab import files, runs
from captchalab.config import TrainConfig
from captchalab.data.folder import list_entries, write_labels_csv
from captchalab.data.images import open_image
from captchalab.data.style import Style, estimate_unlabelled, write_look_alikes
from captchalab.decoding import Constraints, Prediction
from captchalab.errors import DataError, ImageError, RunFolderError, UsageError
from captchalab.inference.predictor import Predictor, iter_image_files
from captchalab.report import write_adapt_sheet

SETTINGS = "adapt-settings.json"  # in OUT: what a rerun must match to go on
SPENT = "adapt-spent.json"  # in OUT: CPU seconds spent by the end of each finished round (resuming keeps the budget)
FIRST_READER_ACCURACY = 0.5  # round 0 trains on until it reads this share of its look-alikes' validation images
MIN_GAIN = 0.02  # a round must keep this share of the images more than the last one, or adapting stops
SHIFT = 2  # pixels: a reading that a copy shifted this far changes is not kept
LEAST_CERTAIN = 20  # readings listed in adapt.json for a person to check
REFERENCE = 400  # look-alikes no round trains on: how often a reading survives the shift where it should
Prepared = dict[Any, tuple[list[Path], np.ndarray]]  # images at a model's input size, read once
Reference = dict[Path, str]  # the reference look-alikes and their labels
# One image, one epoch, crnn at its usual input (32 x 100-160): measured 0.02-0.03 here (bench/zoo.py histories)
CPU_SECONDS_PER_IMAGE = 0.03


@dataclass(frozen=True)
class AdaptConfig:
    length: str  # label lengths: "5" or "4-6"
    charset: str  # symbols, ranges allowed: "0-9a-z"
    budget_minutes: float = 30.0  # CPU minutes for everything
    rounds: int = 3  # self-training rounds at most
    # Round 0 must get off CTC's start-up plateau (about 2,000 steps here) within its share of the budget:
    # 8,000 look-alikes and 40% of 30 CPU minutes gave 2 epochs (900 steps) on this machine and read nothing
    # (bench/results/adapt.json, tag share40); fewer images seen more often buy the steps.
    synthetic: int = 4000  # look-alikes
    pretrain_share: float = 0.6  # of the budget, for round 0
    min_confidence: float = 0.9
    max_images: int = 20000  # of the folder's images, the first this many (sorted by name)
    threads: int = 0
    seed: int = 0
    init: str | None = None  # the run round 0 starts from (the shipped general reader); None: random weights


def adapt(
    folder: str | Path, out: str | Path, length: int | str, charset: str, budget_minutes: float = 30.0,
    rounds: int = 3, min_confidence: float = 0.9, synthetic: int = 4000, init: str | Path | None = "general",
    quiet: bool = False,
) -> Path:
    """Adapt a reader to the unlabelled images of ``folder`` (``captchalab adapt``): labels of ``length``
    ("5", "4-6") from ``charset`` ("0-9a-z"), within ``budget_minutes`` of CPU. Round 0 starts from the run
    ``init``: "general" (the general reader shipped with the package), a run folder, or None (random
    weights). The round folders, adapt.json and the final ``model`` run go to ``out``; an interrupted call
    goes on where it stopped."""
    start = runs.init_run(init)
    config = AdaptConfig(str(length), charset, budget_minutes, rounds, synthetic, min_confidence=min_confidence,
                         init=str(start) if start else None)
    return _adapt(Path(folder), Path(out), config, quiet)


def _adapt(folder: Path, out: Path, config: AdaptConfig, quiet: bool) -> Path:
    began = _cpu()
    _check_settings(config)
    paths = _images(folder, out, config.max_images)
    settings = {**asdict(config), "folder": str(folder.resolve()), "images": len(paths)}
    _check_out(out, settings)
    spent_at = _spent_at(out)
    began -= spent_at.get("0", 0.0)  # round 0 finished before: the budget goes on from what it spent
    style = estimate_unlabelled(paths, config.length, config.charset, seed=config.seed)
    runs.write_json(out / SETTINGS, settings)
    synthetic = out / "synthetic"
    if not (synthetic / "labels.csv").exists():
        write_look_alikes(synthetic, style, config.synthetic, config.seed)
    reference = _reference(out / "reference", style, config.seed)
    budget = config.budget_minutes * 60
    run = _first_reader(synthetic, out / "rounds", config, budget, began, quiet)
    prepared: Prepared = {}
    rounds = [_read_round(0, run, (paths, reference), config, prepared)]
    _write_kept(out, rounds[-1])
    began = _count_round(out, 0, began, spent_at)
    per_round = (budget - _spent(began)) / max(1, config.rounds)
    stopped = "rounds done"
    for number in range(1, config.rounds + 1):
        if budget - _spent(began) < 0.25 * per_round:
            stopped = "budget spent"
            break
        if not rounds[-1]["kept_rows"]:
            stopped = _nothing_kept(run)
            break
        data = _pseudo_labelled(out / "rounds" / f"{number}.csv", rounds[-1]["kept_rows"], synthetic, config.seed)
        run = _train(data, out / "rounds" / str(number), run, config, min(per_round, budget - _spent(began)), quiet)
        rounds.append(_read_round(number, run, (paths, reference), config, prepared))
        _write_kept(out, rounds[-1])
        began = _count_round(out, number, began, spent_at)
        if rounds[-1]["kept"] < rounds[-2]["kept"] + MIN_GAIN * len(paths):
            stopped = f"round {number} kept fewer than {MIN_GAIN:.0%} more of the images than the one before"
            break
    return _finish(out, rounds, config, style.to_dict(), len(paths), _spent(began), stopped)


def _reference(folder: Path, style: Style, seed: int) -> Reference:
    """REFERENCE look-alikes that no round trains on, and their labels: other images (seed + 1) in the
    training look-alikes' fonts (those of ``seed``)."""
    if not (folder / "labels.csv").exists():
        write_look_alikes(folder, style, REFERENCE, seed + 1, font_seed=seed)
    root, entries = list_entries(folder)
    return {root / name: text for name, text in entries}


def _check_settings(config: AdaptConfig) -> None:
    from captchalab.charset import Charset
    from captchalab.data.synthetic import length_bounds

    length_bounds(config.length)  # a clear error for a bad --length
    Charset.parse(config.charset)
    if not math.isfinite(config.budget_minutes) or config.budget_minutes <= 0 or config.rounds < 0 \
            or config.synthetic < 100:
        raise UsageError("--budget must be positive, --rounds at least 0, --synthetic at least 100")
    if not 0 < config.min_confidence < 1:
        raise UsageError(f"--min-confidence must be between 0 and 1, got {config.min_confidence}")
    if config.init and not (Path(config.init) / "model.keras").is_file():
        raise UsageError(f"--init {config.init}: not a finished run folder (no model.keras); give the folder of "
                         "a trained run, e.g. a general reader")


def _check_out(out: Path, settings: dict[str, Any]) -> None:
    """A new folder, or one an earlier adapt of the same images with the same settings left (it goes
    on from there); never someone else's files."""
    saved = out / SETTINGS
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"{out}: exists and is a file; choose another folder")
    if out.exists() and any(out.iterdir()) and not saved.exists():
        raise RunFolderError(f"{out}: exists and is not an adapt folder; choose another folder")
    fix = "choose another folder"
    if saved.exists() and files.read_json(saved, RunFolderError, fix) != settings:
        raise RunFolderError(f"{out}: an adapt of other images or with other settings ran there; {fix}")
    out.mkdir(parents=True, exist_ok=True)


def _images(folder: Path, out: Path, limit: int) -> list[Path]:
    """The folder's images, as absolute paths (they go into labels CSVs read from other folders); links are
    kept as links: their names are the user's."""
    if not folder.is_dir():
        raise UsageError(f"{folder}: not a folder; give the folder of the site's captcha images")
    if out.resolve().is_relative_to(folder.resolve()):
        raise UsageError(f"{out}: inside {folder}, whose images it would mix with its own; put --out elsewhere")
    paths = [p.absolute() for p in itertools.islice(iter_image_files([folder]), limit)]
    if len(paths) < 20:
        raise DataError(f"{folder}: {len(paths)} image(s); adapting needs at least 20, better a few hundred")
    return paths


def _cpu() -> float:
    """CPU seconds of this process and its finished children (look-alikes render in worker processes)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _spent(began: float) -> float:
    return _cpu() - began


def _spent_at(out: Path) -> dict[str, float]:
    """CPU seconds spent on ``out`` by the end of each round an earlier process finished, by round."""
    path = out / SPENT
    if not path.is_file():
        return {}
    fix = f"delete {path} to start the CPU budget again"
    record = files.read_json(path, RunFolderError, fix)
    rounds = record.get("rounds") if isinstance(record, dict) else None
    if not isinstance(rounds, dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in rounds.values()):
        raise RunFolderError(f"{path}: not the CPU record adapt writes; {fix}")
    return {str(k): max(0.0, float(v)) for k, v in rounds.items()}


def _count_round(out: Path, number: int, began: float, spent_at: dict[str, float]) -> float:
    """The clock's start after round ``number`` was read. A round an earlier process finished counts what
    it spent then (reading it again here is free, so that going on after a kill decides as the first run
    did); a new one is recorded. What a killed round had spent is not counted: it trains again."""
    key = str(number)
    if key in spent_at:
        return _cpu() - spent_at[key]
    spent_at[key] = round(_spent(began), 1)
    runs.write_json(out / SPENT, {"rounds": spent_at})
    return began


def _train(data: Path, out: Path, init: Path | None, config: AdaptConfig, cpu_seconds: float, quiet: bool) -> Path:
    """One training run, skipped when a finished one is there (adapt again after a kill goes on)."""
    from captchalab.training import train  # TensorFlow: only once something trains

    if (out / "model.onnx").exists():
        return out
    images = _count_rows(data)
    # epochs that fit the budget, so that the cosine schedule ends with it; the CPU cap is the backstop
    epochs = int(min(60, max(2, cpu_seconds / (images * CPU_SECONDS_PER_IMAGE))))
    settings = TrainConfig(epochs=epochs, learning_rate=1e-3 if init else 2e-3,
                           max_cpu_minutes=round(max(1.0, cpu_seconds) / 60, 3), threads=config.threads,
                           seed=config.seed)
    return train(data, out=out, init=init, charset=config.charset, train_config=settings, force=True, quiet=quiet)


def _first_reader(synthetic: Path, rounds: Path, config: AdaptConfig, budget: float, began: float,
                  quiet: bool) -> Path:
    """Round 0: trained on the look-alikes with its share of the budget, then, while it cannot yet read
    its own look-alikes' validation images (CTC's start-up plateau can outlast any fixed share), on
    from where it stopped with what the budget holds beyond a quarter kept for self-training."""
    init = Path(config.init) if config.init else None
    run = _train(synthetic, rounds / "0", init, config, budget * config.pretrain_share - _spent(began), quiet)
    extra = 0
    while _validation_accuracy(run) < FIRST_READER_ACCURACY and budget * 0.75 - _spent(began) > 60:
        extra += 1
        run = _train(synthetic, rounds / f"0-{extra}", run, config, budget * 0.75 - _spent(began), quiet)
    return run


def _nothing_kept(run: Path) -> str:
    """Why no reading was kept: round 0 never learned its look-alikes, or they do not resemble the images."""
    learned = _validation_accuracy(run)
    if learned < FIRST_READER_ACCURACY:
        return (f"no image was read confidently enough to learn from: the first reader read only {learned:.0%} of "
                "its own look-alikes' validation images when the budget ran out (CTC's start-up plateau); give a "
                "larger --budget, or label a few images (docs/few-labels.md)")
    return ("no image was read confidently enough to learn from, though the first reader reads its look-alikes: "
            "they may not resemble the images; check --length and --charset, or label a few images")


def _validation_accuracy(run: Path) -> float:
    metrics = files.read_json(run / "metrics.json", RunFolderError, "delete the round's folder to train it again")
    return float(metrics.get("sequence_accuracy", 0.0))


def _count_rows(data: Path) -> int:
    return max(1, len(list_entries(data)[1]))


def _read_round(number: int, run: Path, images: tuple[Sequence[Path], Reference], config: AdaptConfig,
                prepared: Prepared) -> dict[str, Any]:
    """Read every image and a shifted copy; keep the confident readings that the shift leaves alone.
    ``images``: the folder's images, and the reference look-alikes with their labels (how the round reads
    images of the style it was trained for: how often right, how confident, how often the shift leaves
    a reading alone)."""
    predictor = Predictor.load(run, threads=config.threads)
    constraints = Constraints.parse(config.length, config.charset, None, predictor.config.charset)
    size = predictor.config.image
    readable, readings, stable = _read_shifted(predictor, images[0], constraints, (size, "images"), prepared)
    seen, known, steady = _read_shifted(predictor, list(images[1]), constraints, (size, "reference"), prepared)
    kept = [(str(p), r.text) for p, r, same in zip(readable, readings, stable)
            if same and r.confidence >= config.min_confidence]
    confidences = np.array([r.confidence for r in readings])
    share, reference_share = float(np.mean(stable)), float(np.mean(steady))
    consistency = min(1.0, share / max(1e-6, reference_share))
    right = float(np.mean([r.text == images[1][p] for p, r in zip(seen, known)]))
    threshold = thresholded_share(confidences, np.array([r.confidence for r in known]), right)
    return {"round": number, "run": str(run), "images": len(readable), "kept": len(kept),
            "mean_confidence": round(float(confidences.mean()), 4), "stable_share": round(share, 4),
            "reference_stable_share": round(reference_share, 4), "consistency": round(consistency, 4),
            "reference_accuracy": round(right, 4), **threshold,
            **estimate(len(kept), len(readable), float(confidences.mean()) * consistency,
                       threshold["thresholded_share"], number > 0),
            "least_certain": _least_certain(readable, readings), "kept_rows": kept}


def thresholded_share(confidences: np.ndarray, reference: np.ndarray, reference_accuracy: float) -> dict[str, float]:
    """Average thresholded confidence (Garg et al., ICLR 2022): the threshold is the confidence exceeded by
    as large a share of the reference look-alikes as were read right, and the estimate is the share of
    the images whose confidence is above it. Confidences equal to the threshold count in the share that
    makes the reference's own count exact (saturated confidences tie). An over-confident reader is
    over-confident on the reference too, and the threshold rises with it; what it cannot see is a reader
    that guesses at the images as confidently as it reads the reference (docs/adapt.md)."""
    threshold = float(np.quantile(reference, 1.0 - reference_accuracy))
    above, at = float(np.mean(reference > threshold)), float(np.mean(reference == threshold))
    tied = (reference_accuracy - above) / at if at else 0.0  # the share of ties the reference counts
    share = np.mean(confidences > threshold) + tied * np.mean(confidences == threshold)
    return {"confidence_threshold": round(threshold, 4), "thresholded_share": round(float(share), 4)}


def _read_shifted(predictor: Predictor, paths: Sequence[Path], constraints: Constraints, key: Any,
                  prepared: Prepared) -> tuple[list[Path], list[Prediction], list[bool]]:
    """The readings of the images, and whether a copy shifted SHIFT pixels reads the same."""
    if key not in prepared:
        prepared[key] = _prepared(predictor, paths)
    readable, pixels = prepared[key]
    readings = [r[0] for r in predictor.predict_pixels(pixels, 1, constraints)]
    shifted = [r[0] for r in predictor.predict_pixels(_shifted(pixels), 1, constraints)]
    return readable, readings, [r.text == t.text and bool(r.text) for r, t in zip(readings, shifted)]


def estimate(kept: int, images: int, ceiling: float, thresholded: float, self_trained: bool) -> dict[str, Any]:
    """The model's accuracy on the images, from what it read, with no label: the middle of a range.

    Round 0 never trained on the images. Its range spans two estimates, each wrong where the other is
    right: the ``thresholded`` share (``thresholded_share``) trusts its confidence, and is high where it
    guesses confidently at images unlike its look-alikes; the mean calibrated confidence times the
    consistency (how often a reading survives a two-pixel shift, over how often it does on the
    reference look-alikes, at most 1: ``ceiling``) trusts the shift, and is low where right readings
    move too. A self-trained round was fitted on its own earlier readings of the images, which it reads
    back with confidence whether they were right or not: ``ceiling`` is its ceiling, and the share it
    read confidently and stably (``kept``) a floor while those readings are right. How each rule was
    chosen and checked: docs/adapt.md."""
    other = kept / max(1, images) if self_trained else thresholded
    low, high = min(other, ceiling), max(other, ceiling)
    return {"estimate": round((low + high) / 2, 4), "estimate_range": [round(low, 4), round(high, 4)]}


def _write_kept(out: Path, reading: dict[str, Any]) -> None:
    """rounds/kept-N.csv: the readings round N kept, for ``label`` to learn from beside the corrections.
    A round that kept nothing leaves no file (a labels CSV without rows is refused as a mistake when read)."""
    target = out / "rounds" / f"kept-{reading['round']}.csv"
    if reading["kept_rows"]:
        write_labels_csv(target, reading["kept_rows"])
    else:
        target.unlink(missing_ok=True)


def _prepared(predictor: Predictor, paths: Sequence[Path]) -> tuple[list[Path], np.ndarray]:
    readable, pixels = [], []
    for path in paths:
        try:
            pixels.append(predictor.prepare(open_image(path)))
        except ImageError:
            continue  # an unreadable image is left out of adapting, not a reason to stop
        readable.append(path)
    if not readable:
        raise DataError("none of the images could be read")
    return readable, np.stack(pixels)


def _shifted(pixels: np.ndarray) -> np.ndarray:
    """Every image moved SHIFT pixels right and down, the edges repeated."""
    padded = np.pad(pixels, ((0, 0), (SHIFT, 0), (SHIFT, 0)), mode="edge")
    return padded[:, : pixels.shape[1], : pixels.shape[2]]


def _least_certain(paths: Sequence[Path], readings: Sequence[Prediction]) -> list[dict[str, Any]]:
    order = np.argsort([r.confidence for r in readings])[:LEAST_CERTAIN]
    return [{"file": str(paths[i]), "text": readings[i].text, "confidence": round(readings[i].confidence, 4)}
            for i in order]


def _pseudo_labelled(csv_path: Path, kept: Sequence[tuple[str, str]], synthetic: Path, seed: int) -> Path:
    """The kept readings and as many look-alikes, as one labels CSV of absolute paths."""
    root, entries = list_entries(synthetic)
    look_alikes = random.Random(seed).sample(entries, min(len(entries), len(kept)))
    rows = [*kept, *((str((root / name).resolve()), label) for name, label in look_alikes)]
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    return write_labels_csv(csv_path, rows)


def _finish(out: Path, rounds: list[dict[str, Any]], config: AdaptConfig, style: dict[str, Any],
            images: int, cpu_seconds: float, stopped: str) -> Path:
    """OUT/model: the round that kept the most readings (the last one may have kept fewer)."""
    best = max(rounds, key=lambda r: (r["kept"], r["round"]))
    model = out / "model"
    if model.exists():
        shutil.rmtree(model)
    shutil.copytree(best["run"], model)
    record = {"config": asdict(config), "images": images, "style": style, "cpu_seconds": round(cpu_seconds, 1),
              "model": str(model), "model_round": best["round"],
              "rounds": [{k: v for k, v in r.items() if k != "kept_rows"} for r in rounds],
              "estimated_accuracy": best["estimate"], "estimate_range": best["estimate_range"], "stopped": stopped}
    record["check_csv"] = str(_write_check(out, best["least_certain"]))
    runs.write_json(out / "adapt.json", record)
    write_adapt_sheet(out, record)
    return out


def _write_check(out: Path, least_certain: Sequence[dict[str, Any]]) -> Path:
    """check.csv, unless a person may have corrected it since: then check-new.csv beside it."""
    rows = [(r["file"], r["text"]) for r in least_certain]
    target = out / "check.csv"
    if target.exists():
        fresh = out / ".check.csv"
        write_labels_csv(fresh, rows)
        if fresh.read_bytes() == target.read_bytes():
            fresh.unlink()
            return target
        target = out / "check-new.csv"
        fresh.replace(target)
        return target
    return write_labels_csv(target, rows)


def label(out: str | Path, sheet: str | Path | None = None, budget_minutes: float = 10.0,
          quiet: bool = False) -> Path:
    """Fine-tune an adapt folder's model with a person's corrections (``captchalab label OUT``).

    ``sheet`` (default OUT/check.csv, the least certain readings) is a ``file,label`` CSV whose labels a
    person has checked and corrected: every row counts as a true label. The model of ``out`` is
    fine-tuned on them (repeated to a quarter of the data), the readings its round kept and as many
    look-alikes; the new run becomes OUT/model and adapt.json records it under ``labelled``."""
    out = Path(out)
    _, record, config = _finished(out)
    sheet = Path(sheet) if sheet else out / "check.csv"
    corrections = _corrections(sheet, config)
    round_run = Path(record["rounds"][[r["round"] for r in record["rounds"]].index(record["model_round"])]["run"])
    corrected = {file for file, _ in corrections}  # resolved paths: kept-N.csv may name them through links
    kept_csv = out / "rounds" / f"kept-{record['model_round']}.csv"
    kept = [(f, t) for f, t in (list_entries(kept_csv)[1] if kept_csv.exists() else [])
            if str(Path(f).resolve()) not in corrected]
    data = _label_data(out / "rounds" / "label.csv", corrections, kept, out / "synthetic", config.seed)
    digest = hashlib.sha256(data.read_bytes()).hexdigest()[:8]  # a new sheet trains a new run
    run = _train(data, out / "rounds" / f"label-{digest}", round_run, config, budget_minutes * 60, quiet)
    model = out / "model"
    shutil.rmtree(model, ignore_errors=True)
    shutil.copytree(run, model)
    record["labelled"] = {"sheet": str(sheet.resolve()), "corrections": len(corrections), "kept": len(kept),
                          "from_round": record["model_round"], "run": str(run)}
    runs.write_json(out / "adapt.json", record)
    return out


def _finished(out: Path) -> tuple[dict[str, Any], dict[str, Any], AdaptConfig]:
    """A finished adapt folder's settings, its adapt.json and its config."""
    if not (out / SETTINGS).is_file() or not (out / "adapt.json").is_file():
        raise RunFolderError(f"{out}: not a finished adapt folder; run 'captchalab adapt' into it first")
    settings = files.read_json(out / SETTINGS, RunFolderError, "run 'captchalab adapt' into it first")
    record = files.read_json(out / "adapt.json", RunFolderError, "rerun 'captchalab adapt' to finish it")
    config = AdaptConfig(**{k: v for k, v in settings.items() if k in AdaptConfig.__dataclass_fields__})
    return settings, record, config


def read_again(out: str | Path) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A function that reads a round of a finished adapt folder again as adapt now reads one (the folder's
    images, the reference look-alikes in OUT): for checking a new estimate rule on rounds already trained
    (bench/adapt.py --rescore). Its readings are returned, adapt.json is left as it is."""
    out = Path(out)
    settings, record, config = _finished(out)
    paths = _images(Path(settings["folder"]), out, config.max_images)
    reference = _reference(out / "reference", Style.from_dict(record["style"]), config.seed)
    prepared: Prepared = {}
    return lambda r: _read_round(r["round"], Path(r["run"]), (paths, reference), config, prepared)


def _corrections(sheet: Path, config: AdaptConfig) -> list[tuple[str, str]]:
    """The sheet's rows as absolute paths, every label checked against --length and --charset."""
    from captchalab.charset import Charset
    from captchalab.data.synthetic import length_bounds

    root, rows = list_entries(sheet)
    symbols, (low, high) = set(Charset.parse(config.charset).symbols), length_bounds(config.length)
    for number, (file, text) in enumerate(rows, start=2):
        if not low <= len(text) <= high or not set(text) <= symbols:
            raise DataError(f"{sheet}: row {number} ({file}): label '{text}' is not {config.length} of "
                            f"{config.charset}; correct it to what the image shows, or delete the row")
    if not rows:
        raise DataError(f"{sheet}: no rows; correct the readings of the least certain images first")
    return [(str((root / file).resolve()), text) for file, text in rows]


def _label_data(csv_path: Path, corrections: Sequence[tuple[str, str]], kept: Sequence[tuple[str, str]],
                synthetic: Path, seed: int) -> Path:
    """Corrections repeated to a quarter of the rows, the kept readings, and as many look-alikes.

    A dataset names each file once (a repeated row is refused as a mistake), so every repeat past the
    first is a hard link (a copy across file systems) in ``label-images/`` beside the CSV."""
    root, entries = list_entries(synthetic)
    look_alikes = random.Random(seed).sample(entries, min(len(entries), max(len(kept), len(corrections))))
    others = [*kept, *((str((root / name).resolve()), text) for name, text in look_alikes)]
    repeats = max(1, math.ceil(len(others) / (3 * len(corrections))))
    copies = csv_path.parent / "label-images"
    shutil.rmtree(copies, ignore_errors=True)
    copies.mkdir(parents=True)
    repeated = [(_linked(Path(file), copies / f"{k}-{i}{Path(file).suffix}") if k else file, text)
                for k in range(repeats) for i, (file, text) in enumerate(corrections)]
    return write_labels_csv(csv_path, [*repeated, *others])


def _linked(source: Path, target: Path) -> str:
    """``target`` as another name of ``source`` (a copy where a hard link cannot be made)."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
    return str(target.resolve())


def summary(out: Path) -> dict[str, Any]:
    """adapt.json, as written."""
    return json.loads((Path(out) / "adapt.json").read_text(encoding="utf-8"))
