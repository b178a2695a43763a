"""captchalab audit: splits, schedules, reading the learning curve, the verdict, the budget."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from captchalab import auditing as audit  # the module (captchalab.audit is the API function)
from captchalab.errors import DataError, UsageError
from clirun import run_cli


def _cells(method: str, points: dict[int, list[float]]) -> list[dict]:
    return [{"method": method, "n": n, "seed": s, "sequence_accuracy": a}
            for n, values in points.items() for s, a in enumerate(values)]


def test_curves_average_over_seeds() -> None:
    table = audit.curves(_cells("scratch", {25: [0.0, 0.2], 50: [0.5, 0.7, 0.6]}))
    assert table["scratch"][25] == {"mean": pytest.approx(0.1), "min": 0.0, "max": 0.2, "seeds": 2}
    assert table["scratch"][50]["mean"] == pytest.approx(0.6) and table["pretrained"] == {}

    assert "general" not in table  # a third curve only where its cells were measured (bench/efficiency.py)
    assert audit.curves(_cells("general", {25: [0.9]}))["general"][25]["mean"] == pytest.approx(0.9)


def test_plan_runs_the_methods_asked_for_a_whole_curve_per_seed() -> None:
    assert audit.plan([25, 50], 2, ["general"]) == [(25, 0, "general"), (50, 0, "general"), (25, 1, "general"),
                                                    (50, 1, "general")]
    assert {method for _, _, method in audit.plan([25], 1)} == set(audit.METHODS)


def test_labels_needed_interpolates_on_a_log_scale() -> None:
    curve = {25: {"mean": 0.0}, 100: {"mean": 0.4}, 400: {"mean": 0.95}}
    assert audit.labels_needed(curve, 0.2) == {"labels": 50, "bound": "="}  # halfway in log between 25 and 100
    assert audit.labels_needed(curve, 0.9)["bound"] == "=" and 100 < audit.labels_needed(curve, 0.9)["labels"] < 400
    assert audit.labels_needed(curve, 0.99) == {"labels": 400, "bound": ">"}
    assert audit.labels_needed({25: {"mean": 0.5}}, 0.1) == {"labels": 25, "bound": "<="}
    assert audit.labels_needed({}, 0.1)["bound"] == "unmeasured"


@pytest.mark.parametrize(("pretrained", "scratch", "level"), [
    ({25: [0.5], 100: [0.95]}, {25: [0.0], 100: [0.1]}, "broken"),
    ({25: [0.0], 400: [0.2]}, {25: [0.0], 400: [0.0]}, "weak"),
    ({25: [0.0], 400: [0.02]}, {25: [0.0], 400: [0.0]}, "moderate"),
    ({25: [0.0], 400: [0.0]}, {25: [0.0], 400: [0.0]}, "resisted"),
])
def test_verdict_follows_the_attackers_best_method(pretrained, scratch, level) -> None:
    result = audit.summary(_cells("pretrained", pretrained) + _cells("scratch", scratch))
    assert result["verdict"]["level"] == level
    assert result["verdict"]["text"].startswith(level.upper())


def test_no_cells_is_unmeasured_not_strong() -> None:
    assert audit.summary([])["verdict"]["level"] == "unmeasured"


def test_splits_are_disjoint_and_subsets_nested(tiny_set: Path) -> None:
    splits = audit.make_splits(tiny_set, None, 0.25, 500, 0)
    assert len(splits.test) == 10 and len(splits.pool) == 30
    assert not {p for p, _ in splits.test} & {p for p, _ in splits.pool}
    small, large = audit.subset(splits.pool, 10, 1), audit.subset(splits.pool, 20, 1)
    assert large[:10] == small and audit.subset(splits.pool, 10, 2) != small
    assert audit.label_counts(audit.AuditConfig(counts=(10, 20, 50)), 30) == [10, 20, 30]


def test_overlapping_test_set_is_refused(tiny_set: Path) -> None:
    with pytest.raises(DataError, match="disjoint"):
        audit.make_splits(tiny_set, tiny_set, 0.2, 500, 0)


def test_both_methods_get_the_same_schedule() -> None:
    config = audit.AuditConfig()
    scratch = audit.cell_settings(25, config, False, 0, 5.0)
    tuned = audit.cell_settings(25, config, True, 0, 5.0)
    assert asdict(replace(tuned, learning_rate=scratch.learning_rate)) == asdict(scratch)
    assert (scratch.learning_rate, tuned.learning_rate) == (config.learning_rate, config.finetune_learning_rate)
    epochs = scratch.epochs
    steps_per_epoch = -(-22 * audit.repeats(22) // config.batch_size)  # 25 - 3 held out, repeated
    assert epochs * steps_per_epoch >= config.min_steps and audit.repeats(22) * 22 >= audit.MIN_EPOCH_IMAGES


def test_cell_data_holds_out_validation_and_repeats_training_images(tiny_set: Path, tmp_path: Path) -> None:
    from captchalab.data.folder import load_dataset

    pool = audit.make_splits(tiny_set, None, 0.25, 500, 0).pool
    train_csv, val_csv = audit.cell_data(pool, 12, 0, tmp_path / "cell")
    fit, val = load_dataset(train_csv), load_dataset(val_csv)
    assert len(val) == audit.held_out(12) == 3
    assert len(fit) == 9 * audit.repeats(9) and len(set(fit.labels)) <= 9
    sources = {f.resolve() for f in fit.files}
    assert len(sources) == 9 and not sources & {f.resolve() for f in val.files}
    assert sources | {f.resolve() for f in val.files} == {Path(p) for p, _ in audit.subset(pool, 12, 0)}
    assert audit.charset_of(["a-b", "0!"]) == "!0ab-"


@pytest.mark.parametrize(("args", "message"), [
    (["--budget", "0"], "budget"), (["--counts", "a,b"], "counts"), (["--counts", "2,4"], "at least 5"),
])
def test_bad_options_fail_cleanly(args: list[str], message: str, tiny_set: Path, tmp_path: Path) -> None:
    outcome = run_cli("audit", tiny_set, "--out", tmp_path / "a", *args)
    assert outcome.failed_cleanly(UsageError.exit_code, message)


def test_a_tiny_budget_still_writes_the_plot_and_says_what_is_missing(tiny_set: Path, tmp_path: Path) -> None:
    record = audit.audit(tiny_set, tmp_path / "a", budget_minutes=0.01, counts=[10], seeds=1, quiet=True)
    assert record["verdict"]["level"] == "unmeasured" and record["cells"] == []
    assert {s["why"] for s in record["skipped"]} == {"budget", "no pretrained run"}
    assert (tmp_path / "a" / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert "UNMEASURED" in (tmp_path / "a" / "index.html").read_text()


@pytest.mark.large
def test_audit_end_to_end_within_its_budget(tiny_set: Path, tmp_path: Path) -> None:
    outcome = run_cli("audit", tiny_set, "--out", tmp_path / "a", "--budget", "6", "--counts", "10,20",
                      "--seeds", "1", "--pretrain-images", "300", "--json")
    assert outcome.code == 0, outcome.text
    record = json.loads((tmp_path / "a" / "audit.json").read_text())  # pool: 32 of the 40 (8 held out)
    assert record["cpu_seconds"] <= 6 * 60 * 1.1
    assert {(c["method"], c["n"]) for c in record["cells"]} <= {(m, n) for m in audit.METHODS for n in (10, 20, 32)}
    assert record["cells"] and record["verdict"]["level"] in ("broken", "weak", "moderate", "resisted")
    assert json.loads(outcome.stdout)["verdict"] == record["verdict"]


def test_a_cell_is_capped_below_what_is_left_by_what_cells_spent_beyond_their_epochs() -> None:
    # training checks its cap after an epoch, then the cell is scored: both come on top of the cap
    assert audit._reserve([], 600.0) == 30.0  # nothing measured yet: a twentieth
    cells = [{"cpu_seconds": 100.0, "epochs_cpu_seconds": 80.0, "epoch_cpu_seconds": 8.0},
             {"cpu_seconds": 50.0, "epochs_cpu_seconds": 25.0, "epoch_cpu_seconds": 5.0}]
    assert audit._reserve(cells, 600.0) == 8.0 + 25.0  # the longest epoch and the largest rest


@pytest.mark.large  # 24 s; the same check of the wall-clock limit (one line apart) runs in tests/test_first_use.py
def test_training_stops_on_its_cpu_budget(tiny_set: Path, tmp_path: Path) -> None:
    from captchalab.training import train

    run = train(tiny_set, out=tmp_path / "r", epochs=5, quiet=True, export_onnx=False,
                overrides=["train.max_cpu_minutes=0.0001", "train.patience=50"])
    assert len(json.loads((run / "history.json").read_text())) == 1
    assert json.loads((run / "metrics.json").read_text())["stopped_by"] == "train.max_cpu_minutes=0.0001"


@pytest.mark.parametrize(("min_epochs", "val_images", "schedule", "stops_at"),
                         [(0, 100, "plateau", 4), (6, 100, "plateau", 6), (0, 10, "plateau", 40),
                          (0, 100, "cosine", 30), (0, 10, "cosine", 40)])
def test_perfect_validation_stops_only_after_min_epochs_enough_images_and_half_the_budget(
        min_epochs: int, val_images: int, schedule: str, stops_at: int, stopping_rule) -> None:
    """Four perfect epochs stop a run validated on 100 images; on 10, forty (400 perfect readings);
    a cosine run of 60 epochs not before epoch 30 (perfect at a high rate says little)."""
    from captchalab.config import TrainConfig

    train_config = TrainConfig(epochs=60, patience=50, min_epochs=min_epochs, schedule=schedule)
    callback, model = stopping_rule(train_config, val_images)
    for epoch in range(1, 61):
        callback._track_best({"epoch": epoch, "val_sequence_accuracy": 1.0, "val_cer": 0.0, "val_loss": 1.0})
        if model.stop_training:
            break
    assert epoch == stops_at


def _costed(cells: list[dict], cpu: float = 120.0) -> list[dict]:
    return [{**c, "cpu_seconds": cpu} for c in cells]


SKIPPED = [{"n": 200, "seed": 0, "method": "pretrained", "why": "budget"},
           {"n": 200, "seed": 0, "method": "scratch", "why": "budget"},
           {"n": 400, "seed": 0, "method": "scratch", "why": "budget"}]


@pytest.mark.parametrize("measured", ["weak", "moderate", "resisted"])
def test_skipped_cells_make_any_verdict_but_broken_inconclusive(measured: str) -> None:
    points = {"weak": {25: [0.0], 100: [0.2]}, "moderate": {25: [0.0], 100: [0.02]}, "resisted": {25: [0.0]}}
    cells = _costed(_cells("pretrained", points[measured]) + _cells("scratch", {25: [0.0]}))
    pretraining = {"train_cpu_seconds": 360.0, "generate_cpu_seconds": 30.0}
    judged = audit.summary(cells, SKIPPED, pretraining, 15.0)["verdict"]
    assert judged["level"] == "inconclusive" and judged["measured_level"] == measured
    assert judged["text"].startswith("INCONCLUSIVE: 3 of ")
    # every cell at the costliest measured price plus the pretraining, a fifth more, rounded up to 5 minutes
    expected = 5 * math.ceil(1.2 * ((len(cells) + 3) * 120 + 390) / 60 / 5)
    assert judged["budget_to_settle_minutes"] == expected and f"--budget {expected}" in judged["text"]
    assert "not measured labelled" not in judged["text"]


def test_broken_stands_even_with_skipped_cells_and_skipped_pretraining_is_counted() -> None:
    cells = _costed(_cells("scratch", {25: [0.5], 100: [0.95]}))
    assert audit.summary(cells, SKIPPED, None, 15.0)["verdict"]["level"] == "broken"
    judged = audit.summary(_costed(_cells("scratch", {25: [0.0]})), [], {"skipped": "budget too small"}, 2.0)
    assert judged["verdict"]["level"] == "inconclusive" and "synthetic pretraining" in judged["verdict"]["text"]


def test_a_full_audit_keeps_its_verdict() -> None:
    cells = _costed(_cells("pretrained", {25: [0.0]}) + _cells("scratch", {25: [0.0]}))
    assert audit.summary(cells, [], {"train_cpu_seconds": 10.0}, 60.0)["verdict"]["level"] == "resisted"


def test_the_page_lists_skipped_cells_in_words_and_names_the_data_set_not_its_path(tmp_path: Path) -> None:
    record = {"skipped": SKIPPED, "pretraining": {"skipped": "budget too small for pretraining"}}
    lines = audit.skipped_lines(record)
    assert lines[0] == "synthetic pretraining: budget too small for pretraining"
    assert "from scratch at 200, 400 labels (seed 0): did not fit in the budget" in lines
    assert not any("{" in line for line in lines)
    assert audit.dataset_name(tmp_path / "captcha_images_v2") == "captcha_images_v2"
    assert audit.dataset_name(tmp_path / "captcha_images_v2" / "train.csv") == "captcha_images_v2/train.csv"


def test_the_help_states_the_smallest_meaningful_budget() -> None:
    outcome = run_cli("audit", "--help")
    assert "At least 5" in outcome.stdout and "INCONCLUSIVE" in outcome.stdout


@pytest.mark.parametrize(("schedule", "stops_at"), [("cosine", 20), ("plateau", 11)])
def test_patience_ends_a_cosine_run_only_in_the_second_half_of_its_budget(
        schedule: str, stops_at: int, stopping_rule) -> None:
    """No progress after the first epoch: patience 10 ends a plateau run at epoch 11, a cosine run of
    40 epochs at 20 (its first half runs at a high rate, where small validation sets look flat)."""
    from captchalab.config import TrainConfig

    callback, model = stopping_rule(TrainConfig(epochs=40, patience=10, schedule=schedule))
    for epoch in range(1, 40):
        callback._track_best({"epoch": epoch, "val_sequence_accuracy": 0.5, "val_cer": 0.2, "val_loss": 1.0})
        if model.stop_training:
            break
    assert epoch == stops_at
