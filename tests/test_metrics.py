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


# ------------------------------------------------------------------ known values: a wrong formula fails here


@pytest.mark.parametrize(("a", "b", "distance"), [
    ("", "", 0), ("AB", "AB", 0), ("AB", "BA", 2), ("ABC", "AC", 1), ("AC", "ABC", 1), ("A1B2", "1B2C", 2),
])
def test_edit_distance_table(a: str, b: str, distance: int):
    assert edit_distance(a, b) == distance


@pytest.mark.parametrize(("prediction", "label", "value"), [
    ("AB12", "AB12", 0.0), ("AB13", "AB12", 0.25), ("AB1", "AB12", 0.25), ("ABCD", "AB", 1.0),
    ("", "AB", 1.0), ("XYZW", "AB12", 1.0), ("", "", 0.0), ("X", "", 1.0),
])
def test_cer_table(prediction: str, label: str, value: float):
    assert cer(prediction, label) == pytest.approx(value)


@pytest.mark.parametrize(("prediction", "label", "value"), [
    ("AB12", "AB12", 1.0), ("AB13", "AB12", 0.75), ("BA12", "AB12", 0.5), ("A", "AB", 0.5),
    ("ABCD", "AB", 1.0),  # by position: characters past the label's end are not counted
    ("B12", "AB12", 0.0),  # one character dropped shifts every later one: none in place
    ("", "AB", 0.0), ("", "", 1.0), ("X", "", 0.0),
])
def test_char_accuracy_table(prediction: str, label: str, value: float):
    assert char_accuracy(prediction, label) == pytest.approx(value)


def test_summary_known_values():
    result = summarize(["AB12", "AB13", "A", "C3D"], ["AB12", "AB12", "AB", "C3D"])
    assert result["n"] == 4
    assert result["sequence_accuracy"] == pytest.approx(2 / 4)
    assert result["char_accuracy"] == pytest.approx((1 + 0.75 + 0.5 + 1) / 4)
    assert result["cer"] == pytest.approx((0 + 0.25 + 0.5 + 0) / 4)
    assert result["per_position_accuracy"] == [1.0, 1.0, 1.0, 0.5]  # the two labels of the most common length, 4


def test_summary_per_position_of_a_given_length():
    result = summarize(["AB12", "A", "CD"], ["AB12", "AB", "CD"], length=2)
    assert result["per_position_accuracy"] == [1.0, 0.5]  # over "AB" and "CD" only
    assert summarize(["A"], ["AB"], length=3)["per_position_accuracy"] == [0.0, 0.0, 0.0]  # no label that long


def test_summary_of_nothing_and_of_mismatched_lists():
    assert summarize([], []) == {"n": 0, "sequence_accuracy": 0.0, "char_accuracy": 0.0, "cer": 0.0,
                                 "per_position_accuracy": []}
    with pytest.raises(ValueError, match="differ in number"):
        summarize(["A"], ["A", "B"])
