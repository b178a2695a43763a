"""Render the README's results tables from bench/results/*.json (nothing typed by hand).

    .venv/bin/python bench/report.py            # prints the markdown
    .venv/bin/python bench/report.py --readme   # replaces the block between the markers in README.md
                                                # and the blocks in docs/few-labels.md and docs/recipe.md
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def _load(name: str) -> dict | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.exists() else None


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def zoo() -> str | None:
    data = _load("zoo.json")
    cells = [c for c in (data or {}).get("cells", []) if c["tag"] == "default"]
    if not cells:
        return None
    before = {(c["style"], c["n"]): c for c in data["cells"] if c["tag"] == "baseline"}
    cells.sort(key=lambda c: (c["sequence_accuracy"], c["char_accuracy"]))
    paired = any((c["style"], c["n"]) in before for c in cells)
    rows = ["| style | labelled images | sequence acc. | char acc. | on its labelled images | epochs | training "
            "CPU s |" + (" before: sequence acc., epochs |" if paired else ""), "| --- " * (8 if paired else 7) + "|"]
    for c in cells:
        old = before.get((c["style"], c["n"]))
        was = (f" {_pct(old['sequence_accuracy'])}, {old['epochs']} |" if old else " - |") if paired else ""
        fit = _pct(c["train_sequence_accuracy"]) if "train_sequence_accuracy" in c else "-"
        rows.append(f"| {c['style']} | {c['n']} | {_pct(c['sequence_accuracy'])} | {_pct(c['char_accuracy'])} | "
                    f"{fit} | {c['epochs']} | {c['train_cpu_seconds']:.0f} |{was}")
    worst, mean = cells[0], sum(c["sequence_accuracy"] for c in cells) / len(cells)
    machines = sorted({_cpu(c) for c in cells if c.get("cpu_model")})
    legend = "; ".join(f"`{name}`: {text}" for name, text in data.get("styles", {}).items())
    commits = sorted({c["code"]["commit"] for c in before.values() if c.get("code")})
    return ("### The style zoo: one recipe on many captcha styles, worst first (`bench/zoo.py`)\n\n"
            f"**Worst cell: {_pct(worst['sequence_accuracy'])}** ({worst['style']}, {worst['n']} labelled images); "
            f"mean {_pct(mean)} over the {len(cells)} cell(s) measured so far. `captchalab train` with every default "
            "on the first N images of each style's labelled pool, scored on 500 held-out images of the style "
            "(captcha_images_v2: its 104 `test.csv` images)" + _told(cells)
            + (f"; \"before\" is the previous recipe (commit {', '.join(commits)}) on the same images, trained side "
               "by side" if commits else "") + ".\n\n" + "\n".join(rows)
            + (f"\n\nCPU seconds come from {len(machines)} machines ({'; '.join(machines)}) and from cells trained "
               "beside other jobs: compare them within one machine only (each cell's `cpu_model` in `zoo.json`)."
               if len(machines) > 1 else "")
            + f"\n\nStyles: {legend}. Samples: `docs/zoo.png`; recipe and method: `docs/recipe.md`; cells, input "
            "sizes, CPU times and commits in `bench/results/zoo.json`.")


def _told(cells: list[dict]) -> str:
    """The cells whose first N labels missed symbols of their style: train was told the style's symbols."""
    told = [f"{c['style']} at {c['n']}" for c in cells if c.get("charset_told")]
    return (f"; where the first N labels miss some of the style's symbols ({', '.join(told)}), `train` is told "
            "them (`--charset`), as a user who knows the site's symbols would be") if told else ""


def zoo_variants() -> str | None:
    """Every other recipe measured on the zoo (a --tag of bench/zoo.py), beside the default on the
    same cell: what a change of the recipe did, cell by cell, before any becomes the default."""
    data = _load("zoo.json") or {}
    # other models' cells are in zoo_models
    cells = {(c["style"], c["n"], c["tag"]): c for c in data.get("cells", []) if c["model"] == "crnn"}
    tags = sorted({tag for _, _, tag in cells} - {"default"})
    keys = sorted({(s, n) for s, n, tag in cells if tag != "default" and (s, n, "default") in cells})
    if not keys:
        return None
    rows = ["| style | labelled images | recipe (`--tag`) | its settings | sequence acc. | char acc. | epochs | "
            "training CPU s |", "| --- " * 8 + "|"]
    for style, n in keys:
        for tag in ["default", *tags]:
            c = cells.get((style, n, tag))
            if c:
                settings = ", ".join([*(f"`{o}`" for o in c.get("overrides", []) if o != "train.threads=1"),
                                      *_started_from(c)]) or "-"
                base = _cpu(cells[(style, n, "default")])
                other = f" (on {_cpu(c)})" if c.get("cpu_model") and _cpu(c) != base else ""
                rows.append(f"| {style} | {n} | {tag} | {settings} | {_pct(c['sequence_accuracy'])} | "
                            f"{_pct(c['char_accuracy'])} | {c['epochs']} | {c['train_cpu_seconds']:.0f}{other} |")
    return "\n".join(rows)


def zoo_models() -> str | None:
    """The other models (``bench/zoo.py --model NAME``, each from random weights: only the crnn has a general
    reader to start from) beside the default crnn on the same cells: which to pick when."""
    data = _load("zoo.json") or {}
    cells = {(c["style"], c["n"], c["model"]): c for c in data.get("cells", [])
             if c["model"] != "crnn" or c["tag"] == "default"}
    models = sorted({m for _, _, m in cells} - {"crnn"})
    keys = sorted({(s, n) for s, n, m in cells if m != "crnn" and (s, n, "crnn") in cells},
                  key=lambda k: (cells[(*k, "crnn")]["sequence_accuracy"], k))
    if not keys:
        return None
    head = " | ".join(f"`{m}`" for m in ["crnn", *models])
    rows = [f"| style | labelled images | {head} |", "| --- " * (2 + 1 + len(models)) + "|"]
    for style, n in keys:
        read = [cells.get((style, n, m)) for m in ["crnn", *models]]
        rows.append(f"| {style} | {n} | " + " | ".join(
            f"{_pct(c['sequence_accuracy'])} ({c['train_cpu_seconds']:.0f} s)" if c else "-" for c in read) + " |")
    return "\n".join(rows)


def _cpu(cell: dict) -> str | None:
    """A cell's CPU model without the clock suffix (" @ 2.00GHz") that only some sources record."""
    return cell["cpu_model"].split(" @ ")[0] if cell.get("cpu_model") else None


def _started_from(cell: dict) -> list[str]:
    """How a variant's cell began: pretrained on look-alikes of its own images, or from another run."""
    pre = cell.get("pretraining")
    if pre:
        start = f"from `--init {Path(pre['init']).name}` " if pre.get("init") else "from random weights "
        return [f"pretrained {start}on {pre['synthetic_images']:,} look-alikes of its images ({pre['epochs']} "
                f"epochs, {pre['train_cpu_seconds']:.0f} CPU s, inside the cell's CPU)"]
    if not cell.get("init"):
        return ["random weights"]
    stage = f" (stage {cell['general_stage']})" if cell.get("general_stage") else ""
    return [f"`--init {Path(cell['init']).name}`{stage}"]


def crnn_vs_keras() -> str | None:
    data = _load("crnn_vs_keras.json")
    if not data or not {"keras", "crnn"} <= set(data["results"]):
        return None
    rows = ["| model | sequence acc. | char acc. | CER | epochs | training CPU s | ms/image |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    start = data["results"]["crnn"].get("init", "none")  # absent: measured before train's default start changed
    crnn = "captchalab `crnn`" + (" (from random weights, `--init none`)" if start in (None, "none") else
                                  f" (`--init {start}`)")
    for key, label in (("keras", "Keras example recipe"), ("crnn", crnn)):
        r = data["results"][key]
        rows.append(f"| {label} | {_pct(r['sequence_accuracy'])} | {_pct(r['char_accuracy'])} | {r['cer']:.4f} | "
                    f"{r['epochs_run']} | {r['train_cpu_seconds']:.0f} | {r['inference_ms_per_image']:.2f} |")
    share = data.get("crnn_cpu_share_of_keras")
    note = f"\n\ncaptchalab's training CPU time is {share:.2f}× the Keras recipe's." if share else ""
    return ("### captcha_images_v2: captchalab `crnn` vs the Keras OCR example (`bench/crnn_vs_keras.py`)\n\n"
            + "\n".join(rows) + note + "\n\nTrained on `train.csv` (936), scored on `test.csv` (104); "
            "ms/image is batch 1: a compiled Keras call (TensorFlow's default threads) for the recipe, ONNX "
            "Runtime on one thread for captchalab. Machine and versions in `bench/results/crnn_vs_keras.json`.")


def bundled() -> str | None:
    data = _load("bundled.json")
    if not data:
        return None
    m, t = data["metrics"], data["test_set"]
    return ("### The bundled model (`bench/train_bundled.py`)\n\n"
            "| test set | sequence acc. | char acc. | CER | ONNX size |\n| --- | --- | --- | --- | --- |\n"
            f"| {t['count']} fresh synthetic captchas (seed {t['seed']}, length {t['length']}, {t['size']}) | "
            f"{_pct(m['sequence_accuracy'])} | {_pct(m['char_accuracy'])} | {m['cer']:.4f} | "
            f"{data['onnx_bytes'] / 1e6:.2f} MB |" + _bundled_training(data) + _bundled_errors(data))


def _bundled_training(data: dict) -> str:
    stages = data.get("stages")
    if not stages:
        return ""
    parts = []
    for number, stage in enumerate(stages):
        settings = dict(item.split("=", 1) for item in stage["settings"])
        size = f"{settings['image.height']}x{settings['image.width']}"
        parts.append(f"{stage['epochs_run']} epochs at {size} on {stage['train_count']:,} images" if number == 0 else
                     f"{stage['epochs_run']} epochs fine-tuning at {size} on {stage['train_count']:,} fresh ones "
                     f"(learning rate {settings['train.learning_rate']})")
    typed = sum(s["train_cpu_seconds"] for s in stages if "typed in" in s.get("train_cpu_seconds_source", ""))
    unmeasured = f", of which {typed / 60:.0f} read from a process the run did not measure" if typed else ""
    return (f"\n\nTrained in {len(parts)} stages: {'; then '.join(parts)}; "
            f"{data['train_cpu_seconds'] / 60:.0f} CPU minutes of training in all{unmeasured}."
            + _augment_ablation(data))


def _augment_ablation(data: dict) -> str:
    ablation = data.get("ablation_last_stage_with_augmentation")
    if not ablation:
        return ""
    test = ablation["test"]
    return (" The last stage trains without the default augmentation (shifts, zooms, rotations, contrast); the "
            "same stage with it, from the same start on the same images (`--ablate-augment`), reached "
            f"{_pct(test['sequence_accuracy'])} sequence / {_pct(test['char_accuracy'])} char accuracy on this test "
            f"set (best validation {_pct(ablation['best_val_sequence_accuracy'])}). Fresh images from the very "
            "generator of the test set leave augmentation nothing to add but a shift away from the test "
            "distribution. With few real labelled images, the usual case, training from scratch depends on it, so "
            "`train.augment` stays on by default" + _augment_few_labels() + "; fine-tuning from look-alikes did a "
            "little better without it there, on too few test images to act on yet.")


def _augment_few_labels() -> str:
    data = _load("tuning/augment.json")
    if not data:
        return ""
    groups: dict[tuple[str, int], dict[bool, list[float]]] = {}
    for cell in data["cells"]:
        groups.setdefault((cell["method"], cell["n"]), {True: [], False: []})[cell["augment"]].append(
            cell["sequence_accuracy"])
    parts = []
    for (method, n), runs in groups.items():
        on, off = runs[True], runs[False]
        if on and off:
            with_it, without = _pct(sum(on) / len(on)), _pct(sum(off) / len(off))
            parts.append(f"{method} at {n} labels {with_it} with vs {without} without")
    seeds = len({cell["seed"] for cell in data["cells"]})
    return (f" (captcha_images_v2 `test.csv`, `bench/augment.py`, mean of {seeds} seeds: " + "; ".join(parts) + ")")


def _bundled_errors(data: dict) -> str:
    errors = data.get("errors")
    if not errors:
        return ""
    return (f"\n\nMost frequent confusions (label->reading): {', '.join(errors['top_confusions'][:6])}. "
            f"{errors['wrong_only_by_O_vs_0']} of the {errors['wrong_readings']} wrong readings are wrong only by "
            "O vs 0, which the generator's one font (DroidSansMono) draws almost alike"
            + (f"; {errors['wrong_length'] or 'none'} of them the wrong length" if "wrong_length" in errors else "")
            + ". Recipe, training set and "
            "CPU time: `bench/results/bundled.json`.")


def peers() -> str | None:
    data = _load("peers.json")
    if not data:
        return None
    rows = ["| solver | set | sequence acc. | char acc. | ms/image p50 (p95), batch 1 | images/s, batch 64 |",
            "| --- | --- | --- | --- | --- | --- |"]
    for solver, sets in data["summary"].items():
        for name, r in sets.items():
            rows.append(f"| {solver} | {name} | {_pct(r['sequence_accuracy'])} | {_pct(r['char_accuracy'])} | "
                        f"{r['batch1_ms_p50']:.1f} ({r['batch1_ms_p95']:.1f}) | {r['batch64_images_per_s']:.1f} |")
    targets = data.get("targets", {})
    ratio = targets.get("ratio_vs_ddddocr_batch1_images_per_s")
    note = f"\n\ncaptchalab solves {ratio:.1f}× as many images per second as ddddocr at batch 1." if ratio else ""
    return ("### Against other solvers, one pinned core (`bench/peers.py`)\n\n" + "\n".join(rows) + note
            + "\n\nThe captchalab model here is a `crnn` trained on captcha_images_v2 `train.csv`, so it does not "
            "read the synthetic style; see `bench/results/peers.json` for load times and installed sizes.")


def serving() -> str | None:
    soak, load = _load("soak.json"), _load("load_test.json")
    if not soak and not load:
        return None
    lines = ["### Serving (`bench/load_test.py`, `bench/soak.py`)", ""]
    if load:
        c, lat = load["checks"], load["latency_ms_valid"]
        lines.append(f"- load test (2,000 requests, 50 concurrent, 10% malformed): zero 5xx {c['zero_5xx']}; valid "
                     f"answers equal to in-process readings {c['valid_same_reading_as_in_process']}; malformed "
                     f"answered with a 4xx JSON error {c['malformed_expected_4xx_json']}; latency p50 "
                     f"{lat['p50']:.0f} ms, p95 {lat['p95']:.0f} ms (on the loaded machine).")
    if soak:
        r, m = soak["requests"], soak["memory"]
        lines.append(f"- soak: {r['sent']} requests ({r['per_second']}/s, valid and malformed mixed), "
                     f"{r['five_xx']} responses 5xx; server RSS {m['rss_after_warmup_mib']} MiB after warm-up, "
                     f"{m['rss_end_mib']} MiB at the end.")
    return "\n".join(lines)


def efficiency() -> str | None:
    data = _load("efficiency.json")
    if not data or not data.get("curves"):
        return None
    curves = data["curves"]
    counts = sorted({int(n) for c in curves.values() for n in c})
    rows = ["| labelled images | " + " | ".join(str(n) for n in counts) + " |",
            "| --- |" + " --- |" * len(counts)]
    for method, label in (("general", "fine-tuning the general reader (`train`'s default)"),
                          ("pretrained", "synthetic pretraining + fine-tuning"), ("scratch", "from scratch")):
        if method not in curves:
            continue
        cells = curves[method]
        rows.append(f"| {label} | " + " | ".join(_curve_cell(cells.get(str(n))) for n in counts) + " |")
    comparison = data.get("comparison", {})
    if comparison:
        rows.append("| CPU s per cell, pretrained / scratch | " + " | ".join(
            _cpu_pair(comparison.get(str(n))) for n in counts) + " |")
    return ("### Few labels: the learning curve on captcha_images_v2 (`bench/efficiency.py`)\n\n"
            "Sequence accuracy on `test.csv` (mean over seeds, min-max in parentheses) after training on the first N "
            "images of a seeded shuffle of `train.csv`.\n\n" + "\n".join(rows)
            + "\n\n" + _outcomes(comparison) + _pretraining_cost(data.get("pretraining")) + _general_cells(data)
            + " Plot: `bench/results/efficiency.png`; cells, CPU times and "
            "schedules in `bench/results/efficiency.json`; method in `docs/few-labels.md`."
            + (f"\n\n*{data['schedule_note']}*" if data.get("schedule_note") else ""))


def _general_cells(data: dict) -> str:
    """The general-reader row: measured in a later run of its own (efficiency.py --methods general)."""
    cells = [c for c in data["cells"] if c["method"] == "general"]
    if not cells:
        return ""
    cpu = sorted(c["cpu_seconds"] for c in cells)
    return (f" The general-reader row was measured later, in a run of its own (`--methods general`), on the same "
            f"subsets and test images, without look-alikes: {cpu[0]:.0f}-{cpu[-1]:.0f} CPU s per cell (its 32x160 "
            "input and larger network; the pretrained cells' figures above leave out their shared pretraining run).")


def audit_new_style() -> str | None:
    data = _load("audit_new_style.json")
    if not data:
        return None
    measured = {m: {n: c["mean"] for n, c in curve.items()} for m, curve in data["curves"].items()}
    points = "; ".join(f"{m}: " + ", ".join(f"{_pct(v)} at {n}" for n, v in c.items()) for m, c in measured.items())
    return ("### `audit` on a style it was not tuned on (`bench/audit_new_style.py`)\n\n"
            f"{data['data']}; budget {data['budget_cpu_minutes']:g} CPU minutes, spent "
            f"{data['cpu_seconds'] / 60:.2f} (within budget: {data['within_budget']}), {len(data['skipped'])} cells "
            f"skipped for budget. Measured: {points}. Verdict: {data['verdict']['text']} Plot: "
            "`bench/results/audit_new_style.png`.")


def _cpu_pair(row: dict | None) -> str:
    return f"{row['cpu_seconds']['pretrained']:.0f} / {row['cpu_seconds']['scratch']:.0f}" if row else "-"


def _pretraining_cost(pretraining: dict | None) -> str:
    if not pretraining or pretraining.get("train_cpu_seconds") is None:
        return ""
    return (f" The pretraining, done once for every pretrained cell: {pretraining['synthetic_images']:,} look-alikes "
            f"of the smallest subset's images, {pretraining.get('generate_cpu_seconds', 0):.0f} CPU s to render and "
            f"{pretraining['train_cpu_seconds']:.0f} CPU s to train.")


def _outcomes(comparison: dict) -> str:
    """"ahead at 5 (N = 25, ...); tied at 1 (N = 936: both 100.0% ...)": the verdict in words."""
    by_outcome: dict[str, list[str]] = {}
    for n, row in comparison.items():
        by_outcome.setdefault(row["outcome"], []).append(n)

    def detail(n: str) -> str:
        row = comparison[n]
        if row["outcome"] != "tied":
            return n
        chars = row["char_accuracy"]
        return (f"{n}: both {_pct(row['sequence_accuracy']['scratch'])}, char accuracy {_pct(chars['pretrained'])} "
                f"vs {_pct(chars['scratch'])}")

    parts = [f"{outcome} at {len(ns)} (N = {', '.join(detail(n) for n in ns)})" for outcome, ns in by_outcome.items()]
    return (f"Of {len(comparison)} label counts, pretraining is {'; '.join(parts)} against training from scratch "
            "on mean sequence accuracy, in the same run.")


def _curve_cell(cell: dict | None) -> str:
    if not cell:
        return "-"
    spread = f" ({_pct(cell['min'])}-{_pct(cell['max'])})" if cell["seeds"] > 1 else ""
    return f"{_pct(cell['mean'])}{spread}, {cell['seeds']} seed{'s' if cell['seeds'] > 1 else ''}"


def fully_connected() -> str | None:
    data = _load("fully_connected.json")
    records = (data or {}).get("records", [])
    finished = [r for r in records if r["stage"] == "size" and r["key"] == {"model": "mlp", "train_images": 50000,
                                                                            "epochs_cap": 0}]
    snapshots = [r for r in records if r["stage"] == "snapshot"]
    if finished:
        r = finished[0]
        how = (f"with every default (`captchalab train DATA --model mlp`, {r['epochs_run']} epochs, "
               f"best checkpoint)")
    elif snapshots:
        r = max(snapshots, key=lambda x: x["key"]["after_epoch"])
        how = (f"with every default (`captchalab train DATA --model mlp`), still training: its best checkpoint "
               f"after {r['key']['after_epoch']} epochs")
    else:
        return None
    positions = " / ".join(f"{p:.3f}" for p in r["per_position_accuracy"])
    return ("### The original question: a fully-connected net (`bench/fully_connected.py`)\n\n"
            f"`mlp` trained {how}, on 50,000 synthetic 160x60 captchas (5 characters, 0-9A-Z), scored on a fresh "
            f"test set of {r['n']}: per-position accuracy {positions} (mean {r['char_accuracy']:.3f}), sequence "
            f"accuracy {_pct(r['sequence_accuracy'])}. {_mlp_budget(records, r)}The plateau's cause and every "
            "other table: `docs/fully-connected.md`.")


def _mlp_budget(records: list[dict], default: dict) -> str:
    """What the mlp's own floor of epochs buys, from the 20-epoch runs (the budget sized for the crnn)."""
    short = [r for r in records if r["stage"] == "size" and r["key"] == {"model": "mlp", "train_images": 50000,
                                                                         "epochs_cap": 20}]
    if not short:
        return ""
    s = short[0]
    return (f"`train` gives this network at least 100 epochs (its registry entry's floor); the 20 that the "
            f"budget sized for the crnn gives 50,000 images read {_pct(s['sequence_accuracy'])} whole (mean "
            f"character {s['char_accuracy']:.3f}, `--epochs 20`, {s['train_cpu_seconds']:.0f} CPU s against "
            f"{default['train_cpu_seconds']:.0f}). ")


def _first_reader(run: dict) -> str:
    first = run.get("first_reader") or []
    if not first or first[-1]["val_sequence_accuracy"] >= 0.5:
        return "."
    epochs = " + ".join(str(f["epochs"]) for f in first)
    return (f". Its first reader, trained {epochs} epochs on the look-alikes, never read them (validation CER "
            f"{first[-1]['val_cer']:.2f}, no whole captcha): CTC's start-up plateau outlasted the budget "
            "(docs/adapt.md).")


def _start(run: dict) -> str:
    init = run["adapt_config"].get("init")
    stage = f" (stage {run['general_stage']})" if "general_stage" in run else ""
    return (f"`{Path(init).relative_to(ROOT)}`{stage}" if init and Path(init).is_relative_to(ROOT) else
            f"`{init}`" if init else "random weights")


def adapt() -> str | None:
    data = _load("adapt.json")
    runs = [r for r in (data or {}).get("runs", []) if r.get("style", "captcha_images_v2") == "captcha_images_v2"]
    run = next((r for r in runs if r["tag"] == "default"), None)
    if run is None:
        return None
    rows = "\n".join(
        f"| {r['round']} | {_pct(r['test_sequence_accuracy'])} | {_pct(r['test_char_accuracy'])} | "
        f"{_pct(r['accuracy_on_the_adapted_images'])} | {_pct(r['estimated_accuracy'])} | {r['kept']} | "
        + (f"{_pct(r['kept_precision'])} |" if r.get("kept_precision") is not None else "- |")
        for r in run["rounds"])
    best = _kept_round(run)
    others = [f"{'first reader' if r['tag'] == ADAPT_BEFORE else 'settings'}, `{r['tag']}` "
              f"({r['adapt_config']['synthetic']:,} look-alikes, round 0 from {_start(r)}, given "
              f"{r['adapt_config']['pretrain_share']:.0%} of {r['budget_minutes']:.0f} CPU minutes): "
              f"{_pct(r['rounds'][-1]['test_sequence_accuracy'])} after round {r['rounds'][-1]['round']}, "
              f"stopped: {r['stopped']}" for r in runs if r is not run and "adapt_config" in r]
    return ("### Zero labels: `captchalab adapt` (`bench/adapt.py`)\n\n" + _adapt_worst(data["runs"])
            + f"captcha_images_v2's 936 `train.csv` images with their labels hidden, told only \"5 characters of "
            f"0-9a-z\", round 0 starting from {_start(run)}: **{_pct(best['test_sequence_accuracy'])}** on "
            f"`test.csv` with the model it keeps (round "
            f"{best['round']}; its own estimate: {_pct(best['estimated_accuracy'])}), in "
            f"{run.get('adapt_cpu_seconds_recorded', run['adapt_cpu_seconds']) / 60:.0f} CPU minutes "
            f"({run['budget_minutes']:.0f} budgeted); its stop message: \"{run['stopped']}\"{_first_reader(run)}\n\n"
            "| round | test.csv sequence | test.csv char | on the adapted images | its own estimate | readings kept "
            "| of those right |\n| --- | --- | --- | --- | --- | --- | --- |\n" + rows + _labelled(run)
            + "".join(f"\n\nEarlier {line}." for line in others) + _adapt_styles(data["runs"]))


def _adapt_worst(runs: list[dict]) -> str:
    """The headline: the worst set adapt has been measured on with every default, and the mean."""
    kept = {r.get("style", "captcha_images_v2"): _kept_round(r)["test_sequence_accuracy"]
            for r in runs if r["tag"] == "default"}
    if len(kept) < 2:
        return ""
    worst = min(kept, key=kept.get)
    return (f"**Worst set so far: {_pct(kept[worst])}** ({worst}); mean {_pct(sum(kept.values()) / len(kept))} over "
            f"the {len(kept)} sets adapted with every default (captcha_images_v2 first, then the zoo styles).\n\n")


# adapt's gain is measured against the zero-shot run (bench/zero_shot.py) of the very reader its round 0 started
# from, matched by the ONNX file's SHA-256: the current one, or one kept when a newer stage shipped.
ZERO_SHOT_RUNS = ("zero_shot.json", "zero_shot_stage008.json")
# The records adapt's default made before the shipped general reader changed (bench/results/adapt.json tag):
# the styles table shows what the model it kept read then, beside what it reads from the reader shipped now.
ADAPT_BEFORE = "stage008"


def _zero_shot_by_model() -> dict[str, tuple[str, dict]]:
    """Each recorded zero-shot run by its model's ONNX SHA-256: its file's name and its sets."""
    found = {}
    for name in ZERO_SHOT_RUNS:
        shot = _load(name) or {}
        if shot.get("model_sha256"):
            found[shot["model_sha256"]] = name, shot.get("sets", {})
    return found


def _adapt_styles(runs: list[dict]) -> str:
    """adapt with every default on zoo styles (bench/adapt.py --style), worst first, beside the general
    reader's zero-shot reading of the same style told the same (bench/zero_shot.py)."""
    styles = [r for r in runs if r.get("style", "captcha_images_v2") != "captcha_images_v2" and r["tag"] == "default"]
    if not styles:
        return ""
    before = {r["style"]: _kept_round(r) for r in runs if r["tag"] == ADAPT_BEFORE}
    shots = _zero_shot_by_model()
    rows, files = [], set()
    for r in sorted(styles, key=lambda r: _kept_round(r)["test_sequence_accuracy"]):
        best, first = _kept_round(r), r["rounds"][0]
        name, zero = shots.get(r.get("general_onnx_sha256", ""), ("", {}))
        files |= {name} - {""}
        shot = zero.get(r["style"], {}).get("solvers", {}).get("captchalab_allowed")
        then = before.get(r["style"])
        rows.append(f"| {r['style']} | {r['told']['length']} of {len(r['told']['charset'])} symbols | "
                    f"{_pct(shot['sequence_accuracy']) if shot else '-'} | {_pct(first['test_sequence_accuracy'])} | "
                    f"**{_pct(best['test_sequence_accuracy'])}** (round {best['round']}) | "
                    f"{_estimate_cell(best)} | {_pct(best['accuracy_on_the_adapted_images'])} | "
                    f"{r.get('adapt_cpu_seconds_recorded', r['adapt_cpu_seconds']) / 60:.0f} | "
                    f"{_pct(then['test_sequence_accuracy']) if then else '-'} |")
    kept_in = ", ".join(f"`bench/results/{f}`" for f in sorted(files)) or "no run recorded"
    return ("\n\nThe same command on styles of the zoo (`bench/adapt.py --style NAME`: the first 1,200 images of "
            "the style's pool, labels hidden, told the lengths and symbols its labels use; scored on its 500 test "
            f"images), worst first. Zero-shot: the general reader these runs started from, told the same "
            f"(`bench/zero_shot.py`, its run kept as {kept_in}), scored like the rounds "
            "(exact case where the style has both cases, as mixed-case does). The last column is the model adapt "
            f"kept when its round 0 started from the general reader shipped before (records tagged `{ADAPT_BEFORE}`)."
            "\n\n| style | told | zero-shot | round 0 | the model it keeps | its own estimate (its range) | true, on "
            f"the adapted images | CPU minutes | kept, `{ADAPT_BEFORE}` |\n"
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n" + "\n".join(rows) + _estimate_errors(runs))


def _estimate_cell(best: dict) -> str:
    span = best.get("estimate_range")
    return _pct(best["estimated_accuracy"]) + (f" ({100 * span[0]:.1f}-{_pct(span[1])})" if span else "")


def _estimate_errors(runs: list[dict]) -> str:
    """How far adapt's own estimate was from the truth on the adapted images, for round 0 and for the model it
    keeps, by the rule of adapting.estimate, by the rule before it (round 0: the mean calibrated confidence
    times the consistency) and, for round 0, by the thresholded share alone, on the same sets."""
    defaults = {r.get("style", "captcha_images_v2"): r for r in runs if r["tag"] == "default"}
    first = {s: r["rounds"][0] for s, r in defaults.items()}
    before = {"the rule before": "estimate_by_consistency"}
    rules = {**before, "the thresholded share alone": "thresholded_share"}
    kept_rounds = {s: _kept_round(r) for s, r in defaults.items()}
    # the rule before differs from adapting.estimate in round 0 only: where no kept model is a round 0, it says
    # the same
    kept = _errors(kept_rounds, before if any(r["round"] == 0 for r in kept_rounds.values()) else {})
    return ("\n\nIts own estimate (`adapting.estimate`) is the middle of a range. In round 0, of two estimates: "
            "the share of the images whose confidence is above a threshold, the confidence exceeded by as large a "
            "share of 400 look-alikes no round trained on as were read right (average thresholded confidence), and "
            "its mean calibrated confidence times its consistency (the share of its readings that a two-pixel "
            "shift leaves alone, over that share on those look-alikes, at most 1); after self-training, of the "
            "share of images it read confidently and stably and that confidence times the consistency. On the "
            f"{len(defaults)} sets measured with it, for round 0: {_errors(first, rules)}; for the model it "
            f"keeps: {kept}.")


def _errors(rounds: dict[str, dict], others: dict[str, str]) -> str:
    """'within 5 points of the truth on N, M points off on average, furthest on S, X points (the rule before:
    ...)': adapting.estimate's estimate, then each other rule's (a name and the key it is recorded under)."""
    def summary(key: str) -> str:
        off = {s: abs(r[key] - r["accuracy_on_the_adapted_images"]) for s, r in rounds.items()}
        worst = max(off, key=off.get)
        return (f"within 5 points on {sum(e <= 0.05 for e in off.values())}, "
                f"{100 * sum(off.values()) / len(off):.1f} points off on average, furthest on {worst}, "
                f"{100 * off[worst]:.1f} points")
    rest = "; ".join(f"{name}: {summary(key)}" for name, key in others.items())
    return summary("estimated_accuracy") + (f" ({rest})" if rest else "")


def _kept_round(run: dict) -> dict:
    """The round adapt keeps as OUT/model: the one that kept the most readings (the latest on a tie)."""
    return max(run["rounds"], key=lambda r: (r["kept"], r["round"]))


def _labelled(run: dict) -> str:
    """The loop closed by hand: ``captchalab label`` on the check sheet corrected (bench/adapt.py --label)."""
    done = run.get("labelled")
    if not done:
        return ""
    return (f"\n\nThen a person's minute: the {done['labels']} least certain readings of its check sheet "
            f"(`check.csv`; {done['wrong_in_the_sheet']} of them read wrong) corrected and given to `captchalab "
            f"label`: **{_pct(done['test_sequence_accuracy'])}** on `test.csv` (character "
            f"{_pct(done['test_char_accuracy'])}), in {done['label_cpu_seconds'] / 60:.0f} more CPU minutes.")


ZERO_SHOT_SOLVERS = {"captchalab": "general reader", "captchalab_allowed": "general reader, told the charset",
                     "ddddocr": "ddddocr", "ddddocr_set_ranges": "ddddocr, `set_ranges`"}


def general() -> str | None:
    """The general reader zero-shot beside ddddocr on every set, worst first (bench/zero_shot.py)."""
    data, training = _load("zero_shot.json"), _load("general.json")
    if not data or not training:
        return None
    sets = sorted(data["sets"].items(),
                  key=lambda kv: kv[1]["solvers"]["captchalab_allowed"]["sequence_accuracy_casefold"])
    rows = ["| set | " + " | ".join(ZERO_SHOT_SOLVERS.values()) + " | general reader: mean confidence, ECE |",
            "| --- " * (len(ZERO_SHOT_SOLVERS) + 2) + "|"]
    for name, result in sets:
        cells = [_pct(result["solvers"][k]["sequence_accuracy_casefold"]) for k in ZERO_SHOT_SOLVERS]
        plain = result["solvers"]["captchalab"]
        rows.append(f"| {name} | " + " | ".join(cells) + f" | {_pct(plain['mean_confidence'])}, "
                    f"{plain['ece']:.2f} |")
    summary = data["summary"]
    rows.append("| **worst / mean** | " + " | ".join(f"**{_pct(summary[k]['worst'])}** / {_pct(summary[k]['mean'])}"
                                                    for k in ZERO_SHOT_SOLVERS) + " | |")
    stage = next(s for s in training["stages"] if data["model_sha256"] in s.get("onnx_sha256", ""))
    timing = data["sets"]["captcha_images_v2"]["solvers"]
    return ("### A general reader out of the box, next to ddddocr (`bench/zero_shot.py`)\n\n"
            f"Zero-shot, no image of any set seen, sequence accuracy (case folded): the general reader "
            f"(`bench/train_general.py` stage {stage['run']}: {int(stage['run']) + 1} shards of "
            f"{training['shard_images']:,} fresh world images, {_pct(stage['val_sequence_accuracy'])} on the world's "
            f"validation set, exact case) against ddddocr {data['ddddocr_version']}"
            f" in the same run. Worst first.\n\n" + "\n".join(rows)
            + f"\n\n{_zero_shot_speed(timing)} \"Told the charset\": the "
            "set's symbols and lengths as `--allowed`/`--length` (and `--case` where its letters are of one case) "
            "for captchalab, `set_ranges` for ddddocr. Its confidence is that of the plain reading (exact case), "
            "ECE the expected calibration error over 15 bins: low where it reads little, as it should be; told "
            "the charset it stays at the unconstrained share of the probability (never renormalised, so a "
            "constrained reading is under-confident). Examples and the machine in "
            "`bench/results/zero_shot.json`; training per stage in `bench/results/general.json`.")


def _zero_shot_speed(timing: dict) -> str:
    ours, theirs = timing["captchalab"], timing["ddddocr"]
    wall = (f"Batch 1, one core, on captcha_images_v2: {ours['batch1_ms_p50']:.1f} ms/image (general reader) vs "
            f"{theirs['batch1_ms_p50']:.1f} (ddddocr), median wall time.")
    if "batch1_cpu_ms_mean" not in ours:
        return wall
    ratio = theirs["batch1_cpu_ms_mean"] / ours["batch1_cpu_ms_mean"]
    return (wall[:-1] + f"; in CPU time, which other jobs on a busy machine leave comparable, "
            f"{ours['batch1_cpu_ms_mean']:.1f} vs {theirs['batch1_cpu_ms_mean']:.1f} ms: {ratio:.1f}x as many "
            "images per second, file bytes in, text out.")


def decode() -> str | None:
    """What the beam search's width and option floor change, per model over every set (docs/few-labels.md)."""
    data = _load("decode.json")
    if not data or "models" not in data:
        return None
    if "searches" not in next(iter(next(iter(data["models"].values())).values())):
        return None  # a record from before the search's width was measured
    rows = ["| model | beam width, option floor | top-1 the same | top-1 within the labels' lengths the same | "
            "top-3 the same | top-1 right: plain; within the lengths | decode top-1, CPU ms/image (mean over sets; "
            "slowest set) |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for model, sets in data["models"].items():
        rows += _decode_rows(model, sets)
    sets_measured = len(next(iter(data["models"].values())))
    return (f"`solve` searches with beam width {data['beam_width']} and option floor {data['option_floor']:g}: a "
            "symbol less probable than the floor in a frame starts no new prefix there. Against the widest search "
            f"with no floor, over {sets_measured} sets (captcha_images_v2 `test.csv`, "
            "500 images of the bundled model's own style, the 500 test images of every zoo style; "
            "`bench/decode.py`):\n\n" + "\n".join(rows)
            + "\n\nA reading \"the same\" has the same text and confidence. The third column holds each set to "
            "its labels' length range, as a trained run's `config.json` does; the top-3 lists differ in their "
            "lesser alternatives, those that need a symbol the floor passes over." + _decode_rights(data)
            + " Machine in `bench/results/decode.json`.")


def _searches(sets: dict) -> list[str]:
    """The searches a model was measured with, the reference (widest, no floor) first."""
    return list(next(iter(sets.values()))["searches"])


def _decode_rows(model: str, sets: dict) -> list[str]:
    images = sum(s["images"] for s in sets.values())
    rows = []
    for i, search in enumerate(_searches(sets)):
        cells = [s["searches"][search] for s in sets.values()]
        ms = [c["decode_top1_ms"] for c in cells]
        same = [f"{sum(c[k] for c in cells)} of {images}" if i else "(reference)"
                for k in ("same_top1", "same_top1_length_range", "same_top3")]
        right = "; ".join(map(str, _rights(sets, search)))
        rows.append(f"| {model} | {search} | {' | '.join(same)} | {right} | {sum(ms) / len(ms):.2f}; {max(ms):.2f} |")
    return rows


def _decode_rights(data: dict) -> str:
    """Whether the search solve uses reads as many labels right as the reference, and which searches read fewer."""
    used = f"width {data['beam_width']}, floor {data['option_floor']:g}"
    fewer: dict[str, int] = {}  # search -> readings right fewer than the reference, over both models
    for sets in data["models"].values():
        reference, *others = _searches(sets)
        for search in others:
            fewer[search] = fewer.get(search, 0) + sum(_rights(sets, reference)) - sum(_rights(sets, search))
    if fewer.get(used) != 0:
        return ""
    worse = [f"{search}: {n} fewer" for search, n in fewer.items() if n > 0]
    return (f" With the search `solve` uses ({used}) both models read as many labels right as with the reference, "
            "plain and within the lengths" + ("; " + ", ".join(worse) + " right, both models and both ways together."
                                              if worse else "."))


def _rights(sets: dict, search: str) -> tuple[int, int]:
    """Right top-1 readings over every set with one search: plain, and within the labels' lengths."""
    return tuple(sum(s["searches"][search].get(f"right_{k}", 0) for s in sets.values())  # type: ignore[return-value]
                 for k in ("top1", "top1_length_range"))

SECTIONS: list[Callable[[], str | None]] = [zoo, general, crnn_vs_keras, bundled, efficiency, audit_new_style, adapt,
                                             fully_connected, peers, serving]


def render() -> str:
    parts = [section() for section in SECTIONS]
    extra = sorted(p.name for p in RESULTS.glob("*.json"))
    body = "\n\n".join(p for p in parts if p)
    return f"{body}\n\nAll result files: {', '.join(f'`bench/results/{n}`' for n in extra)}."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readme", action="store_true")
    args = parser.parse_args()
    text = render()
    if not args.readme:
        print(text)
        return
    _replace_block(ROOT / "README.md", BEGIN, END, text)
    table = zoo()
    if table:
        body = table.split("\n", 2)[2]  # without the heading: the doc has its own
        _replace_block(ROOT / "docs" / "recipe.md", "<!-- zoo:begin -->", "<!-- zoo:end -->", body)
    variants = zoo_variants()
    if variants:
        _replace_block(ROOT / "docs" / "recipe.md", "<!-- zoo-variants:begin -->", "<!-- zoo-variants:end -->",
                       variants)
    models = zoo_models()
    if models:
        _replace_block(ROOT / "docs" / "recipe.md", "<!-- zoo-models:begin -->", "<!-- zoo-models:end -->", models)
    zero_labels = adapt()
    if zero_labels:
        _replace_block(ROOT / "docs" / "adapt.md", "<!-- adapt:begin -->", "<!-- adapt:end -->",
                       zero_labels.split("\n", 2)[2])
    reader = general()
    if reader:
        _replace_block(ROOT / "docs" / "world.md", "<!-- general:begin -->", "<!-- general:end -->",
                       reader.split("\n", 2)[2])
    floor = decode()
    if floor:
        _replace_block(ROOT / "docs" / "few-labels.md", "<!-- decode:begin -->", "<!-- decode:end -->", floor)
    few_labels = efficiency()
    if few_labels:
        body = few_labels.split("\n", 2)[2]  # without the heading: the doc has its own
        _replace_block(ROOT / "docs" / "few-labels.md", "<!-- efficiency:begin -->", "<!-- efficiency:end -->", body)


def _replace_block(path: Path, begin: str, end: str, text: str) -> None:
    content = path.read_text()
    start, stop = content.index(begin) + len(begin), content.index(end)
    path.write_text(content[:start] + "\n" + text + "\n" + content[stop:])


if __name__ == "__main__":
    main()
