"""A bounded loopback load test of ``captchalab serve``.

Starts ``captchalab serve --model RUN`` on a free 127.0.0.1 port, sends a fixed number of requests
(default 2,000) with a fixed concurrency (default 50), about 10% of them malformed in six ways
(bad base64, not an image, oversize upload, unknown model, broken JSON, wrong content type), then
stops the server. Only loopback traffic; the run ends after the requests or the time limit.

Checks: no 5xx at all; every malformed request gets its 4xx with a JSON {"error"} body; every valid
request's reading equals the in-process Predictor's reading of the same image. Reports latency
p50/p95/p99 (valid and malformed), throughput, server CPU and memory.

    .venv/bin/python bench/load_test.py            # after bench/crnn_vs_keras.py (its crnn is the model)

Writes bench/results/load_test.json.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import csv
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from data import captcha_images_v2
from machine import machine_info

ROOT = Path(__file__).resolve().parent.parent
RESULT = ROOT / "bench" / "results" / "load_test.json"
MAX_BYTES = 256 * 1024
MALFORMED = {  # kind -> status the server must answer
    "bad_base64": 400, "not_an_image": 400, "oversize": 413, "unknown_model": 404, "broken_json": 400,
    "wrong_content_type": 415,
}


@dataclass(frozen=True)
class Planned:
    kind: str  # "multipart", "json" or one of MALFORMED
    index: int  # image used
    request: dict[str, Any]  # httpx.request keyword arguments


def plan(images: list[tuple[str, bytes]], count: int, malformed_share: float, seed: int) -> list[Planned]:
    rng = random.Random(seed)
    planned = []
    for number in range(count):
        index = rng.randrange(len(images))
        name, data = images[index]
        if rng.random() < malformed_share:
            kind = rng.choice(sorted(MALFORMED))
            planned.append(Planned(kind, index, malformed(kind, name, data, rng)))
        elif number % 2:
            planned.append(Planned("multipart", index, {"files": {"file": (name, data, "image/png")}}))
        else:
            planned.append(Planned("json", index, {"json": {"images": [base64.b64encode(data).decode()]}}))
    return planned


def malformed(kind: str, name: str, data: bytes, rng: random.Random) -> dict[str, Any]:
    return {
        "bad_base64": lambda: {"json": {"images": ["@@" + base64.b64encode(data).decode()[2:]]}},
        "not_an_image": lambda: {"files": {"file": ("notes.txt", b"just some text " * 20, "text/plain")}},
        "oversize": lambda: {"files": {"file": (name, rng.randbytes(MAX_BYTES + 1), "image/png")}},
        "unknown_model": lambda: {"files": {"file": (name, data, "image/png")}, "data": {"model": "no_such_site"}},
        "broken_json": lambda: {"content": b'{"images": ["', "headers": {"content-type": "application/json"}},
        "wrong_content_type": lambda: {"content": data, "headers": {"content-type": "text/plain"}},
    }[kind]()


async def fire(url: str, planned: list[Planned], concurrency: int, deadline: float) -> list[dict[str, Any]]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def one(item: Planned) -> dict[str, Any]:
            async with gate:
                if time.monotonic() > deadline:
                    return {"kind": item.kind, "index": item.index, "skipped": True}
                start = time.perf_counter()
                try:
                    response = await client.post("/solve", **item.request)
                except httpx.HTTPError as error:
                    return {"kind": item.kind, "index": item.index, "transport_error": type(error).__name__}
                took = (time.perf_counter() - start) * 1000
                return {"kind": item.kind, "index": item.index, "status": response.status_code, "ms": took,
                        "body": _json(response)}

        return await asyncio.gather(*(one(item) for item in planned))


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def check(outcomes: list[dict[str, Any]], expected: list[str]) -> dict[str, Any]:
    valid = [o for o in outcomes if o["kind"] in ("multipart", "json") and "status" in o]
    bad = [o for o in outcomes if o["kind"] in MALFORMED and "status" in o]
    agree = [o for o in valid if o["status"] == 200 and o["body"]["results"][0]["text"] == expected[o["index"]]]
    wrong_errors = [o for o in bad if o["status"] != MALFORMED[o["kind"]] or not _is_error(o["body"])]
    statuses = Counter(o["status"] for o in outcomes if "status" in o)
    return {
        "sent": sum("status" in o for o in outcomes),
        "skipped_after_time_limit": sum("skipped" in o for o in outcomes),
        "transport_errors": sum("transport_error" in o for o in outcomes),
        # which requests the connection failed on, and how: a client's mistake must get its 4xx, not a reset
        "transport_errors_by_kind": dict(Counter(f"{o['kind']}: {o['transport_error']}" for o in outcomes
                                                 if "transport_error" in o)),
        "status_counts": {str(k): v for k, v in sorted(statuses.items())},
        "five_xx": sum(v for k, v in statuses.items() if k >= 500),
        "valid": {"n": len(valid), "ok_200": sum(o["status"] == 200 for o in valid),
                  "same_reading_as_in_process": len(agree), "latency_ms": _percentiles([o["ms"] for o in valid])},
        "malformed": {"n": len(bad), "by_kind": dict(Counter(o["kind"] for o in bad)),
                      "expected_status_and_json_error": len(bad) - len(wrong_errors),
                      "unexpected": [{k: o[k] for k in ("kind", "status", "body")} for o in wrong_errors[:10]],
                      "latency_ms": _percentiles([o["ms"] for o in bad])},
    }


def _is_error(body: Any) -> bool:
    return isinstance(body, dict) and list(body) == ["error"] and isinstance(body["error"], str)


def _percentiles(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"p50": round(statistics.median(values), 2), "p95": round(float(np.percentile(values, 95)), 2),
            "p99": round(float(np.percentile(values, 99)), 2), "max": round(max(values), 2)}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(run: Path, port: int, log: Path, *options: str) -> subprocess.Popen:
    """`captchalab serve RUN` with this bench's upload limit; see ``launch``."""
    return launch(port, log, "--model", str(run), "--max-bytes", str(MAX_BYTES), *options)


def launch(port: int, log: Path, *options: str) -> subprocess.Popen:
    """`captchalab serve` on loopback, its stderr in ``log`` (a pipe nobody reads could fill and block it);
    returns once /healthz answers."""
    command = [sys.executable, "-c", "from captchalab.cli import main; main()", "serve", "--port", str(port),
               "--log-level", "warning", *options]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log.open("w"))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.3)
    process.kill()
    raise SystemExit("server did not start in 120 s")


def process_tree(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    kids = [int(c) for c in children.read_text().split()] if children.exists() else []
    return [pid] + [p for kid in kids for p in process_tree(kid)]


def server_usage(pid: int) -> dict[str, float]:
    """CPU seconds and resident memory of the server and its worker processes."""
    cpu, rss = 0.0, 0
    for proc in process_tree(pid):
        try:
            fields = Path(f"/proc/{proc}/stat").read_text().rsplit(")", 1)[1].split()
            cpu += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            rss += int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    return {"cpu_seconds": round(cpu, 2), "rss_mib": round(rss / 2**20, 1)}


def load_images(csv_path: Path) -> tuple[list[tuple[str, bytes]], list[str]]:
    with csv_path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    images = [(Path(r["file"]).name, (csv_path.parent / r["file"]).read_bytes()) for r in rows]
    return images, [r["label"] for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "runs" / "bench" / "crnn",
                        help="run folder (default: the crnn that bench/crnn_vs_keras.py trains)")
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--malformed", type=float, default=0.10)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads per model in the server")
    parser.add_argument("--time-limit", type=float, default=600.0, help="stop sending after this many seconds")
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    import captchalab

    args.data = args.data or captcha_images_v2() / "test.csv"
    images, labels = load_images(args.data)
    predictor = captchalab.load(args.model)
    expected = [predictor.solve(data).text for _, data in images]
    planned = plan(images, args.requests, args.malformed, seed=0)
    port = free_port()
    log = Path(tempfile.mkdtemp(prefix="captchalab-load-")) / "server.log"
    server = start_server(args.model, port, log, "--workers", str(args.workers), "--threads", str(args.threads))
    try:
        before = server_usage(server.pid)
        started, client_cpu = time.perf_counter(), time.process_time()
        outcomes = asyncio.run(fire(f"http://127.0.0.1:{port}", planned, args.concurrency,
                                    time.monotonic() + args.time_limit))
        wall, client_cpu = time.perf_counter() - started, time.process_time() - client_cpu
        after = server_usage(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
    report = build_report(args, outcomes, expected, labels, wall, client_cpu, before, after)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("checks", "throughput", "latency_ms_valid")}, indent=2))
    if not report["checks"]["zero_5xx"]:
        sys.exit(1)


def build_report(args: argparse.Namespace, outcomes: list[dict[str, Any]], expected: list[str],
                 labels: list[str], wall: float, client_cpu: float, before: dict, after: dict) -> dict[str, Any]:
    result = check(outcomes, expected)
    valid = result["valid"]
    right = sum(o.get("status") == 200 and o["body"]["results"][0]["text"] == labels[o["index"]]
                for o in outcomes if o["kind"] in ("multipart", "json"))
    served = after["cpu_seconds"] - before["cpu_seconds"]
    return {
        "what": "bounded loopback load test of captchalab serve (bench/load_test.py docstring)",
        "command": "python bench/load_test.py " + " ".join(sys.argv[1:]),
        "note": "client and server share this 2-core machine with other jobs; the client's CPU is reported too",
        "settings": {"model": str(args.model), "requests": args.requests, "concurrency": args.concurrency,
                     "malformed_share": args.malformed, "server_workers": args.workers,
                     "server_threads": args.threads, "max_bytes": MAX_BYTES, "data": str(args.data)},
        "checks": {"zero_5xx": result["five_xx"] == 0 and result["transport_errors"] == 0,
                   "valid_all_200": valid["ok_200"] == valid["n"],
                   "valid_same_reading_as_in_process": f"{valid['same_reading_as_in_process']}/{valid['n']}",
                   "malformed_expected_4xx_json": f"{result['malformed']['expected_status_and_json_error']}"
                                                  f"/{result['malformed']['n']}",
                   "valid_label_accuracy": round(right / max(1, valid["n"]), 4)},
        "throughput": {"wall_seconds": round(wall, 2), "requests_per_s": round(result["sent"] / wall, 1),
                       "server_cpu_ms_per_request": round(served / max(1, result["sent"]) * 1000, 2),
                       "client_cpu_seconds": round(client_cpu, 2)},
        "latency_ms_valid": valid["latency_ms"],
        "server": {"before": before, "after": after},
        "detail": result,
        "machine": machine_info(),
    }


if __name__ == "__main__":
    main()
