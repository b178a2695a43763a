"""The wide synthetic world (data/world.py): how fast it draws on one core, how often each effect
family appears, and a grid of samples for docs/world.md.

    PYTHONPATH=src .venv/bin/python bench/world.py                      # 400 timed images, ~1 min
    PYTHONPATH=src .venv/bin/python bench/world.py --count 2000 --grid docs/world.png

Writes bench/results/world.json (machine, rate, effect shares, fonts and licences) and the grid.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from collections import Counter
from pathlib import Path

from PIL import Image, ImageDraw

from captchalab.data import world
from captchalab.runs import atomic_write
from machine import machine_info

ROOT = Path(__file__).resolve().parent.parent
RESULT = ROOT / "bench" / "results" / "world.json"
WARMUP = 30  # the first images load fonts and fill caches
SHARES_FROM = 5000  # recipes drawn (not rendered) to count how often each effect family appears


def one_core() -> int | None:
    """Pin this process to one CPU (the rate is per core); the CPU used, where the OS allows it."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return cpu


def rate(count: int, seed: int) -> dict:
    rng = random.Random(seed)
    for _ in range(WARMUP):
        world.sample(rng)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(count):
        world.sample(rng)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"images": count, "seconds": round(wall, 2), "cpu_seconds": round(cpu, 2),
            "images_per_s": round(count / wall, 1), "images_per_cpu_s": round(count / cpu, 1)}


def shares(seed: int) -> dict:
    rng = random.Random(seed)
    recipes = [world.draw(rng) for _ in range(SHARES_FROM)]
    counts = Counter(family for r in recipes for family in r.families())
    heights = sorted(r.size[1] for r in recipes)
    widths = sorted(r.size[0] for r in recipes)
    return {"recipes": SHARES_FROM,
            "families": {name: round(counts[name] / SHARES_FROM, 3) for name in world.FAMILY_NAMES},
            "font_files_used": len({r.font.path for r in recipes}),
            "width_range": [widths[0], widths[-1]], "height_range": [heights[0], heights[-1]],
            "median_size": [widths[len(widths) // 2], heights[len(heights) // 2]]}


def grid(path: Path, seed: int, columns: int = 6, rows: int = 6) -> None:
    """``columns`` x ``rows`` samples at their own sizes, each with its label beneath."""
    rng = random.Random(seed)
    cell_w, cell_h = world.OUTPUT_WIDTH[1] + 10, world.OUTPUT_HEIGHT[1] + 22
    sheet = Image.new("RGB", (columns * cell_w, rows * cell_h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i in range(columns * rows):
        text, image = world.sample(rng)
        x, y = (i % columns) * cell_w + 5, (i // columns) * cell_h + 3
        sheet.paste(image, (x, y))
        draw.text((x, y + image.height + 2), text, fill=(0, 0, 0))
    atomic_write(path, lambda tmp: sheet.save(tmp, "PNG", optimize=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=400, help="images timed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grid", type=Path, default=ROOT / "docs" / "world.png")
    args = parser.parse_args()
    cpu = one_core()
    result = {"machine": machine_info(), "pinned_cpu": cpu, "seed": args.seed, "rate": rate(args.count, args.seed),
              "shares": shares(args.seed), **world.provenance()}
    grid(args.grid, args.seed)
    atomic_write(RESULT, lambda tmp: tmp.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8"))
    print(json.dumps(result["rate"]), f"-> {RESULT.relative_to(ROOT)}, {args.grid}")


if __name__ == "__main__":
    main()
