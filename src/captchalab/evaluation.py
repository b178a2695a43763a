"""Metrics of a model on a labelled dataset, as DESIGN.md specifies them."""

from __future__ import annotations

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


def evaluate(
    run: str | Path | None,
    data: str | Path,
    skip_bad: bool = False,
    batch_size: int = 64,
    quiet: bool = True,
    save: bool = True,
    report: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate RUN (None: the bundled model) on DATA; also saved as RUN/metrics.json.

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
    })
    if dataset.skipped:
        result["skipped"] = list(dataset.skipped)
    if save and run is not None and runs.run_folder(run).is_dir() and Path(run).is_dir():
        runs.write_json(Path(run) / "metrics.json", result)
    if report is not None:
        result["report"] = str(_write_report(Path(report), predictor, data, dataset, labels, readings, result))
    return result


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
