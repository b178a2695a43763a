"""Why a training run reads (almost) nothing, or less than it should: causes inferred from what the run measured.

``train`` calls :func:`diagnose_run` when a finished run's validation sequence accuracy is
near zero, and :func:`diagnose_fit` when it reads some but under FIT_GOAL of its validation images;
it stores the findings in metrics.json (``diagnosis``) and prints them. Each finding names its
evidence, so the advice can be checked rather than trusted. NumPy only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from captchalab.charset import Charset
from captchalab.heads import Head

NEAR_ZERO = 0.05  # validation sequence accuracy below this gets a diagnosis
MIN_PIXELS_PER_CHAR = 8  # model-input columns per character below which glyphs are hard to tell apart
MIN_PER_SYMBOL = 40  # training examples per symbol below which a model from scratch rarely learns them
SLOW_CER = 0.3  # a best validation character error rate above this, with readings, is a slow start
# Character accuracy under this many times chance, with the training loss down by less than NO_SIGNAL_DROP:
# nothing learned at all (the zoo's segment cells on multicolor and outline: 11% of 10 digits, loss -10%).
NO_SIGNAL_CHANCE = 2.0
NO_SIGNAL_DROP = 0.2
CTC_STEPS_PER_CHAR = 2  # CTC needs a blank between repeats: about two time steps per character
FIT_GOAL = 0.9  # validation sequence accuracy below this gets the fit findings
# A run that reads fewer of its own (clean) training images than this has not fitted the style: the
# zoo's multicolor and outline cells at 1,200 labels read 58% and 79% of theirs (54% and 67% from stage 004 of
# the general reader; docs/recipe.md).
UNDERFIT = 0.8
OVERFIT_GAP = 0.15  # own training images read this much better than validation ones: it memorises
# Symbol sets captchas are commonly drawn from, smallest first. Labels that use most of one but not
# all (25 labels of a 0-9A-Z style often miss a symbol or two) leave the model unable to read the rest.
FAMILIAR = ("0-9", "A-Z", "a-z", "0-9A-Z", "0-9a-z", "A-Za-z", "0-9A-Za-z")
MOSTLY = 0.75


@dataclass(frozen=True)
class Finding:
    cause: str
    evidence: str
    advice: str


def diagnose_run(
    history: Sequence[dict[str, Any]],
    readings: Sequence[str],
    head: Head,
    input_width: int,
    time_steps: int | None,
    max_length: int,
    train_images: int,
    train_characters: int,
    num_symbols: int,
    pretrained: bool = False,
) -> list[dict[str, str]]:
    """Findings, most likely cause first; empty when nothing explains the failure. ``pretrained``: the
    run started from another (train --init), so pretraining is not advice to give."""
    plateau, overfit = _plateau(history, readings, head), _overfit(history)
    blind = [] if plateau else _no_signal(history, head, num_symbols)
    findings = [
        *plateau,
        *blind,
        *([] if plateau or overfit or blind else _slow(history, pretrained)),
        *_slots(head, time_steps, max_length),
        *_resolution(input_width, max_length),
        *_examples(train_images, train_characters, num_symbols),
        *overfit,
    ]
    return [asdict(f) for f in findings]


def diagnose_fit(train_accuracy: float, val_accuracy: float, train_images: int) -> list[dict[str, str]]:
    """How a run that reads some captchas but under FIT_GOAL fits: its own training images (read clean,
    ``train_images`` of them) against validation. Both findings can hold at once."""
    if val_accuracy >= FIT_GOAL or val_accuracy < NEAR_ZERO:
        return []
    seen = f"reads {train_accuracy:.1%} of {train_images} of its own training images, {val_accuracy:.1%} of validation"
    findings = []
    if train_accuracy < UNDERFIT:
        findings.append(Finding(
            "does not fit the style: it misreads many of its own training images", seen,
            "label more images (on the zoo's hardest styles more labels helped more than any setting tried, "
            "docs/recipe.md); where hue tells text from background, colour input (--set image.channels=3)"))
    if train_accuracy - val_accuracy > OVERFIT_GAP:
        findings.append(Finding(
            "memorises its training images more than it learns the style", seen,
            "label more images, or pretrain on look-alikes first (docs/few-labels.md)"))
    return [asdict(f) for f in findings]


def _plateau(history: Sequence[dict[str, Any]], readings: Sequence[str], head: Head) -> list[Finding]:
    empty = sum(not r for r in readings) / max(1, len(readings))
    if not head.blank_plateau or empty < 0.5:
        return []
    if not history:
        return [Finding("never left CTC's start-up plateau (it outputs blanks)",
                        f"{empty:.0%} of validation readings are empty", "train for more epochs")]
    first, last = history[0]["loss"], history[-1]["loss"]
    falling = len(history) >= 2 and last < 0.9 * first
    advice = ("it was still learning: give it more epochs (train --resume RUN --epochs N)" if falling else
              "try a lower learning rate (--set train.learning_rate=0.0005) or more images")
    return [Finding("never left CTC's start-up plateau (it outputs blanks)",
                    f"{empty:.0%} of validation readings are empty; training loss {first:.2f} -> {last:.2f} "
                    f"over {len(history)} epochs", advice)]


def _no_signal(history: Sequence[dict[str, Any]], head: Head, num_symbols: int) -> list[Finding]:
    """Characters read no better than chance and a training loss that hardly moved: more epochs will not help."""
    accuracies = [h["val_char_accuracy"] for h in history if math.isfinite(h.get("val_char_accuracy", math.nan))]
    if len(history) < 2 or not accuracies:
        return []
    chance = 1 / max(1, num_symbols)
    first, last = history[0]["loss"], history[-1]["loss"]
    if max(accuracies) >= NO_SIGNAL_CHANCE * chance or last < (1 - NO_SIGNAL_DROP) * first:
        return []
    if head.cuts_characters:
        advice = ("its character cuts (segmentation.py) miss the characters of this style (colour tiles, "
                  "textured backgrounds, touching or hollow text): train the default crnn instead")
    elif head.fixed_length:
        advice = "train the default crnn instead: it starts from the general reader's features"
    else:
        advice = ("check that the labels match the images, then try a lower learning rate "
                  "(--set train.learning_rate=0.0005)")
    return [Finding("learned nothing: it reads characters no better than chance",
                    f"best validation character accuracy {max(accuracies):.1%} (chance {chance:.1%}); "
                    f"training loss {first:.2f} -> {last:.2f} over {len(history)} epochs", advice)]


def _slow(history: Sequence[dict[str, Any]], pretrained: bool) -> list[Finding]:
    """Reads characters, most of them wrong (never the memorising run: the caller rules that out)."""
    cers = [h["val_cer"] for h in history if math.isfinite(h.get("val_cer", math.nan))]
    if len(history) < 2 or not cers or min(cers) < SLOW_CER:
        return []
    first, last = history[0]["loss"], history[-1]["loss"]
    val = [h["val_loss"] if math.isfinite(h["val_loss"]) else math.inf for h in history]
    falling = val.index(min(val)) + 1 >= 0.75 * len(history)  # validation still improving late in the run
    more = "label more images" if pretrained else "pretrain on look-alikes first (docs/few-labels.md)"
    return [Finding("learned too slowly to read whole captchas",
                    f"best validation character error rate {min(cers):.2f}; training loss {first:.2f} -> "
                    f"{last:.2f} over {len(history)} epochs",
                    f"it was still learning: give it more epochs (train --resume RUN --epochs N), or {more}"
                    if falling else f"{more}, or label more images" if not pretrained else more)]


def _slots(head: Head, time_steps: int | None, max_length: int) -> list[Finding]:
    if head.fixed_length or time_steps is None or time_steps >= CTC_STEPS_PER_CHAR * max_length:
        return []
    return [Finding("labels too long for the model's time steps",
                    f"{time_steps} time steps for labels of up to {max_length} characters",
                    "widen the input (--set image.width=...) or train the cnn model")]


def _resolution(input_width: int, max_length: int) -> list[Finding]:
    per_char = input_width / max(1, max_length)
    if per_char >= MIN_PIXELS_PER_CHAR:
        return []
    return [Finding("images too small for the text",
                    f"{input_width} input columns for up to {max_length} characters ({per_char:.1f} per character)",
                    "train at a larger input size (--set image.width=... image.height=...)")]


def _examples(images: int, characters: int, num_symbols: int) -> list[Finding]:
    per_symbol = characters / max(1, num_symbols)
    if per_symbol >= MIN_PER_SYMBOL:
        return []
    return [Finding("too few images per symbol",
                    f"{images} training images show each of {num_symbols} symbols about "
                    f"{per_symbol:.0f} times",
                    "label more images, or pretrain on look-alikes first (docs/few-labels.md)")]


def _overfit(history: Sequence[dict[str, Any]]) -> list[Finding]:
    finite = [i for i, h in enumerate(history) if math.isfinite(h["val_loss"]) and math.isfinite(h["loss"])]
    if len(finite) < 4:
        return []
    best_val = min(finite, key=lambda i: history[i]["val_loss"])
    train_fell = history[finite[-1]]["loss"] < 0.7 * history[best_val]["loss"]
    if best_val + 1 > len(history) / 2 or not train_fell:
        return []
    return [Finding("memorised the training images",
                    f"validation loss was lowest at epoch {best_val + 1} of {len(history)} while training loss "
                    "kept falling", "more labelled images, or look-alike pretraining (docs/few-labels.md)")]


def missing_symbols(charset: Charset) -> dict[str, str] | None:
    """A note where the labels use most, but not all, of the smallest familiar symbol set that holds
    them: the model can never read the others. None otherwise (captcha_images_v2's 19 of 0-9a-z)."""
    used = set(charset.symbols)
    for spec in FAMILIAR:
        full = Charset.parse(spec, charset.case_insensitive).symbols
        if used <= set(full):
            missing = [c for c in full if c not in used]
            if not missing or len(used) < MOSTLY * len(full):
                return None
            return {"note": f"the labels use {len(used)} of the {len(full)} symbols of {spec}; the model cannot "
                            f"read {', '.join(missing)}",
                    "advice": f"if the captchas can show them, train again with --charset {spec}"}
    return None
