"""An adversarial loopback check of ``captchalab serve`` (issue 16, items 1-4): does ``/healthz`` stay
fast and memory flat while hostile requests are in flight?

Starts ``captchalab serve`` (the bundled model unless ``--model``) on a free 127.0.0.1 port with its
default limits, warms it up and records its idle memory and ``/healthz`` latency. Then, for a bounded
number of requests (and at most ``--time-limit`` seconds), it sends at once:

- item 1, absurd constraints: ``"allowed": "\\u0001-\\U0010ffff" * 20`` (and 200 copies, over the limit);
- item 2, idle half-sent requests: ``--idle`` connections that send half a header and wait, reopened
  as the server closes them;
- item 3, the largest JSON bodies the server accepts: one base64 string just under the body limit;
  64 base64 images each just under the per-image limit; and 2 MB of tiny values (``[0,0,0,...]``);
- item 4, client mistakes (``data:x``, ``"allowed": "z-a"``, lone surrogates), each followed by a valid
  request on the same keep-alive connection;

while a separate process probes ``GET /healthz`` every 20 ms on one keep-alive connection and the
server's resident memory is sampled every 50 ms. Only loopback traffic; bounded counts.

Checks: ``/healthz`` p99 under 100 ms during the attack; peak memory under 1.5x idle; no 5xx; no
transport error on a valid request sent after a mistake; the server log stays small (no traceback per
failed accept or per request).

    .venv/bin/python bench/server_attack.py [--model RUN] [--idle 300] [--time-limit 120]

Writes bench/results/server_attack.json.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import multiprocessing
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from load_test import free_port, launch
from machine import machine_info

ROOT = Path(__file__).resolve().parent.parent
RESULT = ROOT / "bench" / "results" / "server_attack.json"
HUGE_RANGE = "\u0001-\U0010ffff"


def start(model: Path | None, port: int, log: Path) -> subprocess.Popen:
    """The server with its default limits (the ones under attack), the bundled model unless ``model``."""
    return launch(port, log, *(["--model", str(model)] if model else []))


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def percentiles(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"n": len(values), "p50": round(statistics.median(values), 2),
            "p99": round(float(np.percentile(values, 99)), 2), "max": round(max(values), 2)}


# --------------------------------------------------------------------------- the /healthz prober (own process)


def probe(url: str, every: float, stop: Any, out: Any) -> None:
    """GET /healthz every ``every`` s on one keep-alive connection until ``stop`` is set; latencies in ms.
    A process of its own, so the attacking client's work does not delay the probes."""
    latencies: list[float] = []
    failures: Counter = Counter()
    with httpx.Client(base_url=url, timeout=10) as client:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                status = client.get("/healthz").status_code
                latencies.append((time.perf_counter() - started) * 1000)
                if status != 200:
                    failures[str(status)] += 1
            except httpx.HTTPError as error:
                failures[type(error).__name__] += 1
            time.sleep(max(0.0, every - (time.perf_counter() - started)))
    out.put({"latency_ms": percentiles(latencies), "failures": dict(failures)})


class Prober:
    """``with Prober(url) as result:`` probes /healthz for the duration of the block."""

    def __init__(self, url: str, every: float = 0.02) -> None:
        context = multiprocessing.get_context("spawn")
        self.stop, self.queue = context.Event(), context.Queue()
        self.process = context.Process(target=probe, args=(url, every, self.stop, self.queue))
        self.result: dict[str, Any] = {}

    def __enter__(self) -> dict[str, Any]:
        self.process.start()
        time.sleep(1.0)  # the process has imported httpx and is probing
        return self.result

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.result.update(self.queue.get(timeout=60))
        self.process.join(timeout=10)


# --------------------------------------------------------------------------- the attacks


def png_b64() -> str:
    buffer = io.BytesIO()
    Image.new("L", (160, 60), 230).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def limits(url: str) -> int:
    """The server's body limit, as the server reports it (its 413 for a huge declared body names it)."""
    with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=10) as raw:
        raw.sendall(b"POST /solve HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 1000000000000\r\n\r\n")
        data = b""
        while chunk := raw.recv(65536):  # the server closes the connection after a 413 it did not read
            data += chunk
    return int(data.decode().split("over the ")[1].split("-byte")[0])


async def constraints_attack(url: str, image: str, count: int, stats: Counter, times: list[float]) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        for i in range(count):
            allowed = HUGE_RANGE * (200 if i % 4 == 3 else 20)  # every fourth is over the 256-character limit
            started = time.perf_counter()
            reply = await client.post("/solve", json={"images": [image], "allowed": allowed})
            times.append((time.perf_counter() - started) * 1000)
            stats[f"allowed:{reply.status_code}"] += 1


async def idle_attack(port: int, connections: int, stop: asyncio.Event, stats: Counter) -> None:
    """Keep ``connections`` sockets open with half a request header; reopen those the server closes."""

    async def one() -> None:
        while not stop.is_set():
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                stats["idle:connect_failed"] += 1
                await asyncio.sleep(0.5)
                continue
            stats["idle:opened"] += 1
            writer.write(b"POST /solve HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le")
            try:
                await writer.drain()
                read = asyncio.ensure_future(reader.read(1))
                stopped = asyncio.ensure_future(stop.wait())
                await asyncio.wait({read, stopped}, return_when=asyncio.FIRST_COMPLETED)
                if read.done():
                    stats["idle:closed_by_server"] += 1
                for task in (read, stopped):
                    task.cancel()
            except OSError:
                stats["idle:closed_by_server"] += 1
            writer.close()

    await asyncio.gather(*(one() for _ in range(connections)))


async def big_json_attack(url: str, max_body: int, count: int, stats: Counter, times: list[float]) -> None:
    """``count`` each of: the largest JSON body the server accepts as one string; as 64 images, each just
    under the per-image limit (base64 of zeros: decoded, then not an image); 2 MB of tiny values. Two at
    a time."""
    biggest = b'{"images": ["' + b"A" * (max_body - 64) + b'"]}'
    per_image = ((max_body - 64 * 1024) // 64 - 1024) * 3 // 4 - 16  # just under max_bytes (from max_body)
    batch = json.dumps({"images": [base64.b64encode(bytes(per_image - 16)).decode()] * 64}).encode()
    tiny = b'{"images": [' + b"0," * 1_000_000 + b"0]}"
    gate = asyncio.Semaphore(2)
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:

        async def send(kind: str, body: bytes) -> None:
            async with gate:
                started = time.perf_counter()
                try:
                    reply = await client.post("/solve", content=body, headers={"content-type": "application/json"})
                    stats[f"{kind}:{reply.status_code}"] += 1
                except httpx.HTTPError as error:  # refused mid-body: the server closed before httpx finished sending
                    stats[f"{kind}:{type(error).__name__}"] += 1
                times.append((time.perf_counter() - started) * 1000)

        kinds = (("big_string", biggest), ("big_batch", batch), ("tiny_values", tiny))
        await asyncio.gather(*(send(kind, body) for _ in range(count) for kind, body in kinds))


MISTAKES = {
    "data_url": b'{"images": ["data:x"]}',
    "backwards_range": b'{"images": ["IMAGE"], "allowed": "z-a"}',
    "surrogate_model": b'{"images": ["IMAGE"], "model": "\\ud800"}',
    "surrogate_allowed": b'{"images": ["IMAGE"], "allowed": "\\ud800"}',
    "surrogate_length": b'{"images": ["IMAGE"], "length": "\\ud800"}',
    "surrogate_case": b'{"images": ["IMAGE"], "case": "\\ud800"}',
}


async def mistakes_attack(url: str, image: str, rounds: int, stats: Counter) -> None:
    """Each mistake, then a valid request, on one pooled keep-alive connection."""
    good = {"images": [image]}
    bodies = {kind: body.replace(b"IMAGE", image.encode()) for kind, body in MISTAKES.items()}
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        for _ in range(rounds):
            for kind, body in bodies.items():
                try:
                    reply = await client.post("/solve", content=body, headers={"content-type": "application/json"})
                    stats[f"mistake:{reply.status_code}"] += 1
                    after = await client.post("/solve", json=good)
                    stats[f"after_mistake:{after.status_code}"] += 1
                except httpx.HTTPError as error:
                    stats[f"{kind}:{type(error).__name__}"] += 1


async def attack(url: str, port: int, args: argparse.Namespace, max_body: int) -> dict[str, Any]:
    image = png_b64()
    stats: Counter = Counter()
    times: dict[str, list[float]] = {"allowed": [], "big_json": []}
    stop = asyncio.Event()
    idle = asyncio.ensure_future(idle_attack(port, args.idle, stop, stats))
    await asyncio.sleep(1.0)  # the idle connections are open before the rest starts
    work = asyncio.gather(constraints_attack(url, image, args.requests, stats, times["allowed"]),
                          big_json_attack(url, max_body, args.big_bodies, stats, times["big_json"]),
                          mistakes_attack(url, image, args.requests // len(MISTAKES), stats))
    try:
        await asyncio.wait_for(work, args.time_limit)
        stats["finished_within_time_limit"] = 1
    except asyncio.TimeoutError:
        stats["finished_within_time_limit"] = 0
    stop.set()
    await idle
    return {"counts": dict(sorted(stats.items())),
            "latency_ms": {kind: percentiles(values) for kind, values in times.items()}}


def sample_memory(pid: int, stop: threading.Event, samples: list[float]) -> None:
    while not stop.is_set():
        samples.append(rss_mib(pid))
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="run folder or .onnx (default: bundled model)")
    parser.add_argument("--idle", type=int, default=300, help="half-sent connections held open")
    parser.add_argument("--requests", type=int, default=120, help="absurd-constraint requests, and mistakes")
    parser.add_argument("--big-bodies", type=int, default=12, help="largest JSON bodies (and as many tiny-value ones)")
    parser.add_argument("--time-limit", type=float, default=120.0)
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = Path(tempfile.mkdtemp(prefix="captchalab-attack-")) / "server.log"
    server = start(args.model, port, log)
    try:
        httpx.post(f"{url}/solve", json={"images": [png_b64()]}, timeout=60).raise_for_status()  # model loaded
        time.sleep(1.0)
        idle_rss = rss_mib(server.pid)
        with Prober(url) as quiet:
            time.sleep(5.0)
        max_body = limits(url)
        log_before = log.stat().st_size
        samples: list[float] = []
        stop = threading.Event()
        sampler = threading.Thread(target=sample_memory, args=(server.pid, stop, samples), daemon=True)
        sampler.start()
        started = time.perf_counter()
        with Prober(url) as under_attack:
            outcome = asyncio.run(attack(url, port, args, max_body))
        elapsed = time.perf_counter() - started
        stop.set()
        sampler.join()
        alive = httpx.get(f"{url}/healthz", timeout=10).status_code == 200
        log_growth = log.stat().st_size - log_before
        tracebacks = log.read_text(errors="replace").count("Traceback")
    finally:
        server.terminate()
        server.wait(timeout=30)
    result = build_report(args, outcome, quiet, under_attack, idle_rss, samples, elapsed, alive, log_growth,
                          tracebacks, max_body)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("checks", "healthz_ms", "memory_mib")}, indent=2))
    if not all(result["checks"].values()):
        sys.exit(1)


def build_report(args: argparse.Namespace, outcome: dict[str, Any], quiet: dict[str, Any],
                 under_attack: dict[str, Any], idle_rss: float, samples: list[float], elapsed: float,
                 alive: bool, log_growth: int, tracebacks: int, max_body: int) -> dict[str, Any]:
    counts = outcome["counts"]
    peak = max(samples, default=idle_rss)
    attacked = under_attack["latency_ms"] or {"p99": float("inf")}
    five_xx = sum(v for k, v in counts.items() if k.split(":")[-1].startswith("5") and not k.endswith(":503"))
    return {
        "what": "adversarial loopback check of captchalab serve (bench/server_attack.py docstring)",
        "command": "python bench/server_attack.py " + " ".join(sys.argv[1:]),
        "note": "client, prober and server share this 2-core machine with other jobs",
        "settings": {"model": str(args.model) if args.model else "bundled", "idle_connections": args.idle,
                     "absurd_constraint_requests": args.requests, "largest_json_bodies": args.big_bodies,
                     "tiny_value_bodies": args.big_bodies, "mistake_rounds": args.requests // len(MISTAKES),
                     "server_max_body_bytes": max_body, "time_limit_s": args.time_limit},
        "checks": {
            "healthz_p99_under_100ms": attacked["p99"] < 100,
            "healthz_never_failed": not under_attack["failures"],
            "memory_under_1.5x_idle": peak < 1.5 * idle_rss,
            "no_5xx_but_busy_503": five_xx == 0,
            "valid_request_after_each_mistake_ok": counts.get("after_mistake:200", 0) == sum(
                v for k, v in counts.items() if k.startswith("mistake:")) and not any(
                k.split(":")[0] in MISTAKES for k in counts),
            "server_alive_after": alive,
            "log_without_tracebacks": tracebacks == 0,
        },
        "healthz_ms": {"idle": quiet["latency_ms"], "under_attack": under_attack["latency_ms"],
                       "failures_under_attack": under_attack["failures"]},
        "memory_mib": {"idle": round(idle_rss, 1), "peak_under_attack": round(peak, 1),
                       "ratio": round(peak / idle_rss, 3), "samples": len(samples)},
        "server_log_growth_bytes": log_growth,
        "attack_seconds": round(elapsed, 1),
        "attack": outcome,
        "machine": machine_info(),
    }


if __name__ == "__main__":
    main()
