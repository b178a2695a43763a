"""What ``captchalab solve`` costs to start: import time, wall time and peak resident memory.

Each case runs in a fresh process, several times; the median is kept. Peak memory is the child's
``ru_maxrss`` from ``os.wait4``. Cases: a bare interpreter, ``import captchalab``, ``captchalab solve
IMAGE --json`` (ONNX Runtime), the same reading through the Keras fallback (imports TensorFlow) for
comparison, and a bulk ``captchalab solve FOLDER --json`` over a generated set (all cores).

    .venv/bin/python bench/solve_startup.py            # after bench/crnn_vs_keras.py (its crnn is the model)

Writes bench/results/solve_startup.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from data import captcha_images_v2
from machine import machine_info

ROOT = Path(__file__).resolve().parent.parent
RESULT = ROOT / "bench" / "results" / "solve_startup.json"
CLI = [sys.executable, "-c", "from captchalab.cli import main; main()"]
IMPORT_TIME = ("import time; t = time.perf_counter(); import captchalab; "
               "print('IMPORT', time.perf_counter() - t)")
KERAS = ("import sys, captchalab; r = captchalab.load(sys.argv[1], backend='keras').solve(sys.argv[2]); "
         "print(r.text, 'tensorflow' in sys.modules)")
NO_TF = ("import sys, captchalab; r = captchalab.load(sys.argv[1]).solve(sys.argv[2]); "
         "print(r.text, 'tensorflow' in sys.modules)")


def run_once(command: list[str], stdout: int | None = subprocess.PIPE) -> dict[str, Any]:
    """Wall seconds, CPU seconds and peak RSS (MiB) of one child process."""
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=stdout, stderr=subprocess.DEVNULL, text=True)
    output = child.stdout.read() if child.stdout else ""
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise SystemExit(f"{' '.join(command)} failed with exit code {child.returncode}")
    return {"wall_s": time.perf_counter() - start, "cpu_s": usage.ru_utime + usage.ru_stime,
            "rss_mib": usage.ru_maxrss / 1024, "stdout": output}


def median_of(command: list[str], repeats: int, stdout: int | None = subprocess.PIPE) -> dict[str, Any]:
    runs = [run_once(command, stdout) for _ in range(repeats)]
    summary: dict[str, Any] = {key: round(statistics.median(r[key] for r in runs), 3)
                               for key in ("wall_s", "cpu_s", "rss_mib")}
    summary["repeats"] = repeats
    summary["last_stdout"] = runs[-1]["stdout"].strip()[:300]
    return summary


def import_seconds(repeats: int) -> float:
    times = []
    for _ in range(repeats):
        out = run_once([sys.executable, "-c", IMPORT_TIME])["stdout"]
        times.append(float(out.split("IMPORT")[1]))
    return round(statistics.median(times), 3)


def bulk(run: Path, count: int) -> dict[str, Any]:
    import captchalab

    with tempfile.TemporaryDirectory() as scratch:
        config = captchalab.load(run).config
        folder = captchalab.generate(Path(scratch) / "bulk", count, "5", config.charset.symbols, str(config.image), 0)
        with open(os.devnull, "w") as sink:
            start = time.perf_counter()
            child = subprocess.Popen([*CLI, "solve", str(folder), "--model", str(run), "--json"], stdout=sink,
                                     stderr=subprocess.DEVNULL)
            _, status, usage = os.wait4(child.pid, 0)
            wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status):
        raise SystemExit("bulk solve failed")
    return {"images": count, "wall_s": round(wall, 2), "images_per_s": round(count / wall, 1),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 2), "rss_mib": round(usage.ru_maxrss / 1024, 1),
            "cores_used": round((usage.ru_utime + usage.ru_stime) / wall, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "runs" / "bench" / "crnn",
                        help="run folder (default: the crnn that bench/crnn_vs_keras.py trains)")
    parser.add_argument("--image", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--bulk", type=int, default=5000, help="images for the bulk case (0: skip)")
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    model, image = str(args.model), str(args.image or captcha_images_v2() / "images" / "226md.png")
    report: dict[str, Any] = {
        "what": "start-up cost of captchalab solve (bench/solve_startup.py docstring)",
        "command": "python bench/solve_startup.py " + " ".join(sys.argv[1:]),
        "note": "other jobs shared this 2-core machine; medians of fresh processes; CPU times next to wall",
        "import_captchalab_s": import_seconds(args.repeats),
        "python_bare": median_of([sys.executable, "-c", "pass"], args.repeats),
        "python_import_captchalab": median_of([sys.executable, "-c", "import captchalab"], args.repeats),
        "cli_solve_one_image_json": median_of([*CLI, "solve", image, "--model", model, "--json"], args.repeats),
        "api_solve_onnx": median_of([sys.executable, "-c", NO_TF, model, image], args.repeats),
        "api_solve_keras_fallback": median_of([sys.executable, "-c", KERAS, model, image], max(2, args.repeats // 2)),
    }
    report["tensorflow_imported_by_onnx_path"] = report["api_solve_onnx"]["last_stdout"].endswith("True")
    if args.bulk:
        report["cli_solve_folder_json"] = bulk(args.model, args.bulk)
    report["machine"] = machine_info()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "machine"}, indent=2))


if __name__ == "__main__":
    main()
