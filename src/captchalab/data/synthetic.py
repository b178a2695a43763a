"""Synthetic captchas from the PyPI ``captcha`` generator, reproducible by seed.

``captcha`` 0.7 draws every random choice from :mod:`secrets`, which cannot be seeded.
We hand its module a drop-in object with the same three functions backed by a seeded
:class:`random.Random`, for the duration of one render.
"""

from __future__ import annotations

import csv
import random
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from captcha import image as captcha_image
from PIL import Image

from captchalab.charset import Charset
from captchalab.data.images import ImageSize
from captchalab.errors import UsageError

DEFAULT_SIZE = ImageSize(height=60, width=160)
_PATCH_LOCK = threading.Lock()


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


def parse_length(length: int | str) -> tuple[int, int]:
    """``5`` or ``"4-6"`` to an inclusive (min, max) range."""
    text = str(length)
    try:
        low, _, high = text.partition("-")
        bounds = (int(low), int(high or low))
    except ValueError:
        raise UsageError(f"length '{text}' is not a number or a range like 4-6") from None
    if not 1 <= bounds[0] <= bounds[1] <= 32:
        raise UsageError(f"length '{text}' must be between 1 and 32, low-high")
    return bounds


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
        self.lengths = parse_length(length)
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
) -> Path:
    """Write ``count`` captchas and ``labels.csv`` to a new folder ``out``."""
    if count < 1:
        raise UsageError(f"--count must be at least 1, got {count}")
    folder = _new_folder(Path(out))
    size = ImageSize.parse(size) if isinstance(size, str) else size
    renderer = Renderer(Charset.parse(charset), length, size, seed)
    rows = []
    for i in range(count):
        text, image = renderer.sample()
        name = f"{i:06d}.png"
        image.save(folder / name)
        rows.append((name, text))
        if progress:
            progress(1)
    with open(folder / "labels.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "label"])
        writer.writerows(rows)
    return folder


def _new_folder(folder: Path) -> Path:
    from captchalab.runs import claim_folder

    return claim_folder(folder, advice="choose a new folder")
