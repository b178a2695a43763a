"""What reading costs after the network: greedy decoding, CTC prefix beam search, and its option floor.

The bundled model's outputs (computed once, not timed) on two sets: 500 captchas of its own style
(it is sure of most) and captcha_images_v2's 104 ``test.csv`` images (unlike its own: unsure of
all). Timed per image, median of 3 passes, one process:

* ``greedy``: the best path and its exact probability (what an image costs when the best path
  holds more than half the probability);
* ``decode top-1``: what ``solve`` does (greedy, and the search only where greedy is not sure);
* ``decode top-3``: the search on every image;
* ``search, floor 1e-5`` vs ``search, no floor``: the beam search alone, with symbols below
  ``heads.OPTION_FLOOR`` in a frame starting no prefix, and without; the readings must agree.

    .venv/bin/python bench/decode.py          # a minute

Writes bench/results/decode.json.
"""

from __future__ import annotations

import json
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


def probabilities(predictor: Any, files: list[Path]) -> np.ndarray:
    from captchalab import decoding
    from captchalab.data.images import open_image

    pixels = np.stack([predictor.prepare(open_image(f)) for f in files])
    return decoding.softmax(predictor.logits(pixels))


def per_image_ms(step: Any, probs: np.ndarray, passes: int = 3) -> float:
    times = []
    for _ in range(passes):
        start = time.perf_counter()
        step(probs)
        times.append((time.perf_counter() - start) * 1000 / len(probs))
    return round(statistics.median(times), 4)


def measure(predictor: Any, probs: np.ndarray) -> dict[str, Any]:
    from captchalab import heads

    head, charset = predictor.config.head, predictor.config.charset
    floor = [head.candidates(p, heads.BEAM_WIDTH, 0, None) for p in probs]
    plain = [head.candidates(p, heads.BEAM_WIDTH, 0, None, 0.0) for p in probs]
    return {
        "images": len(probs),
        "greedy_sure": round(float(np.mean([g.confidence > heads.HALF for g in head.greedy(probs, charset)])), 4),
        "ms_per_image": {
            "greedy": per_image_ms(lambda p: head.greedy(p, charset), probs),
            "decode_top1": per_image_ms(lambda p: heads.decode(p, head, charset, 1), probs),
            "decode_top3": per_image_ms(lambda p: heads.decode(p, head, charset, 3), probs),
            "search_floor": per_image_ms(lambda p: [head.candidates(x, heads.BEAM_WIDTH, 0, None) for x in p], probs),
            "search_no_floor": per_image_ms(
                lambda p: [head.candidates(x, heads.BEAM_WIDTH, 0, None, 0.0) for x in p], probs),
        },
        "floor_same_best_reading": sum(_best(head, p, a) == _best(head, p, b) for p, a, b in zip(probs, floor, plain)),
    }


def _best(head: Any, probs: np.ndarray, found: list) -> tuple:
    if not found:
        return ()
    scores = head.probability(np.repeat(probs[None], len(found), axis=0), found)
    return found[int(np.argmax(scores))]


def main() -> None:
    import captchalab
    from captchalab.data.synthetic import generate

    predictor = captchalab.load(threads=1)
    v2 = captcha_images_v2()
    own_dir = ROOT / "runs" / "bench" / "decode-own"
    own = own_dir if (own_dir / "labels.csv").exists() else generate(own_dir, 500, length="4-6", seed=11)
    sets = {"own_style_500": sorted(own.glob("*.png")),
            "captcha_images_v2_test": [v2 / line.split(",")[0] for line in
                                       (v2 / "test.csv").read_text().splitlines()[1:]]}
    record = {"benchmark": "decode", "model": "bundled", "beam_width": None, "sets": {}}
    for name, files in sets.items():
        record["sets"][name] = measure(predictor, probabilities(predictor, files))
        print(name, record["sets"][name], flush=True)
    from captchalab import heads

    record["beam_width"], record["option_floor"] = heads.BEAM_WIDTH, heads.OPTION_FLOOR
    record["machine"] = machine_info()
    RESULT.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
