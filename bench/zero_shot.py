"""A reader out of the box next to ddddocr, zero-shot, on every set in one run (issue 13).

No solver has seen any of these images or their styles' labels. Sets: captcha_images_v2 ``test.csv``
(a real captcha) and the test set of every style of the zoo (bench/zoo.py: three PyPI generators that
no captchalab model trains on, and hand-set styles of captchalab's look-alike renderer). Each solver
reads every image twice: plain, and told what a user knows about the site (the charset and lengths
of its labels, as a user would state them): ``--allowed``/``--length`` for captchalab, with ``--case lower`` or
``upper`` when the site's letters are all of one case; ``set_ranges`` for ddddocr. Scored exact and
case-folded. For captchalab also the calibration: mean confidence next to accuracy, and the
expected calibration error (15 bins), which should stay honest on styles it never saw.

Timing (ms/image at batch 1, one pinned core, file bytes in, text out; wall and CPU time) is measured
on captcha_images_v2 for both, the two taking turns over five passes (``timing``), so that a machine
busy with other jobs slows both alike; ``bench/peers.py`` has the detailed profile.

    .venv/bin/pip install -e ".[bench,zoo]"          # ddddocr and the zoo's generators
    .venv/bin/python bench/zero_shot.py --model bench/results/general/NNN   # a run folder; default: bundled

Writes bench/results/zero_shot.json (``--out``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from machine import machine_info
from peers import Ddddocr, Item, pin_to_one_core, read_csv_set
from zoo import ROOT, STYLES, test_data

RESULT = ROOT / "bench" / "results" / "zero_shot.json"
TIMED_SET, TIMING_PASSES = "captcha_images_v2", 5


def site_knowledge(items: Sequence[Item]) -> dict[str, Any]:
    """What a user knows about a site: its symbols and label lengths (those of the set's labels)."""
    labels = [label for _, _, label in items]
    symbols = "".join(sorted(set("".join(labels))))
    letters = [c for c in symbols if c.isalpha()]
    case = "lower" if letters and all(c.islower() for c in letters) else \
        "upper" if letters and all(c.isupper() for c in letters) else "any"
    lengths = sorted({len(label) for label in labels})
    length = str(lengths[0]) if len(lengths) == 1 else f"{lengths[0]}-{lengths[-1]}"
    return {"charset": symbols, "length": length, "case": case}


def ranges(knowledge: dict[str, Any]) -> str:
    """ddddocr's set_ranges: the charset, both cases of its letters where the site's are of one case
    (ddddocr reads most letters lower case and cannot fold; scoring folds case for it)."""
    symbols = knowledge["charset"]
    return "".join(dict.fromkeys(symbols + symbols.swapcase())) if knowledge["case"] != "any" else symbols


class Reader:
    """captchalab's predictor, plain or with the site's constraints; keeps the confidences."""

    def __init__(self, model: Path | None, knowledge: dict[str, Any] | None) -> None:
        import captchalab
        from captchalab.decoding import Constraints

        self.predictor = captchalab.load(model, threads=1)
        self.constraints = Constraints.parse(knowledge["length"], knowledge["charset"], knowledge["case"],
                                             self.predictor.config.charset) if knowledge else None
        self.confidences: list[float] = []

    def read(self, data: bytes) -> str:
        reading = self.predictor.solve(data, self.constraints)
        self.confidences.append(reading.confidence)
        return reading.text


def score(predictions: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    from captchalab import metrics

    exact = metrics.summarize(predictions, labels)
    folded = metrics.summarize([p.lower() for p in predictions], [label.lower() for label in labels])
    return {"sequence_accuracy": round(exact["sequence_accuracy"], 4),
            "sequence_accuracy_casefold": round(folded["sequence_accuracy"], 4),
            "char_accuracy_casefold": round(folded["char_accuracy"], 4)}


def run_solver(solver: Any, items: Sequence[Item]) -> dict[str, Any]:
    predictions = [solver.read(data) for _, data, _ in items]
    labels = [label for _, _, label in items]
    result: dict[str, Any] = {"n": len(items), **score(predictions, labels)}
    if isinstance(solver, Reader):
        result.update(calibration(solver.confidences, predictions, labels, solver.constraints))
    result["examples"] = [{"file": f, "label": label, "read": p} for (f, _, label), p in zip(items[:5], predictions)]
    return result


def timing(solvers: dict[str, Any], items: Sequence[Item], passes: int = TIMING_PASSES) -> dict[str, dict[str, Any]]:
    """Batch-1 time per image of each solver, file bytes in, text out, taking turns pass by pass
    (``passes`` each): whatever else the machine runs meanwhile slows them alike, so their ratio holds.
    Whole passes, not image by image: a solver in use keeps its weights in the CPU's caches, as in
    service. CPU time is what a busy machine (other jobs on the same core) leaves comparable."""
    wall: dict[str, list[float]] = {name: [] for name in solvers}
    cpu: dict[str, list[float]] = {name: [] for name in solvers}
    if not items:
        return {}
    for solver in solvers.values():
        solver.read(items[0][1])  # warm-up: first-call allocations are not a reading's cost
    for turn in range(passes):
        order = list(solvers.items())
        for name, solver in order if turn % 2 == 0 else order[::-1]:  # neither always goes first
            for _, data, _ in items:
                start, start_cpu = time.perf_counter(), time.process_time()
                solver.read(data)
                wall[name].append((time.perf_counter() - start) * 1000)
                cpu[name].append((time.process_time() - start_cpu) * 1000)
    return {name: {"batch1_ms_p50": round(statistics.median(wall[name]), 3),
                   "batch1_images_per_s": round(1000 * len(wall[name]) / sum(wall[name]), 1),
                   "batch1_cpu_ms_mean": round(statistics.fmean(cpu[name]), 3), "timing_passes": passes}
            for name in solvers}


def calibration(confidences: list[float], predictions: Sequence[str], labels: Sequence[str],
                constraints: Any) -> dict[str, float]:
    """Confidence against exact correctness, after the case policy (what the caller would submit)."""
    from captchalab.calibration import expected_calibration_error

    fold = constraints.fold if constraints is not None else (lambda text: text)
    correct = np.array([fold(p) == fold(label) for p, label in zip(predictions, labels)], dtype=float)
    confidence = np.array(confidences, dtype=float)
    return {"mean_confidence": round(float(confidence.mean()), 4),
            "ece": round(float(expected_calibration_error(confidence, correct)), 4)}


def sets(work: Path, names: Sequence[str]) -> dict[str, tuple[list[Item], dict[str, Any]]]:
    out = {}
    for name in names:
        items = read_csv_set(test_data(name, work))
        out[name] = (items, site_knowledge(items))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="a run folder (default: the bundled model)")
    parser.add_argument("--styles", default=",".join(STYLES), help="comma-separated zoo style names")
    parser.add_argument("--limit", type=int, default=500, help="images per set at most")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "zoo", help="where zoo sets are rendered")
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    from captchalab import runs

    data = sets(args.work, args.styles.split(","))
    pin_to_one_core()
    results: dict[str, Any] = {}
    for name, (items, knowledge) in data.items():
        items = items[: args.limit]
        results[name] = {"knowledge": knowledge, "solvers": {
            "captchalab": run_solver(Reader(args.model, None), items),
            "captchalab_allowed": run_solver(Reader(args.model, knowledge), items),
            "ddddocr": run_solver(Ddddocr(), items),
            "ddddocr_set_ranges": run_solver(Ddddocr(ranges(knowledge)), items)}}
        if name == TIMED_SET:
            for solver, measured in timing({"captchalab": Reader(args.model, None), "ddddocr": Ddddocr()},
                                           items).items():
                results[name]["solvers"][solver].update(measured)
        print(name, {k: v["sequence_accuracy_casefold"] for k, v in results[name]["solvers"].items()}, flush=True)
    runs.write_json(args.out, {"what": __doc__.split("\n\n")[0], "model": str(args.model or "bundled"),
                               "model_sha256": model_sha256(args.model), "ddddocr_version": metadata.version("ddddocr"),
                               "sets": results,
                               "summary": summary(results), "machine": machine_info()})


def model_sha256(model: Path | None) -> str:
    import hashlib

    import captchalab

    path = Path(captchalab.load(model).source)
    path = path / "model.onnx" if path.is_dir() else path
    return hashlib.sha256(path.read_bytes()).hexdigest()


def summary(results: dict[str, Any]) -> dict[str, Any]:
    """Per solver: the worst set and the mean, case-folded sequence accuracy."""
    out = {}
    for solver in next(iter(results.values()))["solvers"]:
        scores = {name: r["solvers"][solver]["sequence_accuracy_casefold"] for name, r in results.items()}
        worst = min(scores, key=scores.get)
        out[solver] = {"worst_set": worst, "worst": scores[worst], "mean": round(statistics.fmean(scores.values()), 4)}
    return out


if __name__ == "__main__":
    main()
