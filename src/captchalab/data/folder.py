"""Datasets on disk: a folder (labels.csv or labels in file names) or a split CSV file.

Every problem is collected first and reported together in one message, so a user fixes
the whole dataset in one pass instead of one error per run.
"""

from __future__ import annotations

import csv
import itertools
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from captchalab import files, runs
from captchalab.charset import Charset, label_problem
from captchalab.data import images
from captchalab.errors import DataError, ImageError
from captchalab.files import printable

IMAGE_SUFFIXES = frozenset(images.SUFFIXES)  # exactly the formats images.open_image decodes
MAX_PROBLEMS_SHOWN = 10
MAX_LABELS_BYTES = 64 * 1024 * 1024  # labels.csv: a million rows fit


@dataclass(frozen=True)
class Dataset:
    """Validated images (uint8, n x h x w) with their labels and source files."""

    files: tuple[Path, ...]
    labels: tuple[str, ...]
    pixels: np.ndarray
    charset: Charset
    source: Path
    skipped: tuple[str, ...] = field(default=())

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def size(self) -> images.ImageSize:
        channels = int(self.pixels.shape[3]) if self.pixels.ndim == 4 else 1
        return images.ImageSize(int(self.pixels.shape[1]), int(self.pixels.shape[2]), channels)

    @property
    def max_length(self) -> int:
        return max(len(label) for label in self.labels)

    @property
    def min_length(self) -> int:
        return min(len(label) for label in self.labels)


@dataclass
class _Problems:
    """Problems by kind, each with the files concerned."""

    by_kind: dict[str, list[str]] = field(default_factory=dict)
    files: set[str] = field(default_factory=set)

    def add(self, kind: str, name: str, detail: str = "") -> None:
        shown = printable(name)
        self.by_kind.setdefault(kind, []).append(f"{shown} ({detail})" if detail else shown)
        self.files.add(name)

    def __bool__(self) -> bool:
        return bool(self.by_kind)

    def message(self, source: Path) -> str:
        total = sum(len(v) for v in self.by_kind.values())
        lines = [f"{source}: {total} problem(s) found before any work was done:"]
        for kind, items in self.by_kind.items():
            shown = ", ".join(items[:MAX_PROBLEMS_SHOWN])
            hidden = len(items) - MAX_PROBLEMS_SHOWN
            lines.append(f"  - {kind} ({len(items)}): {shown}" + (f" and {hidden} more" if hidden > 0 else ""))
        lines.append("Fix these entries, or pass --skip-bad to continue without them.")
        return "\n".join(lines)


def list_entries(path: str | Path) -> tuple[Path, list[tuple[str, str]]]:
    """(root folder, [(relative file, label), ...]) for a dataset folder or CSV file."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder; give a dataset folder or a labels CSV")
    if not path.is_dir():  # a CSV file, or something posing as one (a pipe): read_labels_csv refuses those
        return path.parent, read_labels_csv(path)
    csv_path = path / "labels.csv"
    if csv_path.exists():
        return path, read_labels_csv(csv_path)
    entries = [(p.name, p.stem.split("_")[0]) for p in sorted(path.iterdir()) if _is_image(p)]
    if not entries:
        raise DataError(
            f"{path}: no labels.csv and no images (.png .jpg .gif .bmp .webp) to take labels from"
        )
    return path, entries


def _is_image(path: Path) -> bool:
    """An image file a folder holds; hidden files (".hidden_X.png", editors' and our own
    temporaries) are never data."""
    return not path.name.startswith(".") and path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def read_labels_csv(path: Path) -> list[tuple[str, str]]:
    """Rows of a ``file,label`` CSV; a BOM and surrounding whitespace are tolerated."""
    try:
        text = files.read_text(path, MAX_LABELS_BYTES, DataError, encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text; save the CSV as UTF-8") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read ({error.strerror})") from None
    rows = list(csv.reader(text.splitlines()))
    if not rows:
        raise DataError(f"{path}: the CSV is empty; it needs a header 'file,label' and rows")
    header = [cell.strip().lower() for cell in rows[0]]
    if header[:2] != ["file", "label"]:
        raise DataError(f"{path}: the header is {rows[0]!r}; the first line must be 'file,label'")
    entries = []
    for line_number, row in enumerate(rows[1:], start=2):
        if not row or not any(cell.strip() for cell in row):
            continue
        if len(row) < 2:
            raise DataError(f"{path}, line {line_number}: expected 'file,label', got {row!r}")
        entries.append((row[0].strip(), row[1].strip()))
    if not entries:
        raise DataError(f"{path}: the CSV has a header but no rows; add 'file,label' lines")
    return entries


def load_dataset(
    path: str | Path,
    charset: Charset | None = None,
    size: images.ImageSize | None = None,
    skip_bad: bool = False,
    case_insensitive: bool = False,
    progress: Callable[[int], None] | None = None,
    max_length: int | None = None,
) -> Dataset:
    """Read, validate and decode a dataset; raise one DataError listing every problem.

    ``size`` defaults to the most common image size in the set, so a uniform set is
    never stretched. ``max_length``: labels longer than this are problems (a model with
    one head per position cannot read them).
    """
    source = Path(path)
    root, entries = list_entries(source)
    problems = _Problems()
    entries = _check_labels(entries, charset, problems, max_length)
    size = size or typical_size(root, (name for name, _ in entries))
    decoded = _decode_images(root, entries, size, problems, progress)
    if problems and not skip_bad:
        raise DataError(problems.message(source))
    kept = [
        (name, label, pixels)
        for (name, label), pixels in zip(entries, decoded)
        if name not in problems.files and pixels is not None
    ]
    if not kept:
        raise DataError(f"{source}: no usable images remain after skipping bad entries")
    labels = [label for _, label, _ in kept]
    charset = charset or Charset.from_labels(labels, case_insensitive)
    return Dataset(
        files=tuple(root / name for name, _, _ in kept),
        labels=tuple(charset.normalize(label) for label in labels),
        pixels=np.stack([pixels for _, _, pixels in kept]),
        charset=charset,
        source=source,
        skipped=tuple(sorted(problems.files)),
    )


def _check_labels(
    entries: list[tuple[str, str]], charset: Charset | None, problems: _Problems, max_length: int | None = None
) -> list[tuple[str, str]]:
    counts = Counter(name for name, _ in entries)
    for name, count in counts.items():
        if count > 1:
            problems.add("duplicate rows for the same file", name, f"{count} rows")
    unique = list({name: (name, label) for name, label in entries}.values())
    for name, label in unique:
        problem = label_problem(label, charset, max_length)
        if problem is not None:
            problems.add(problem[0], name, problem[1])
    return unique


def _decode_images(
    root: Path,
    entries: list[tuple[str, str]],
    size: images.ImageSize,
    problems: _Problems,
    progress: Callable[[int], None] | None,
) -> list[np.ndarray | None]:
    decoded: list[np.ndarray | None] = []
    for name, _ in entries:
        try:
            decoded.append(images.load(root / name, size, name))
        except ImageError as error:
            reason = str(error).split(": ", 1)[-1].split(";")[0]
            problems.add(reason, name)
            decoded.append(None)
        if progress:
            progress(1)
    return decoded


def typical_size(root: Path, names: Iterable[str], limit: int = 500) -> images.ImageSize:
    """The most common size (as shown: EXIF rotation applied) among the readable headers of the
    first ``limit`` of ``names``: the one survey of a dataset's image size (load_dataset, style.estimate)."""
    sizes: Counter[tuple[int, int]] = Counter()
    for name in itertools.islice(names, limit):
        size = images.upright_size(root / name)
        if size is not None:
            sizes[size] += 1
    if not sizes:
        raise DataError(f"{root}: none of the listed images can be read; check the paths")
    (width, height), _ = sizes.most_common(1)[0]
    if width * height > images.MAX_PIXELS or max(width, height) > images.MAX_SIDE:
        raise DataError(f"{root}: images of {width}x{height} are over the size limits; shrink them")
    return images.ImageSize(int(height), int(width))


def write_labels_csv(path: Path, rows: Iterable[tuple[str, str]]) -> Path:
    """A ``file,label`` CSV as ``read_labels_csv`` reads it, written atomically: the one labels writer."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["file", "label"])
            writer.writerows(rows)

    runs.atomic_write(path, write)
    return path
