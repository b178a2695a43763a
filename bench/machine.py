"""Machine facts recorded with every benchmark result, so numbers can be compared honestly."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _uncommitted() -> list[str] | None:
    """Tracked files of the package or the benches that differ from the commit: a result measured
    with them is not the commit's (uncommitted results files are left out). None: not a git checkout."""
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "src", "bench"],
                            capture_output=True, text=True, check=False, cwd=ROOT)
    if status.returncode:
        return None
    return [line[3:] for line in status.stdout.splitlines() if not line[3:].startswith("bench/results/")]


def machine_info() -> dict:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False,
                            cwd=ROOT)
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average_at_record": _load_average(),
        "git_commit": commit.stdout.strip() or None,
        "uncommitted_changes": _uncommitted(),
        "versions": {p: _version(p) for p in ("captchalab", "tensorflow-cpu", "keras", "onnxruntime", "numpy")},
    }
