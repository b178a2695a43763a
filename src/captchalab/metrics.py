"""Sequence accuracy, character accuracy, CER and per-position accuracy."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions all cost 1)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def cer(prediction: str, label: str) -> float:
    """Edit distance over label length; an empty label counts any prediction as errors."""
    if not label:
        return float(len(prediction) > 0)
    return edit_distance(prediction, label) / len(label)


def char_accuracy(prediction: str, label: str) -> float:
    """Share of label positions whose character the prediction has at the same position."""
    if not label:
        return float(not prediction)
    return sum(p == t for p, t in zip(prediction, label)) / len(label)


def summarize(predictions: Sequence[str], labels: Sequence[str], length: int | None = None) -> dict:
    """Metrics as in DESIGN.md (without the model fields, which the caller adds).

    ``per_position_accuracy`` covers labels of ``length`` (default: the most common length).
    """
    if len(predictions) != len(labels):
        raise ValueError("predictions and labels differ in number")
    n = len(labels)
    if n == 0:
        return {"n": 0, "sequence_accuracy": 0.0, "char_accuracy": 0.0, "cer": 0.0,
                "per_position_accuracy": []}
    length = length or Counter(len(label) for label in labels).most_common(1)[0][0]
    same_length = [(p, t) for p, t in zip(predictions, labels) if len(t) == length]
    per_position = [
        sum(len(p) > i and p[i] == t[i] for p, t in same_length) / max(1, len(same_length))
        for i in range(length)
    ]
    return {
        "n": n,
        "sequence_accuracy": sum(p == t for p, t in zip(predictions, labels)) / n,
        "char_accuracy": sum(char_accuracy(p, t) for p, t in zip(predictions, labels)) / n,
        "cer": sum(cer(p, t) for p, t in zip(predictions, labels)) / n,
        "per_position_accuracy": per_position,
    }
