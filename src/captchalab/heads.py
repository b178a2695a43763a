"""How a model's output is read: one object per head. NumPy only: no TensorFlow here.

- ``ctc``: (n, time, classes); collapse repeats, drop the blank (index 0).
- ``positional``: (n, slots, classes); one softmax per character slot, class 0 means "no character".
- ``segment``: positional, on images whose characters segmentation.py first cut into one cell per slot.

config.json names the head (``"head": "ctc"``); ``head_for(name)`` gives its object, and the rest of
the code asks the object (how to prepare the input, read the output, what loss trains it) instead of
comparing names. A new head is one class here.

A reading's confidence is its sequence probability, P(text | image): the sum over every alignment
(CTC) or arrangement of slots (positional) that reads as that text, computed exactly. It is one
number for one reading, whether the reading came first of ``top_k`` or under constraints it already
satisfies. The top-1 reading is the most probable one found: when the greedy (best path) reading holds
more than half the probability, no other reading can beat it and no search runs; otherwise the beam
search's readings, and the greedy one, are scored exactly and the most probable wins.

``Constraints`` (a length range, allowed characters, a case policy) restrict the search; they never
rescale a confidence. A case policy reads both cases of a letter as one: the reading is then the answer
as the site reads it, and its probability sums over both cases.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np

from captchalab.charset import BLANK, Charset
from captchalab.decoding import Constraints, Prediction, constrain
from captchalab.errors import UsageError
from captchalab.segmentation import segment_batch

# Readings the search keeps per step, whatever top_k is: so the best reading does not depend on how
# many are asked for (and at most this many, plus the greedy one, come back). 16 rather than 8: a
# search held to a length range needs the room; at 8, on captcha_images_v2 and the zoo's test
# images, 17 fewer of 10,208 readings within the labels' lengths were right (bench/results/decode.json).
BEAM_WIDTH = 16
# A symbol less probable than this in a frame starts no new prefix there: most frames then offer a
# few symbols instead of BEAM_WIDTH. Against no floor at all, on those images with the bundled model
# and the general reader, every unconstrained top-1 reading and confidence stayed the same at 1e-3,
# as at 1e-5, and as many readings were right with a length range too, for three quarters of the
# search time of 1e-5 and two thirds of no floor's (bench/results/decode.json). A search that finds
# no reading in its length range this way is run again without the floor.
OPTION_FLOOR = 1e-3
HALF = 0.5  # a reading with more than this probability is the most probable: all others share the rest

Labels = tuple[int, ...]  # a reading as charset indices, blanks dropped
Beams = dict[Labels, list[float]]  # CTC prefix -> [probability ending in a blank, in its last symbol]


@dataclass(frozen=True)
class Head:
    """What differs between heads. ``probs`` are softmax outputs, (n, steps, classes) for a batch."""

    name: ClassVar[str]
    loss: ClassVar[str]  # the training loss, by its name in models/losses.py
    # One output slot per character, max_length of them: a longer label cannot be read, and the
    # network's output has exactly max_length steps.
    fixed_length: ClassVar[bool]
    # Training starts on a plateau of all-blank readings that only the epoch budget should end.
    blank_plateau: ClassVar[bool] = False
    # Reads colour images (image.channels=3) as well as grey ones.
    colour: ClassVar[bool] = True
    # Its input is cut into one character per cell before the network sees it (segmentation.py).
    cuts_characters: ClassVar[bool] = False

    def prepare(self, pixels: np.ndarray, max_length: int) -> np.ndarray:
        """The model's input from uint8 images (n, h, w[, 3]), before scaling: the same in training and inference."""
        return pixels

    def length_limit(self, max_length: int) -> int | None:
        """The longest label the model can read; None: any that its time steps allow."""
        return max_length if self.fixed_length else None

    def paths(self, probs: np.ndarray) -> list[Labels]:
        """The greedy reading of each image: the best class per step, read as this head reads."""
        raise NotImplementedError

    def probability(self, probs: np.ndarray, labels: Sequence[Labels]) -> np.ndarray:
        """Exact P(labels[i] | image i) for each image of the batch (float64)."""
        raise NotImplementedError

    def bound(self, probs: np.ndarray, labels: Sequence[Labels]) -> np.ndarray:
        """An upper bound of ``probability``, without its cost: whatever the alignment (CTC) or arrangement
        of slots, every step of a reading of labels[i] shows the blank or one of its symbols: an image whose
        other symbols hold much of a step's probability cannot have a sure best path, and needs no exact score
        to be told so."""
        shown = np.zeros((len(labels), probs.shape[-1]))
        shown[:, BLANK] = 1.0
        for row, path in enumerate(labels):
            shown[row, list(path)] = 1.0
        return np.prod(np.einsum("ntc,nc->nt", probs.astype(np.float64), shown), axis=-1)

    def candidates(self, probs: np.ndarray, width: int, min_length: int, max_length: int | None) -> list[Labels]:
        """Readings of one image (steps, classes) worth scoring, within the length range."""
        raise NotImplementedError

    def length_mass(self, probs: np.ndarray, min_length: int, max_length: int | None) -> float:
        """Probability that the reading of one image (steps, classes) has a length in the range."""
        raise NotImplementedError

    def greedy(self, probs: np.ndarray, charset: Charset) -> list[Prediction]:
        """The best-path reading of each image, with its sequence probability."""
        labels = self.paths(probs)
        return [Prediction(charset.decode(path), _clip(p)) for path, p in zip(labels, self.probability(probs, labels))]

    def scores(self, probs: np.ndarray, labels: Sequence[Labels],
               scored: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """P(labels[i] | image i) under ``probs`` and under ``scored`` (the same outputs at another
        temperature; None: ``probs`` again), in one pass: the forward algorithm costs per frame, not per row."""
        if scored is None:
            both = self.probability(probs, labels)
            return both, both
        both = self.probability(np.concatenate([probs, scored]), [*labels, *labels])
        return both[: len(labels)], both[len(labels) :]

    def search(
        self, probs: np.ndarray, charset: Charset, top_k: int, min_length: int = 0, max_length: int | None = None,
        width: int | None = None, scored: np.ndarray | None = None,
    ) -> list[Prediction]:
        """Best ``top_k`` readings of one image (steps, classes) within the length range, most probable
        first; [] when none is possible. The beam's readings and the greedy one are scored exactly.
        ``width``: BEAM_WIDTH unless given; ``scored``: the image's outputs that give the confidences
        (calibrated), where the ranking stays that of ``probs``."""
        found = self.candidates(probs, BEAM_WIDTH if width is None else width, min_length, max_length)
        greedy = self.paths(probs[None])[0]
        if _within(len(greedy), min_length, max_length):
            found.append(greedy)
        unique = list(dict.fromkeys(found))
        if not unique:
            return []
        copies = np.repeat(probs[None], len(unique), axis=0)
        calibrated = None if scored is None else np.repeat(scored[None], len(unique), axis=0)
        ranking, confidences = self.scores(copies, unique, calibrated)
        ranked = sorted(zip(unique, ranking, confidences), key=lambda row: -row[1])[:top_k]
        return [Prediction(charset.decode(path), _clip(c)) for path, p, c in ranked if p > 0]


@dataclass(frozen=True)
class CtcHead(Head):
    name: ClassVar[str] = "ctc"
    loss: ClassVar[str] = "ctc"
    fixed_length: ClassVar[bool] = False
    blank_plateau: ClassVar[bool] = True

    def paths(self, probs: np.ndarray) -> list[Labels]:
        best = probs.argmax(axis=-1)
        keep = np.ones_like(best, dtype=bool)
        keep[:, 1:] = best[:, 1:] != best[:, :-1]
        keep &= best != BLANK
        return [tuple(int(c) for c in row[mask]) for row, mask in zip(best, keep)]

    def probability(self, probs: np.ndarray, labels: Sequence[Labels]) -> np.ndarray:
        """The CTC forward algorithm, one row per image: over the label with blanks around every
        symbol, a path may stay, step on, or skip a blank between two different symbols."""
        n, steps, _ = probs.shape
        lengths = np.array([len(path) for path in labels], dtype=int)
        extended = np.zeros((n, 2 * int(lengths.max(initial=0)) + 1), dtype=int)  # blank, s1, blank, s2, ...
        for row, path in enumerate(labels):
            extended[row, 1 : 2 * len(path) : 2] = path
        skip = np.zeros(extended.shape)
        skip[:, 2:] = (extended[:, 2:] != BLANK) & (extended[:, 2:] != extended[:, :-2])
        emit = np.take_along_axis(probs.astype(np.float64), np.repeat(extended[:, None, :], steps, axis=1), axis=2)
        emit = np.ascontiguousarray(emit.transpose(1, 0, 2))  # (steps, n, states): one contiguous row per step
        # Two zero states in front, so that "one state back" and "two back" are plain slices; the loop
        # runs once per frame, and its few NumPy calls are most of what scoring a reading costs.
        padded = np.zeros((n, extended.shape[1] + 2))
        alpha = padded[:, 2:]
        alpha[:, :2] = emit[0, :, :2]
        for t in range(1, steps):
            alpha[:] = (alpha + padded[:, 1:-1] + padded[:, :-2] * skip) * emit[t]
        rows, end = np.arange(n), 2 * lengths
        return alpha[rows, end] + np.where(lengths > 0, alpha[rows, np.maximum(end - 1, 0)], 0.0)

    def candidates(self, probs: np.ndarray, width: int, min_length: int, max_length: int | None,
                   floor: float | None = None) -> list[Labels]:
        """CTC prefix beam search: a prefix's probability sums over its alignments. With a length range,
        prefixes that grow too long or can no longer reach ``min_length`` are dropped. ``floor``:
        OPTION_FLOOR unless given."""
        floor = OPTION_FLOOR if floor is None else floor
        beams: Beams = {(): [1.0, 0.0]}
        longest = len(probs) if max_length is None else max_length
        # Each frame's most probable symbols, found for all frames at once, and Python floats throughout:
        # per-frame argsorts and NumPy scalars cost as much as the search itself (bench/decode.py).
        ranked_classes = np.argsort(probs, axis=1)[:, ::-1][:, :width].tolist()
        for t, step in enumerate(probs.tolist()):
            options = [c for c in ranked_classes[t] if c != BLANK and step[c] > floor]
            reach = min_length - (len(probs) - t)  # shorter prefixes can no longer reach min_length
            # most frames offer no symbol: every prefix goes on, none starts, so none drops out of the beam
            beams = _ctc_step(beams, step, options, width, reach, longest) if options else _going_on(beams, step, reach)
        found = [prefix for prefix in beams if len(prefix) >= min_length]
        return found or (self.candidates(probs, width, min_length, max_length, 0.0) if floor else [])

    def length_mass(self, probs: np.ndarray, min_length: int, max_length: int | None) -> float:
        """Exact, over all alignments. Zeroed classes count as impossible, so the result is also the
        probability of using only the remaining symbols."""
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


def _ctc_step(beams: Beams, step: list[float], options: list[int], width: int, reach: int, longest: int) -> Beams:
    """One frame of the prefix beam search: every prefix of at least ``reach`` symbols goes on (a blank,
    or its last symbol again), and those shorter than ``longest`` grow by each of ``options`` (most
    probable first); the ``width`` most probable prefixes are kept."""
    following = _going_on(beams, step, reach)
    live = list(following)  # the prefixes that may grow: those going on, before any new one is made
    offered = set(options)
    for prefix, entry in following.items():  # a prefix that is also another one grown by an option
        parent = beams.get(prefix[:-1]) if prefix and prefix[-1] in offered and prefix[:-1] in following else None
        if parent is not None:  # (a prefix in the beam is never longer than ``longest``: its parent is shorter)
            repeat = len(prefix) > 1 and prefix[-2] == prefix[-1]  # "AA" grows from "A" only through a blank
            entry[1] += (parent[0] if repeat else parent[0] + parent[1]) * step[prefix[-1]]
    # A new prefix's probability is its one parent's share: one below the width-th best of the prefixes
    # going on (final by now) could never be kept, so it is not made; options come most probable first,
    # so the first such share ends its parent's options. The beam is the same, for less work.
    going_on = sorted((p_blank + p_symbol for p_blank, p_symbol in following.values()), reverse=True)
    threshold = going_on[width - 1] if 0 < width <= len(going_on) else 0.0
    for prefix in live:
        p_blank, p_symbol = beams[prefix]
        total = p_blank + p_symbol
        for c in options if len(prefix) < longest else ():
            if total * step[c] < threshold:
                break
            share = (p_blank if prefix and prefix[-1] == c else total) * step[c]
            if (*prefix, c) not in following and share >= threshold:
                following[(*prefix, c)] = [0.0, share]
    return dict(sorted(following.items(), key=lambda kv: -(kv[1][0] + kv[1][1]))[:width])


def _going_on(beams: Beams, step: list[float], reach: int) -> Beams:
    """Every prefix of at least ``reach`` symbols one frame on: through a blank, or its last symbol again."""
    return {prefix: [(p_blank + p_symbol) * step[BLANK], p_symbol * step[prefix[-1]] if prefix else 0.0]
            for prefix, (p_blank, p_symbol) in beams.items() if len(prefix) >= reach}


@dataclass(frozen=True)
class PositionalHead(Head):
    name: ClassVar[str] = "positional"
    loss: ClassVar[str] = "slot_crossentropy"
    fixed_length: ClassVar[bool] = True

    def paths(self, probs: np.ndarray) -> list[Labels]:
        return [tuple(int(c) for c in row if c != BLANK) for row in probs.argmax(axis=-1)]

    def probability(self, probs: np.ndarray, labels: Sequence[Labels]) -> np.ndarray:
        """Over the slots in turn: each either holds the next symbol of the label or is empty."""
        n, slots, _ = probs.shape
        lengths = np.array([len(path) for path in labels], dtype=int)
        longest = int(lengths.max(initial=0))
        padded = np.zeros((n, max(1, longest)), dtype=int)
        for row, path in enumerate(labels):
            padded[row, : len(path)] = path
        probs = probs.astype(np.float64)
        symbol = np.take_along_axis(probs, np.repeat(padded[:, None, :], slots, axis=1), axis=2)[:, :, :longest]
        done = np.zeros((n, longest + 1))  # done[:, j]: the slots so far hold the label's first j symbols
        done[:, 0] = 1.0
        for t in range(slots):
            grown = done * probs[:, t, BLANK, None]
            grown[:, 1:] += done[:, :-1] * symbol[:, t]
            done = grown
        return done[np.arange(n), lengths]

    def candidates(self, probs: np.ndarray, width: int, min_length: int, max_length: int | None) -> list[Labels]:
        """Beam search over slots that keeps only readings whose number of characters can fit the range."""
        slots = len(probs)
        top = slots if max_length is None else max_length
        beams: list[tuple[Labels, float, int]] = [((), 1.0, 0)]
        for t, slot in enumerate(probs):
            options = [int(c) for c in np.argsort(slot)[::-1][:width] if slot[c] > 0]
            grown = [((*path, c), p * float(slot[c]), n + (c != BLANK)) for path, p, n in beams for c in options]
            feasible = [b for b in grown if b[2] <= top and b[2] + slots - 1 - t >= min_length]
            beams = sorted(feasible, key=lambda b: -b[1])[:width]
        return [tuple(c for c in path if c != BLANK) for path, _, _ in beams]

    def length_mass(self, probs: np.ndarray, min_length: int, max_length: int | None) -> float:
        counts = np.zeros(len(probs) + 1)
        counts[0] = 1.0
        for p in probs:
            grown = counts * p[BLANK]
            grown[1:] += counts[:-1] * p[1:].sum()
            counts = grown
        top = len(probs) if max_length is None else min(len(probs), max_length)
        return float(counts[min_length : top + 1].sum())


@dataclass(frozen=True)
class SegmentHead(PositionalHead):
    """Positional, on images whose characters are cut into one cell per slot first (as in training)."""

    name: ClassVar[str] = "segment"
    colour: ClassVar[bool] = False  # its cells are cut where grey columns hold no ink (segmentation.py)
    cuts_characters: ClassVar[bool] = True

    def prepare(self, pixels: np.ndarray, max_length: int) -> np.ndarray:
        return segment_batch(pixels, max_length)


CTC, POSITIONAL, SEGMENT = CtcHead(), PositionalHead(), SegmentHead()
HEADS: dict[str, Head] = {head.name: head for head in (CTC, POSITIONAL, SEGMENT)}
HeadName = Literal[tuple(HEADS)]  # type: ignore[valid-type]  # the legal names in config.json, listed once


def head_for(name: str) -> Head:
    try:
        return HEADS[name]
    except KeyError:
        raise UsageError(f"unknown head '{name}'; choose one of: {', '.join(HEADS)}") from None


def decode(
    probs: np.ndarray, head: Head, charset: Charset, top_k: int = 1, constraints: Constraints | None = None,
    scored: np.ndarray | None = None,
) -> list[list[Prediction]]:
    """Best ``top_k`` readings per image (n, steps, classes), most probable first (see module doc).

    ``scored``: the same outputs at the calibrated temperature. The readings are found on ``probs``
    (the model's own ranking, which a temperature must not change) and their confidences are their
    probabilities under ``scored``: calibration.fit fits the temperature on exactly that."""
    rules = constraints or Constraints()
    if rules.reshapes_classes:  # not for a length alone: every trained run's default (config.reading_constraints)
        scored = None if scored is None else constrain(scored, charset, rules)[0]
        probs, charset = constrain(probs, charset, rules)
    low, high = rules.min_length, rules.max_length
    paths = head.paths(probs)
    sure = _sure(head, probs, paths, scored, low, high) if top_k <= 1 else {}
    results = []
    for i, sample in enumerate(probs):
        if i in sure:
            results.append([Prediction(charset.decode(paths[i]), sure[i])])
        elif _impossible(head, sample, low, high):
            results.append([Prediction("", 0.0)])
        else:
            found = head.search(sample, charset, max(1, top_k), low, high, scored=None if scored is None else scored[i])
            results.append(found or [Prediction("", 0.0)])
    return results


def _impossible(head: Head, probs: np.ndarray, low: int, high: int | None) -> bool:
    """No reading of one image (steps, classes) has a length in the range. Where every class has some
    probability in every frame and there are two symbols or more (CTC reads "abab", never "aaaa", in
    four frames), every length up to the number of frames has some too: the exact mass, which costs a
    quarter of decoding an unsure image, is computed only where a constraint (or float32) left zeros."""
    if not low and high is None:  # no range: the mass is 1
        return False
    steps, classes = probs.shape
    if classes >= 3 and low <= steps and (high is None or high >= low) and bool(np.all(probs > 0)):
        return False
    return head.length_mass(probs, low, high) <= 0


def _sure(head: Head, probs: np.ndarray, paths: list[Labels], scored: np.ndarray | None, low: int,
          high: int | None) -> dict[int, float]:
    """The images whose best path, within the length range, reads a text holding more than half the
    probability (the most probable reading of all: no search can find a better one), with its
    confidence. Only those whose cheap upper bound (``Head.bound``) is above half are scored exactly."""
    maybe = [i for i, path in enumerate(paths) if _within(len(path), low, high)]
    maybe = [i for i, bound in zip(maybe, head.bound(probs[maybe], [paths[i] for i in maybe])) if bound > HALF]
    if not maybe:
        return {}
    chosen = [paths[i] for i in maybe]
    ranking, confidences = head.scores(probs[maybe], chosen, None if scored is None else scored[maybe])
    return {i: _clip(c) for i, p, c in zip(maybe, ranking, confidences) if p > HALF}


def _within(length: int, low: int, high: int | None) -> bool:
    return low <= length and (high is None or length <= high)


def _clip(p: float) -> float:
    return float(min(1.0, max(0.0, p))) if np.isfinite(p) else 0.0
