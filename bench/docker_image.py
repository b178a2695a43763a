"""The ``serve`` container: build it, measure the image, check that it answers /healthz.

    python bench/docker_image.py      # needs a running Docker daemon; minutes (downloads the base image)

Builds the repository's Dockerfile, records the image size, starts it with the bundled model
(no volume) on a loopback port, waits for ``/healthz`` and stops it. Writes
bench/results/docker_image.json. Without a Docker daemon it says so and writes nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from captchalab import runs
from machine import machine_info

ROOT = Path(__file__).resolve().parent.parent
RESULT = ROOT / "bench" / "results" / "docker_image.json"
TAG = "captchalab-serve:bench"
PORT = 18000


def docker(*args: str, timeout: float = 1800) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise SystemExit(f"docker {args[0]} failed: {done.stderr.strip()[-2000:]}")
    return done.stdout.strip()


def healthy(seconds: float = 60) -> float | None:
    started = time.time()
    while time.time() - started < seconds:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/healthz", timeout=2) as response:
                if response.status == 200:
                    return round(time.time() - started, 1)
        except OSError:
            time.sleep(0.5)
    return None


def main() -> None:
    if subprocess.run(["docker", "info"], capture_output=True, check=False).returncode != 0:
        sys.exit("no Docker daemon reachable: nothing measured")
    started = time.time()
    docker("build", "-t", TAG, str(ROOT))
    build_seconds = round(time.time() - started, 1)
    size = int(docker("image", "inspect", "--format", "{{.Size}}", TAG))
    # the bundled model: any arguments replace the image's default "--model /model"
    container = docker("run", "-d", "--rm", "-p", f"127.0.0.1:{PORT}:8000", TAG, "--log-level", "warning")
    try:
        ready = healthy()
        packages = docker("exec", container, "pip", "list", "--format", "freeze")
    finally:
        docker("stop", container, timeout=60)
    result = {"image": TAG, "bytes": size, "megabytes": round(size / 1e6, 1), "build_seconds": build_seconds,
              "healthz_after_seconds": ready,
              "tensorflow_installed": any(p.lower().startswith(("tensorflow", "keras")) for p in packages.split()),
              "machine": machine_info()}
    runs.write_json(RESULT, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
