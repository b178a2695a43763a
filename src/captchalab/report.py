"""Reports people read: one self-contained HTML page per evaluation, training curves per run.

Plots are drawn with Matplotlib's Agg backend and, like the example images, embedded as
base64 ``data:`` URIs, so ``index.html`` opens anywhere, offline, with no JavaScript.
"""

from __future__ import annotations

import base64
import html
import io
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from captchalab import runs
from captchalab.data.images import open_image
from captchalab.decoding import Prediction
from captchalab.errors import RunFolderError

CURVES = "curves.png"
WORST_SHOWN = 24
CONFUSIONS_SHOWN = 15
GAP = "∅"  # an inserted or dropped character in the confusion matrix


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(figure: Any) -> bytes:
    plt = _pyplot()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


# --------------------------------------------------------------------------- training curves


def training_curves(history: Sequence[dict[str, Any]]) -> bytes:
    """Loss and validation accuracy per epoch, as PNG bytes."""
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    left.plot(epochs, [h["loss"] for h in history], label="training loss")
    left.plot(epochs, [h["val_loss"] for h in history], label="validation loss")
    left.set_xlabel("epoch")
    left.set_ylabel("CTC / cross-entropy loss")
    left.set_yscale("log")
    left.legend()
    right.plot(epochs, [h["val_sequence_accuracy"] for h in history], label="sequence accuracy")
    right.plot(epochs, [h["val_char_accuracy"] for h in history], label="character accuracy")
    right.set_xlabel("epoch")
    right.set_ylabel("validation accuracy")
    right.set_ylim(0, 1.02)
    right.legend(loc="lower right")
    figure.suptitle("training")
    return _png(figure)


def save_training_curves(path: Path, history: Sequence[dict[str, Any]]) -> None:
    if history:
        png = training_curves(history)
        runs.atomic_write(path, lambda tmp: tmp.write_bytes(png))


# --------------------------------------------------------------------------- analysis


def align(label: str, prediction: str) -> list[tuple[str, str]]:
    """Character pairs of a minimum-edit alignment; GAP marks an insertion or a deletion."""
    n, m = len(label), len(prediction)
    cost = np.zeros((n + 1, m + 1), dtype=int)
    cost[:, 0], cost[0, :] = np.arange(n + 1), np.arange(m + 1)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            cost[i, j] = min(cost[i - 1, j] + 1, cost[i, j - 1] + 1,
                             cost[i - 1, j - 1] + (label[i - 1] != prediction[j - 1]))
    pairs, i, j = [], n, m
    while i or j:
        if i and j and cost[i, j] == cost[i - 1, j - 1] + (label[i - 1] != prediction[j - 1]):
            pairs.append((label[i - 1], prediction[j - 1]))
            i, j = i - 1, j - 1
        elif i and cost[i, j] == cost[i - 1, j] + 1:
            pairs.append((label[i - 1], GAP))
            i -= 1
        else:
            pairs.append((GAP, prediction[j - 1]))
            j -= 1
    return pairs[::-1]


def confusion(labels: Sequence[str], predictions: Sequence[str]) -> Counter[tuple[str, str]]:
    """(true, predicted) character counts over all aligned pairs."""
    counts: Counter[tuple[str, str]] = Counter()
    for label, prediction in zip(labels, predictions):
        counts.update(align(label, prediction))
    return counts


def coverage_curve(confidences: Sequence[float], correct: Sequence[bool]) -> list[dict[str, float]]:
    """Accuracy when only the most confident k answers are kept, for every k (most confident first)."""
    order = np.argsort(-np.asarray(confidences, dtype=np.float64), kind="stable")
    hits = np.cumsum(np.asarray(correct, dtype=np.float64)[order])
    n = len(order)
    return [{"coverage": (k + 1) / n, "accuracy": float(hits[k] / (k + 1)),
             "min_confidence": float(np.asarray(confidences)[order[k]])} for k in range(n)]


@dataclass(frozen=True)
class Example:
    file: Path | None
    pixels: np.ndarray  # what the model saw, uint8 (h, w)
    label: str
    prediction: Prediction


def worst(examples: Sequence[Example], count: int = WORST_SHOWN) -> list[Example]:
    """Wrong readings, the most confident first; then the least confident right ones."""
    wrong = sorted((e for e in examples if e.prediction.text != e.label), key=lambda e: -e.prediction.confidence)
    right = sorted((e for e in examples if e.prediction.text == e.label), key=lambda e: e.prediction.confidence)
    return (wrong + right)[:count]


# --------------------------------------------------------------------------- plots


def per_position_plot(accuracy: Sequence[float]) -> bytes:
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6, 3))
    positions = np.arange(1, len(accuracy) + 1)
    axis.bar(positions, accuracy, color="#4477aa")
    for x, y in zip(positions, accuracy):
        axis.text(x, y + 0.01, f"{y:.3f}", ha="center", fontsize=8)
    axis.set_xticks(positions)
    axis.set_xlabel("character position")
    axis.set_ylabel("accuracy")
    axis.set_ylim(0, 1.08)
    return _png(figure)


def confusion_plot(counts: Counter[tuple[str, str]]) -> bytes:
    """Heat map of the error pairs only (the diagonal would drown them), log-coloured."""
    plt = _pyplot()
    symbols = sorted({a for a, _ in counts} | {b for _, b in counts}, key=lambda c: (c == GAP, c))
    index = {c: i for i, c in enumerate(symbols)}
    matrix = np.zeros((len(symbols), len(symbols)))
    for (a, b), k in counts.items():
        if a != b:
            matrix[index[a], index[b]] = k
    side = max(4.0, 0.28 * len(symbols) + 1.5)
    figure, axis = plt.subplots(figsize=(side + 1, side))
    shown = axis.imshow(np.log1p(matrix), cmap="Reds")
    axis.set_xticks(range(len(symbols)), symbols, fontsize=8)
    axis.set_yticks(range(len(symbols)), symbols, fontsize=8)
    axis.set_xlabel("read as")
    axis.set_ylabel("true character")
    for (i, j), k in np.ndenumerate(matrix):
        if k:
            axis.text(j, i, int(k), ha="center", va="center", fontsize=6)
    figure.colorbar(shown, ax=axis, label="log(1 + errors)", shrink=0.8)
    return _png(figure)


def coverage_plot(curve: Sequence[dict[str, float]]) -> bytes:
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6, 3.6))
    axis.plot([p["coverage"] for p in curve], [p["accuracy"] for p in curve], color="#228833")
    axis.set_xlabel("coverage (share of captchas answered, most confident first)")
    axis.set_ylabel("sequence accuracy of the answered")
    axis.set_xlim(0, 1.0)
    axis.set_ylim(min(0.9, min(p["accuracy"] for p in curve)) - 0.02, 1.01)
    axis.grid(alpha=0.3)
    return _png(figure)


def reliability_plot(confidences: Sequence[float], correct: Sequence[bool], bins: int = 10) -> bytes:
    plt = _pyplot()
    conf, hit = np.asarray(confidences), np.asarray(correct, dtype=float)
    index = np.minimum((conf * bins).astype(int), bins - 1)
    centres = [(b + 0.5) / bins for b in range(bins) if (index == b).any()]
    accuracy = [hit[index == b].mean() for b in range(bins) if (index == b).any()]
    counts = [int((index == b).sum()) for b in range(bins) if (index == b).any()]
    figure, axis = plt.subplots(figsize=(4.2, 3.6))
    axis.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfect calibration")
    axis.scatter(centres, accuracy, s=[12 + 3 * c ** 0.5 for c in counts], color="#aa3377", label="bins")
    axis.set_xlabel("confidence")
    axis.set_ylabel("accuracy")
    axis.set_xlim(0, 1.02)
    axis.set_ylim(0, 1.02)
    # below the axes: any corner inside them is where some model's bins fall
    axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=8, frameon=False)
    return _png(figure)


# --------------------------------------------------------------------------- the page


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5em 0; } td, th { padding: 3px 10px; border: 1px solid #ddd; }
th { background: #f4f4f4; text-align: left; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.examples td { vertical-align: middle; } .wrong { color: #b00; } .right { color: #070; }
img.captcha { image-rendering: pixelated; border: 1px solid #ccc; } .note { color: #666; font-size: 0.9em; }
"""


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str], css: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
    return f'<table class="{css}"><tr>{head}</tr>{body}</table>'


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f'<td class="num">{value:.4f}</td>'
    if isinstance(value, int):
        return f'<td class="num">{value}</td>'
    if isinstance(value, _Raw):
        return f"<td>{value.markup}</td>"
    return f"<td>{html.escape(str(value))}</td>"


@dataclass(frozen=True)
class _Raw:
    markup: str


def _img(png: bytes, alt: str) -> str:
    return f'<img src="{data_uri(png)}" alt="{html.escape(alt)}">'


def _example_image(example: Example) -> bytes:
    try:
        if example.file is None:
            raise OSError
        image = open_image(example.file).convert("RGB")
    except Exception:  # the file changed since evaluation: show what the model saw
        image = Image.fromarray(example.pixels)
    scale = min(2.0, 300 / max(1, image.width))
    image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_evaluation(
    out: Path,
    result: dict[str, Any],
    examples: Sequence[Example],
    title: str,
    history: Sequence[dict[str, Any]] | None = None,
    temperature: float | None = None,
) -> Path:
    """Write ``out/index.html`` (and ``out/report.json``) for one evaluation; returns the HTML path."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RunFolderError(f"{out}: cannot write the report here ({error.strerror}); choose another folder") from None
    labels = [e.label for e in examples]
    texts = [e.prediction.text for e in examples]
    confidences = [e.prediction.confidence for e in examples]
    correct = [t == label for t, label in zip(texts, labels)]
    counts = confusion(labels, texts)
    curve = coverage_curve(confidences, correct)
    sections = [
        f"<h1>{html.escape(title)}</h1>",
        _metrics_section(result, temperature),
        _position_section(result["per_position_accuracy"]),
        _confusion_section(counts),
        _coverage_section(curve, confidences, correct),
        _worst_section(worst(examples)),
    ]
    if history:
        sections.append("<h2>Training</h2>" + _img(training_curves(history), "training curves"))
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>{''.join(sections)}</body></html>")
    target = out / "index.html"
    runs.atomic_write(target, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    summary = {"metrics": result, "coverage": _coverage_points(curve),
               "confusions": [[a, b, k] for (a, b), k in counts.most_common() if a != b]}
    runs.write_json(out / "report.json", summary)
    return target


def _metrics_section(result: dict[str, Any], temperature: float | None) -> str:
    keys = ("n", "sequence_accuracy", "char_accuracy", "cer", "mean_confidence", "ms_per_image", "model", "charset")
    rows = [(k, result[k]) for k in keys if k in result]
    if temperature is not None:
        rows.append(("confidence temperature", temperature))
    note = ("<p class='note'>Sequence accuracy counts exact whole-string matches; CER is edit distance "
            "over label length. Confidences are temperature-scaled when the run was calibrated.</p>")
    return "<h2>Metrics</h2>" + _table(rows, ("metric", "value")) + note


def _position_section(accuracy: Sequence[float]) -> str:
    if not accuracy:
        return "<h2>Per-position accuracy</h2><p>No labels of the most common length.</p>"
    rows = [(i + 1, float(a)) for i, a in enumerate(accuracy)]
    return ("<h2>Per-position accuracy</h2><p class='note'>Over labels of the most common length (or the "
            "model's fixed length).</p>" + _img(per_position_plot(accuracy), "per-position accuracy")
            + _table(rows, ("position", "accuracy")))


def _confusion_section(counts: Counter[tuple[str, str]]) -> str:
    errors = [((a, b), k) for (a, b), k in counts.most_common() if a != b]
    if not errors:
        return "<h2>Character confusions</h2><p>No character errors.</p>"
    rows = [(a, b, k) for (a, b), k in errors[:CONFUSIONS_SHOWN]]
    return ("<h2>Character confusions</h2><p class='note'>Characters aligned by minimum edit distance; "
            f"{GAP} is a missing or extra character. Correct characters are left out.</p>"
            + _img(confusion_plot(counts), "confusion matrix") + _table(rows, ("true", "read as", "count")))


def _coverage_points(curve: Sequence[dict[str, float]]) -> list[dict[str, float]]:
    points = []
    for share in (1.0, 0.95, 0.9, 0.8, 0.7, 0.5):
        k = max(0, min(len(curve) - 1, round(share * len(curve)) - 1))
        points.append({"coverage": curve[k]["coverage"], "accuracy": curve[k]["accuracy"],
                       "min_confidence": curve[k]["min_confidence"]})
    return points


def _coverage_section(curve: Sequence[dict[str, float]], confidences: Sequence[float],
                      correct: Sequence[bool]) -> str:
    rows = [(f"{p['coverage']:.0%}", p["accuracy"], p["min_confidence"]) for p in _coverage_points(curve)]
    return ("<h2>Accuracy vs coverage</h2><p class='note'>If the solver may refuse its least confident "
            "answers (solve --min-confidence C), it answers this share of captchas with this accuracy.</p>"
            + _img(coverage_plot(curve), "accuracy vs coverage")
            + _table(rows, ("coverage", "accuracy", "--min-confidence"))
            + "<h3>Reliability</h3>" + _img(reliability_plot(confidences, correct), "reliability diagram"))


def _worst_section(examples: Sequence[Example]) -> str:
    rows = []
    for e in examples:
        ok = e.prediction.text == e.label
        verdict = _Raw(f"<span class='{'right' if ok else 'wrong'}'>{'right' if ok else 'wrong'}</span>")
        name = e.file.name if e.file else ""
        rows.append((_Raw(f"<img class='captcha' src='{data_uri(_example_image(e))}' alt='{html.escape(name)}'>"),
                     e.label, e.prediction.text or "(empty)", float(e.prediction.confidence), verdict, name))
    return ("<h2>Worst examples</h2><p class='note'>Wrong readings, most confident first, then the least "
            "confident right ones.</p>"
            + _table(rows, ("image", "label", "prediction", "confidence", "", "file"), "examples"))


def _estimate_range(record: dict[str, Any]) -> str:
    span = record.get("estimate_range")
    what = ("the share read above the reference look-alikes' confidence threshold" if record.get("model_round") == 0
            else "the share read confidently and stably")
    return (f" (the middle of its range, {span[0]:.1%}-{span[1]:.1%}: one end {what}, the other its mean "
            "calibrated confidence times its consistency)") if span else ""


def share_above(r: dict[str, Any], missing: str = "-") -> str:
    """'73.0% above 0.62': the share of an adapt round's images read above the reference's confidence
    threshold (``missing`` for a round recorded without it); adapt.html and ``captchalab adapt``'s table."""
    if "thresholded_share" not in r:
        return missing
    return f"{r['thresholded_share']:.1%} above {r['confidence_threshold']:.2f}"


def write_adapt_sheet(out: Path, record: dict[str, Any]) -> Path:
    """``out/adapt.html``: the rounds, and the least certain readings as images a person can check in a minute."""
    rounds = [(r["round"], r["kept"], r["images"], float(r["mean_confidence"]),
               float(r["consistency"]) if "consistency" in r else "-", share_above(r),
               float(r["estimate"]) if "estimate" in r else "-") for r in record["rounds"]]
    rows = []
    for item in record["rounds"][-1]["least_certain"]:
        reading = Prediction(item["text"], item["confidence"])
        example = Example(Path(item["file"]), np.zeros((8, 8), np.uint8), "", reading)
        rows.append((_Raw(f"<img class='captcha' src='{data_uri(_example_image(example))}' alt=''>"),
                     item["text"] or "(empty)", float(item["confidence"]), Path(item["file"]).name))
    sections = [
        "<h1>captchalab adapt</h1>",
        f"<p>{record['images']} unlabelled images; model <code>{html.escape(record['model'])}</code>; its own "
        f"estimate of its accuracy: <b>{record['estimated_accuracy']:.1%}</b>{_estimate_range(record)}; "
        f"{record['cpu_seconds'] / 60:.1f} CPU minutes; stopped: {html.escape(record['stopped'])}.</p>",
        "<h2>Rounds</h2>" + _table(rounds, ("round", "readings kept", "images", "mean confidence", "consistency",
                                            "share above threshold", "estimate")),
        "<h2>Least certain readings</h2><p class='note'>Correct them in "
        f"<code>{html.escape(Path(record['check_csv']).name)}</code> beside this page; <code>captchalab evaluate "
        "MODEL</code> on it then says how often the model reads its hardest images, "
        "and the corrected rows are labels for <code>train --init</code> (docs/adapt.md).</p>"
        + _table(rows, ("image", "reading", "confidence", "file"), "examples"),
    ]
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>captchalab adapt</title>"
            f"<style>{STYLE}</style></head><body>{''.join(sections)}</body></html>")
    target = out / "adapt.html"
    runs.atomic_write(target, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return target
