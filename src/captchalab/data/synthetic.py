"""Synthetic captchas from the PyPI ``captcha`` generator, reproducible by seed.

``captcha`` 0.7 draws every random choice from :mod:`secrets`, which cannot be seeded.
We hand its module a drop-in object with the same three functions backed by a seeded
:class:`random.Random`, for the duration of one render.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import multiprocessing
import os
import random
import shutil
import signal
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Protocol

from captcha import image as captcha_image
from PIL import Image
from pydantic import BaseModel, Field, ValidationError

from captchalab import files
from captchalab.charset import Charset, parse_length
from captchalab.data.folder import write_labels_csv
from captchalab.data.images import ImageSize
from captchalab.errors import Interrupted, RunFolderError, UsageError

DEFAULT_SIZE = ImageSize(height=60, width=160)
_PATCH_LOCK = threading.Lock()
PARTIAL = ".partial"  # an unfinished set is written to ".OUT.partial" beside OUT, renamed when complete
PROGRESS = "progress.json"  # in the partial folder: the options, images done, the generator's state
ROWS = "labels.partial.csv"  # in the partial folder: labels of the images done, appended at checkpoints
CHECKPOINT_EVERY = 50


class _SeededSecrets:
    """The subset of :mod:`secrets` that ``captcha.image`` calls, made deterministic."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def randbelow(self, n: int) -> int:
        return self._rng.randrange(n)

    def randbits(self, k: int) -> int:
        return self._rng.getrandbits(k)

    def choice(self, seq: Sequence):  # type: ignore[no-untyped-def]
        return self._rng.choice(seq)


@contextmanager
def _seeded(rng: random.Random) -> Iterator[None]:
    with _PATCH_LOCK:
        original = captcha_image.secrets
        captcha_image.secrets = _SeededSecrets(rng)  # type: ignore[assignment]
        try:
            yield
        finally:
            captcha_image.secrets = original


def length_bounds(length: int | str) -> tuple[int, int]:
    """The (least, most) label lengths to generate, from ``5`` or ``"4-6"`` (charset.parse_length):
    both ends are needed, so "4-" is refused, never read as 4."""
    low, high = parse_length(length)
    if high is None:
        raise UsageError(f"length '{length}' has no upper end; generate needs both, e.g. 4-6")
    if not 1 <= low <= high <= 32:
        raise UsageError(f"length '{length}' must be between 1 and 32, low-high")
    return low, high


class Renderer:
    """Renders labelled captchas; the same seed gives the same images and labels."""

    def __init__(
        self,
        charset: Charset,
        length: int | str = 5,
        size: ImageSize = DEFAULT_SIZE,
        seed: int = 0,
        fonts: list[str] | None = None,
        font_sizes: tuple[int, ...] | None = None,
        lowercase_share: float = 0.0,
    ) -> None:
        """``lowercase_share``: chance that a letter is drawn in lowercase while its label
        keeps the charset's symbol; for case-insensitive models that must read both cases."""
        self.charset = charset
        self.lowercase_share = lowercase_share
        self.lengths = length_bounds(length)
        self.size = size
        self.rng = random.Random(seed)
        sizes = font_sizes or _font_sizes_for(size.height)
        self._generator = captcha_image.ImageCaptcha(size.width, size.height, fonts, sizes)

    def label(self) -> str:
        n = self.rng.randint(*self.lengths)
        return "".join(self.rng.choice(self.charset.symbols) for _ in range(n))

    def render(self, text: str) -> Image.Image:
        if self.lowercase_share:
            text = "".join(ch.lower() if self.rng.random() < self.lowercase_share else ch for ch in text)
        with _seeded(self.rng):
            return self._generator.generate_image(text)

    def sample(self) -> tuple[str, Image.Image]:
        text = self.label()
        return text, self.render(text)


def _font_sizes_for(height: int) -> tuple[int, ...]:
    """The generator's defaults (42, 50, 56) suit 60-pixel images; scale to the height."""
    return tuple(max(8, round(s * height / 60)) for s in (42, 50, 56))


def generate(
    out: str | Path,
    count: int,
    length: int | str = 5,
    charset: str = "0-9A-Z",
    size: ImageSize | str = DEFAULT_SIZE,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
    force: bool = False,
    workers: int | Workers = 0,
) -> Path:
    """Write ``count`` captchas and ``labels.csv`` to a new folder ``out`` (see ``write_set``); ``workers``
    processes render them (0: one per core), or Ray tasks, the same images whatever renders them."""
    if count < 1:
        raise UsageError(f"--count must be at least 1, got {count}")
    size = ImageSize.parse(size) if isinstance(size, str) else size
    renderer = Renderer(Charset.parse(charset), length, size, seed)
    recipe = {"generator": "captcha", "count": count, "length": str(length), "charset": charset,
              "size": str(size), "seed": seed}
    return write_set(Path(out), renderer, count, recipe, progress, force, workers=workers)


class Sampler(Protocol):
    """A renderer whose every random choice comes from ``rng``: its state is the set's progress."""

    rng: random.Random

    def sample(self) -> tuple[str, Image.Image]: ...


class _Progress(BaseModel):
    recipe: dict[str, Any]
    done: Annotated[int, Field(ge=0)]
    rng: tuple[int, tuple[int, ...], float | None]


@dataclass(frozen=True)
class Workers:
    """What renders the images: ``count`` local processes (0: one per core), or with ``ray`` Ray
    tasks on the cluster at ``address`` (None: a local Ray), which send each chunk's PNG files back
    to be written here (the nodes need no shared disk)."""

    count: int = 0
    ray: bool = False
    address: str | None = None


def write_set(
    out: Path, sampler: Sampler, count: int, recipe: dict[str, Any],
    progress: Callable[[int], None] | None = None, force: bool = False, extra: dict[str, str] | None = None,
    workers: int | Workers = 0,
) -> Path:
    """Write ``count`` samples, ``labels.csv`` and ``extra`` files to the new folder ``out``.

    Everything goes to a hidden sibling, ``.OUT.partial``, renamed to ``out`` once complete: an
    interrupted run never leaves a folder that passes for a dataset (images without labels.csv
    would be read with their file names as labels). Every CHECKPOINT_EVERY images the labels so
    far are saved, so a rerun with the same ``recipe`` (the options) continues with exactly the
    images a single run would have made; ``force`` starts over. Image ``i`` is drawn from a
    generator seeded by (recipe's seed, i) alone, so ``workers`` processes (0: one per core) or
    Ray tasks make the same images as one.
    """
    if getattr(multiprocessing.current_process(), "_inheriting", False):  # a worker importing a script's main
        raise RuntimeError("generate called while a worker process starts; see UsageError in _rendered")
    _check_new(out)
    partial = out.parent / f".{out.name}{PARTIAL}"
    recipe = json.loads(json.dumps(recipe))  # as it reads back from progress.json
    rows = _restart(partial, recipe, sampler, force)
    if progress and rows:
        progress(len(rows))
    pending: list[tuple[str, str]] = []
    chunks = [(partial, recipe.get("seed", 0), start, min(start + CHECKPOINT_EVERY, count))
              for start in range(len(rows), count, CHECKPOINT_EVERY)]
    try:
        workers = workers if isinstance(workers, Workers) else Workers(workers)
        rendered = _rendered_on_ray(sampler, chunks, workers.address) if workers.ray else \
            _rendered(sampler, chunks, workers.count)
        for made in rendered:
            if progress:
                progress(len(made))
            pending += made
            _checkpoint(partial, recipe, rows, pending, sampler.rng)
    except KeyboardInterrupt:
        raise Interrupted(f"{len(rows)} of {count} images kept in {partial}; run the same command again to "
                          "continue, or add --force to start over") from None
    rows += pending
    for name, text in (extra or {}).items():
        (partial / name).write_text(text, encoding="utf-8")
    write_labels_csv(partial / "labels.csv", rows)
    for name in (PROGRESS, ROWS):
        (partial / name).unlink(missing_ok=True)
    _check_new(out)  # nothing appeared there meanwhile
    try:
        os.replace(partial, out)  # an empty folder at ``out`` is replaced; a non-empty one refuses
    except OSError as error:
        raise RunFolderError(f"{out}: cannot create it ({error.strerror}); choose another folder") from None
    return out


Chunk = tuple[Path, int, int, int]  # folder, seed, first image, end
_WORKER_SAMPLER: list[Sampler] = []  # in a worker process: its copy of the sampler


def _rendered(sampler: Sampler, chunks: list[Chunk], workers: int) -> Iterator[list[tuple[str, str]]]:
    """Each chunk's (file, label) rows, in order: in this process, or in a pool of ``workers``."""
    workers = min(workers or os.cpu_count() or 1, len(chunks))
    if workers <= 1:
        for chunk in chunks:
            yield _render_chunk(sampler, chunk)
        return
    # Spawned, not forked (TensorFlow or threads may live in this process), and started with SIGINT
    # ignored, which they keep: Ctrl-C reaches this process alone. A bounded queue keeps memory flat.
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(workers, context, _start_worker, (sampler,))
    ahead: deque[Future[list[tuple[str, str]]]] = deque()
    queue = iter(chunks)
    try:
        with _sigint_ignored():  # the workers start with the first submissions
            ahead.extend(pool.submit(_render_in_worker, c) for c in itertools.islice(queue, 2 * workers))
        while ahead:
            yield ahead.popleft().result()
            ahead.extend(pool.submit(_render_in_worker, c) for c in itertools.islice(queue, 1))
    except BrokenProcessPool:
        raise UsageError("generate's worker processes could not start; from a script, call generate under "
                         "'if __name__ == \"__main__\":' (they import the script), or pass workers=1") from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # the chunks running finish: at most one each


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():  # signals belong to the main thread
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _start_worker(sampler: Sampler) -> None:
    _WORKER_SAMPLER[:] = [sampler]


def _render_in_worker(chunk: Chunk) -> list[tuple[str, str]]:
    return _render_chunk(_WORKER_SAMPLER[0], chunk)


def _rendered_on_ray(sampler: Sampler, chunks: list[Chunk], address: str | None) -> Iterator[list[tuple[str, str]]]:
    """Each chunk's rows, in order, rendered by Ray tasks; their PNG files are written here."""
    import ray

    from captchalab.cluster import connect

    connect(address)
    shared = ray.put(sampler)
    task = ray.remote(_encode_chunk)
    ahead: deque[Any] = deque()
    queue = iter(chunks)
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    ahead.extend(task.remote(shared, c) for c in itertools.islice(queue, 2 * cpus))
    try:
        while ahead:
            rows = []
            try:
                made = ray.get(ahead.popleft())
            except ray.exceptions.RayError as error:  # e.g. a node without captchalab or the fonts
                raise UsageError(f"a Ray task failed to render images ({str(error).splitlines()[0]}); every node "
                                 "needs captchalab with the same extras installed") from None
            for name, text, png in made:
                (chunks[0][0] / name).write_bytes(png)
                rows.append((name, text))
            yield rows
            ahead.extend(task.remote(shared, c) for c in itertools.islice(queue, 1))
    finally:
        for pending in ahead:  # interrupted: the chunks not yet written are not wanted
            ray.cancel(pending)


def _drawn(sampler: Sampler, seed: int, i: int) -> tuple[str, str, Image.Image]:
    """Image ``i``: (file name, label, image); its draws depend on (seed, i) alone."""
    sampler.rng.seed(f"captchalab/{seed}/{i}")
    text, image = sampler.sample()
    return f"{i:06d}.png", text, image


def _render_chunk(sampler: Sampler, chunk: Chunk) -> list[tuple[str, str]]:
    folder, seed, start, end = chunk
    rows = []
    for i in range(start, end):
        name, text, image = _drawn(sampler, seed, i)
        image.save(folder / name)
        rows.append((name, text))
    return rows


def _encode_chunk(sampler: Sampler, chunk: Chunk) -> list[tuple[str, str, bytes]]:
    """A chunk as (file name, label, PNG bytes): what a Ray task sends back (nodes share no disk)."""
    _, seed, start, end = chunk
    encoded = []
    for i in range(start, end):
        name, text, image = _drawn(sampler, seed, i)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        encoded.append((name, text, buffer.getvalue()))
    return encoded


def _check_new(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"{out}: exists and is a file; choose another folder")
    if out.is_dir() and any(out.iterdir()):
        raise RunFolderError(f"{out}: already holds files; choose a new folder")


def _restart(partial: Path, recipe: dict[str, Any], sampler: Sampler, force: bool) -> list[tuple[str, str]]:
    """The rows already made by an interrupted run of ``recipe`` (the sampler set to go on after
    them); an empty list for a fresh start."""
    if force or (partial.is_dir() and not (partial / PROGRESS).exists()):
        shutil.rmtree(partial, ignore_errors=True)  # ours, hidden, and never a finished set
    if not partial.exists():
        try:
            partial.mkdir(parents=True)
        except OSError as error:
            raise RunFolderError(f"{partial}: cannot create it ({error.strerror}); choose another folder") from None
        return []
    fix = "pass --force to start over"
    try:
        saved = _Progress.model_validate(files.read_json(partial / PROGRESS, RunFolderError, fix))
    except ValidationError as problem:
        raise RunFolderError(f"{partial / PROGRESS}: damaged ({files.describe(problem)}); {fix}") from None
    if saved.recipe != recipe:
        raise RunFolderError(f"{partial}: holds an interrupted generate with other options; rerun it with the "
                             f"same options to continue, or {fix}")
    with open(partial / ROWS, newline="", encoding="utf-8") as handle:
        rows = [(row[0], row[1]) for row in csv.reader(handle) if len(row) == 2][: saved.done]
    if len(rows) != saved.done:
        raise RunFolderError(f"{partial / ROWS}: has fewer rows than {PROGRESS} says; {fix}")
    with open(partial / ROWS, "w", newline="", encoding="utf-8") as handle:  # drop rows past the checkpoint
        csv.writer(handle, lineterminator="\n").writerows(rows)
    sampler.rng.setstate(saved.rng)
    return rows


def _checkpoint(partial: Path, recipe: dict[str, Any], rows: list[tuple[str, str]],
                pending: list[tuple[str, str]], rng: random.Random) -> None:
    """Append the pending rows, then record how far the set is (a kill between the two leaves
    extra rows, which the progress count ignores)."""
    with open(partial / ROWS, "a", newline="", encoding="utf-8") as handle:
        csv.writer(handle, lineterminator="\n").writerows(pending)
    rows += pending
    pending.clear()
    state = {"recipe": recipe, "done": len(rows), "rng": rng.getstate()}
    tmp = partial / f"{PROGRESS}.tmp"
    tmp.write_text(json.dumps(state), encoding="utf-8")
    os.replace(tmp, partial / PROGRESS)
