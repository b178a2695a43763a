"""Past one process: images/s of ``solve`` (local, all cores) against ``solve --engine ray`` on the same
generated images, Ray's start-up separately, Ray throughput with 1 and 2 actors, and ``generate`` with 1
and 2 worker processes and as Ray tasks (``generate --engine ray``).

The images are the PyPI captcha style the bundled model reads (160x60, 5 characters). Local ``solve``
runs as the command (a fresh process: its start and model load are inside its time); Ray runs in this
process through ``captchalab.solve_dataset`` on a local Ray of all cores, started once (its start-up is
reported on its own), each actor with one ONNX Runtime thread. The Ray readings are checked against
the local ones row by row. The machine is shared: the load average before and after each step is kept.

    .venv/bin/python bench/scale.py                  # 20,000 images to solve, 2,000 to time generate
    .venv/bin/python bench/scale.py --count 5000     # fewer, on a busy machine (the result says so)
    .venv/bin/python bench/scale.py --generate-only  # only the generate timings, merged into the result

Writes bench/results/scale.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import captchalab
from machine import machine_info

ROOT = Path(__file__).resolve().parent.parent
RESULT = ROOT / "bench" / "results" / "scale.json"
CLI = [sys.executable, "-c", "from captchalab.cli import main; main()"]


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def timed_generate(folder: Path, count: int, workers: int, on_ray: bool = False) -> dict[str, Any]:
    from captchalab.data.synthetic import Workers

    before, start = load(), time.perf_counter()
    captchalab.generate(folder, count, seed=1, workers=Workers(workers, ray=on_ray))
    seconds = time.perf_counter() - start
    return {"workers": "ray" if on_ray else workers, "images": count, "seconds": round(seconds, 2),
            "images_per_s": round(count / seconds, 1), "load_before": before, "load_after": load()}


def generate_timings(work: Path, count: int) -> list[dict[str, Any]]:
    """1 and 2 local processes, then Ray tasks on the Ray this process has started; same images."""
    timings = [timed_generate(work / f"gen{w}", count, w) for w in (1, 2)]
    timings.append(timed_generate(work / "genray", count, 0, on_ray=True))
    same = all((work / "genray" / p.name).read_bytes() == p.read_bytes() for p in (work / "gen1").iterdir())
    timings[-1]["same_files_as_local"] = same
    return timings


def local_solve(folder: Path, out: Path, count: int) -> dict[str, Any]:
    before, start = load(), time.perf_counter()
    subprocess.run([*CLI, "solve", str(folder), "--out", str(out)], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    seconds = time.perf_counter() - start
    return {"images": count, "seconds": round(seconds, 2), "images_per_s": round(count / seconds, 1),
            "threads": "all cores (--threads 0)", "load_before": before, "load_after": load(),
            "includes": "process start, model load, listing, decoding, inference, CSV"}


def ray_solve(folder: Path, out: Path, count: int, actors: int) -> dict[str, Any]:
    before, start = load(), time.perf_counter()
    rows, failures = captchalab.solve_dataset(folder, out=out, actors=actors, threads=1)
    seconds = time.perf_counter() - start
    return {"actors": actors, "threads_per_actor": 1, "images": rows, "errors": failures,
            "seconds": round(seconds, 2), "images_per_s": round(count / seconds, 1), "load_before": before,
            "load_after": load(), "includes": "actor start and model load, listing, reading, inference, Parquet"}


def compare(local_csv: Path, ray_parquet: Path) -> dict[str, int]:
    import pyarrow.parquet as pq

    with open(local_csv, newline="", encoding="utf-8") as handle:
        local = {row["file"]: row["text"] for row in csv.DictReader(handle)}
    ray_rows = {r["file"]: r["text"] or "" for r in pq.read_table(ray_parquet, columns=["file", "text"]).to_pylist()}
    same = sum(ray_rows.get(file) == text for file, text in local.items())
    return {"rows_local": len(local), "rows_ray": len(ray_rows), "same_text": same}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=20_000, help="images to solve")
    parser.add_argument("--generate-count", type=int, default=2_000, help="images per generate timing")
    parser.add_argument("--out", type=Path, default=RESULT)
    parser.add_argument("--generate-only", action="store_true", help="time generate only; keep the other results")
    args = parser.parse_args()
    import ray

    if args.generate_only:
        record = json.loads(args.out.read_text(encoding="utf-8"))
        with tempfile.TemporaryDirectory(prefix="captchalab-scale-") as tmp:
            ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
            record["generate"] = generate_timings(Path(tmp), args.generate_count)
            ray.shutdown()
        record["generate_machine"] = machine_info()
        args.out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        print("generate", record["generate"])
        return
    record: dict[str, Any] = {"machine": machine_info(), "count": args.count, "model": "bundled (captcha style)"}
    with tempfile.TemporaryDirectory(prefix="captchalab-scale-") as tmp:
        work = Path(tmp)
        record["generate_solve_set"] = timed_generate(work / "set", args.count, 0)
        print("set", record["generate_solve_set"], flush=True)
        record["local"] = local_solve(work / "set", work / "local.csv", args.count)
        print("local", record["local"], flush=True)
        start = time.perf_counter()
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        record["ray_startup_s"] = round(time.perf_counter() - start, 2)
        record["ray_cpus"] = ray.cluster_resources().get("CPU")
        record["generate"] = generate_timings(work, args.generate_count)
        print("generate", record["generate"], flush=True)
        record["ray"] = []
        for actors in (1, 2):
            out = work / f"ray{actors}.parquet"
            record["ray"].append(ray_solve(work / "set", out, args.count, actors))
            record["ray"][-1]["agreement_with_local"] = compare(work / "local.csv", out)
            print("ray", record["ray"][-1], flush=True)
        ray.shutdown()
    record["load_average_at_end"] = load()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
