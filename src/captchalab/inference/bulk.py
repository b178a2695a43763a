"""Solve many files: batched, images decoded on all cores, results streamed in order."""

from __future__ import annotations

import csv
import json
import os
import sys
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from captchalab import runs
from captchalab.decoding import Constraints, Prediction
from captchalab.errors import ImageError, Interrupted, RunFolderError, UsageError
from captchalab.files import printable
from captchalab.inference.predictor import ImageLike, Predictor, iter_image_files
from captchalab.progress import counting

Result = list[Prediction] | ImageError


def solve_files(
    paths: Sequence[str | Path],
    model: str | Path | None = None,
    as_json: bool = False,
    top_k: int = 1,
    results_csv: Path | None = None,
    threads: int = 0,
    batch_size: int = 64,
    constraints: Constraints | None = None,
    min_confidence: float | None = None,
) -> int:
    """Print a reading per file; returns the number of files that could not be read.

    ``constraints`` restrict the decoding; a reading under ``min_confidence`` is printed as abstained."""
    files = list(iter_image_files(paths))
    if not files:
        raise UsageError(f"no images found in {', '.join(map(str, paths))}")
    if results_csv is not None and results_csv.exists():
        raise RunFolderError(f"{results_csv}: already exists; choose another --out or remove it")
    predictor = Predictor.load(model, threads=threads)
    warning = constraints.unproducible(predictor.config.charset) if constraints is not None else None
    if warning:
        print(f"warning: {warning}", file=sys.stderr, flush=True)

    def run(write_row: Callable[[Path, Result], None]) -> int:
        return _solve_all(predictor, files, as_json, top_k, batch_size, constraints, min_confidence, write_row,
                          warning)

    if results_csv is None:
        return run(lambda file, result: None)
    failures = 0

    def write(tmp: Path) -> None:  # all rows to a temporary file, renamed when complete: never half a CSV
        nonlocal failures
        with open(tmp, "w", newline="", encoding="utf-8", errors="backslashreplace") as handle:
            failures = run(_csv_rows(handle))

    try:
        runs.atomic_write(results_csv, write)
    except KeyboardInterrupt:
        raise Interrupted(f"{results_csv} was not written; run the command again") from None
    return failures


def _solve_all(
    predictor: Predictor, files: list[Path], as_json: bool, top_k: int, batch_size: int,
    constraints: Constraints | None, min_confidence: float | None, write_row: Callable[[Path, Result], None],
    warning: str | None = None,
) -> int:
    failures = 0
    # While the bar is live Rich routes sys.stdout to the terminal (stderr); when stdout is a file
    # or a pipe, results must still go there, so keep hold of the real stream.
    stdout = sys.stdout
    with counting("solving", len(files) < 50, len(files)) as step:
        stream = solve_stream(predictor, files, top_k, batch_size, constraints, min_confidence)
        for file, result in zip(files, stream):
            failures += isinstance(result, ImageError)
            _print(file, result, as_json, sys.stdout if stdout.isatty() else stdout, warning)
            write_row(file, result)
            step(1)
    stdout.flush()
    return failures


def solve_stream(
    predictor: Predictor, files: Sequence[Path], top_k: int, batch_size: int,
    constraints: Constraints | None = None, min_confidence: float | None = None,
) -> Iterator[list[Prediction] | ImageError]:
    """Readings in file order; decoding of the next batch overlaps inference of this one."""

    def prepare(file: Path) -> np.ndarray | ImageError:
        return prepare_or_error(predictor, file, str(file))

    def infer(prepared: list[np.ndarray | ImageError]) -> Iterator[list[Prediction] | ImageError]:
        return read_prepared(predictor, prepared, top_k, constraints, min_confidence)

    workers = min(32, (os.cpu_count() or 1) + 4)
    ahead: deque[Future[list[np.ndarray | ImageError]]] = deque()  # bounded: memory stays flat
    with ThreadPoolExecutor(workers) as pool:
        for start in range(0, len(files), batch_size):
            chunk = files[start : start + batch_size]
            ahead.append(pool.submit(lambda chunk=chunk: [prepare(f) for f in chunk]))
            if len(ahead) > 2 * workers:
                yield from infer(ahead.popleft().result())
        while ahead:
            yield from infer(ahead.popleft().result())


def prepare_or_error(predictor: Predictor, image: ImageLike, name: str) -> np.ndarray | ImageError:
    """The image at the model's size, or its error: one bad image never stops a batch."""
    try:
        return predictor.prepare(image, name)
    except ImageError as error:
        return error


def read_prepared(
    predictor: Predictor, prepared: Sequence[np.ndarray | ImageError], top_k: int,
    constraints: Constraints | None = None, min_confidence: float | None = None,
) -> Iterator[list[Prediction] | ImageError]:
    """Readings of a batch of prepared images in order, read as one batch; errors passed through."""
    good = [p for p in prepared if isinstance(p, np.ndarray)]
    readings = iter(predictor.predict_pixels(np.stack(good), top_k, constraints, min_confidence, len(good))
                    if good else [])
    for item in prepared:
        yield item if isinstance(item, ImageError) else next(readings)


def _print(file: Path, result: Result, as_json: bool, stream: TextIO, warning: str | None = None) -> None:
    record = json_record(str(file), result, warning)
    if isinstance(result, ImageError):
        line = json.dumps(record) if as_json else f"{printable(str(file))}\tERROR\t{printable(str(result))}"
    else:
        best = result[0]
        others = "  ".join(f"{p.text} ({p.confidence:.3f})" for p in result[1:])
        shown = best.text
        if best.abstained:  # below --min-confidence or ood: no answer, but the guess for who wants it
            shown, others = "(abstained)", f"guess {best.text}  {others}"
        if best.ood:
            others = f"{others}  [ood: unlike the model's training images]".lstrip()
        # one file, one line: a newline or tab in a file name is escaped, never printed
        line = json.dumps(record) if as_json else f"{printable(str(file))}\t{shown}\t{best.confidence:.3f}\t{others}"
        line = line.rstrip()
    print(line, file=stream, flush=False)


def json_record(file: str, result: Result, warning: str | None = None) -> dict[str, Any]:
    """One image's reading as ``solve --json`` prints it (and ``--engine ray`` writes it)."""
    if isinstance(result, ImageError):
        return {"file": file, "error": str(result)}
    best = result[0]
    record: dict[str, Any] = {"file": file, "text": best.text, "confidence": round(best.confidence, 4)}
    if best.ood is not None:  # the image is unlike the model's training images (ood.py)
        record["ood"] = best.ood
    if warning:  # --allowed asks for characters the model cannot produce
        record["warning"] = warning
    if len(result) > 1:
        record["top_k"] = [{"text": p.text, "confidence": round(p.confidence, 4)} for p in result]
    if best.abstained:
        record.update(text=None, abstained=True, guess=best.text)
    return record


def _csv_rows(handle: TextIO) -> Callable[[Path, Result], None]:
    writer = csv.writer(handle)
    writer.writerow(["file", "text", "confidence", "error"])

    def write(file: Path, result: Result) -> None:
        if isinstance(result, ImageError):
            writer.writerow([file, "", "", str(result)])
        elif result[0].abstained:
            writer.writerow([file, "", f"{result[0].confidence:.4f}", "abstained: below --min-confidence"])
        else:
            writer.writerow([file, result[0].text, f"{result[0].confidence:.4f}", ""])

    return write
