"""The head objects: one contract, every head (heads.py)."""

from __future__ import annotations

import itertools
from typing import get_args

import numpy as np
import pytest

from captchalab.charset import Charset
from captchalab.decoding import Constraints
from captchalab.errors import UsageError
from captchalab.heads import HALF, HEADS, Head, HeadName, decode, head_for

CHARSET = Charset("AB")  # classes: blank, A, B
STEPS = 5


def _peaked(seed: int, steps: int = STEPS) -> np.ndarray:
    """One image's probabilities whose best class per step holds most of that step's mass."""
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(CHARSET.num_classes), size=steps)
    probs[np.arange(steps), rng.integers(0, CHARSET.num_classes, steps)] += 12.0
    return probs / probs.sum(axis=1, keepdims=True)


def _any(seed: int, steps: int = STEPS) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet(np.ones(CHARSET.num_classes) * 0.7, size=steps)


@pytest.mark.parametrize("head", list(HEADS.values()), ids=list(HEADS))
def test_every_head_keeps_the_contract(head: Head) -> None:
    # greedy equals the top-1 of the search, reading and confidence (checked where the greedy
    # reading holds more than half the probability: then no reading can beat it, whatever the search)
    for seed in range(8):
        probs = _peaked(seed)
        greedy = head.greedy(probs[None], CHARSET)[0]
        assert greedy.confidence > HALF, seed  # the case this checks, not a vacuous pass
        assert head.search(probs, CHARSET, 3)[0] == greedy
        assert decode(probs[None], head, CHARSET, 3)[0][0] == greedy
    for seed in range(8):  # and where it does not, the search's first reading is at least as probable
        probs = _any(seed)
        assert head.search(probs, CHARSET, 3)[0].confidence >= head.greedy(probs[None], CHARSET)[0].confidence

    # unconstrained equals constrained over the full length range
    for seed in range(8):
        probs = _any(seed)
        assert head.search(probs, CHARSET, 3) == head.search(probs, CHARSET, 3, 0, STEPS)
        full = decode(probs[None], head, CHARSET, 3, Constraints(0, STEPS))
        assert full == decode(probs[None], head, CHARSET, 3)

    # the probability mass over all lengths is 1, and so is the sum over every possible reading
    readings = [path for n in range(STEPS + 1) for path in itertools.product((1, 2), repeat=n)]
    for seed in range(4):
        probs = _any(seed)
        assert sum(head.length_mass(probs, n, n) for n in range(STEPS + 1)) == pytest.approx(1.0, abs=1e-12)
        assert head.length_mass(probs, 0, None) == pytest.approx(1.0, abs=1e-12)
        every = head.probability(np.repeat(probs[None], len(readings), axis=0), readings)
        assert float(every.sum()) == pytest.approx(1.0, abs=1e-12)
        # the cheap bound that spares unsure images an exact score never falls below it
        bounds = head.bound(np.repeat(probs[None], len(readings), axis=0), readings)
        assert (bounds >= every - 1e-12).all() and (bounds < 1 - 1e-6).any()

    # input preparation keeps the batch; the name round-trips
    pixels = np.full((2, 20, 40), 255, dtype=np.uint8)
    assert head.prepare(pixels, 4).shape == pixels.shape
    assert head_for(head.name) is head and str(head.name) in get_args(HeadName)
    assert head.length_limit(4) == (4 if head.fixed_length else None)


@pytest.mark.parametrize("head", list(HEADS.values()), ids=list(HEADS))
def test_top_k_and_a_satisfied_length_leave_the_top_reading_as_it_is(head: Head) -> None:
    """One confidence for one reading: how many alternatives are asked for, or a constraint the
    reading already meets, changes neither the reading nor its confidence."""
    probs = np.stack([_any(seed) for seed in range(12)] + [_peaked(seed) for seed in range(4)])
    plain = [r[0] for r in decode(probs, head, CHARSET)]
    assert any(r.confidence <= HALF for r in plain)  # uncertain images too: those go through the search
    for k in (2, 5):
        assert [r[0] for r in decode(probs, head, CHARSET, k)] == plain
    for sample, reading in zip(probs, plain):
        length = Constraints(len(reading.text), len(reading.text))
        assert decode(sample[None], head, CHARSET, 1, length)[0][0] == reading
        assert decode(sample[None], head, CHARSET, 3, length)[0][0] == reading


def test_the_head_names_are_listed_once_and_an_unknown_one_is_a_usage_error() -> None:
    assert get_args(HeadName) == tuple(HEADS)
    with pytest.raises(UsageError, match="ctc, positional, segment"):
        head_for("attention")


def _plain_beam(probs: np.ndarray, width: int, floor: float, low: int, high: int | None) -> dict:
    """The prefix beam search written plainly: every prefix goes on and grows by every option, then the
    ``width`` most probable are kept. The head's search must end with the same prefixes, however it
    saves work."""
    beams = {(): (1.0, 0.0)}
    longest = len(probs) if high is None else high
    for t, step in enumerate(probs):
        options = [c for c in np.argsort(step)[::-1][:width] if c != 0 and step[c] > floor]
        following: dict = {}
        for prefix, (p_blank, p_symbol) in beams.items():
            if len(prefix) + len(probs) - t < low:
                continue
            entry = following.setdefault(prefix, [0.0, 0.0])
            entry[0] += (p_blank + p_symbol) * step[0]
            entry[1] += p_symbol * step[prefix[-1]] if prefix else 0.0
            for c in options if len(prefix) < longest else ():
                grown = following.setdefault((*prefix, int(c)), [0.0, 0.0])
                grown[1] += (p_blank if prefix and prefix[-1] == c else p_blank + p_symbol) * step[c]
        beams = dict(sorted(following.items(), key=lambda kv: -sum(kv[1]))[:width])
    return {prefix: sum(p) for prefix, p in beams.items() if len(prefix) >= low}


@pytest.mark.parametrize(("width", "floor", "low", "high"), [(4, 0.0, 0, None), (3, 0.05, 0, None),
                                                             (4, 0.0, 3, 4), (2, 0.01, 2, 2)])
def test_the_ctc_search_keeps_the_beam_of_the_plain_search(width: int, floor: float, low: int,
                                                           high: int | None) -> None:
    ctc, three, below_one = head_for("ctc"), Charset("ABC"), False
    for seed in range(40):
        rng = np.random.default_rng(seed)
        probs = rng.dirichlet(np.ones(three.num_classes) * 0.4, size=9)  # many frames offer several symbols
        probs[rng.random(9) < 0.4] = [0.97, 0.01, 0.01, 0.01]  # and some offer none above the floor
        plain = _plain_beam(probs, width, floor, low, high)
        assert plain, seed  # something to compare
        assert set(ctc.candidates(probs, width, low, high, floor)) == set(plain), seed
        readings = list(plain)
        exact = ctc.probability(np.repeat(probs[None], len(readings), axis=0), readings)
        bounds = ctc.bound(np.repeat(probs[None], len(readings), axis=0), readings)
        assert (bounds >= exact - 1e-12).all(), seed
        below_one |= bool((bounds < 1 - 1e-6).any())
    assert below_one  # the bound says something: not 1 for every reading


@pytest.mark.parametrize("head", list(HEADS.values()), ids=list(HEADS))
def test_calibrated_confidences_are_the_readings_probabilities_under_the_calibrated_outputs(head: Head) -> None:
    # sure images (one best path holds most of the probability) and unsure ones, in one batch
    probs = np.stack([_peaked(seed) for seed in range(6)] + [_any(seed) for seed in range(6)])
    calibrated = np.exp(np.log(probs) / 2.5)
    calibrated /= calibrated.sum(axis=-1, keepdims=True)
    for top_k, rules in ((1, None), (3, None), (1, Constraints(2, 3))):
        plain = decode(probs, head, CHARSET, top_k, rules)
        scored = decode(probs, head, CHARSET, top_k, rules, scored=calibrated)
        assert [[r.text for r in image] for image in scored] == [[r.text for r in image] for image in plain]
        for image, outputs in zip(scored, calibrated):
            texts = [tuple(CHARSET.encode(r.text)) for r in image if r.confidence > 0]
            exact = head.probability(np.repeat(outputs[None], len(texts), axis=0), texts)
            assert [r.confidence for r in image if r.confidence > 0] == pytest.approx(list(exact), abs=1e-9)
        assert any(r.confidence != s.confidence for a, b in zip(plain, scored) for r, s in zip(a, b))
