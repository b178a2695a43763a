import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from captchalab.charset import Charset
from captchalab.decoding import ctc_beam_search, decode, greedy, softmax

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
    assert greedy(probs, "ctc", CHARSET)[0].text == text


@given(st.text(alphabet="ABC", min_size=1, max_size=5))
def test_beam_search_agrees_with_greedy_on_confident_paths(text):
    probs = one_hot(ctc_path(text))
    best = ctc_beam_search(probs, CHARSET, top_k=3)
    assert best[0].text == text
    assert best[0].confidence >= best[-1].confidence


def test_positional_drops_no_character_slots():
    probs = one_hot([1, 2, 0, 0])[None]
    assert greedy(probs, "positional", CHARSET)[0].text == "AB"
    top = decode(probs, "positional", CHARSET, top_k=2)[0]
    assert top[0].text == "AB" and len(top) == 2


def test_softmax_rows_sum_to_one():
    logits = np.random.default_rng(0).normal(size=(2, 5, 4)) * 50
    assert np.allclose(softmax(logits).sum(-1), 1.0)
