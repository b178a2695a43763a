"""solve --engine ray: the readings of the local solve, row by row, on a session-scoped local Ray."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from captchalab.data.synthetic import generate
from clirun import run_cli

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'captchalab[ray]' (make test installs it)")
pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow is not installed: pip install 'captchalab[ray]'")


@pytest.fixture(scope="session")
def local_ray() -> object:
    """One small local Ray for the whole session: its start-up is the expensive part."""
    import ray.data

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """300 captchas in the bundled model's style, plus two files that are not images."""
    root = tmp_path_factory.mktemp("ray")
    folder = generate(root / "set", 300, seed=5)
    (root / "broken.png").write_bytes(b"not an image")
    (root / "empty.png").write_bytes(b"")
    return [folder, root / "broken.png", root / "empty.png"]


def _local(images: list[Path], *options: str) -> dict[str, dict]:
    outcome = run_cli("solve", *images, "--json", "--skip-bad", *options)
    assert outcome.code == 0, outcome.text
    return {r["file"]: r for r in map(json.loads, outcome.stdout.splitlines())}


def _same(local: dict, ray_row: dict) -> None:
    assert ray_row.get("error") == local.get("error"), (local, ray_row)
    assert ray_row.get("text") == local.get("text"), (local, ray_row)
    if "confidence" in local:  # batches differ, so the last rounded digit may
        assert abs(ray_row["confidence"] - local["confidence"]) <= 2e-4, (local, ray_row)


def test_ray_reads_what_solve_reads(local_ray: object, images: list[Path], tmp_path: Path) -> None:
    """captchalab solve DIR --engine ray: the readings of captchalab solve DIR, bad files as error rows."""
    local = _local(images)
    out = tmp_path / "out.parquet"
    outcome = run_cli("solve", *images, "--engine", "ray", "--out", out, "--batch-size", "32")
    assert outcome.failed_cleanly(3, "2 image(s) could not be read", "error column"), outcome.text
    table = pq.read_table(out).to_pylist()
    assert len(table) == 302 and sorted(r["file"] for r in table) == sorted(local)
    for row in table:
        _same(local[row["file"]], row)
    assert sum(bool(r["text"]) and r["text"] == local[r["file"]].get("text") for r in table) == 300


@pytest.mark.large
def test_ray_cli_csv_with_top_k_and_abstain(local_ray: object, images: list[Path], tmp_path: Path) -> None:
    import csv

    options = ("--top-k", "2", "--min-confidence", "0.9")
    files = sorted(images[0].glob("*.png"))[:60]
    local = _local(files, *options)
    out = tmp_path / "out.csv"
    outcome = run_cli("solve", *files, "--engine", "ray", "--out", out, *options)
    assert outcome.code == 0, outcome.text
    with open(out, newline="") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == len(local) == 60
    assert {"abstained", "guess", "top_k"} <= set(table[0])
    assert any(r["abstained"] == "true" for r in table)  # the threshold is high enough to abstain on some
    for row in table:
        expected = local[row["file"]]
        assert row["text"] == (expected["text"] or ""), (expected, row)
        assert (row["abstained"] == "true") == bool(expected.get("abstained"))
        assert row["guess"] == expected.get("guess", "")
        assert [k["text"] for k in json.loads(row["top_k"])] == [k["text"] for k in expected["top_k"]]


@pytest.mark.large
def test_ray_from_a_parquet_of_bytes(local_ray: object, images: list[Path], tmp_path: Path) -> None:
    """A table of image bytes (as read_binary_files gives them), a bad one among them."""
    import pyarrow as pa

    from captchalab import solve_dataset

    files = sorted(images[0].glob("*.png"))[:20]
    source = tmp_path / "images.parquet"
    pq.write_table(pa.table({"path": [str(f) for f in files] + ["bad"],
                             "bytes": [f.read_bytes() for f in files] + [b"junk"]}), source)
    assert solve_dataset(source, out=tmp_path / "out.parquet") == (21, 1)
    got = {r["file"]: r for r in pq.read_table(tmp_path / "out.parquet").to_pylist()}
    local = _local(files)
    assert len(got) == 21 and got["bad"]["error"] and got["bad"]["text"] is None
    for name, expected in local.items():
        _same(expected, got[name])


def test_ray_needs_out_and_refuses_existing(local_ray: object, images: list[Path], tmp_path: Path) -> None:
    assert run_cli("solve", images[1], "--engine", "ray").failed_cleanly(2, "--out")
    existing = tmp_path / "taken.csv"
    existing.write_text("mine")
    assert run_cli("solve", images[1], "--engine", "ray", "--out", existing).failed_cleanly(5, "already exists")
    assert existing.read_text() == "mine"
    assert run_cli("solve", images[1], "--engine", "spark", "--out", tmp_path / "x.csv").failed_cleanly(2, "engine")


def test_generate_on_ray_writes_the_images_the_local_processes_write(local_ray: object, tmp_path: Path) -> None:
    """generate --engine ray: Ray tasks render, this process writes; byte for byte the local set."""
    local = generate(tmp_path / "local", 120, length="4-6", seed=9, workers=1)
    outcome = run_cli("generate", tmp_path / "ray", "--count", "120", "--length", "4-6", "--seed", "9",
                      "--engine", "ray", "--quiet")
    assert outcome.code == 0, outcome.text
    on_ray = tmp_path / "ray"
    assert (on_ray / "labels.csv").read_text() == (local / "labels.csv").read_text()
    names = sorted(p.name for p in local.glob("*.png"))
    assert names == sorted(p.name for p in on_ray.glob("*.png")) and len(names) == 120
    assert all((on_ray / n).read_bytes() == (local / n).read_bytes() for n in names)


def test_generate_address_without_ray_is_a_usage_error(tmp_path: Path) -> None:
    outcome = run_cli("generate", tmp_path / "x", "--count", "3", "--address", "127.0.0.1:1")
    assert outcome.failed_cleanly(2, "--engine ray"), outcome.text
    assert not (tmp_path / "x").exists()
