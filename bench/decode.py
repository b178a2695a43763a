"""What reading costs after the network, and what the beam search's width and option floor change.

The outputs of the bundled model and of the general reader (computed once, not timed) on
captcha_images_v2's 104 ``test.csv`` images, 500 captchas of the bundled model's own style, and the
500 test images of every style of the zoo (bench/zoo.py renders them the first time). For each
set and model, and each search of ``SEARCHES`` (beam width ``heads.BEAM_WIDTH``; option floor
``heads.OPTION_FLOOR``: a symbol less probable than that in a frame starts no prefix there):

* ``greedy_sure``: the share of images whose best path holds more than half the probability (no
  search runs for them at top-1);
* against the widest search with no floor: how many images keep the same top-1 reading and
  confidence, unconstrained and held to the set's length range (what a trained run does:
  config.json's label_lengths), and the same three best readings;
* how many of those top-1 readings are right (case folded), with and without the length range;
* ms per image at batch 1 for ``heads.decode`` top-1 (what ``solve`` does after the network),
  median of 3 passes, CPU time of this process (the machine may be busy).

    .venv/bin/python bench/decode.py              # about 15 CPU minutes
    .venv/bin/python bench/decode.py --limit 100  # the first 100 images of each set

Writes bench/results/decode.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import operator
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from data import captcha_images_v2
from machine import machine_info

ROOT = Path(__file__).resolve().parent.parent
RESULT = ROOT / "bench" / "results" / "decode.json"
# (beam width, option floor): the first, the widest search with no floor, is what the others are held to
SEARCHES = ((16, 0.0), (16, 1e-5), (16, 1e-3), (8, 1e-3))


def probabilities(predictor: Any, files: list[Path]) -> np.ndarray:
    from captchalab import decoding
    from captchalab.data.images import open_image

    pixels = np.stack([predictor.prepare(open_image(f)) for f in files])
    return decoding.softmax(predictor.logits(pixels))


@contextlib.contextmanager
def searching(width: int, floor: float) -> Any:
    """heads.BEAM_WIDTH and heads.OPTION_FLOOR set for the block (the search reads them at every call)."""
    from captchalab import heads

    kept = heads.BEAM_WIDTH, heads.OPTION_FLOOR
    heads.BEAM_WIDTH, heads.OPTION_FLOOR = width, floor
    try:
        yield
    finally:
        heads.BEAM_WIDTH, heads.OPTION_FLOOR = kept


def readings(probs: np.ndarray, head: Any, charset: Any, search: tuple[int, float], top_k: int, lengths: Any) -> list:
    from captchalab import heads
    from captchalab.decoding import Constraints

    rules = Constraints(min_length=lengths[0], max_length=lengths[1]) if lengths else None
    with searching(*search):
        found = heads.decode(probs, head, charset, top_k, rules)
    return [[(r.text, round(r.confidence, 9)) for r in image] for image in found]


def per_image_ms(step: Any, probs: np.ndarray, passes: int = 3) -> float:
    times = []
    for _ in range(passes):
        start = time.process_time()
        for i in range(len(probs)):
            step(probs[i : i + 1])
        times.append((time.process_time() - start) * 1000 / len(probs))
    return round(statistics.median(times), 4)


def measure(predictor: Any, probs: np.ndarray, labels: list[str], lengths: tuple[int, int]) -> dict[str, Any]:
    from captchalab import heads

    head, charset = predictor.config.head, predictor.config.charset
    modes = {"top1": (1, None), "top1_length_range": (1, lengths), "top3": (3, None)}
    record: dict[str, Any] = {
        "images": len(probs), "length_range": list(lengths),
        "greedy_sure": round(float(np.mean([g.confidence > heads.HALF for g in head.greedy(probs, charset)])), 4),
        "searches": {},
    }
    exact: dict[str, list] = {}
    for search in SEARCHES:
        found = {mode: readings(probs, head, charset, search, k, span) for mode, (k, span) in modes.items()}
        exact = exact or found
        entry: dict[str, Any] = {f"same_{mode}": sum(map(operator.eq, found[mode], exact[mode])) for mode in modes}
        for mode in ("top1", "top1_length_range"):  # the label, case folded (the bundled model reads upper case)
            entry[f"right_{mode}"] = sum(r[0][0].casefold() == y.casefold() for r, y in zip(found[mode], labels))
        with searching(*search):
            entry["decode_top1_ms"] = per_image_ms(lambda p: heads.decode(p, head, charset, 1), probs)
        record["searches"][f"width {search[0]}, floor {search[1]:g}"] = entry
    return record


def sets(limit: int) -> dict[str, tuple[list[Path], list[str]]]:
    """Each set's image files and their labels."""
    from captchalab.data.synthetic import generate
    from zoo import STYLES, read_csv, test_data

    v2 = captcha_images_v2()
    own_dir = ROOT / "runs" / "bench" / "decode-own"
    own = own_dir if (own_dir / "labels.csv").exists() else generate(own_dir, 500, length="4-6", seed=11)
    found = {"captcha_images_v2_test": [(v2 / f, label) for f, label in read_csv(v2 / "test.csv")],
             "own_style_500": [(own / f, label) for f, label in read_csv(own / "labels.csv")]}
    for name in STYLES:
        if name != "captcha_images_v2":
            csv_path = test_data(name, ROOT / "runs" / "zoo")
            found[name] = [(csv_path.parent / f, label) for f, label in read_csv(csv_path)]
    return {name: ([path for path, _ in rows[:limit]], [label for _, label in rows[:limit]])
            for name, rows in found.items()}


def main() -> None:
    import captchalab
    from captchalab import heads

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=500, help="images per set")
    args = parser.parse_args()
    record: dict[str, Any] = {"benchmark": "decode", "beam_width": heads.BEAM_WIDTH,
                              "option_floor": heads.OPTION_FLOOR, "models": {}}  # what solve uses
    data = sets(args.limit)
    for model in ("bundled", "general"):  # the bundled model is what load() gives without a name
        predictor = captchalab.load(None if model == "bundled" else model, threads=1)
        record["models"][model] = {}
        for name, (files, labels) in data.items():
            lengths = min(map(len, labels)), max(map(len, labels))
            record["models"][model][name] = measure(predictor, probabilities(predictor, files), labels, lengths)
            print(model, name, record["models"][model][name], flush=True)
    record["machine"] = machine_info()
    RESULT.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
