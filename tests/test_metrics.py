import pytest
from hypothesis import given
from hypothesis import strategies as st

from captchalab.metrics import cer, char_accuracy, edit_distance, summarize

words = st.text(alphabet="ABC12", max_size=8)


@given(words)
def test_identical_strings_have_zero_cer(text):
    assert edit_distance(text, text) == 0
    if text:
        assert cer(text, text) == 0.0


@given(words, words)
def test_edit_distance_is_symmetric_and_bounded(a, b):
    d = edit_distance(a, b)
    assert d == edit_distance(b, a)
    assert abs(len(a) - len(b)) <= d <= max(len(a), len(b))


@given(words, words.filter(bool))
def test_char_accuracy_in_unit_interval(prediction, label):
    assert 0.0 <= char_accuracy(prediction, label) <= 1.0
    assert cer(prediction, label) >= 0.0


def test_summary_matches_design_fields():
    result = summarize(["AB12", "AB13", "A"], ["AB12", "AB12", "AB"])
    assert result["n"] == 3
    assert result["sequence_accuracy"] == pytest.approx(1 / 3)
    assert result["cer"] == pytest.approx((0 + 0.25 + 0.5) / 3)
    # per position only over labels of the most common length (4)
    assert result["per_position_accuracy"] == [1.0, 1.0, 1.0, 0.5]


def test_edit_distance_known_values():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("", "abc") == 3


@given(words, words.filter(bool))
def test_cer_bounds(prediction, label):
    """0 when equal, otherwise above 0 and at most max(len(prediction), len(label)) / len(label)."""
    value = cer(prediction, label)
    assert (value == 0.0) == (prediction == label)
    assert 0.0 <= value <= max(len(prediction), len(label)) / len(label)


@given(words, words, words)
def test_edit_distance_triangle_inequality(a, b, c):
    assert edit_distance(a, c) <= edit_distance(a, b) + edit_distance(b, c)


@given(st.lists(st.tuples(words, words.filter(bool)), min_size=1, max_size=12))
def test_summary_values_are_bounded(pairs):
    predictions, labels = [p for p, _ in pairs], [t for _, t in pairs]
    result = summarize(predictions, labels)
    assert result["n"] == len(labels)
    for key in ("sequence_accuracy", "char_accuracy"):
        assert 0.0 <= result[key] <= 1.0
    assert result["cer"] >= 0.0 and (result["cer"] == 0.0) == (predictions == labels)
    assert all(0.0 <= v <= 1.0 for v in result["per_position_accuracy"])
    assert result["sequence_accuracy"] == sum(p == t for p, t in pairs) / len(pairs)


@given(st.lists(words.filter(bool), min_size=1, max_size=12))
def test_perfect_predictions_score_perfectly(labels):
    result = summarize(labels, labels)
    assert result["sequence_accuracy"] == result["char_accuracy"] == 1.0 and result["cer"] == 0.0
    assert result["per_position_accuracy"] == [1.0] * len(result["per_position_accuracy"])
