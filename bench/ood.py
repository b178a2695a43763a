"""The bundled model on captchas unlike its own: how confident it is, and what the OOD flag says.

The bundled model was trained on the PyPI ``captcha`` generator's style (bench/train_bundled.py).
This script (1) records its OOD reference (ood.py) on images of its validation seed and writes
it to ``src/captchalab/bundled/ood.json``, then (2) reads two sets with the packaged model as
users get it: 1,000 fresh images of its own style (the test seed of train_bundled.py) and the
1,040 real captchas of captcha_images_v2 (bench/data.py), a style it never saw. For each set:
accuracy, the calibrated confidence, the share flagged ``ood``, and what ``--min-confidence 0.5``
abstains on.

    .venv/bin/python bench/ood.py          # about a minute

Writes bench/results/ood.json and src/captchalab/bundled/ood.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from captchalab import ood, runs
from captchalab.charset import Charset
from captchalab.data.synthetic import Renderer
from captchalab.inference.predictor import Predictor, bundled_model_path
from data import captcha_images_v2
from machine import machine_info
from train_bundled import CHARSET, LENGTH, LOWERCASE_SHARE, SEEDS, SIZE

ROOT = Path(__file__).resolve().parent.parent
RESULT = ROOT / "bench" / "results" / "ood.json"
MIN_CONFIDENCE = 0.5


def synthetic(predictor: Predictor, count: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """``count`` images of the bundled model's own style, prepared for it, and their labels."""
    renderer = Renderer(Charset.parse(CHARSET), LENGTH, SIZE, seed, lowercase_share=LOWERCASE_SHARE)
    samples = [renderer.sample() for _ in range(count)]
    return np.stack([predictor.prepare(image) for _, image in samples]), [text for text, _ in samples]


def real(predictor: Predictor) -> tuple[np.ndarray, list[str]]:
    files = sorted((captcha_images_v2() / "images").glob("*.png"))
    return np.stack([predictor.prepare(f) for f in files]), [f.stem for f in files]


def measure(predictor: Predictor, pixels: np.ndarray, labels: list[str]) -> dict:
    readings = [r[0] for r in predictor.predict_pixels(pixels, min_confidence=MIN_CONFIDENCE)]
    confidence = np.array([r.confidence for r in readings])
    right = np.array([r.text == predictor.config.charset.normalize(y) for r, y in zip(readings, labels)])
    flagged = np.array([bool(r.ood) for r in readings])
    return {
        "images": len(labels),
        "sequence_accuracy": round(float(right.mean()), 4),
        "confidence_median": round(float(np.median(confidence)), 4),
        "confidence_mean": round(float(confidence.mean()), 4),
        "share_confidence_at_least_0.9": round(float((confidence >= 0.9).mean()), 4),
        "wrong_at_confidence_at_least_0.9": int(((confidence >= 0.9) & ~right).sum()),
        "share_flagged_ood": round(float(flagged.mean()), 4),
        "wrong_not_flagged": int((~right & ~flagged).sum()),
        f"share_abstained_at_min_confidence_{MIN_CONFIDENCE}": round(float(np.mean([r.abstained for r in readings])),
                                                                      4),
        "score_median": round(float(np.median(ood.scores(predictor.logits(pixels)))), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference-images", type=int, default=1000)
    parser.add_argument("--test-images", type=int, default=1000)
    args = parser.parse_args()
    started, cpu = time.time(), time.process_time()
    predictor = Predictor.load(bundled_model_path(), threads=1)
    val_pixels, _ = synthetic(predictor, args.reference_images, SEEDS["val"])
    record = ood.reference(predictor.logits(val_pixels))
    record["source"] = f"bench/ood.py: {args.reference_images} images of the generator's validation seed"
    ood.save(bundled_model_path().parent, record)
    predictor = Predictor.load(bundled_model_path(), threads=1)  # as users get it: with the reference
    sets = {"synthetic_own_style": measure(predictor, *synthetic(predictor, args.test_images, SEEDS["test"])),
            "captcha_images_v2": measure(predictor, *real(predictor))}
    result = {
        "question": "Is the bundled model confidently wrong on captchas unlike its own, and does the OOD flag "
                    "catch them?",
        "model": "bundled (src/captchalab/bundled/model.onnx)", "reference": record, "sets": sets,
        "min_confidence": MIN_CONFIDENCE, "wall_seconds": round(time.time() - started, 1),
        "cpu_seconds": round(time.process_time() - cpu, 1), "machine": machine_info(),
    }
    runs.write_json(RESULT, result)
    print(json.dumps(sets, indent=2))


if __name__ == "__main__":
    main()
