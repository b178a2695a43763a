"""captchalab adapt: look-alikes of unlabelled images, then self-training; never a label read."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import captchalab
from captchalab import adapting, runs
from captchalab.data.folder import write_labels_csv
from captchalab.data.synthetic import generate
from captchalab.errors import DataError, RunFolderError, UsageError
from clirun import run_cli


@pytest.fixture(scope="module")
def unlabelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 captchas whose labels.csv lies: adapt must not read it."""
    folder = generate(tmp_path_factory.mktemp("adapt") / "set", 60, length=5, charset="0-9A-Z", seed=4, workers=1)
    write_labels_csv(folder / "labels.csv", [(p.name, "zzzzzzzz") for p in sorted(folder.glob("*.png"))])
    return folder


def test_bad_settings_and_folders_are_refused_before_any_work(unlabelled: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="length"):
        captchalab.adapt(unlabelled, tmp_path / "a", length="x", charset="0-9")
    with pytest.raises(UsageError, match="min-confidence"):
        captchalab.adapt(unlabelled, tmp_path / "a", length=5, charset="0-9", min_confidence=1.5)
    with pytest.raises(UsageError, match="not a finished run folder"):
        captchalab.adapt(unlabelled, tmp_path / "a", length=5, charset="0-9", init=tmp_path / "nowhere")
    few = tmp_path / "few"
    few.mkdir()
    for p in sorted(unlabelled.glob("*.png"))[:5]:
        (few / p.name).write_bytes(p.read_bytes())
    with pytest.raises(DataError, match="at least 20"):
        captchalab.adapt(few, tmp_path / "a", length=5, charset="0-9A-Z")
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("mine")
    with pytest.raises(RunFolderError, match="not an adapt folder"):
        captchalab.adapt(unlabelled, theirs, length=5, charset="0-9A-Z")
    assert (theirs / "notes.txt").read_text() == "mine" and not (tmp_path / "a").exists()


def test_out_inside_the_folder_is_refused(unlabelled: Path) -> None:
    with pytest.raises(UsageError, match="put --out elsewhere"):
        captchalab.adapt(unlabelled, unlabelled / "adapted", length=5, charset="0-9A-Z")
    assert not (unlabelled / "adapted").exists()


def test_images_of_a_relative_folder_are_listed_absolute(unlabelled: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Kept readings go into labels CSVs under OUT, which resolve relative paths from OUT's folders."""
    monkeypatch.chdir(unlabelled.parent)
    paths = adapting._images(Path(unlabelled.name), tmp_path / "out", 1000)
    assert len(paths) == 60 and all(p.is_absolute() and p.exists() for p in paths)


def test_cli_usage_error_is_one_clean_line(unlabelled: Path, tmp_path: Path) -> None:
    outcome = run_cli("adapt", unlabelled, "--out", tmp_path / "o", "--length", "5", "--charset", "0-9",
                      "--min-confidence", "2")
    assert outcome.failed_cleanly(2, "min-confidence"), outcome.text


@pytest.mark.large
def test_adapt_writes_rounds_a_model_and_its_own_estimate(unlabelled: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(unlabelled.parent)  # a relative folder: its paths must still resolve from OUT's CSVs
    out = captchalab.adapt(unlabelled.name, tmp_path / "out", length=5, charset="0-9A-Z", budget_minutes=1.5,
                           rounds=1, synthetic=300, min_confidence=0.01, quiet=True)
    record = json.loads((out / "adapt.json").read_text())
    assert record["rounds"][0]["images"] == 60 and 0 <= record["estimated_accuracy"] <= 1
    assert record["style"]["charset"] == "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"  # as told, not the lying labels.csv
    assert set(record["style"]["lengths"]) == {"5"}
    assert "Least certain readings" in (out / "adapt.html").read_text()
    again = adapting.read_again(out)(record["rounds"][0])  # as adapt read it: the same readings, the same estimate
    assert {k: again[k] for k in ("kept", "estimate", "thresholded_share")} == {
        k: record["rounds"][0][k] for k in ("kept", "estimate", "thresholded_share")}
    assert (out / "check.csv").read_text().startswith("file,label\n")
    reading = captchalab.load(out / "model").solve(sorted(unlabelled.glob("*.png"))[0])
    assert set(reading.text) <= set(record["style"]["charset"])
    trained = (out / "rounds" / "0" / "model.onnx").stat().st_mtime_ns
    (out / "check.csv").write_text("file,label\nsome.png,CORRECTED\n")  # a person's corrections
    captchalab.adapt(unlabelled, tmp_path / "out", length=5, charset="0-9A-Z", budget_minutes=1.5,
                     rounds=1, synthetic=300, min_confidence=0.01, quiet=True)
    assert (out / "rounds" / "0" / "model.onnx").stat().st_mtime_ns == trained  # finished rounds are kept
    again = json.loads((out / "adapt.json").read_text())
    assert again["cpu_seconds"] >= 0.9 * record["cpu_seconds"]  # the rerun counts what the first run spent
    assert "CORRECTED" in (out / "check.csv").read_text() and (out / "check-new.csv").exists()
    with pytest.raises(RunFolderError, match="other settings"):
        captchalab.adapt(unlabelled, out, length=6, charset="0-9A-Z", budget_minutes=1.5, rounds=1, synthetic=300,
                         min_confidence=0.01)
    first = sorted(unlabelled.glob("*.png"))[0]
    write_labels_csv(out / "check.csv", [(str(first), "AB123")])  # a person's one correction
    captchalab.label(out, budget_minutes=0.3, quiet=True)
    labelled = json.loads((out / "adapt.json").read_text())["labelled"]
    assert labelled["corrections"] == 1 and Path(labelled["run"]).name.startswith("label-")
    assert (out / "model" / "model.onnx").exists() and (out / "rounds" / "label.csv").exists()


def test_label_refuses_a_non_adapt_folder_and_a_wrong_correction(unlabelled: Path, tmp_path: Path) -> None:
    with pytest.raises(RunFolderError, match="captchalab adapt"):
        captchalab.label(tmp_path / "nothing")
    out = tmp_path / "out"
    out.mkdir()
    settings = {**adapting.asdict(adapting.AdaptConfig("5", "0-9A-Z")), "folder": str(unlabelled), "images": 60}
    (out / adapting.SETTINGS).write_text(json.dumps(settings))
    (out / "adapt.json").write_text(json.dumps({"model_round": 0, "rounds": [{"round": 0, "run": "x"}]}))
    first = sorted(unlabelled.glob("*.png"))[0]
    write_labels_csv(out / "check.csv", [(str(first), "AB12")])  # four characters: --length is 5
    with pytest.raises(DataError, match=r"row 2 .*'AB12' is not 5 of 0-9A-Z"):
        captchalab.label(out)
    write_labels_csv(out / "check.csv", [(str(first), "ab123")])  # lower case: not in the charset
    outcome = run_cli("label", out)
    assert outcome.failed_cleanly(3, "ab123"), outcome.text
    assert not (out / "model").exists() and not (out / "rounds").exists()


def test_init_names_the_shipped_general_reader_a_run_or_nothing(tmp_path: Path) -> None:
    shipped = runs.init_run("general")
    assert shipped is not None and (shipped / "model.keras").is_file() and (shipped / "model.onnx").is_file()
    assert json.loads((shipped / "config.json").read_text())["charset"]["symbols"].startswith("0123456789abc")
    assert runs.init_run(None) is None and runs.init_run("none") is None
    assert runs.init_run(tmp_path) == tmp_path.resolve()
    assert runs.start_name(str(shipped)) == "general" and runs.start_name(None) is None
    assert runs.start_name(str(tmp_path)) == str(tmp_path)


def test_label_data_repeats_corrections_as_distinct_files_a_dataset_accepts(unlabelled: Path, tmp_path: Path) -> None:
    from captchalab.data.folder import list_entries, load_dataset

    images = sorted(unlabelled.glob("*.png"))
    corrections = [(str(images[0]), "AB123"), (str(images[1]), "CD456")]
    kept = [(str(p), "EF789") for p in images[2:12]]
    look_alikes = generate(tmp_path / "synthetic", 12, length=5, charset="0-9A-Z", seed=5, workers=1)
    csv_path = adapting._label_data(tmp_path / "rounds" / "label.csv", corrections, kept, look_alikes, seed=0)
    _, rows = list_entries(csv_path)
    repeated = [(file, text) for file, text in rows if text in ("AB123", "CD456")]
    assert len(repeated) == 8 and len({file for file, _ in rows}) == len(rows) == 8 + 10 + 10  # 4 repeats each
    assert load_dataset(csv_path).labels.count("AB123") == 4  # no row refused as a duplicate


def test_a_reading_the_shift_changes_is_not_kept_and_round_0_counts_the_readings_above_the_reference_threshold(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from captchalab.decoding import Prediction
    from captchalab.inference.predictor import Predictor

    reader = Predictor.load(runs.init_run("general"))
    plain = [Prediction("1234", 0.95), Prediction("5678", 0.95), Prediction("9012", 0.5), Prediction("3456", 0.8)]
    moved = [Prediction("1234", 0.95), Prediction("5679", 0.9), Prediction("9012", 0.5), Prediction("3457", 0.8)]
    # the reference: two read right (0.9, 0.95), two wrong (0.6, 0.3): half right, so the threshold is
    # their median confidence, 0.75, and three of the four images are read above it
    look_alikes = [Prediction("1111", 0.9), Prediction("1111", 0.95), Prediction("9999", 0.6), Prediction("9999", 0.3)]
    look_alikes_moved = [*look_alikes[:3], Prediction("2222", 0.3)]  # 3 of 4 reference readings survive
    readings = (plain, moved, look_alikes, look_alikes_moved)  # the images, shifted, the reference, shifted
    answers = iter([[[r] for r in rows] for rows in readings])
    monkeypatch.setattr(reader, "predict_pixels", lambda *args, **kwargs: next(answers))
    monkeypatch.setattr(Predictor, "load", classmethod(lambda cls, *args, **kwargs: reader))
    paths = [tmp_path / f"image{i}.png" for i in range(4)]
    reference = {tmp_path / f"reference{i}.png": text for i, text in enumerate(("1111", "1111", "2222", "3333"))}
    blank = np.zeros((4, 32, 160), np.uint8)
    prepared = {(reader.config.image, "images"): (paths, blank),
                (reader.config.image, "reference"): (list(reference), blank)}
    found = adapting._read_round(0, tmp_path, (paths, reference), adapting.AdaptConfig("4", "0-9"), prepared)
    assert found["kept_rows"] == [(str(paths[0]), "1234")]  # 5678 was confident, but the shift changed it
    assert found["stable_share"] == 0.5 and found["reference_stable_share"] == 0.75
    assert found["consistency"] == round(0.5 / 0.75, 4) and found["mean_confidence"] == 0.8
    assert found["reference_accuracy"] == 0.5 and found["confidence_threshold"] == 0.75
    ceiling = 0.8 * 0.5 / 0.75  # the mean confidence times the consistency
    assert found["thresholded_share"] == 0.75 and found["estimate_range"] == [round(ceiling, 4), 0.75]
    assert found["estimate"] == round((0.75 + ceiling) / 2, 4)  # round 0: the middle of the two
    answers = iter([[[r] for r in rows] for rows in readings])
    later = adapting._read_round(1, tmp_path, (paths, reference), adapting.AdaptConfig("4", "0-9"), prepared)
    assert later["estimate_range"] == [0.25, round(ceiling, 4)]  # self-trained: the kept share is the floor
    assert later["estimate"] == round((0.25 + ceiling) / 2, 4)


def test_the_threshold_leaves_as_many_reference_readings_above_it_as_were_right():
    reference = np.array([0.2, 0.4, 0.6, 0.8, 1.0])
    assert adapting.thresholded_share(np.array([0.1, 0.5, 0.7, 0.9]), reference, 0.4) == {
        "confidence_threshold": 0.68, "thresholded_share": 0.5}  # 2 of 5 reference above 0.68; 2 of 4 images
    assert adapting.thresholded_share(np.array([0.5]), reference, 1.0)["thresholded_share"] == 1.0
    assert adapting.thresholded_share(np.array([0.99]), reference, 0.0)["thresholded_share"] == 0.0
    saturated = np.array([0.3, 1.0, 1.0, 1.0, 1.0])  # 3 of 5 right: the threshold is 1.0, which 4 of 5 reach
    found = adapting.thresholded_share(np.array([1.0, 1.0, 0.2, 0.2]), saturated, 0.6)
    assert found == {"confidence_threshold": 1.0, "thresholded_share": 0.375}  # 3 of the 4 ties count: 2 x 3/4 of 4


def test_the_estimate_is_the_middle_of_two_estimates_in_round_0_then_of_the_kept_share_and_the_ceiling():
    assert adapting.estimate(60, 100, 0.5, 0.9, False) == {"estimate": 0.7, "estimate_range": [0.5, 0.9]}  # round 0
    assert adapting.estimate(60, 100, 0.9, 0.5, True) == {"estimate": 0.75, "estimate_range": [0.6, 0.9]}
    assert adapting.estimate(90, 100, 0.7, 0.5, True) == {"estimate": 0.8, "estimate_range": [0.7, 0.9]}  # kept higher
    assert adapting.estimate(0, 0, 0.0, 0.0, True) == {"estimate": 0.0, "estimate_range": [0.0, 0.0]}


def test_a_round_that_kept_nothing_leaves_no_kept_file(tmp_path: Path) -> None:
    # label() reads rounds/kept-N.csv; a header without rows would be refused there as the user's mistake
    kept = tmp_path / "rounds" / "kept-0.csv"
    adapting._write_kept(tmp_path, {"round": 0, "kept_rows": [("/x/a.png", "AB12")]})
    assert kept.read_text(encoding="utf-8").splitlines()[1:] == ["/x/a.png,AB12"]
    adapting._write_kept(tmp_path, {"round": 0, "kept_rows": []})
    assert not kept.exists()


def test_a_resumed_adapt_goes_on_with_what_is_left_of_its_budget(tmp_path: Path) -> None:
    assert adapting._spent_at(tmp_path) == {}  # a new OUT: the whole budget
    began = adapting._cpu() - 120.0  # as if 120 CPU seconds were spent before round 0 was read
    began = adapting._count_round(tmp_path, 0, began, {})
    spent = adapting._spent_at(tmp_path)
    assert spent["0"] >= 120.0
    # going on later, in a new process: reading round 0 again costs the budget nothing
    again = adapting._count_round(tmp_path, 0, adapting._cpu() - 5.0, spent)
    assert abs(adapting._spent(again) - spent["0"]) < 1.0
    (tmp_path / adapting.SPENT).write_text('{"rounds": {"0": "lots"}}')
    with pytest.raises(RunFolderError, match="delete"):
        adapting._spent_at(tmp_path)
