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
