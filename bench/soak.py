"""A bounded loopback soak of ``captchalab serve``: memory stays flat and nothing answers 5xx.

Starts ``captchalab serve --model RUN`` on a free 127.0.0.1 port, warms it up, then for ``--minutes``
(default 5) keeps ``--concurrency`` clients (default 8) busy with a seeded mix: 70% valid requests
(multipart, base64 JSON, batches of 2-8 images, top-k 3) and 30% invalid ones, evenly over
bench/load_test.py's six malformed kinds and nine more: an empty image, a truncated PNG, a
100000x100000 pixel bomb and a zTXt bomb (from tests/badinput/make_corpus.py), 65 images in one
request, a deeply nested JSON body, an infinite top_k, an unknown endpoint and a wrong method.
The server's resident memory (RSS, with any worker processes) is sampled every ``--sample-seconds``.
Only loopback traffic; the soak stops by itself after the time limit or ``--max-requests``.

Checks: no 5xx and no transport error; every invalid kind gets its 4xx with a JSON {"error"} body;
memory flat after warm-up (default 1,000 requests): RSS at the end within max(16 MiB, 5%) of RSS
after warm-up. Over N requests that bound catches any leak above bound / N bytes per request (the
result says how small that is); slopes and one-off steps (an allocator arena) are reported as well.

    .venv/bin/python bench/soak.py --model RUN [--minutes 5] [--concurrency 8]

Writes bench/results/soak.json.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import random
import statistics
import sys
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from data import captcha_images_v2
from load_test import MALFORMED, MAX_BYTES, free_port, load_images, malformed, server_usage, start_server
from machine import machine_info

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from badinput.make_corpus import bilevel_png, png_chunk  # noqa: E402

RESULT = ROOT / "bench" / "results" / "soak.json"
VALID = {"multipart": 200, "json": 200, "batch": 200, "top_k": 200}
INVALID = {**MALFORMED, "empty_image": 400, "truncated_png": 400, "pixel_bomb": 400, "ztxt_bomb": 400,
           "too_many_images": 413, "deep_json": 400, "infinite_top_k": 400, "unknown_endpoint": 404,
           "wrong_method": 405}
INVALID_SHARE = 0.30
GROWTH_LIMIT_MIB, GROWTH_LIMIT_SHARE = 16.0, 0.05


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def bad_images() -> dict[str, bytes]:
    ztxt = png_chunk(b"zTXt", b"Comment\0\0" + zlib.compress(b"\0" * (64 << 20), 9))
    return {"empty_image": b"", "pixel_bomb": bilevel_png(100_000, 100_000, rows=64),
            "ztxt_bomb": bilevel_png(200, 50, extra=ztxt)}


def make_request(kind: str, images: list[tuple[str, bytes]], bad: dict[str, bytes],
                 rng: random.Random) -> tuple[str, str, dict[str, Any]]:
    """(method, path, httpx keyword arguments) for one request of ``kind``."""
    name, data = images[rng.randrange(len(images))]
    some = [images[rng.randrange(len(images))][1] for _ in range(rng.randint(2, 8))]
    build: dict[str, Callable[[], dict[str, Any]]] = {
        "multipart": lambda: {"files": {"file": (name, data, "image/png")}},
        "json": lambda: {"json": {"images": [_b64(data)]}},
        "batch": lambda: {"files": [("file", (f"{i}.png", d, "image/png")) for i, d in enumerate(some)]},
        "top_k": lambda: {"json": {"images": [_b64(data)], "top_k": 3}},
        "empty_image": lambda: {"files": {"file": ("empty.png", bad["empty_image"], "image/png")}},
        "truncated_png": lambda: {"files": {"file": ("cut.png", data[: len(data) // 2], "image/png")}},
        "pixel_bomb": lambda: {"files": {"file": ("bomb.png", bad["pixel_bomb"], "image/png")}},
        "ztxt_bomb": lambda: {"json": {"images": [_b64(bad["ztxt_bomb"])]}},
        "too_many_images": lambda: {"json": {"images": [_b64(data)] * 65}},
        "deep_json": lambda: {"content": b'{"images": ' + b"[" * 50_000,
                              "headers": {"content-type": "application/json"}},
        "infinite_top_k": lambda: {"content": b'{"images": ["' + _b64(data).encode() + b'"], "top_k": 1e999}',
                                   "headers": {"content-type": "application/json"}},
    }
    if kind == "unknown_endpoint":
        return "POST", "/admin", {"files": {"file": (name, data, "image/png")}}
    if kind == "wrong_method":
        return "DELETE", "/solve", {}
    if kind in MALFORMED:
        return "POST", "/solve", malformed(kind, name, data, rng)
    return "POST", "/solve", build[kind]()


@dataclass
class Tally:
    sent: int = 0
    statuses: Counter = field(default_factory=Counter)
    by_kind: Counter = field(default_factory=Counter)
    transport_errors: Counter = field(default_factory=Counter)
    unexpected: list = field(default_factory=list)
    latency_ms: dict = field(default_factory=lambda: {"valid": [], "invalid": []})

    def record(self, kind: str, status: int, body: Any, ms: float) -> None:
        self.sent += 1
        self.statuses[status] += 1
        self.by_kind[kind] += 1
        self.latency_ms["valid" if kind in VALID else "invalid"].append(ms)
        wanted = VALID.get(kind) or INVALID[kind]
        proper = status == wanted and (kind in VALID or _is_error(body))
        if not proper and len(self.unexpected) < 20:
            self.unexpected.append({"kind": kind, "status": status, "body": str(body)[:200]})


def _is_error(body: Any) -> bool:
    return isinstance(body, dict) and list(body) == ["error"] and isinstance(body["error"], str)


async def drive(url: str, images: list, tally: Tally, seconds: float, max_requests: int, concurrency: int,
                seed: int) -> None:
    """``concurrency`` clients sending the mix until ``seconds`` pass or ``max_requests`` are sent."""
    deadline = time.monotonic() + seconds
    bad = bad_images()
    kinds = sorted(INVALID)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def client_loop(number: int) -> None:
            rng = random.Random(seed * 1000 + number)
            while time.monotonic() < deadline and tally.sent < max_requests:
                kind = rng.choice(kinds) if rng.random() < INVALID_SHARE else rng.choice(sorted(VALID))
                method, path, request = make_request(kind, images, bad, rng)
                started = time.perf_counter()
                try:
                    response = await client.request(method, path, **request)
                except httpx.HTTPError as error:
                    tally.transport_errors[type(error).__name__] += 1
                    continue
                tally.record(kind, response.status_code, _json(response), (time.perf_counter() - started) * 1000)

        await asyncio.gather(*(client_loop(n) for n in range(concurrency)))


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


async def sample_memory(pid: int, tally: Tally, every: float, samples: list, stop: asyncio.Event) -> None:
    began = time.monotonic()
    while not stop.is_set():
        samples.append({"seconds": round(time.monotonic() - began, 1), "requests": tally.sent,
                        **server_usage(pid)})
        try:
            await asyncio.wait_for(stop.wait(), every)
        except asyncio.TimeoutError:
            continue


async def soak(url: str, pid: int, images: list, args: argparse.Namespace) -> tuple[Tally, list]:
    tally, samples, stop = Tally(), [], asyncio.Event()
    sampler = asyncio.create_task(sample_memory(pid, tally, args.sample_seconds, samples, stop))
    await drive(url, images, tally, args.minutes * 60, args.max_requests, args.concurrency, args.seed)
    stop.set()
    await sampler
    samples.append({"seconds": samples[-1]["seconds"] if samples else 0.0, "requests": tally.sent,
                    **server_usage(pid), "final": True})
    return tally, samples


def flatness(samples: list[dict]) -> dict[str, Any]:
    """RSS growth from the end of warm-up to the end of the soak, against a fixed bound.

    A leak grows with the requests served; over N requests the bound catches any leak above
    bound / N per request. One-off steps (an allocator arena, two large batches running at once for
    the first time) are not leaks, so slopes and steps are reported, not judged.
    """
    first, last = samples[0], samples[-1]
    growth = last["rss_mib"] - first["rss_mib"]
    rss = np.array([s["rss_mib"] for s in samples])
    limit = max(GROWTH_LIMIT_MIB, GROWTH_LIMIT_SHARE * first["rss_mib"])
    served = max(1, last["requests"] - first["requests"])
    return {"rss_after_warmup_mib": first["rss_mib"], "rss_end_mib": last["rss_mib"],
            "rss_min_mib": float(rss.min()), "rss_max_mib": float(rss.max()), "growth_mib": round(growth, 1),
            "growth_limit_mib": round(limit, 1),
            "growth_bytes_per_request_if_all_were_a_leak": round(max(0.0, growth) * 2**20 / served),
            "smallest_leak_the_bound_catches_bytes_per_request": round(limit * 2**20 / served),
            "steps_over_1_mib": int(np.sum(np.diff(rss) > 1.0)),
            "slope_mib_per_10k_requests_whole_soak": round(_slope(samples), 3),
            "slope_mib_per_10k_requests_second_half": round(_slope(samples[len(samples) // 2:]), 3),
            "flat": abs(growth) <= limit}


def _slope(samples: list[dict]) -> float:
    """Least-squares MiB of RSS per 10,000 requests."""
    requests = np.array([s["requests"] for s in samples], dtype=float)
    rss = np.array([s["rss_mib"] for s in samples])
    return float(np.polyfit(requests, rss, 1)[0]) * 10_000 if len(samples) > 1 and np.ptp(requests) > 0 else 0.0


def percentiles(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"p50": round(statistics.median(values), 2), "p95": round(float(np.percentile(values, 95)), 2),
            "p99": round(float(np.percentile(values, 99)), 2), "max": round(max(values), 2)}


def report(args: argparse.Namespace, tally: Tally, warmup: Tally, samples: list, start: dict, wall: float,
           client_cpu: float, server_errors: int) -> dict[str, Any]:
    five_xx = sum(n for status, n in tally.statuses.items() if status >= 500)
    five_xx += sum(n for status, n in warmup.statuses.items() if status >= 500)
    memory = flatness(samples)
    transport = sum(tally.transport_errors.values()) + sum(warmup.transport_errors.values())
    served_cpu = samples[-1]["cpu_seconds"] - samples[0]["cpu_seconds"]
    return {
        "what": "bounded loopback soak of captchalab serve (bench/soak.py docstring)",
        "command": "python bench/soak.py " + " ".join(sys.argv[1:]),
        "note": "client and server share this 2-core machine with other jobs; CPU time is reported with wall time",
        "settings": {"model": str(args.model), "minutes": args.minutes, "concurrency": args.concurrency,
                     "warmup_requests": args.warmup, "invalid_share": INVALID_SHARE, "seed": args.seed,
                     "max_bytes": MAX_BYTES, "sample_seconds": args.sample_seconds, "data": str(args.data)},
        "checks": {"zero_5xx": five_xx == 0, "zero_transport_errors": transport == 0,
                   "every_answer_as_expected": not tally.unexpected and not warmup.unexpected,
                   "memory_flat": memory["flat"], "server_logged_no_unexpected_error": server_errors == 0},
        "requests": {"sent": tally.sent, "warmup": warmup.sent, "per_second": round(tally.sent / wall, 1),
                     "five_xx": five_xx, "transport_errors": dict(tally.transport_errors + warmup.transport_errors),
                     "status_counts": {str(k): v for k, v in sorted(tally.statuses.items())},
                     "by_kind": dict(sorted(tally.by_kind.items())),
                     "unexpected": tally.unexpected + warmup.unexpected},
        "memory": {**memory, "rss_at_start_mib": start["rss_mib"], "samples": samples},
        "latency_ms": {group: percentiles(values) for group, values in tally.latency_ms.items()},
        "time": {"wall_seconds": round(wall, 1), "server_cpu_seconds": round(served_cpu, 1),
                 "client_cpu_seconds": round(client_cpu, 1)},
        "machine": machine_info(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="run folder or .onnx to serve")
    parser.add_argument("--data", type=Path, default=None,
                        help="labelled images for valid requests (default: captcha_images_v2 test.csv)")
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=1000, help="requests before memory is measured")
    parser.add_argument("--max-requests", type=int, default=200_000)
    parser.add_argument("--sample-seconds", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()

    args.data = args.data or captcha_images_v2() / "test.csv"
    images, _ = load_images(args.data)
    port, log = free_port(), Path(tempfile.mkdtemp()) / "server.log"
    server = start_server(args.model, port, log, "--threads", "1")
    url = f"http://127.0.0.1:{port}"
    try:
        start = server_usage(server.pid)
        warmup = Tally()
        asyncio.run(drive(url, images, warmup, 120, args.warmup, args.concurrency, args.seed + 1))
        began, client_cpu = time.perf_counter(), time.process_time()
        tally, samples = asyncio.run(soak(url, server.pid, images, args))
        wall, client_cpu = time.perf_counter() - began, time.process_time() - client_cpu
    finally:
        server.terminate()
        server.wait(timeout=30)
    server_errors = log.read_text(errors="replace").count("unexpected error")
    result = report(args, tally, warmup, samples, start, wall, client_cpu, server_errors)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("checks", "time")} | {"memory": {
        k: v for k, v in result["memory"].items() if k != "samples"}}, indent=2))
    if not all(result["checks"].values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
