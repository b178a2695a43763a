"""Bulk solving on Ray Data (``solve --engine ray``, ``captchalab.solve_dataset``): the readings of ``solve``.

Each actor of a pool loads the ONNX predictor once and reads its batches with the code the
local ``solve`` runs (``bulk.prepare_or_error``, ``bulk.read_prepared``), then turns readings
into the records ``solve --json`` prints (``bulk.json_record``): one decoding path, one schema.
A bad image becomes a row with its ``error``; it never stops the job. Ray is the scheduler:
captchalab only says how many actors, how many threads each (ONNX Runtime's intra-op threads
equal the CPUs Ray reserves for the actor, so actors do not fight over cores) and which provider.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from captchalab import runs
from captchalab.cluster import connect
from captchalab.decoding import Constraints
from captchalab.errors import RunFolderError, UsageError
from captchalab.inference.bulk import json_record, prepare_or_error, read_prepared
from captchalab.inference.predictor import Predictor, iter_image_files

if TYPE_CHECKING:
    import pyarrow as pa
    import ray.data

TABLE_SUFFIXES = (".parquet", ".csv")
NAME_COLUMNS = ("path", "file")  # read_binary_files(include_paths=True) names it "path"; solve's CSV "file"
IMAGE_COLUMNS = ("bytes", "image")  # read_binary_files; read_images


def solve_dataset(
    source: Any,
    model: str | Path | None = None,
    *,
    address: str | None = None,
    actors: int | None = None,
    threads: int = 1,
    num_gpus: float = 0.0,
    batch_size: int = 64,
    top_k: int = 1,
    constraints: Constraints | None = None,
    min_confidence: float | None = None,
    out: str | Path | None = None,
) -> ray.data.Dataset | tuple[int, int]:
    """The readings of SOURCE as a (lazy) Ray Dataset of ``solve --json`` records; with ``out`` (a new
    ``.parquet`` or ``.csv`` file) they are written there (``write_results``) and (rows, rows with an
    error) is returned (``captchalab.solve_dataset``, ``solve --engine ray``).

    SOURCE: a Ray Dataset with a ``path``/``file`` column and optionally ``bytes`` (``read_binary_files(...,
    include_paths=True)``) or ``image`` (``read_images``); image files and folders (listed as ``solve`` lists
    them, read by the actors with the same bounded reads); or a ``.parquet``/``.csv`` table of paths or bytes.
    ``actors`` (default: the cluster's CPUs / ``threads``, one fewer when Ray tasks read a table or a
    Dataset: actors holding every CPU leave those reads waiting for ever) each load MODEL once and use ``threads`` CPUs;
    ``num_gpus`` > 0 gives each actor that share of a GPU and ONNX Runtime's CUDA provider (CPU, with a
    warning, where onnxruntime-gpu is missing).
    """
    import ray
    import ray.data

    if threads < 1 or batch_size < 1 or top_k < 1 or num_gpus < 0 or (actors is not None and actors < 1):
        raise UsageError("threads, batch_size, top_k and actors must be at least 1, num_gpus at least 0")
    connect(address, log_to_driver=num_gpus > 0)  # GPU actors: show their messages (a CUDA fallback warns)
    dataset = source if isinstance(source, ray.data.Dataset) else _read(source, batch_size)
    listed = not isinstance(source, ray.data.Dataset) and dataset.columns() == ["path"]  # from_items: no reads
    device = "cuda" if num_gpus > 0 else "cpu"
    probe = Predictor.load(model, threads=1)  # a bad model fails here, once, with its message, not in each actor
    warning = constraints.unproducible(probe.config.charset) if constraints is not None else None
    if warning:
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    columns = result_columns(top_k, min_confidence, warning)
    if actors is None:  # a table or a Dataset is read by Ray tasks: leave them a CPU, or they wait for ever
        actors = max(1, int(ray.cluster_resources().get("CPU", 1) // threads) - (0 if listed else 1))
    readings = dataset.map_batches(
        _Reader, batch_size=batch_size, batch_format="numpy",
        fn_constructor_kwargs={"model": probe.source, "threads": threads, "device": device, "top_k": top_k,
                               "constraints": constraints, "min_confidence": min_confidence,
                               "warning": warning, "columns": columns},
        compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=threads, num_gpus=num_gpus or None,
    )
    return readings if out is None else write_results(readings, out)


def result_columns(top_k: int, min_confidence: float | None, warning: str | None) -> list[tuple[str, str]]:
    """The table's columns and types: solve --json's keys, the optional ones only when asked for."""
    columns = [("file", "string"), ("text", "string"), ("confidence", "float64"), ("error", "string"),
               ("ood", "bool_")]
    if min_confidence is not None:
        columns += [("abstained", "bool_"), ("guess", "string")]
    if top_k > 1:
        columns.append(("top_k", "string"))  # the JSON list of solve --json, as text: CSV has no nested cells
    if warning:
        columns.append(("warning", "string"))
    return columns


class _Reader:
    """One per actor: the predictor loads once, then reads batch after batch."""

    def __init__(self, model: Path, threads: int, device: str, top_k: int, constraints: Constraints | None,
                 min_confidence: float | None, warning: str | None, columns: list[tuple[str, str]]) -> None:
        self.predictor = Predictor.load(model, threads=threads, device=device)
        self.top_k, self.constraints, self.min_confidence = top_k, constraints, min_confidence
        self.warning, self.columns = warning, columns

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        names = [str(n) for n in _column(batch, NAME_COLUMNS)] or [""] * _rows(batch)
        images = _column(batch, IMAGE_COLUMNS) or names
        prepared = [prepare_or_error(self.predictor, _image(item), name) for item, name in zip(images, names)]
        results = read_prepared(self.predictor, prepared, self.top_k, self.constraints, self.min_confidence)
        records = [json_record(name, result, self.warning) for name, result in zip(names, results)]
        return records_table(records, self.columns)


def records_table(records: Sequence[dict[str, Any]], columns: list[tuple[str, str]]) -> pa.Table:
    import pyarrow as pa

    def cell(record: dict[str, Any], key: str) -> Any:
        value = record.get(key)
        if key == "top_k" and value is not None:
            return json.dumps(value)
        if key == "abstained":
            return bool(value) if "error" not in record else None
        return value

    schema = pa.schema([(name, getattr(pa, kind)()) for name, kind in columns])
    return pa.table({name: [cell(r, name) for r in records] for name, _ in columns}, schema=schema)


def _column(batch: dict[str, np.ndarray], names: Sequence[str]) -> list[Any]:
    """The first of the named columns the batch has, as a list; empty when it has none."""
    return next((list(batch[name]) for name in names if name in batch), [])


def _rows(batch: dict[str, np.ndarray]) -> int:
    return len(next(iter(batch.values()))) if batch else 0


def _image(item: Any) -> Any:
    """A cell as Predictor.prepare takes it: bytes, an array (read_images), or a path."""
    if isinstance(item, (bytes, np.ndarray)):
        return item
    if isinstance(item, bytearray | memoryview):
        return bytes(item)
    if item is None:
        return b""  # an empty cell: the image error says so, in its row
    return Path(str(item))


def _read(source: Any, batch_size: int) -> ray.data.Dataset:
    """Image files and folders, or one .parquet/.csv table of paths or bytes, as a Ray Dataset."""
    import ray.data

    paths = [source] if isinstance(source, (str, Path)) else list(source)
    if len(paths) == 1 and Path(paths[0]).suffix.lower() in TABLE_SUFFIXES and Path(paths[0]).is_file():
        table = Path(paths[0])
        dataset = ray.data.read_parquet(str(table)) if table.suffix.lower() == ".parquet" \
            else ray.data.read_csv(str(table))
        if not {*NAME_COLUMNS, *IMAGE_COLUMNS} & set(dataset.columns() or ()):
            raise UsageError(f"{table}: has none of the columns path, file, bytes; name the column of image "
                             "paths 'path' (or 'file'), or of image bytes 'bytes'")
        return dataset
    files = [str(f) for f in iter_image_files(paths)]
    if not files:
        raise UsageError(f"no images found in {', '.join(map(str, paths))}")
    # Paths, not bytes: each actor reads its files with the bounded reads of the local solve
    # (a cluster's nodes see the same files on shared storage; for object stores pass a Dataset
    # from ray.data.read_binary_files(..., include_paths=True) instead).
    blocks = max(1, min(1000, len(files) // batch_size))  # a block per batch or so: not 200 blocks of 2 rows
    return ray.data.from_items([{"path": f} for f in files], override_num_blocks=blocks)


def write_results(dataset: ray.data.Dataset, out: str | Path) -> tuple[int, int]:
    """Stream the readings into one ``.parquet`` or ``.csv`` file, written atomically; returns
    (rows, rows with an error). An existing file is never replaced."""
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    out = Path(out)
    if out.suffix.lower() not in TABLE_SUFFIXES:
        raise UsageError(f"{out}: --out must end in .parquet or .csv")
    if out.exists():
        raise RunFolderError(f"{out}: already exists; choose another --out or remove it")
    counts = [0, 0]

    def write(tmp: Path) -> None:
        writer: Any = None
        try:
            for table in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema) if out.suffix.lower() == ".parquet" \
                        else pcsv.CSVWriter(str(tmp), table.schema)
                writer.write_table(table)
                counts[0] += table.num_rows
                counts[1] += table.num_rows - table.column("error").null_count
        finally:
            if writer is not None:
                writer.close()

    runs.atomic_write(out, write)
    return counts[0], counts[1]
