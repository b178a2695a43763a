"""diagnose: the experiments run and report per-position accuracy; the verdict follows the numbers."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from captchalab.diagnosis import ASKER, FIX, LEARNED, NORMAL, Outcome, default_setups, diagnose, verdict
from captchalab.errors import UsageError
from clirun import run_cli

CHANCE = 1 / 36


def outcome(name: str, accuracy: list[float], base=FIX) -> Outcome:
    return Outcome(replace(base, name=name), [accuracy], [1.0], 1.0, 0.0, 0.1)


def test_a_cause_is_what_puts_the_fix_back_at_chance():
    runs = {
        "normal": outcome("normal", [CHANCE] * 5, NORMAL),
        "fix": outcome("fix", [0.3, 0.2, 0.2, 0.2, 0.3]),
        "fix-inverted": outcome("fix-inverted", [CHANCE] * 5),
        "fix-pool": outcome("fix-pool", [0.25, 0.15, 0.15, 0.15, 0.25]),
        "fix-sgd": outcome("fix-sgd", [0.2, 0.06, 0.1, 0.1, 0.2]),
        "fix-sgd-sum": outcome("fix-sgd-sum", [CHANCE] * 5),
    }
    lines = verdict(runs, CHANCE)
    assert any(line.startswith("N(0,1) variant: raw pixels with N(0,1) weights stays at chance") for line in lines)
    causes = [line for line in lines if line.startswith("Cause:")]
    assert len(causes) == 1 and "input polarity" in causes[0] and "back at chance" in causes[0]
    slower = [line for line in lines if line.startswith("Slows learning:")]
    assert len(slower) == 1 and "optimizer" in slower[0] and "0.060" in slower[0]
    assert any("Not needed" in line and "input resolution" in line for line in lines)
    assert any(line.startswith("Learning rate vs summed loss") for line in lines)


def only(name: str, positions: tuple[int, ...], accuracy: list[float], alive: float = 0.5) -> Outcome:
    result = outcome(name, accuracy, replace(ASKER, positions=positions))
    result.alive = [[0, 0.9], [100, alive]]
    return result


def test_the_report_is_reproduced_only_when_position_1_learns_alone_and_the_sum_stays_at_chance():
    runs = {"asker-position1": only("asker-position1", (1,), [0.2, CHANCE, CHANCE, CHANCE, CHANCE], 0.6),
            "asker-position2": only("asker-position2", (2,), [CHANCE, 1.2 * CHANCE, CHANCE, CHANCE, CHANCE]),
            "asker-positions1+2": only("asker-positions1+2", (1, 2), [0.05, 0.04, CHANCE, CHANCE, CHANCE]),
            "asker": only("asker", (), [CHANCE] * 5, 0.4)}
    lines = verdict(runs, CHANCE)
    assert lines[0].startswith("Reproduced: with only position 1 in the loss it learns (0.200, 7.2x chance)")
    assert "all 5 positions summed it stays at chance" in lines[0]
    assert any(line.startswith("Position 2 alone: 0.033, 1.2x chance") for line in lines)
    assert any(line.startswith("Positions 1 and 2 together: position 1 0.050") for line in lines)
    assert "First-layer ReLUs alive at the end: 1 head 60%, 2 heads 50%, 5 heads 40%." in lines
    runs["asker"] = only("asker", (), [0.2] * 5)
    assert verdict(runs, CHANCE)[0].startswith("Not reproduced:")
    runs["asker-position1"] = only("asker-position1", (1,), [CHANCE] * 5)
    assert "it does not learn" in verdict(runs, CHANCE)[0]


def test_a_position_outside_the_loss_does_not_count_as_learned_or_at_chance():
    alone = only("asker-position1", (1,), [0.2, CHANCE, CHANCE, CHANCE, CHANCE])
    assert alone.trained == [0.2] and alone.learned(CHANCE) and not alone.at_chance(CHANCE)


def test_a_fix_that_does_not_learn_is_reported_as_such():
    lines = verdict({"fix": outcome("fix", [0.2, 0.05, 0.2, 0.2, 0.2])}, CHANCE)
    assert any("did not learn every position" in line for line in lines)
    assert not any(line.startswith("Cause:") for line in lines)


def test_learned_needs_every_position_above_the_threshold():
    assert outcome("a", [LEARNED * CHANCE] * 5).learned(CHANCE)
    assert not outcome("b", [0.9, 0.9, LEARNED * CHANCE * 0.9, 0.9, 0.9]).learned(CHANCE)


def test_the_setups_change_one_thing_from_the_asker_or_the_fix():
    names = [s.name for s in default_setups()]
    assert names[:4] == ["asker-position1", "asker-position2", "asker-positions1+2", "asker"]
    assert len(names) == len(set(names)) and {"normal", "normal-mse", "normal-position1", "fix"} <= set(names)
    for setup in default_setups():
        base = {"asker": ASKER, "normal": NORMAL}.get(setup.name.split("-")[0].split("+")[0], FIX)
        fields = ("inputs", "loss", "init", "optimizer", "batch_norm", "pool", "positions", "hidden", "batch_size")
        changed = [f for f in fields if getattr(setup, f) != getattr(base, f)]
        assert len(changed) <= 2, (setup.name, changed)


@pytest.fixture(scope="module")
def five_chars(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from captchalab.data.synthetic import generate

    return generate(tmp_path_factory.mktemp("diag") / "set", 48, length=5, charset="0-9A-Z", size="64x24", seed=3)


def test_diagnose_runs_each_setup_and_plots(five_chars, tmp_path):
    result = diagnose(five_chars, limit=48, epochs=2, plot=tmp_path / "d.png",
                      only=["asker", "fix", "normal-mse", "asker-position1"])
    assert [r["setup"]["name"] for r in result["runs"]] == ["asker-position1", "asker", "normal-mse", "fix"]
    for run in result["runs"]:
        assert len(run["history"]) == 2 and all(len(h) == 5 for h in run["history"])
        assert all(0.0 <= v <= 1.0 for v in run["per_position"])
    assert result["chance"] == pytest.approx(1 / 36)
    assert Path(result["plot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result["verdict"][0].startswith(("Reproduced:", "Not reproduced:"))
    asker = result["runs"][1]
    assert asker["alive"][0][0] == 0 and asker["alive"][-1][0] == 2 * asker["steps_per_epoch"]
    assert all(0.0 <= share <= 1.0 for _, share in asker["alive"])


def test_unknown_setup_and_too_little_data_are_usage_errors(five_chars, tmp_path):
    with pytest.raises(UsageError, match="choose from"):
        diagnose(five_chars, only=["nope"], plot=None)
    with pytest.raises(UsageError, match="at least 20"):
        diagnose(five_chars, limit=5, plot=None)


def test_cli_prints_the_table_and_the_verdict(five_chars, tmp_path):
    result = run_cli("diagnose", five_chars, "--limit", "48", "--epochs", "1", "--only", "normal",
                     "--plot", tmp_path / "p.png")
    assert result.code == 0, result.text
    assert "normal" in result.stdout and "pos 5" in result.stdout and "N(0,1) variant" in result.stdout
    assert (tmp_path / "p.png").exists()


def test_cli_reports_a_missing_folder_cleanly(tmp_path):
    assert run_cli("diagnose", tmp_path / "missing").failed_cleanly(3, "missing")


def test_the_plot_has_a_panel_per_setup_and_no_empty_ones(tmp_path):
    from PIL import Image

    from captchalab.diagnosis import save_plot

    two = [outcome("fix", [0.3] * 5), outcome("asker", [CHANCE] * 5, ASKER)]
    with Image.open(save_plot(two, CHANCE, tmp_path / "two.png")) as image:
        assert image.width == 2 * 4 * 90  # two columns of 4 inches at 90 dpi, not four
