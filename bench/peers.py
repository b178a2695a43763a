"""captchalab next to ddddocr and Tesseract, one run, one CPU core each.

Solvers: captchalab (a run folder's model.onnx, ONNX Runtime), ddddocr's default model (with and
without ``set_ranges`` restricted to the dataset's charset) and Tesseract (``--psm 7`` with a
character whitelist, through pytesseract). Data: captcha_images_v2 ``test.csv`` (bench/data.py) and a
synthetic set from ``captchalab generate`` with the model's charset and size.

The process is pinned to CPU 0 (``os.sched_setaffinity``), ONNX Runtime sessions (ours and
ddddocr's) get one intra-op and one inter-op thread, Tesseract gets ``OMP_THREAD_LIMIT=1``.
Every solver reads the image file's bytes (decoding is part of the time). Measured per solver and
set: sequence and character accuracy (exact, and after case folding), ms/image at batch 1 (p50,
p95, mean), images/s at batch 64 (only captchalab has a batch API; the others loop), wall and CPU
seconds, load time (import + construct, fresh process), installed size. Also, for captchalab, the
time of each pipeline stage and of each ONNX node group at batch 1 (ORT profiling).

Setup (bench only, not package dependencies):
    apt-get install -y tesseract-ocr
    .venv/bin/pip install -e ".[bench]"          # ddddocr, pytesseract
    .venv/bin/python bench/crnn_vs_keras.py   # first: it trains the crnn compared here, runs/bench/crnn
    .venv/bin/python bench/peers.py

Writes bench/results/peers.json.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from data import captcha_images_v2
from machine import machine_info

ROOT = Path(__file__).resolve().parent.parent
RESULT = ROOT / "bench" / "results" / "peers.json"
BATCH = 64
Item = tuple[str, bytes, str]  # file name, bytes, label


def pin_to_one_core() -> None:
    os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})  # of the cores it may use: `taskset -c 1` is kept
    os.environ["OMP_THREAD_LIMIT"] = "1"  # Tesseract (a child process) reads it
    os.environ["OMP_NUM_THREADS"] = "1"


class Captchalab:
    batch_api = True

    def __init__(self, run: Path) -> None:
        import captchalab

        self.predictor = captchalab.load(run, threads=1)

    def read(self, data: bytes) -> str:
        return self.predictor.solve(data).text

    def read_batch(self, datas: Sequence[bytes]) -> list[str]:
        pixels = np.stack([self.predictor.prepare(d) for d in datas])
        return [reading[0].text for reading in self.predictor.predict_pixels(pixels)]


class Ddddocr:
    batch_api = False

    def __init__(self, ranges: str | None = None) -> None:
        import ddddocr
        import onnxruntime as ort

        original = ort.InferenceSession

        def one_thread(path: Any, sess_options: Any = None, **kwargs: Any) -> Any:
            options = sess_options or ort.SessionOptions()
            options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
            return original(path, options, **kwargs)

        ort.InferenceSession = one_thread  # ddddocr has no thread setting; its loader calls this
        try:
            self.ocr = ddddocr.DdddOcr(show_ad=False)
        finally:
            ort.InferenceSession = original
        if ranges:
            self.ocr.set_ranges(ranges)

    def read(self, data: bytes) -> str:
        return str(self.ocr.classification(data))

    def read_batch(self, datas: Sequence[bytes]) -> list[str]:
        return [self.read(d) for d in datas]


class Tesseract:
    batch_api = False

    def __init__(self, whitelist: str) -> None:
        import pytesseract

        self.engine = pytesseract
        self.config = f"--psm 7 -c tessedit_char_whitelist={whitelist}"

    def read(self, data: bytes) -> str:
        from PIL import Image

        text = self.engine.image_to_string(Image.open(io.BytesIO(data)), config=self.config)
        return "".join(text.split())

    def read_batch(self, datas: Sequence[bytes]) -> list[str]:
        return [self.read(d) for d in datas]


def cpu_seconds() -> float:
    """This process and its children (Tesseract runs as a child process per image)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def call_cpu_seconds() -> float:
    """CPU of this thread plus finished children, fine-grained: per-call CPU that other jobs on a busy
    machine do not inflate the way they inflate wall time (ORT with one thread runs on the caller)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.thread_time() + children.ru_utime + children.ru_stime


def measure(solver: Any, items: Sequence[Item], min_seconds: float = 2.0) -> dict[str, Any]:
    from captchalab import metrics

    for _, data, _ in items[:5]:
        solver.read(data)
    latencies, cpu_latencies, predictions = [], [], []
    wall, cpu = time.perf_counter(), cpu_seconds()
    for _, data, _ in items:
        start, start_cpu = time.perf_counter(), call_cpu_seconds()
        predictions.append(solver.read(data))
        latencies.append((time.perf_counter() - start) * 1000)
        cpu_latencies.append((call_cpu_seconds() - start_cpu) * 1000)
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    labels = [label for _, _, label in items]
    exact = metrics.summarize(predictions, labels)
    folded = metrics.summarize([p.lower() for p in predictions], [label.lower() for label in labels])
    return {
        "n": len(items),
        "sequence_accuracy": round(exact["sequence_accuracy"], 4),
        "char_accuracy": round(exact["char_accuracy"], 4),
        "cer": round(exact["cer"], 4),
        "sequence_accuracy_casefold": round(folded["sequence_accuracy"], 4),
        "char_accuracy_casefold": round(folded["char_accuracy"], 4),
        "batch1_ms_p50": round(statistics.median(latencies), 3),
        "batch1_ms_p95": round(float(np.percentile(latencies, 95)), 3),
        "batch1_ms_mean": round(statistics.fmean(latencies), 3),
        "batch1_cpu_ms_p50": round(statistics.median(cpu_latencies), 3),
        "batch1_cpu_ms_p95": round(float(np.percentile(cpu_latencies, 95)), 3),
        "batch1_images_per_s": round(len(items) / wall, 1),
        "batch1_cpu_ms_per_image": round(cpu / len(items) * 1000, 3),
        **batch_throughput(solver, [data for _, data, _ in items[:BATCH]], min_seconds),
        "examples": [{"file": f, "label": label, "read": p} for (f, _, label), p in zip(items[:5], predictions)],
    }


def batch_throughput(solver: Any, batch: Sequence[bytes], min_seconds: float) -> dict[str, Any]:
    solver.read_batch(batch)
    reps, wall, cpu = 0, time.perf_counter(), cpu_seconds()
    while reps < 1 or (time.perf_counter() - wall < min_seconds and reps < 50):
        solver.read_batch(batch)
        reps += 1
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    return {"batch64_images_per_s": round(reps * len(batch) / wall, 1),
            "batch64_cpu_ms_per_image": round(cpu / (reps * len(batch)) * 1000, 3),
            "batch64_uses_batch_api": bool(solver.batch_api)}


LOADERS = {
    "captchalab": "import captchalab; captchalab.load({run!r}, threads=1)",
    "ddddocr": "import ddddocr; ddddocr.DdddOcr(show_ad=False)",
    "tesseract": "import pytesseract; pytesseract.get_tesseract_version()",
}


def load_seconds(kind: str, run: Path, repeats: int = 3) -> float:
    """Median of import + construct in a fresh (pinned) interpreter; interpreter start-up excluded."""
    code = ("import time, sys; t = time.perf_counter(); " + LOADERS[kind].format(run=str(run))
            + "; print(time.perf_counter() - t)")
    times = []
    for _ in range(repeats):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        times.append(float(done.stdout.strip().splitlines()[-1]))
    return round(statistics.median(times), 3)


def dist_bytes(name: str) -> int | None:
    try:
        files = metadata.distribution(name).files or []
    except metadata.PackageNotFoundError:
        return None
    return sum(f.locate().stat().st_size for f in files if Path(f.locate()).is_file())


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def debian_bytes(packages: Sequence[str]) -> dict[str, int | None]:
    sizes: dict[str, int | None] = {}
    for package in packages:
        done = subprocess.run(["dpkg-query", "-W", "-f=${Installed-Size}", package], capture_output=True, text=True)
        sizes[package] = int(done.stdout) * 1024 if done.returncode == 0 and done.stdout.strip() else None
    return sizes


def installed_sizes(run: Path) -> dict[str, Any]:
    import captchalab

    shared = {name: dist_bytes(name) for name in ("onnxruntime", "numpy", "pillow")}
    tesseract = debian_bytes(["tesseract-ocr", "tesseract-ocr-eng", "tesseract-ocr-osd", "libtesseract5",
                              "liblept5"])
    return {
        "note": "bytes on disk; onnxruntime, numpy and pillow are needed by both captchalab and ddddocr",
        "shared_runtime": shared,
        "captchalab": {"package": tree_bytes(Path(captchalab.__file__).parent),
                       "model_onnx": (run / "model.onnx").stat().st_size, "also_needs": ["typer", "rich", "captcha"]},
        "ddddocr": {"package_with_models": dist_bytes("ddddocr"),
                    "opencv-python-headless": dist_bytes("opencv-python-headless")},
        "tesseract": {"debian": tesseract, "pytesseract": dist_bytes("pytesseract")},
    }


def read_csv_set(csv_path: Path) -> list[Item]:
    with csv_path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [(row["file"], (csv_path.parent / row["file"]).read_bytes(), row["label"]) for row in rows]


def synthetic_set(out: Path, count: int, charset: str, size: str) -> list[Item]:
    import captchalab

    folder = captchalab.generate(out, count, "5", charset, size, 0)
    return read_csv_set(folder / "labels.csv")


def pipeline_profile(run: Path, items: Sequence[Item], repeats: int = 3) -> dict[str, float]:
    """captchalab at batch 1, stage by stage (median ms over the set)."""
    import captchalab
    from captchalab import decoding, heads
    from captchalab.data import images

    predictor = captchalab.load(run, threads=1)
    stages: dict[str, list[float]] = defaultdict(list)
    for _ in range(repeats):
        for name, data, _ in items:
            clock = time.perf_counter()
            image = images.open_image(data, name)
            stages["decode_file"].append(time.perf_counter() - clock)
            clock = time.perf_counter()
            pixels = images.prepare(image, predictor.config.image)[None]
            stages["grayscale_resize"].append(time.perf_counter() - clock)
            clock = time.perf_counter()
            logits = predictor.logits(pixels)
            stages["model"].append(time.perf_counter() - clock)
            clock = time.perf_counter()
            heads.decode(decoding.softmax(logits), predictor.config.head, predictor.config.charset, 1)
            stages["ctc_decode"].append(time.perf_counter() - clock)
    return {stage: round(statistics.median(values) * 1000, 4) for stage, values in stages.items()}


def node_profile(run: Path, pixels: np.ndarray, repeats: int = 300) -> dict[str, Any]:
    """ONNX Runtime's own per-node timings at batch 1, one thread, on its optimised graph."""
    import onnx
    import onnxruntime as ort

    from captchalab.data import images

    with tempfile.TemporaryDirectory() as folder:
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
        options.enable_profiling, options.profile_file_prefix = True, str(Path(folder) / "ort")
        options.optimized_model_filepath = str(Path(folder) / "optimized.onnx")
        options.log_severity_level = 3  # the optimised copy is only read back here
        session = ort.InferenceSession(str(run / "model.onnx"), options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: images.to_model_input(pixels[:1])}
        for _ in range(repeats):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
        graph = onnx.load(str(Path(folder) / "optimized.onnx")).graph
    return summarize_nodes(events, repeats, _weight_shapes(graph))


def _weight_shapes(graph: Any) -> dict[str, list[int]]:
    """Node name -> shape of its second input when that is a weight (Conv kernels, LSTM weights, MatMul)."""
    shapes = {init.name: list(init.dims) for init in graph.initializer}
    return {node.name: shapes[node.input[1]] for node in graph.node if len(node.input) > 1 and node.input[1] in shapes}


def summarize_nodes(events: list[dict], repeats: int, weights: dict[str, list[int]]) -> dict[str, Any]:
    """Median time of each node over the runs (robust to other jobs' bursts), grouped by op type too."""
    runs: dict[tuple[str, str], list[float]] = defaultdict(list)
    for event in events:
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
            continue
        name, op = event["name"][: -len("_kernel_time")], event.get("args", {}).get("op_name", "?")
        runs[(name, op)].append(event["dur"])
    median = {key: statistics.median(values) for key, values in runs.items()}
    total = sum(median.values()) or 1.0
    by_op: dict[str, float] = defaultdict(float)
    for (_, op), us in median.items():
        by_op[op] += us
    nodes = [{"node": name, "op": op, "weight_shape": weights.get(name), "us_per_image": round(us, 1),
              "share": round(us / total, 3)} for (name, op), us in sorted(median.items(), key=lambda kv: -kv[1])]
    ops = [{"op": op, "us_per_image": round(us, 1), "share": round(us / total, 3)}
           for op, us in sorted(by_op.items(), key=lambda kv: -kv[1])]
    return {"runs": repeats, "total_us_per_image": round(total, 1), "by_op_type": ops,
            "top_nodes": [n for n in nodes if n["share"] >= 0.01]}


def solvers(run: Path, charset: str) -> dict[str, Callable[[], Any]]:
    return {
        "captchalab": lambda: Captchalab(run),
        "ddddocr": lambda: Ddddocr(),
        "ddddocr_set_ranges": lambda: Ddddocr(charset),
        "tesseract": lambda: Tesseract(charset),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "runs" / "bench" / "crnn",
                        help="captchalab run folder (default: the crnn that bench/crnn_vs_keras.py trains)")
    parser.add_argument("--test", type=Path, default=None)
    parser.add_argument("--synthetic", type=int, default=300, help="synthetic images (0: none)")
    parser.add_argument("--only", nargs="*", help="solver names to run (default: all)")
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    import captchalab

    config = captchalab.load(args.model).config
    charset, size = config.charset.symbols, str(config.image)
    with tempfile.TemporaryDirectory() as scratch:
        sets = {"captcha_images_v2_test": read_csv_set(args.test or captcha_images_v2() / "test.csv")}
        if args.synthetic:
            sets["synthetic"] = synthetic_set(Path(scratch) / "synthetic", args.synthetic, charset, size)
    pin_to_one_core()
    report = run_all(args, sets, charset, size)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("summary", "targets")}, indent=2))


def run_all(args: argparse.Namespace, sets: dict[str, list[Item]], charset: str, size: str) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name, build in solvers(args.model, charset).items():
        if args.only and name not in args.only:
            continue
        solver = build()
        results[name] = {"load_seconds": load_seconds(name.split("_")[0], args.model),
                         "sets": {s: measure(solver, items) for s, items in sets.items()}}
        print(name, json.dumps({s: {k: v for k, v in r.items() if k != "examples"}
                                for s, r in results[name]["sets"].items()}), flush=True)
    import captchalab

    first = sets["captcha_images_v2_test"]
    pixels = captchalab.load(args.model).prepare(first[0][1])[None]
    report = {
        "what": "captchalab vs ddddocr vs Tesseract, one pinned CPU core each (see bench/peers.py docstring)",
        "command": "python bench/peers.py " + " ".join(sys.argv[1:]),
        "note": "other jobs shared this 2-core machine during the run; CPU times are given next to wall times",
        "model": {"run": str(args.model), "charset": charset, "size": size,
                  "onnx_bytes": (args.model / "model.onnx").stat().st_size,
                  "onnx_sha256": hashlib.sha256((args.model / "model.onnx").read_bytes()).hexdigest(),
                  "validation_metrics": _read_json(args.model / "metrics.json")},
        "sets": {name: {"n": len(items)} for name, items in sets.items()},
        "solvers": results,
        "captchalab_profile": {"pipeline_ms_batch1": pipeline_profile(args.model, first),
                               "onnx_nodes_batch1": node_profile(args.model, pixels)},
        "installed_bytes": installed_sizes(args.model),
        "machine": {**machine_info(), "pinned_cpus": sorted(os.sched_getaffinity(0)),
                    "peer_versions": {p: _version(p) for p in ("ddddocr", "pytesseract", "opencv-python-headless")},
                    "tesseract": _tesseract_version()},
    }
    report["summary"], report["targets"] = summarize(results)
    return report


def summarize(results: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    keys = ("sequence_accuracy", "char_accuracy", "batch1_ms_p50", "batch1_ms_p95", "batch1_cpu_ms_p50",
            "batch64_images_per_s")
    summary = {name: {s: {k: r[k] for k in keys} for s, r in entry["sets"].items()}
               for name, entry in results.items()}
    targets: dict[str, Any] = {}
    ours, peer = results.get("captchalab"), results.get("ddddocr")
    if ours:
        test = ours["sets"]["captcha_images_v2_test"]
        targets["captchalab_batch1_p50_ms"] = test["batch1_ms_p50"]
        targets["p50_under_2ms"] = test["batch1_ms_p50"] < 2.0
        targets["captchalab_batch1_cpu_ms_p50"] = test["batch1_cpu_ms_p50"]
        targets["cpu_p50_under_2ms"] = test["batch1_cpu_ms_p50"] < 2.0
    if ours and peer:
        ratio = lambda key: round(ours["sets"]["captcha_images_v2_test"][key]  # noqa: E731
                                  / peer["sets"]["captcha_images_v2_test"][key], 2)
        targets["ratio_vs_ddddocr_batch1_images_per_s"] = ratio("batch1_images_per_s")
        targets["ratio_vs_ddddocr_batch64_images_per_s"] = ratio("batch64_images_per_s")
        targets["at_least_3x_ddddocr_batch1"] = targets["ratio_vs_ddddocr_batch1_images_per_s"] >= 3
        theirs = peer["sets"]["captcha_images_v2_test"]["batch1_cpu_ms_p50"]
        targets["ratio_vs_ddddocr_batch1_cpu_p50"] = round(theirs / test["batch1_cpu_ms_p50"], 2)
    return summary, targets


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _tesseract_version() -> str | None:
    done = subprocess.run(["tesseract", "--version"], capture_output=True, text=True)
    return done.stdout.splitlines()[0] if done.returncode == 0 and done.stdout else None


if __name__ == "__main__":
    main()
