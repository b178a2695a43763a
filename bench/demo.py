"""`make demo`: the main job in miniature, through the real CLI, on built-in defaults.

1. generate a synthetic training set and a fresh test set (seeded);
2. train a crnn for up to six minutes: train's defaults fine-tune the general reader shipped with
   captchalab (progress bar, early stopping, ONNX export);
3. evaluate it on the fresh test set;
4. solve sample images with the new run and with the bundled model;
5. print a short results table.

Everything goes to demo-out/ (rerunning replaces only demo-out/run).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "demo-out"
CLI = [sys.executable, "-m", "captchalab"]
console = Console()


def run(*args: str, capture: bool = False) -> str:
    shown = " ".join(["captchalab", *args]).replace(str(ROOT) + "/", "")
    console.print(f"\n[bold cyan]$ {shown}[/]")
    result = subprocess.run([*CLI, *args], check=False, text=True, stdout=subprocess.PIPE if capture else None)
    if result.returncode:
        sys.exit(f"demo step failed: {shown}")
    return result.stdout or ""


def dataset(name: str, count: int, seed: int) -> Path:
    folder = OUT / name
    if not (folder / "labels.csv").exists():
        shutil.rmtree(folder, ignore_errors=True)
        run("generate", str(folder), "--count", str(count), "--length", "4-5", "--charset", "0-9A-Z",
            "--size", "128x48", "--seed", str(seed))
    return folder


def main() -> None:
    began = time.time()
    OUT.mkdir(exist_ok=True)
    train_set, test_set = dataset("train", 6000, 1), dataset("test", 300, 2)
    run_dir = OUT / "run"
    run("train", str(train_set), "--model", "crnn", "--out", str(run_dir), "--force",
        "--epochs", "40", "--set", "train.max_minutes=6")
    metrics = json.loads(run("evaluate", str(run_dir), str(test_set), "--json", capture=True))
    console.print_json(data=metrics)
    samples = sorted(test_set.glob("*.png"))[:5]
    labels = dict(line.split(",") for line in (test_set / "labels.csv").read_text().split()[1:])
    mine = [json.loads(x) for x in run("solve", *map(str, samples), "--model", str(run_dir), "--json",
                                       capture=True).splitlines()]
    bundled = [json.loads(x) for x in run("solve", *map(str, samples), "--json", capture=True).splitlines()]
    table = Table(title="demo: sample readings")
    for column in ("image", "label", "your run", "bundled model"):
        table.add_column(column)
    for sample, a, b in zip(samples, mine, bundled):
        table.add_row(sample.name, labels[sample.name], f"{a['text']} ({a['confidence']:.2f})",
                      f"{b['text']} ({b['confidence']:.2f})")
    console.print(table)
    summary = Table(title="demo: crnn fine-tuned for a few minutes on 6,000 synthetic images")
    for key in ("n", "sequence_accuracy", "char_accuracy", "cer", "ms_per_image"):
        summary.add_row(key, f"{metrics[key]:.4f}" if isinstance(metrics[key], float) else str(metrics[key]))
    summary.add_row("demo wall time (s)", f"{time.time() - began:.0f}")
    console.print(summary)


if __name__ == "__main__":
    main()
