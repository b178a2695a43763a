"""Decode-time constraints: length range, allowed characters, case policy; abstaining."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from captchalab.charset import Charset
from captchalab.decoding import Constraints, Prediction, abstain
from captchalab.errors import UsageError
from captchalab.heads import CTC, POSITIONAL, decode

CHARSET = Charset("aAb")


def _collapse(path: tuple[int, ...]) -> tuple[int, ...]:
    out, previous = [], None
    for c in path:
        if c and c != previous:
            out.append(c)
        previous = c
    return tuple(out)


def _exact_ctc(probs: np.ndarray) -> dict[tuple[int, ...], float]:
    """Probability of every reading, by enumerating every alignment."""
    readings: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(probs.shape[1]), repeat=len(probs)):
        p = float(np.prod([probs[t, c] for t, c in enumerate(path)]))
        key = _collapse(path)
        readings[key] = readings.get(key, 0.0) + p
    return readings


probabilities = st.integers(0, 2**32 - 1).map(
    lambda seed: np.random.default_rng(seed).dirichlet(np.ones(4) * 0.7, size=4))


@settings(max_examples=40, deadline=None)
@given(probabilities, st.integers(0, 4), st.integers(0, 4))
def test_ctc_mass_equals_enumeration(probs: np.ndarray, low: int, span: int) -> None:
    high = low + span
    exact = sum(p for reading, p in _exact_ctc(probs).items() if low <= len(reading) <= high)
    assert CTC.length_mass(probs, low, high) == pytest.approx(exact, abs=1e-12)
    assert CTC.length_mass(probs, 0, None) == pytest.approx(1.0)


@settings(max_examples=40, deadline=None)
@given(probabilities, st.integers(0, 4))
def test_positional_mass_equals_enumeration(probs: np.ndarray, low: int) -> None:
    exact = 0.0
    for path in itertools.product(range(4), repeat=4):
        if sum(c != 0 for c in path) >= low:
            exact += float(np.prod([probs[t, c] for t, c in enumerate(path)]))
    assert POSITIONAL.length_mass(probs, low, None) == pytest.approx(exact, abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(probabilities, st.integers(1, 3))
def test_constrained_ctc_reading_is_the_best_allowed_one(probs: np.ndarray, length: int) -> None:
    readings = _exact_ctc(probs)
    allowed = {CHARSET.decode(k): p for k, p in readings.items() if len(k) == length}
    wide = CTC.search(probs, CHARSET, 1, length, length, width=256)[0]  # a beam of 256: exhaustive here
    assert allowed[wide.text] == pytest.approx(max(allowed.values()))
    assert wide.confidence == pytest.approx(max(allowed.values()), rel=1e-9)
    result = decode(probs[None], CTC, CHARSET, 1, Constraints(length, length))[0][0]
    assert len(result.text) == length
    # the reading's own probability, not rescaled by the constraint's
    assert result.confidence == pytest.approx(allowed[result.text], rel=1e-9)


def test_no_constraints_changes_nothing() -> None:
    probs = np.random.default_rng(3).dirichlet(np.ones(4), size=(2, 6))
    assert decode(probs, CTC, CHARSET, 3) == decode(probs, CTC, CHARSET, 3, Constraints())
    assert not Constraints().active and Constraints.parse(None, None, None) == Constraints()


def test_allowed_characters_and_length_are_respected() -> None:
    probs = np.random.default_rng(1).dirichlet(np.ones(4), size=(5, 8))
    for head in (CTC, POSITIONAL):
        for reading in decode(probs, head, CHARSET, 3, Constraints.parse("2-3", "ab", "any")):
            assert all(2 <= len(p.text) <= 3 and set(p.text) <= set("ab") for p in reading), (head, reading)
            assert all(0.0 <= p.confidence <= 1.0 for p in reading)


def test_case_policy_merges_both_cases() -> None:
    # a frame split 45/45 between "a" and "A" loses to "b" at 50% unless the cases merge
    probs = np.array([[0.02, 0.45, 0.45, 0.08], [0.02, 0.0, 0.0, 0.98]])[None]
    probs = np.concatenate([probs, np.array([[[0.0, 0.0, 0.0, 1.0], [1.0, 0.0, 0.0, 0.0]]])], axis=1)
    assert decode(probs, CTC, CHARSET, 1, Constraints(case="lower"))[0][0].text == "ab"
    assert decode(probs, CTC, CHARSET, 1, Constraints(case="upper"))[0][0].text == "AB"


def test_impossible_constraints_return_an_empty_reading() -> None:
    probs = np.tile(np.array([1.0, 0.0, 0.0, 0.0]), (3, 1))[None]  # all blank
    assert decode(probs, CTC, CHARSET, 1, Constraints(2, 2))[0] == [Prediction("", 0.0)]


@pytest.mark.parametrize(("length", "allowed", "case", "message"), [
    ("x", None, None, "length"), ("5-3", None, None, "empty"), (None, None, "title", "case"),
    ("0", None, None, "empty"),
])
def test_bad_constraints_are_usage_errors(length, allowed, case, message) -> None:
    with pytest.raises(UsageError, match=message):
        Constraints.parse(length, allowed, case)


def test_allowed_characters_outside_the_charset_are_an_error() -> None:
    probs = np.full((1, 3, 4), 0.25)
    with pytest.raises(UsageError, match="charset"):
        decode(probs, CTC, CHARSET, 1, Constraints(allowed="xyz"))


def test_parse_ranges_and_open_ends() -> None:
    assert Constraints.parse("5") == Constraints(5, 5)
    assert Constraints.parse("4-") == Constraints(4, None)
    assert Constraints.parse("-6") == Constraints(0, 6)
    assert Constraints.parse(None, "a-c0-2").allowed == "abc012"


def test_abstain_marks_only_low_confidence_best_readings() -> None:
    readings = [[Prediction("ab", 0.4), Prediction("aa", 0.3)], [Prediction("bb", 0.95)]]
    marked = abstain(readings, 0.5)
    assert marked[0][0].abstained and not marked[0][1].abstained and not marked[1][0].abstained
    assert abstain(readings, None) == readings


def test_cli_solve_constrained_and_abstaining(tiny_run, tiny_set) -> None:
    import json

    from clirun import run_cli

    images = sorted(tiny_set.glob("*.png"))[:6]
    outcome = run_cli("solve", *images, "--model", tiny_run, "--json", "--length", "4", "--allowed", "0-9")
    assert outcome.code == 0, outcome.text
    records = [json.loads(line) for line in outcome.stdout.splitlines()]
    assert len(records) == 6
    assert all(len(r["text"]) == 4 and r["text"].isdigit() for r in records), records
    shy = run_cli("solve", *images, "--model", tiny_run, "--json", "--min-confidence", "0.9999")
    abstained = [json.loads(line) for line in shy.stdout.splitlines()]
    assert all(r["abstained"] and r["text"] is None and "guess" in r for r in abstained)
    bad = run_cli("solve", *images, "--model", tiny_run, "--case", "title")
    assert bad.failed_cleanly(UsageError.exit_code, "case")


def test_serve_accepts_constraints_and_min_confidence(tiny_run, tiny_set) -> None:
    import base64
    import warnings

    from captchalab.inference.http import ServeConfig, create_app

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    images = [base64.b64encode(p.read_bytes()).decode() for p in sorted(tiny_set.glob("*.png"))[:3]]
    app = create_app(ServeConfig(models=(("default", str(tiny_run)),)))
    with TestClient(app, base_url="http://localhost") as client:
        reply = client.post("/solve", json={"images": images, "length": "4", "allowed": "0-9", "case": "upper"})
        assert reply.status_code == 200, reply.text
        assert all(len(r["text"]) == 4 and r["text"].isdigit() for r in reply.json()["results"]), reply.text
        shy = client.post("/solve?min_confidence=0.9999", json={"images": images}).json()["results"]
        assert all(r["abstained"] and r["text"] is None and "guess" in r for r in shy)
        for bad in ({"length": "x"}, {"case": "title"}, {"min_confidence": 2}, {"allowed": ["a"]}):
            reply = client.post("/solve", json={"images": images, **bad})
            assert reply.status_code == 400 and "error" in reply.json(), bad


def test_top_k_and_a_satisfied_length_leave_the_confidence_as_it_is(tiny_set) -> None:
    """One confidence for one reading: the Python API, `solve --json` and the server give the best
    reading the same confidence whether asked plainly, with --top-k, or with a --length it meets."""
    import base64
    import json
    import warnings

    import captchalab
    from captchalab.inference.http import ServeConfig, create_app
    from captchalab.inference.predictor import Predictor, bundled_model_path
    from clirun import run_cli

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    model = bundled_model_path()
    images = sorted(tiny_set.glob("*.png"))[:6]
    reader = Predictor.load(model)
    plain = reader.solve(images)
    pixels = np.stack([reader.prepare(image) for image in images])
    assert [best[0] for best in reader.predict_pixels(pixels, 3)] == plain
    read = [(image, r) for image, r in zip(images, plain) if r.text]
    assert read  # a length of 0 is no constraint to give: at least one image must be read
    for image, reading in read:
        assert reader.solve(image, Constraints.parse(len(reading.text))) == reading
        assert captchalab.solve(image, model, length=len(reading.text)).confidence == reading.confidence

    def solved(*args: object) -> list[tuple[str, float]]:
        outcome = run_cli("solve", *args, "--model", model, "--json")
        assert outcome.code == 0, outcome.text
        return [(r["text"], r["confidence"]) for r in map(json.loads, outcome.stdout.splitlines())]

    cli = solved(*images)
    assert cli == [(r.text, round(r.confidence, 4)) for r in plain]
    assert solved(*images, "--top-k", "2") == cli
    for image, (text, confidence) in zip(images, cli):
        if text:
            assert solved(image, "--length", str(len(text))) == [(text, confidence)]

    encoded = [base64.b64encode(image.read_bytes()).decode() for image in images]
    app = create_app(ServeConfig(models=(("default", str(model)),)))
    with TestClient(app, base_url="http://localhost") as client:
        def served(images: list[str], **options: object) -> list[tuple[str, float]]:
            reply = client.post("/solve", json={"images": images, **options})
            assert reply.status_code == 200, reply.text
            return [(r["text"], r["confidence"]) for r in reply.json()["results"]]

        assert served(encoded) == served(encoded, top_k=2) == cli
        for image, (text, confidence) in zip(encoded, cli):
            if text:
                assert served([image], length=str(len(text))) == [(text, confidence)]


def test_a_run_reads_in_its_training_labels_length_range_unless_told_otherwise() -> None:
    from captchalab.config import RunConfig

    config = RunConfig("crnn", "ctc", CHARSET, None, 6, label_lengths=(4, 5))
    assert config.reading_constraints(None) == Constraints(4, 5)
    assert config.reading_constraints(Constraints(allowed="ab", case="lower")) == Constraints(4, 5, "ab", "lower")
    assert config.reading_constraints(Constraints(1)) == Constraints(1)  # --length 1-: the caller's range wins
    assert config.reading_constraints(Constraints(0, 6)) == Constraints(0, 6)
    older = RunConfig("crnn", "ctc", CHARSET, None, 6)  # saved before the range was recorded
    assert older.reading_constraints(None) is None
    with pytest.raises(UsageError, match="label lengths"):
        RunConfig("crnn", "ctc", CHARSET, None, 6, label_lengths=(5, 4))


def test_solve_answers_the_lengths_the_run_was_trained_on(tiny_run, tiny_set) -> None:
    """tiny_set's labels have 4-5 characters: its one-epoch run, which misreads most, still answers 4 or 5,
    from its folder and from its ONNX file alone (the range travels in the metadata)."""
    from captchalab.inference.predictor import Predictor

    images = sorted(tiny_set.glob("*.png"))[:8]
    for model in (tiny_run, tiny_run / "model.onnx"):
        reader = Predictor.load(model)
        assert reader.config.label_lengths == (4, 5)
        assert all(4 <= len(r.text) <= 5 for r in reader.solve(images)), model
    assert all(len(r.text) == 3 for r in reader.solve(images, Constraints(3, 3)))


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 4), st.integers(0, 6), st.integers(0, 3), st.booleans())
def test_an_impossible_length_range_is_found_without_the_exact_mass_where_it_can_be(
        seed: int, classes: int, low: int, span: int, zeros: bool) -> None:
    from captchalab.heads import _impossible

    probs = np.random.default_rng(seed).dirichlet(np.ones(classes), size=4)
    if zeros:
        probs[:, 1:] *= np.random.default_rng(seed + 1).random((4, classes - 1)) > 0.5
    for head in (CTC, POSITIONAL):
        for high in (low + span, None):
            assert _impossible(head, probs, low, high) == (head.length_mass(probs, low, high) <= 0)
