import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from captchalab.charset import Charset
from captchalab.decoding import softmax
from captchalab.heads import CTC, POSITIONAL, decode

CHARSET = Charset.parse("ABC")


def one_hot(indices, classes=4):
    probs = np.full((len(indices), classes), 0.01)
    probs[np.arange(len(indices)), indices] = 1.0
    return probs / probs.sum(axis=1, keepdims=True)


def ctc_path(text):
    """An alignment of text: each symbol twice, blanks between repeats."""
    path = [0]
    for ch in text:
        path += [CHARSET.encode(ch)[0]] * 2 + [0]
    return path


@given(st.text(alphabet="ABC", min_size=1, max_size=6))
def test_greedy_ctc_collapses_repeats_and_blanks(text):
    probs = one_hot(ctc_path(text))[None]
    assert CTC.greedy(probs, CHARSET)[0].text == text


@given(st.text(alphabet="ABC", min_size=1, max_size=5))
def test_beam_search_agrees_with_greedy_on_confident_paths(text):
    probs = one_hot(ctc_path(text))
    best = CTC.search(probs, CHARSET, top_k=3)
    assert best[0].text == text
    assert best[0].confidence >= best[-1].confidence


def test_positional_drops_no_character_slots():
    probs = one_hot([1, 2, 0, 0])[None]
    assert POSITIONAL.greedy(probs, CHARSET)[0].text == "AB"
    top = decode(probs, POSITIONAL, CHARSET, top_k=2)[0]
    assert top[0].text == "AB" and len(top) == 2


def test_softmax_rows_sum_to_one():
    logits = np.random.default_rng(0).normal(size=(2, 5, 4)) * 50
    assert np.allclose(softmax(logits).sum(-1), 1.0)


# ------------------------------------------------------------- probabilities (brute force as the reference)

TWO = Charset.parse("AB")  # classes: blank, A, B


def rows(max_steps: int, classes: int = 3):
    """Probability matrices (steps x classes), every entry above zero, rows summing to one."""
    matrix = st.integers(1, max_steps).flatmap(
        lambda steps: st.lists(st.lists(st.floats(0.01, 1.0), min_size=classes, max_size=classes),
                               min_size=steps, max_size=steps))
    return matrix.map(lambda m: np.array(m) / np.array(m).sum(axis=1, keepdims=True))


def exact_ctc(probs: np.ndarray) -> dict[str, float]:
    """Every alignment's probability, summed by the text it collapses to."""
    totals: dict[str, float] = {}
    for path in itertools.product(range(probs.shape[1]), repeat=len(probs)):
        kept = [c for i, c in enumerate(path) if c and (i == 0 or path[i - 1] != c)]
        text = TWO.decode(kept)
        totals[text] = totals.get(text, 0.0) + float(np.prod(probs[np.arange(len(path)), path]))
    return totals


def exact_positional(probs: np.ndarray) -> dict[str, float]:
    totals: dict[str, float] = {}
    for path in itertools.product(range(probs.shape[1]), repeat=len(probs)):
        text = TWO.decode(path)
        totals[text] = totals.get(text, 0.0) + float(np.prod(probs[np.arange(len(path)), path]))
    return totals


@given(rows(3))
def test_ctc_search_finds_every_reading_when_nothing_is_pruned(probs):
    """Up to 3 steps over 2 symbols there are at most 15 prefixes: a beam of 16 keeps them all."""
    exact = exact_ctc(probs)
    found = CTC.search(probs, TWO, top_k=20, width=16)
    assert {p.text for p in found} == set(exact)  # and not impossible readings (AA in 2 steps) at 0.0
    for reading in found:
        assert reading.confidence == pytest.approx(exact[reading.text], abs=1e-9)


@given(rows(5))
def test_ctc_search_scores_its_readings_exactly(probs):
    exact = exact_ctc(probs)
    found = CTC.search(probs, TWO, top_k=5)
    assert sum(p.confidence for p in found) <= 1 + 1e-9
    assert [p.confidence for p in found] == sorted((p.confidence for p in found), reverse=True)
    for reading in found:  # every alignment counts, not only those the beam kept
        assert reading.confidence == pytest.approx(exact[reading.text], abs=1e-9)


@given(rows(4))
def test_positional_search_scores_its_readings_exactly(probs):
    exact = exact_positional(probs)
    found = POSITIONAL.search(probs, TWO, top_k=3)
    assert sum(p.confidence for p in found) <= 1 + 1e-9
    assert found[0].confidence >= max(np.prod(probs.max(axis=1)) - 1e-12, 0)  # at least the best path
    for reading in found:
        assert reading.confidence == pytest.approx(exact[reading.text], abs=1e-9)


@given(rows(5), st.sampled_from([(CTC, exact_ctc), (POSITIONAL, exact_positional)]))
def test_greedy_confidence_sums_every_path_of_its_reading(probs, head_and_reference):
    """Not the best path's probability: the reading's, over all its alignments (or slot arrangements)."""
    head, reference = head_and_reference
    exact = reference(probs)
    reading = head.greedy(probs[None], TWO)[0]
    assert reading.confidence == pytest.approx(exact[reading.text], abs=1e-9)
    assert reading.confidence >= float(np.prod(probs.max(axis=1))) - 1e-12
    assert 0.0 < reading.confidence <= 1.0


@given(st.lists(st.floats(-1e4, 1e4), min_size=1, max_size=6))
def test_softmax_is_a_distribution_even_for_extreme_logits(logits):
    probs = softmax(np.array([logits]))
    assert np.all(probs >= 0) and np.isclose(probs.sum(), 1.0)
