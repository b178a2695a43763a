"""Every case of the bad-input corpus (tests/badinput/make_corpus.py) through `train`,
`evaluate`, `solve` and the Python API: one message naming the file and what to do, the exit
code of docs/errors.md, no traceback; valid-but-unusual input must work; --skip-bad goes on
and says what it skipped."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

import captchalab
from badinput import make_corpus as mc
from captchalab.charset import expand_ranges
from captchalab.data import images
from captchalab.data.folder import load_dataset
from captchalab.errors import CaptchaLabError, DataError
from clirun import run_cli

IMAGE = [c for c in mc.CASES if c.group == "image"]
LABELS = [c for c in mc.CASES if c.group == "labels"]
MODEL = [c for c in mc.CASES if c.group == "model"]
SIZE = images.ImageSize(mc.HEIGHT, mc.WIDTH)


def ids(cases: list[mc.Case]) -> list[str]:
    return [c.name for c in cases]


def applies(case: mc.Case, command: str) -> bool:
    return not case.commands or command in case.commands


@pytest.fixture(scope="module")
def run(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of tiny_run: evaluate writes its results into the run folder (RUN/evaluations/)."""
    return Path(shutil.copytree(tiny_run, tmp_path_factory.mktemp("run") / "crnn"))


@pytest.fixture(scope="module")
def corpus(run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return mc.build(tmp_path_factory.mktemp("corpus"), run)


@pytest.fixture(scope="module")
def good_set(corpus: dict[str, Path]) -> Path:
    return dataset_with(corpus, [])


def dataset_with(corpus: dict[str, Path], cases: list[mc.Case]) -> Path:
    """The three good images plus each case's image (labelled mc.BAD_LABEL), with labels.csv."""
    root = corpus["empty_file"].parents[1]
    folder = root / "sets" / ("+".join(c.name for c in cases) or "good")
    if folder.exists():
        return folder
    folder.mkdir(parents=True)
    rows = list(mc.GOOD)
    for file, _ in mc.GOOD:
        shutil.copy(root / "good" / file, folder / file)
    for case in cases:
        shutil.copy(corpus[case.name], folder / corpus[case.name].name)
        rows.append((corpus[case.name].name, mc.BAD_LABEL))
    with open(folder / "labels.csv", "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("file", "label"), *rows])
    return folder


def no_payload(corpus: dict[str, Path]) -> bool:
    return not (corpus["empty_file"].parents[1] / "PAYLOAD_RAN").exists()


def test_corpus_is_big_enough():
    assert len(mc.CASES) >= 30
    assert {"image", "labels", "model"} == {c.group for c in mc.CASES}


# ------------------------------------------------------------------ images


@pytest.mark.parametrize("case", IMAGE, ids=ids(IMAGE))
def test_image_solve_cli(case: mc.Case, corpus: dict[str, Path], run: Path):
    path = corpus[case.name]
    result = run_cli("solve", path, "--model", run)
    shown = mc.printable(str(path))
    if case.exit_code == 0:
        assert result.code == 0 and "Traceback" not in result.text, result.text
        assert result.stdout.startswith(shown + "\t") and "ERROR" not in result.stdout
        return
    assert result.failed_cleanly(case.exit_code, "could not be read", "--skip-bad"), result.text
    assert result.stdout.startswith(f"{shown}\tERROR\t{shown}: ") and case.fragment in result.stdout.lower()
    skipped = run_cli("solve", path, "--model", run, "--skip-bad", "--json")
    assert skipped.code == 0 and "skipped 1 unreadable" in skipped.stderr, skipped.text
    assert json.loads(skipped.stdout)["file"] == str(path) and "error" in json.loads(skipped.stdout)


@pytest.mark.parametrize("case", IMAGE, ids=ids(IMAGE))
def test_image_python_api(case: mc.Case, corpus: dict[str, Path], run: Path):
    path = corpus[case.name]
    if case.exit_code == 0:  # read, and read as the CLI reads it (its own batching path)
        reading = captchalab.solve(path, model=run)
        printed = json.loads(run_cli("solve", path, "--model", run, "--json").stdout)
        assert reading.text == printed["text"] and reading.confidence == pytest.approx(printed["confidence"], abs=1e-4)
        assert set(reading.text) <= set(expand_ranges(mc.CHARSET)) and 0.0 < reading.confidence <= 1.0
        return
    with pytest.raises(CaptchaLabError) as caught:
        captchalab.solve(path, model=run)
    assert caught.value.exit_code == case.exit_code
    assert str(path) in str(caught.value) and case.fragment in str(caught.value).lower()


@pytest.mark.parametrize("case", [c for c in IMAGE if applies(c, "evaluate")],
                         ids=ids([c for c in IMAGE if applies(c, "evaluate")]))
def test_image_in_a_dataset_evaluate(case: mc.Case, corpus: dict[str, Path], run: Path):
    data = dataset_with(corpus, [case])
    name = corpus[case.name].name
    result = run_cli("evaluate", run, data, "--json")
    if case.exit_code == 0:
        assert result.code == 0 and json.loads(result.stdout)["n"] == 4, result.text
        return
    assert result.failed_cleanly(case.exit_code, name, case.fragment, "--skip-bad"), result.text
    skipped = run_cli("evaluate", run, data, "--json", "--skip-bad")
    assert skipped.code == 0, skipped.text
    assert json.loads(skipped.stdout)["skipped"] == [name] and json.loads(skipped.stdout)["n"] == 3
    assert f"skipped 1 bad entry of {data}: {name}" in skipped.stderr


ERRORS = [c for c in IMAGE if c.exit_code]


@pytest.mark.parametrize("case", ERRORS, ids=ids(ERRORS))
def test_image_in_a_dataset_train(case: mc.Case, corpus: dict[str, Path], tmp_path: Path):
    """Validation comes before any work: nothing is trained and no run folder is made."""
    data = dataset_with(corpus, [case])
    result = run_cli("train", data, "--out", tmp_path / "run", "--epochs", "1", "-q")
    assert result.failed_cleanly(case.exit_code, corpus[case.name].name, case.fragment), result.text
    with pytest.raises(DataError, match="--skip-bad"):
        captchalab.train(data, out=tmp_path / "api", epochs=1, quiet=True)
    assert not (tmp_path / "run").exists() and not (tmp_path / "api").exists()


def test_train_skip_bad_keeps_every_valid_image(corpus: dict[str, Path], tmp_path: Path):
    """One real training over the good images, every valid odd image and every bad one."""
    cases = [c for c in IMAGE if applies(c, "train")]
    data = dataset_with(corpus, cases)
    result = run_cli("train", data, "--out", tmp_path / "run", "--epochs", "1", "-q", "--skip-bad")
    assert result.code == 0 and "Traceback" not in result.text, result.text
    bad = sorted(corpus[c.name].name for c in cases if c.exit_code)
    assert f"skipped {len(bad)} bad entries of {data}" in result.stderr
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert sorted(summary["skipped"]) == bad
    kept = load_dataset(data, skip_bad=True)
    assert len(kept) == len(mc.GOOD) + sum(1 for c in cases if c.exit_code == 0)


# ------------------------------------------------------- valid odd images read right


def reference(corpus: dict[str, Path]) -> np.ndarray:
    return np.asarray(mc.reference_image(), dtype=np.int16)


def read(corpus: dict[str, Path], name: str) -> np.ndarray:
    return images.load(corpus[name], SIZE).astype(np.int16)


def test_sixteen_bit_gray_is_scaled_not_stretched(corpus):
    assert np.abs(read(corpus, "gray16") - reference(corpus)).max() <= 1


def test_palette_transparency_is_white(corpus):
    pixels = read(corpus, "palette_transparent")
    assert (pixels[:8, :8] == 255).all()  # index 0 is black in the palette, but transparent
    expected = np.maximum(reference(corpus), 1)
    assert np.array_equal(pixels[8:, 8:], expected[8:, 8:])


def test_cmyk_jpeg_reads_as_its_gray(corpus):
    assert np.abs(read(corpus, "cmyk_jpeg") - reference(corpus)).mean() < 3


def test_animated_gif_first_frame(corpus):
    assert np.array_equal(read(corpus, "animated_gif"), reference(corpus))


def test_exif_rotation_is_applied(corpus):
    upright = images.to_grayscale(images.open_image(corpus["exif_rotated"]))
    assert upright.size == (mc.WIDTH, mc.HEIGHT)
    assert np.abs(read(corpus, "exif_rotated") - reference(corpus)).mean() < 3


def test_exif_rotated_dataset_is_not_stretched(corpus, tmp_path):
    for i in range(3):
        shutil.copy(corpus["exif_rotated"], tmp_path / f"7A3C_{i}.jpg")
    assert load_dataset(tmp_path).size == SIZE


def test_one_pixel_image_is_accepted_and_upscaled(corpus):
    """Decision (docs/errors.md): any image with a pixel is read; a 1x1 one becomes a flat image."""
    assert (read(corpus, "one_pixel") == 128).all()


def test_non_utf8_names_print_escaped(corpus, run, tmp_path):
    path = corpus["non_utf8_name"]
    result = run_cli("solve", path.parent, "--model", run, "--skip-bad", "--out", tmp_path / "readings.csv")
    assert result.code == 0 and "\\udcff\\udcfe-latin1-\\udce9.png\t" in result.stdout, result.text
    assert "\\udcff\\udcfe-latin1-\\udce9.png," in (tmp_path / "readings.csv").read_text(encoding="utf-8")


def test_solve_a_folder_reads_the_good_and_reports_the_bad(corpus, run):
    """A folder lists the suffixes of the formats read (images.SUFFIXES), so scan.tif is left out
    there, as it is refused by name: the two agree."""
    folder = corpus["empty_file"].parent
    listed = [c for c in IMAGE if corpus[c.name].suffix.lower() in images.SUFFIXES]
    result = run_cli("solve", folder, "--model", run, "--json")
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    failed = [line for line in lines if "error" in line]
    assert len(lines) == len(listed) == len(IMAGE) - 1 and len(failed) == len([c for c in listed if c.exit_code])
    assert result.failed_cleanly(3, f"{len(failed)} image(s) could not be read"), result.text


def test_eps_is_never_handed_to_ghostscript(corpus, monkeypatch):
    """Without a format list Pillow takes the file for EPS and runs Ghostscript to decode it."""
    from PIL import EpsImagePlugin, Image

    calls = []
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *args, **kwargs: calls.append(args))
    path = corpus["eps_named_png"]
    with Image.open(path) as guessed:
        assert guessed.format == "EPS"  # the guard: what an unrestricted open does with it
    with pytest.raises(DataError, match="not a readable image"):
        images.open_image(path)
    assert calls == []


# ------------------------------------------------------------------ labels


@pytest.mark.parametrize("case", [c for c in LABELS if applies(c, "evaluate")],
                         ids=ids([c for c in LABELS if applies(c, "evaluate")]))
def test_labels_evaluate(case: mc.Case, corpus: dict[str, Path], run: Path):
    data = corpus[case.name]
    result = run_cli("evaluate", run, data, "--json")
    if case.exit_code == 0:
        assert result.code == 0 and json.loads(result.stdout)["n"] >= 3, result.text
        return
    assert result.failed_cleanly(case.exit_code, mc.printable(str(data.name)), case.fragment), result.text
    with pytest.raises(CaptchaLabError) as caught:
        captchalab.evaluate(run, data)
    assert caught.value.exit_code == case.exit_code and case.fragment in str(caught.value).lower()
    skipped = run_cli("evaluate", run, data, "--json", "--skip-bad")
    if case.skippable:
        assert skipped.code == 0 and json.loads(skipped.stdout)["skipped"], skipped.text
        assert "skipped" in skipped.stderr
    else:  # the file as a whole is unusable: there is nothing to continue with
        assert skipped.failed_cleanly(case.exit_code, case.fragment), skipped.text


LABEL_ERRORS = [c for c in LABELS if c.exit_code]


@pytest.mark.parametrize("case", LABEL_ERRORS, ids=ids(LABEL_ERRORS))
def test_labels_train(case: mc.Case, corpus: dict[str, Path], tmp_path: Path):
    data = corpus[case.name]
    result = run_cli("train", data, *case.train_args, "--out", tmp_path / "run", "--epochs", "1", "-q")
    assert result.failed_cleanly(case.exit_code, mc.printable(str(data.name)), case.fragment), result.text
    assert not (tmp_path / "run").exists()


LABEL_VALID = [c for c in LABELS if c.exit_code == 0]


@pytest.mark.parametrize("case", LABEL_VALID, ids=ids(LABEL_VALID))
def test_labels_valid_are_read_as_train_reads_them(case: mc.Case, corpus: dict[str, Path]):
    """train validates and reads DATA with load_dataset before anything else (the trainings here would
    only repeat test_train_skip_bad_keeps_every_valid_image); the labels must come out intact."""
    dataset = load_dataset(corpus[case.name])
    assert len(dataset) >= 3 and all(dataset.charset.decode(dataset.charset.encode(t)) == t for t in dataset.labels)
    assert set(dataset.labels) >= {"AB12", "C3D45", "0F9E"}


@pytest.fixture(scope="module")
def fixed_length_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An (untrained) mlp with 4 heads: a model of fixed length 4."""
    from captchalab import runs
    from captchalab.charset import Charset
    from captchalab.config import RunConfig
    from captchalab.models import registry
    from captchalab.models.build import build_model

    options = registry.get("mlp").options_type(hidden=(16,))
    config = RunConfig("mlp", "positional", Charset.parse(mc.CHARSET), SIZE, 4, options)
    folder = runs.create(tmp_path_factory.mktemp("mlp") / "run")
    runs.write_json(folder / "config.json", config.to_dict())
    build_model(config).save(folder / "model.keras")
    return folder


def test_label_longer_than_a_fixed_length_model(good_set: Path, fixed_length_run: Path):
    """Decision (docs/errors.md): an error naming the file, not a silent miss; --skip-bad skips it."""
    result = run_cli("evaluate", fixed_length_run, good_set)
    assert result.failed_cleanly(3, "good_1.png", "longer than the model's 4 characters"), result.text
    skipped = run_cli("evaluate", fixed_length_run, good_set, "--json", "--skip-bad")
    assert skipped.code == 0 and json.loads(skipped.stdout)["skipped"] == ["good_1.png"], skipped.text


# ------------------------------------------------------------------ models


@pytest.mark.parametrize("case", MODEL, ids=ids(MODEL))
def test_model_evaluate_and_solve_cli(case: mc.Case, corpus: dict[str, Path], good_set: Path, run: Path):
    path = corpus[case.name]
    evaluated = run_cli("evaluate", path, good_set, "--json")
    solved = run_cli("solve", good_set / "good_0.png", "--model", path, "--json")
    if case.exit_code == 0:  # a loadable model with the run's weights reads exactly as the run does
        assert evaluated.code == 0 and solved.code == 0, evaluated.text + solved.text
        scores, expected = json.loads(evaluated.stdout), json.loads(run_cli("evaluate", run, good_set, "--json").stdout)
        keys = ("n", "sequence_accuracy", "char_accuracy", "cer")
        assert [scores[k] for k in keys] == [expected[k] for k in keys] and scores["n"] == 3
        reference = json.loads(run_cli("solve", good_set / "good_0.png", "--model", run, "--json").stdout)
        assert json.loads(solved.stdout)["text"] == reference["text"]
    else:
        for result in (evaluated, solved):
            assert result.failed_cleanly(case.exit_code, path.name, case.fragment), result.text
    assert no_payload(corpus)


@pytest.mark.parametrize("case", MODEL, ids=ids(MODEL))
def test_model_python_api(case: mc.Case, corpus: dict[str, Path], good_set: Path, run: Path):
    path = corpus[case.name]
    if case.exit_code == 0:
        image = good_set / "good_0.png"
        assert captchalab.load(path).solve(image).text == captchalab.load(run).solve(image).text
    else:
        with pytest.raises(CaptchaLabError) as caught:
            captchalab.load(path)
        assert caught.value.exit_code == case.exit_code
        assert str(path) in str(caught.value) and case.fragment in str(caught.value).lower()
    assert no_payload(corpus)


# ------------------------------------------------------------------ special files
# /dev/zero read until MemoryError (its size reads 0, so the byte limit never tripped); a named pipe
# blocked forever. Every read is now of a regular file only, bounded (files.read_bytes).

HANG = 60.0  # seconds: far above a clean refusal, far below "forever"


def finishes(call, seconds: float = HANG):
    """``call()``'s result, failing the test (not hanging it) if it has not returned in time."""
    box: dict = {}

    def target() -> None:
        try:
            box["value"] = call()
        except BaseException as error:  # re-raised in the test's thread
            box["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still reading after {seconds} s"
    if "error" in box:
        raise box["error"]
    return box["value"]


@pytest.fixture
def fifo(tmp_path: Path):
    """A named pipe factory; each pipe is opened for writing at teardown, which frees a stuck reader."""
    made: list[Path] = []

    def make(path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(path)
        made.append(path)
        return path

    yield make
    for path in made:
        with contextlib.suppress(OSError):
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))


@pytest.mark.parametrize("kind", ["fifo", "dev_zero", "symlink_to_dev_zero"])
def test_special_file_as_an_image(kind: str, fifo, run: Path, tmp_path: Path):
    path = {"fifo": lambda: fifo(tmp_path / "pipe.png"), "dev_zero": lambda: Path("/dev/zero"),
            "symlink_to_dev_zero": lambda: _symlink(tmp_path / "zero.png", Path("/dev/zero"))}[kind]()
    result = finishes(lambda: run_cli("solve", path, "--model", run))
    assert result.failed_cleanly(3, "could not be read"), result.text
    assert f"{path}: not a regular file" in result.stdout
    with pytest.raises(DataError, match="not a regular file"):
        finishes(lambda: captchalab.solve(path, model=run))


def _symlink(link: Path, target: Path) -> Path:
    link.symlink_to(target)
    return link


def test_labels_row_naming_a_special_file(good_set: Path, fifo, run: Path, tmp_path: Path):
    data = Path(shutil.copytree(good_set, tmp_path / "set"))
    fifo(data / "pipe.png")
    with open(data / "labels.csv", "a", encoding="utf-8") as handle:
        handle.write("/dev/zero,AB12\npipe.png,C3D4\n")
    result = finishes(lambda: run_cli("evaluate", run, data, "--json"))
    assert result.failed_cleanly(3, "/dev/zero", "pipe.png", "not a regular file", "--skip-bad"), result.text
    skipped = finishes(lambda: run_cli("evaluate", run, data, "--json", "--skip-bad"))
    assert skipped.code == 0 and json.loads(skipped.stdout)["n"] == 3, skipped.text


def test_labels_csv_that_is_a_pipe(good_set: Path, fifo, run: Path, tmp_path: Path):
    data = tmp_path / "set"
    shutil.copytree(good_set, data, ignore=shutil.ignore_patterns("labels.csv"))
    fifo(data / "labels.csv")
    result = finishes(lambda: run_cli("evaluate", run, data))
    assert result.failed_cleanly(3, "labels.csv: not a regular file"), result.text
    result = finishes(lambda: run_cli("train", data, "--out", tmp_path / "out", "--epochs", "1", "-q"))
    assert result.failed_cleanly(3, "labels.csv: not a regular file"), result.text


@pytest.mark.parametrize("name", ["model.onnx", "config.json", "model.keras", "calibration.json"])
def test_run_folder_file_that_is_a_pipe(name: str, fifo, run: Path, good_set: Path, tmp_path: Path):
    folder = Path(shutil.copytree(run, tmp_path / "run"))
    if name != "model.onnx":
        (folder / "model.onnx").unlink()  # so the Keras path reads config.json and model.keras
    (folder / name).unlink()
    fifo(folder / name)
    result = finishes(lambda: run_cli("solve", good_set / "good_0.png", "--model", folder))
    assert result.failed_cleanly(4, f"{name}: not a regular file"), result.text


def test_model_file_given_as_a_pipe(fifo, good_set: Path, tmp_path: Path):
    path = fifo(tmp_path / "model.onnx")
    result = finishes(lambda: run_cli("solve", good_set / "good_0.png", "--model", path))
    assert result.failed_cleanly(4, "model.onnx: not a regular file"), result.text


def test_dataset_given_as_a_pipe(fifo, run: Path, tmp_path: Path):
    path = fifo(tmp_path / "data.csv")
    result = finishes(lambda: run_cli("evaluate", run, path))
    assert result.failed_cleanly(3, "data.csv: not a regular file"), result.text


@pytest.mark.large  # make test under 10 minutes; resume and skip-bad keep faster tests
def test_label_of_300_characters_is_skipped_at_training_and_the_run_loads(corpus, tmp_path: Path):
    """`train --skip-bad` trained with it and wrote a run that `solve` then refused (max_length 300)."""
    data = corpus["label_300_characters"]
    out = tmp_path / "run"
    result = run_cli("train", data, "--out", out, "--epochs", "1", "-q", "--skip-bad", "--set", "train.batch_size=2")
    assert result.code == 0 and "skipped 1 bad entry" in result.stderr, result.text
    assert run_cli("solve", data / "good_1.png", "--model", out).code == 0
