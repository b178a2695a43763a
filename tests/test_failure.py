from captchalab.charset import Charset
from captchalab.failure import diagnose_run, missing_symbols
from captchalab.heads import CTC


def _history(losses, val_losses=None):
    val_losses = val_losses or losses
    return [{"epoch": i + 1, "loss": a, "val_loss": b} for i, (a, b) in enumerate(zip(losses, val_losses))]


def _causes(**kwargs):
    args = {"history": _history([50, 40, 30, 25]), "readings": ["AB12"] * 10, "head": CTC, "input_width": 128,
            "time_steps": 32, "max_length": 6, "train_images": 2000, "train_characters": 10000, "num_symbols": 36}
    args.update(kwargs)
    return [f["cause"] for f in diagnose_run(**args)]


def test_a_run_whose_causes_are_all_absent_gets_no_finding():
    assert _causes() == []


def test_all_blank_readings_are_the_ctc_plateau_and_a_falling_loss_asks_for_more_epochs():
    findings = diagnose_run(_history([50, 40, 30]), [""] * 9 + ["A"], CTC, 128, 32, 6, 2000, 10000, 36)
    assert "plateau" in findings[0]["cause"] and "more epochs" in findings[0]["advice"]
    flat = diagnose_run(_history([50, 49.8, 49.9]), [""] * 10, CTC, 128, 32, 6, 2000, 10000, 36)
    assert "learning rate" in flat[0]["advice"]


def test_too_few_time_steps_too_few_pixels_and_too_few_examples_are_named():
    assert any("time steps" in c for c in _causes(time_steps=10))
    assert any("too small" in c for c in _causes(input_width=40, max_length=8))
    assert any("per symbol" in c for c in _causes(train_images=50, train_characters=250))


def test_validation_loss_rising_while_training_loss_falls_is_memorising():
    history = _history([50, 30, 15, 8, 4, 2], [20, 18, 19, 22, 25, 30])
    assert any("memorised" in c for c in _causes(history=history))


def test_readings_mostly_wrong_with_the_loss_still_falling_is_a_slow_start():
    """The zoo's mixed-case cell at 1,200 labels: 37 epochs, best CER 0.88, loss 41 -> 17, nothing read."""
    history = [{**h, "val_cer": cer} for h, cer in zip(_history([41, 30, 22, 17]), [0.99, 0.95, 0.9, 0.88])]
    findings = diagnose_run(history, ["aB3x"] * 10, CTC, 100, 25, 5, 1080, 5400, 62)
    assert findings[0]["cause"] == "learned too slowly to read whole captchas"
    assert "0.88" in findings[0]["evidence"] and "more epochs" in findings[0]["advice"]
    pretrained = diagnose_run(history, ["aB3x"] * 10, CTC, 100, 25, 5, 1080, 5400, 62, pretrained=True)
    assert "pretrain" not in pretrained[0]["advice"]  # it was: the zoo's pretrained mixed-case cell
    reading = [{**h, "val_cer": 0.05} for h in history]
    assert not any("slowly" in c for c in _causes(history=reading))


def test_a_memorising_run_is_not_told_to_train_longer():
    history = [{**h, "val_cer": 0.8} for h in _history([50, 30, 15, 8, 4, 2], [20, 18, 19, 22, 25, 30])]
    causes = _causes(history=history)
    assert any("memorised" in c for c in causes) and not any("slowly" in c for c in causes)


def test_a_run_that_reads_some_captchas_is_told_whether_it_underfits_or_memorises():
    """The zoo at 1,200 labels (docs/recipe.md): multicolor read 54% of its own images and 14% of new
    ones (both), overlap 89% and 63% (memorises), pypi-serif 99% and 91% (nothing to say)."""
    from captchalab.failure import diagnose_fit

    causes = lambda own, val: [f["cause"].split(":")[0] for f in diagnose_fit(own, val, 500)]  # noqa: E731
    underfits, memorises = "does not fit the style", "memorises its training images more than it learns the style"
    assert causes(0.54, 0.14) == [underfits, memorises]
    assert causes(0.89, 0.63) == [memorises]
    assert causes(0.70, 0.62) == [underfits]
    assert causes(0.99, 0.91) == [] and causes(0.30, 0.01) == []  # good enough; near zero has its own diagnosis
    assert "54.0% of 500" in diagnose_fit(0.54, 0.14, 500)[0]["evidence"]


def test_chance_level_characters_and_a_flat_loss_is_no_signal_not_a_slow_start():
    """The zoo's segment cell on multicolor at 1,200 labels: 11% of 10 digits, loss 2.59 -> 2.32."""
    from captchalab.heads import POSITIONAL, SEGMENT

    history = [{**h, "val_cer": 0.89, "val_char_accuracy": 0.11} for h in _history([2.59, 2.4, 2.35, 2.32])]
    findings = diagnose_run(history, ["1234"] * 10, SEGMENT, 160, None, 4, 1080, 4320, 10)
    assert findings[0]["cause"].startswith("learned nothing") and "cuts" in findings[0]["advice"]
    assert not any("slowly" in f["cause"] for f in findings)
    assert "crnn" in diagnose_run(history, ["1234"] * 10, POSITIONAL, 160, None, 4, 1080, 4320, 10)[0]["advice"]
    learning = [{**h, "val_char_accuracy": 0.3} for h in history]  # three times chance: it learns something
    assert not any(f["cause"].startswith("learned nothing")
                   for f in diagnose_run(learning, ["1234"] * 10, SEGMENT, 160, None, 4, 1080, 4320, 10))


def test_labels_missing_a_few_symbols_of_a_familiar_set_get_a_note():
    note = missing_symbols(Charset("012345678ABCDEFGHIJKLMNOPQRSTUVWXY"))
    assert note["note"] == "the labels use 34 of the 36 symbols of 0-9A-Z; the model cannot read 9, Z"
    assert note["advice"] == "if the captchas can show them, train again with --charset 0-9A-Z"
    assert missing_symbols(Charset("0123456789")) is None  # every digit
    assert missing_symbols(Charset("2345678bcdefgmnpwxy")) is None  # 19 of 0-9a-z: a chosen subset
    assert "of 0-9; the model cannot read 7" in missing_symbols(Charset("012345689"))["note"]
