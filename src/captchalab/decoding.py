"""Logits to strings with confidences, for every head. NumPy only: no TensorFlow here.

- ``ctc``: (n, time, classes); collapse repeats, drop the blank (index 0).
- ``positional``: (n, slots, classes); argmax per slot, class 0 means "no character".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from captchalab.charset import BLANK, Charset


@dataclass(frozen=True)
class Prediction:
    text: str
    confidence: float


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def decode(probs: np.ndarray, head: str, charset: Charset, top_k: int = 1) -> list[list[Prediction]]:
    """Best ``top_k`` readings per image, most confident first."""
    if top_k <= 1:
        return [[p] for p in greedy(probs, head, charset)]
    search = ctc_beam_search if head == "ctc" else positional_beam_search
    return [search(sample, charset, top_k) for sample in probs]


def greedy(probs: np.ndarray, head: str, charset: Charset) -> list[Prediction]:
    best = probs.argmax(axis=-1)
    confidence = probs.max(axis=-1).prod(axis=-1)
    if head == "ctc":
        keep = np.ones_like(best, dtype=bool)
        keep[:, 1:] = best[:, 1:] != best[:, :-1]
        keep &= best != BLANK
        texts = [charset.decode(row[mask]) for row, mask in zip(best, keep)]
    else:
        texts = [charset.decode(row) for row in best]
    return [Prediction(t, float(c)) for t, c in zip(texts, confidence)]


def positional_beam_search(probs: np.ndarray, charset: Charset, top_k: int) -> list[Prediction]:
    """Exact k-best over slots (each slot independent); slots decoding to one text merge."""
    beams: list[tuple[tuple[int, ...], float]] = [((), 1.0)]
    for slot in probs:
        candidates = np.argsort(slot)[::-1][:top_k]
        beams = sorted(
            (((*path, int(c)), p * float(slot[c])) for path, p in beams for c in candidates),
            key=lambda beam: -beam[1],
        )[:top_k]
    merged: dict[str, float] = {}
    for path, p in beams:
        text = charset.decode(path)
        merged[text] = merged.get(text, 0.0) + p
    return _best(merged, top_k)


def ctc_beam_search(probs: np.ndarray, charset: Charset, top_k: int, beam_width: int = 16) -> list[Prediction]:
    """CTC prefix beam search: a reading's probability sums over all its alignments."""
    # prefix -> (probability ending in blank, probability ending in its last symbol)
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (1.0, 0.0)}
    for step in probs:
        candidates = [int(c) for c in np.argsort(step)[::-1][:beam_width] if c != BLANK]
        following: dict[tuple[int, ...], list[float]] = {}
        for prefix, (p_blank, p_symbol) in beams.items():
            total = p_blank + p_symbol
            entry = following.setdefault(prefix, [0.0, 0.0])
            entry[0] += total * float(step[BLANK])
            if prefix:
                entry[1] += p_symbol * float(step[prefix[-1]])
            for c in candidates:
                extended = following.setdefault((*prefix, c), [0.0, 0.0])
                repeat = bool(prefix) and prefix[-1] == c
                extended[1] += (p_blank if repeat else total) * float(step[c])
        ranked = sorted(following.items(), key=lambda kv: -(kv[1][0] + kv[1][1]))[:beam_width]
        beams = {prefix: (pb, ps) for prefix, (pb, ps) in ranked}
    merged = {charset.decode(prefix): pb + ps for prefix, (pb, ps) in beams.items()}
    return _best(merged, top_k)


def _best(scores: dict[str, float], top_k: int) -> list[Prediction]:
    ranked = sorted(scores.items(), key=lambda kv: -kv[1])[:top_k]
    return [Prediction(text, float(min(1.0, max(0.0, p))) if math.isfinite(p) else 0.0) for text, p in ranked]
