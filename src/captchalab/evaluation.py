"""Metrics of a model on a labelled dataset, as DESIGN.md specifies them."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from captchalab import files, metrics, report, runs
from captchalab.data.folder import load_dataset
from captchalab.errors import CaptchaLabError, ModelError
from captchalab.inference.predictor import Predictor
from captchalab.progress import counting

EVALUATIONS = "evaluations"  # in a run folder: one JSON file per evaluated dataset (metrics.json is train's)
_PACKAGE = Path(__file__).resolve().parent  # the installed package (the bundled model's folder): never written to


def evaluate(
    run: str | Path | None,
    data: str | Path,
    skip_bad: bool = False,
    batch_size: int = 64,
    quiet: bool = True,
    save: bool = True,
    report: str | Path | None = None,
    out: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate RUN (None: the bundled model) on DATA; ``data`` in the result names the set.

    ``save``: when RUN is a run folder, also written to RUN/evaluations/NAME.json, NAME being the
    dataset's (``saved_path``); train's validation metrics.json is never touched, and nothing is
    written for a model file or the bundled model. ``out``: also written to this JSON file.
    ``report``: a folder for an HTML report (index.html) with plots and the worst examples.
    """
    predictor = Predictor.load(run)
    config = predictor.config
    limit = config.head.length_limit(config.max_length)
    with counting(f"reading {data}", quiet) as advance:
        # Labels the model can never read (characters outside its charset; for one head per
        # position, more characters than heads) are reported, or skipped with --skip-bad.
        dataset = load_dataset(data, config.charset, config.image, skip_bad, config.charset.case_insensitive,
                               advance, max_length=limit)
    labels = [config.charset.normalize(label) for label in dataset.labels]
    readings, seconds = _predict_all(predictor, dataset.pixels, batch_size, quiet)
    texts = [r.text for r in readings]
    result: dict[str, Any] = metrics.summarize(texts, labels, limit)
    result.update({
        "mean_confidence": float(np.mean([r.confidence for r in readings])),
        "ms_per_image": 1000 * seconds / len(texts),
        "model": config.model,
        "charset": config.charset.symbols,
        "data": str(Path(data).resolve()),
    })
    if dataset.skipped:
        result["skipped"] = list(dataset.skipped)
    saved = saved_path(run, data) if save else None
    for path in (saved, Path(out) if out is not None else None):
        if path is not None:
            runs.write_json(path, result)
    if saved is not None:
        result["saved"] = str(saved)
    if report is not None:
        result["report"] = str(_write_report(Path(report), predictor, data, dataset, labels, readings, result))
    return result


def saved_path(run: str | Path | None, data: str | Path) -> Path | None:
    """RUN/evaluations/NAME.json for a run folder RUN; None for a model file, the bundled model, or any
    folder inside the installed package. NAME: the dataset folder's name, or PARENT-STEM for a CSV file,
    so evaluating one set again replaces its own result and no other."""
    if run is None or not Path(run).is_dir():
        return None
    folder = Path(run).resolve()
    if folder.is_relative_to(_PACKAGE):
        return None
    return folder / EVALUATIONS / f"{dataset_name(data)}.json"


def dataset_name(data: str | Path) -> str:
    path = Path(data).resolve()
    parts = [path.parent.name, path.stem] if path.is_file() else [path.name]
    return re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join(p for p in parts if p)).strip("._") or "data"


def _write_report(out: Path, predictor: Predictor, data: str | Path, dataset: Any, labels: list[str],
                  readings: list, result: dict[str, Any]) -> Path:
    examples = [report.Example(file, pixels, label, reading)
                for file, pixels, label, reading in zip(dataset.files, dataset.pixels, labels, readings)]
    folder = predictor.source.parent if predictor.source.is_file() else predictor.source
    try:  # only for the report's curves: any problem with it just leaves them out
        history = files.read_json(folder / "history.json", ModelError, "retrain")
    except (OSError, CaptchaLabError):
        history = None
    title = f"{predictor.config.model} ({predictor.source}) on {data}"
    return report.write_evaluation(out, result, examples, title, history if isinstance(history, list) else None,
                                   predictor.temperature)


def _predict_all(predictor: Predictor, pixels: np.ndarray, batch_size: int, quiet: bool) -> tuple[list, float]:
    with counting("solving", quiet, total=len(pixels)) as advance:
        began = time.perf_counter()
        readings = [r[0] for r in predictor.predict_pixels(pixels, batch_size=batch_size, progress=advance)]
        return readings, time.perf_counter() - began


ProgressHook = Callable[[int], None]
