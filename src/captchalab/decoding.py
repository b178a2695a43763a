"""Logits to strings with confidences, for every head. NumPy only: no TensorFlow here.

- ``ctc``: (n, time, classes); collapse repeats, drop the blank (index 0).
- ``positional``: (n, slots, classes); argmax per slot, class 0 means "no character".

``Constraints`` (a length range, allowed characters, a case policy) restrict the search at
decode time. A constrained reading's confidence is the model's probability of that reading
given that the answer satisfies the constraints: P(reading) / P(any reading that satisfies
them), the denominator computed exactly by dynamic programming over the frames or slots.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from captchalab.charset import BLANK, Charset, expand_ranges, parse_length
from captchalab.errors import UsageError

CASE_POLICIES = ("any", "lower", "upper")


@dataclass(frozen=True)
class Prediction:
    text: str
    confidence: float
    abstained: bool = False  # below the caller's --min-confidence, or ood: better ask for a new captcha
    # The image is unlike the model's validation images (ood.py): the reading, however confident, is
    # likely wrong. None: the model has no reference to compare with.
    ood: bool | None = None


@dataclass(frozen=True)
class Constraints:
    """What the answer may look like: ``min_length``..``max_length`` characters, only ``allowed``
    ones (None: the model's charset), and a case policy: ``any`` (as read), ``lower`` or ``upper``
    (the site ignores case: both cases of a letter count as one, answered in that case)."""

    min_length: int = 0
    max_length: int | None = None
    allowed: str | None = None
    case: str = "any"

    def __post_init__(self) -> None:
        if self.case not in CASE_POLICIES:
            raise UsageError(f"case policy '{self.case}' is not one of {', '.join(CASE_POLICIES)}")
        if self.min_length < 0 or (self.max_length is not None and self.max_length < max(1, self.min_length)):
            raise UsageError(f"length range {self.min_length}-{self.max_length} is empty; give e.g. 4-6")
        if self.allowed is not None and not self.allowed:
            raise UsageError("the allowed characters are empty; give e.g. --allowed 'a-z0-9'")

    @classmethod
    def parse(
        cls, length: int | str | None = None, allowed: str | None = None, case: str | None = None,
        charset: Charset | None = None,
    ) -> Constraints:
        """From command-line style values: ``length`` "5", "4-6", "4-" or "-6"; ``allowed`` "a-z0-9".

        With the model's ``charset``, ``allowed`` is kept to the symbols it can produce (in either case),
        so ranges are never expanded past it: the cost is bounded by the charset, whatever is asked."""
        low, high = parse_length(length) if length is not None and str(length).strip() else (0, None)
        if not allowed:
            return cls(low, high, None, case or "any")
        if charset is None:
            return cls(low, high, expand_ranges(allowed), case or "any")
        symbols = charset.symbols
        kept = expand_ranges(allowed, "".join(dict.fromkeys(symbols + symbols.lower() + symbols.upper())))
        if not kept:
            raise UsageError(f"none of the allowed characters '{allowed[:40]}' is in the model's charset '{symbols}'")
        return cls(low, high, kept, case or "any")

    @property
    def active(self) -> bool:
        return bool(self.min_length or self.max_length is not None or self.allowed is not None or self.case != "any")

    def fold(self, text: str) -> str:
        return text.lower() if self.case == "lower" else text.upper() if self.case == "upper" else text

    def allowed_symbols(self, charset: Charset) -> set[str]:
        """The allowed characters as the model writes them: a case-insensitive model's one symbol
        per letter stands for both cases, then the case policy applies."""
        return {self.fold(charset.normalize(ch)) for ch in self.allowed or ""}

    def unproducible(self, charset: Charset) -> str | None:
        """Why some allowed characters can never be answered by a model of ``charset``; None when all can."""
        if self.allowed is None:
            return None
        produced = {self.fold(ch) for ch in charset.symbols}
        missing = "".join(ch for ch in self.allowed if self.fold(charset.normalize(ch)) not in produced)
        if not missing:
            return None
        fixes = [case for case in ("lower", "upper")
                 if self.case == "any" and replace(self, case=case).unproducible(charset) is None]
        hint = f"; if the site ignores case, add --case {fixes[0]}" if fixes else ""
        return (f"the model cannot produce {_shown(missing)} of the allowed characters (its symbols: "
                f"{_shown(charset.symbols)}), so its answers never contain them{hint}")


def _shown(symbols: str, limit: int = 40) -> str:
    return f"'{symbols}'" if len(symbols) <= limit else f"'{symbols[:limit]}...' ({len(symbols)} symbols)"


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def decode(
    probs: np.ndarray, head: str, charset: Charset, top_k: int = 1, constraints: Constraints | None = None
) -> list[list[Prediction]]:
    """Best ``top_k`` readings per image, most confident first."""
    if constraints is not None and constraints.active:
        return constrained_decode(probs, head, charset, max(1, top_k), constraints)
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


def abstain(readings: list[list[Prediction]], min_confidence: float | None) -> list[list[Prediction]]:
    """Mark the best reading of each image as abstained when its confidence is below ``min_confidence``,
    or when its image is flagged ``ood``: a caller who asks to abstain wants no confident reading of
    an image the model has never seen the like of."""
    if not min_confidence:
        return readings
    return [[replace(r[0], abstained=True), *r[1:]] if r and (r[0].confidence < min_confidence or r[0].ood) else r
            for r in readings]


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


def ctc_beam_search(
    probs: np.ndarray, charset: Charset, top_k: int, beam_width: int = 16, min_length: int = 0,
    max_length: int | None = None,
) -> list[Prediction]:
    """CTC prefix beam search: a reading's probability sums over all its alignments.

    With a length range, prefixes that grow too long or can no longer reach ``min_length``
    are dropped, and only readings within the range are returned (possibly none).
    """
    # prefix -> (probability ending in blank, probability ending in its last symbol)
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (1.0, 0.0)}
    longest = len(probs) if max_length is None else max_length
    for t, step in enumerate(probs):
        candidates = [int(c) for c in np.argsort(step)[::-1][:beam_width] if c != BLANK and step[c] > 0]
        following: dict[tuple[int, ...], list[float]] = {}
        remaining = len(probs) - 1 - t
        for prefix, (p_blank, p_symbol) in beams.items():
            if len(prefix) + remaining + 1 < min_length:
                continue
            total = p_blank + p_symbol
            entry = following.setdefault(prefix, [0.0, 0.0])
            entry[0] += total * float(step[BLANK])
            if prefix:
                entry[1] += p_symbol * float(step[prefix[-1]])
            for c in candidates if len(prefix) < longest else ():
                extended = following.setdefault((*prefix, c), [0.0, 0.0])
                repeat = bool(prefix) and prefix[-1] == c
                extended[1] += (p_blank if repeat else total) * float(step[c])
        ranked = sorted(following.items(), key=lambda kv: -(kv[1][0] + kv[1][1]))[:beam_width]
        beams = {prefix: (pb, ps) for prefix, (pb, ps) in ranked}
    merged = {charset.decode(prefix): pb + ps for prefix, (pb, ps) in beams.items() if len(prefix) >= min_length}
    possible = {text: p for text, p in merged.items() if p > 0}  # a beam can be kept alive at probability 0
    return _best(possible or merged, top_k)


def _best(scores: dict[str, float], top_k: int) -> list[Prediction]:
    ranked = sorted(scores.items(), key=lambda kv: -kv[1])[:top_k]
    return [Prediction(text, float(min(1.0, max(0.0, p))) if math.isfinite(p) else 0.0) for text, p in ranked]


# --------------------------------------------------------------------------- constrained decoding


def constrain(probs: np.ndarray, charset: Charset, constraints: Constraints) -> tuple[np.ndarray, Charset]:
    """Apply the case policy (merge both cases of a letter) and zero the disallowed symbols.

    Returns the new probabilities (not renormalized) over the returned, possibly smaller, charset.
    """
    symbols = "".join(dict.fromkeys(constraints.fold(ch) for ch in charset.symbols))
    target = Charset(symbols)
    merge = np.zeros((charset.num_classes, target.num_classes), dtype=probs.dtype)
    merge[BLANK, BLANK] = 1.0
    for i, ch in enumerate(charset.symbols, start=1):
        merge[i, target.index_of(constraints.fold(ch))] = 1.0
    folded = probs @ merge
    if constraints.allowed is not None:
        allowed = constraints.allowed_symbols(charset)
        keep = np.array([True] + [ch in allowed for ch in symbols])
        if not keep[1:].any():
            raise UsageError(f"none of the allowed characters '{constraints.allowed}' is in the model's "
                             f"charset '{charset.symbols}'")
        folded = folded * keep
    return folded, target


def ctc_mass(probs: np.ndarray, min_length: int, max_length: int | None) -> float:
    """Probability that the CTC reading of ``probs`` (steps, classes) has a length in the range.

    Exact, over all alignments. Zeroed classes count as impossible, so the result is also the
    probability of using only the remaining symbols.
    """
    steps, classes = probs.shape
    top = min(steps, max_length if max_length is not None else steps)
    alpha = np.zeros((top + 2, classes))  # [length (top + 1: longer than top), last frame's class]
    alpha[0, BLANK] = 1.0
    for p in probs:
        totals = alpha.sum(axis=1)
        new = np.zeros_like(alpha)
        new[:, BLANK] = totals * p[BLANK]
        new[:, 1:] = alpha[:, 1:] * p[1:]  # the same symbol again: no new character
        grow = (totals[:, None] - alpha[:, 1:]) * p[1:]  # a different symbol: one more character
        new[1:, 1:] += grow[:-1]
        new[-1, 1:] += grow[-1]
        alpha = new
    lengths = alpha.sum(axis=1)
    return float(lengths[min_length : top + 1].sum())


def positional_mass(probs: np.ndarray, min_length: int, max_length: int | None) -> float:
    """Probability that the slots of ``probs`` (slots, classes) hold a number of characters in the range."""
    counts = np.zeros(len(probs) + 1)
    counts[0] = 1.0
    for p in probs:
        grown = counts * p[BLANK]
        grown[1:] += counts[:-1] * p[1:].sum()
        counts = grown
    top = len(probs) if max_length is None else min(len(probs), max_length)
    return float(counts[min_length : top + 1].sum())


def constrained_positional_search(
    probs: np.ndarray, charset: Charset, top_k: int, min_length: int, max_length: int | None, beam_width: int = 16
) -> list[Prediction]:
    """Beam search over slots that keeps only readings whose number of characters can fit the range."""
    slots = len(probs)
    top = slots if max_length is None else max_length
    beams: list[tuple[tuple[int, ...], float, int]] = [((), 1.0, 0)]
    for t, slot in enumerate(probs):
        candidates = [int(c) for c in np.argsort(slot)[::-1][: max(top_k, beam_width)] if slot[c] > 0]
        grown = [((*path, c), p * float(slot[c]), n + (c != BLANK)) for path, p, n in beams for c in candidates]
        feasible = [b for b in grown if b[2] <= top and b[2] + slots - 1 - t >= min_length]
        beams = sorted(feasible, key=lambda b: -b[1])[: max(top_k, beam_width)]
    merged: dict[str, float] = {}
    for path, p, _ in beams:
        text = charset.decode(path)
        merged[text] = merged.get(text, 0.0) + p
    return _best(merged, top_k)


def constrained_decode(
    probs: np.ndarray, head: str, charset: Charset, top_k: int, constraints: Constraints
) -> list[list[Prediction]]:
    """Best readings that satisfy ``constraints``; confidence is conditional on them (see module doc)."""
    folded, target = constrain(probs, charset, constraints)
    low, high = constraints.min_length, constraints.max_length
    results = []
    for sample in folded:
        if head == "ctc":
            found = ctc_beam_search(sample, target, top_k, min_length=low, max_length=high)
            mass = ctc_mass(sample, low, high)
        else:
            found = constrained_positional_search(sample, target, top_k, low, high)
            mass = positional_mass(sample, low, high)
        if not found or mass <= 0:
            results.append([Prediction("", 0.0)])
            continue
        results.append([Prediction(p.text, float(min(1.0, p.confidence / mass))) for p in found])
    return results
