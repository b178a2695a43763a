"""Decode any image a user gives into the model's input: grayscale (or RGB) float32 in [0, 1].

This module is on the inference path: it must not import TensorFlow.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from captchalab import files
from captchalab.errors import ImageError

# A captcha is small; anything past these limits is a mistake or an attack.
MAX_PIXELS = 4_000_000
MAX_SIDE = 4096
MAX_BYTES = 10 * 1024 * 1024
# The only formats Pillow may decode, as the error message names them: Image.open without a list
# tries some forty plugins, EPS among them, which runs Ghostscript. Folders list these suffixes.
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP")
SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp")
EXIF_ORIENTATION = 0x0112
WHITE = 255.0  # a uint8 pixel's top value: the models see pixel / WHITE
LUMA = (0.299, 0.587, 0.114)  # grey from red, green and blue as Pillow's "L" conversion weighs them (ITU-R 601-2)


@dataclass(frozen=True)
class ImageSize:
    """The model's input: height and width in pixels, and 1 (grey) or 3 (RGB colour) channels."""

    height: int
    width: int
    channels: int = 1

    def __str__(self) -> str:
        return f"{self.width}x{self.height}"

    @property
    def mode(self) -> str:
        """How its pixels are read, in words: "grayscale" or "RGB"."""
        return "grayscale" if self.channels == 1 else "RGB"

    @classmethod
    def parse(cls, text: str) -> ImageSize:
        """``"160x60"`` (width x height, like most image tools print it)."""
        try:
            width, height = (int(part) for part in text.lower().split("x"))
        except ValueError:
            raise ImageError(f"image size '{text}' is not WIDTHxHEIGHT, e.g. 160x60") from None
        if not (8 <= width <= MAX_SIDE and 8 <= height <= MAX_SIDE):
            raise ImageError(f"image size '{text}' is outside 8..{MAX_SIDE} pixels per side")
        return cls(height, width)


def open_image(
    source: str | Path | bytes,
    name: str | None = None,
    max_bytes: int = MAX_BYTES,
    max_pixels: int = MAX_PIXELS,
    max_side: int = MAX_SIDE,
) -> Image.Image:
    """Open and fully decode an image, enforcing size limits before decoding pixels."""
    label = name or (str(source) if not isinstance(source, bytes) else "<upload>")
    data = _read_bytes(source, label, max_bytes)
    if not data:
        raise ImageError(f"{label}: the file is empty; remove it or replace it with an image")
    if len(data) > max_bytes:
        raise ImageError(f"{label}: {len(data)} bytes is over the {max_bytes}-byte limit; shrink or re-compress it")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=FORMATS)
            _check_dimensions(image, label, max_pixels, max_side)
            image.seek(0)  # first frame of animations
            image.load()
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(
            f"{label}: too many pixels to decode safely (over {max_pixels}, or {max_side} per side); "
            "crop or shrink it"
        ) from None
    except UnidentifiedImageError:
        raise ImageError(
            f"{label}: not a readable image (PNG, JPEG, GIF, BMP or WebP expected); "
            "remove it or re-save it"
        ) from None
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        raise ImageError(f"{label}: the image is damaged ({error}); remove it or re-save it") from None
    return image


def _read_bytes(source: str | Path | bytes, label: str, max_bytes: int) -> bytes:
    if isinstance(source, bytes):
        return source
    try:
        return files.read_bytes(source, max_bytes, ImageError, label, fix="shrink or re-compress it")
    except OSError as problem:
        raise ImageError(files.unreadable(problem, label, "give the image's path")) from None


def upright_size(path: Path) -> tuple[int, int] | None:
    """(width, height) as the image is shown (EXIF rotation applied), from its header only;
    None when it cannot be read. For choosing a dataset's typical size without decoding it."""
    try:
        data = _read_bytes(path, str(path), MAX_BYTES)
        with warnings.catch_warnings(), Image.open(io.BytesIO(data), formats=FORMATS) as image:
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # decoding checks it
            turned = image.getexif().get(EXIF_ORIENTATION, 1) in (5, 6, 7, 8)  # shown turned 90 degrees
            return image.size[::-1] if turned else image.size
    except (ImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def _check_dimensions(image: Image.Image, label: str, max_pixels: int, max_side: int) -> None:
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageError(f"{label}: the image has no pixels")
    if width > max_side or height > max_side or width * height > max_pixels:
        raise ImageError(
            f"{label}: {width}x{height} pixels is over the limit "
            f"({max_side} per side, {max_pixels} in all); crop or shrink it"
        )


def to_grayscale(image: Image.Image) -> Image.Image:
    """Any mode to 8-bit grayscale; transparency is composited on white, EXIF rotation applied."""
    return _flattened(image).convert("L")


def to_rgb(image: Image.Image) -> Image.Image:
    """Any mode to 8-bit RGB, as ``to_grayscale`` reads it (transparency on white, EXIF rotation)."""
    return _flattened(image).convert("RGB")


def _flattened(image: Image.Image) -> Image.Image:
    """Upright, transparency composited on white, wide grey modes scaled to 8 bits."""
    image = ImageOps.exif_transpose(image) or image
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    if image.mode.startswith(("I", "F")):
        image = Image.fromarray(_wide_to_uint8(np.asarray(image, dtype=np.float64), image.mode))
    return image


def _wide_to_uint8(array: np.ndarray, mode: str) -> np.ndarray:
    """16-bit, 32-bit or float gray to 8 bits, scaled by the mode's range as viewers do.

    A 32-bit or float image has no fixed range: the first of 0..1 (float), 0..255 and 0..65535
    that holds its values is taken, else its own min..max.
    """
    tops = (65535.0,) if mode.startswith("I;16") else (1.0, 255.0, 65535.0) if mode == "F" else (255.0, 65535.0)
    low, high = float(array.min()), float(array.max())
    for top in tops:
        if low >= 0 and high <= top:
            return np.round(array * (255 / top)).astype(np.uint8)
    return np.round((array - low) / ((high - low) or 1.0) * 255).astype(np.uint8)


def prepare(image: Image.Image, size: ImageSize) -> np.ndarray:
    """Grayscale (or RGB, for 3 channels), resized to ``size``: uint8 (height, width) or (height, width, 3)."""
    converted = to_grayscale(image) if size.channels == 1 else to_rgb(image)
    if converted.size != (size.width, size.height):
        converted = converted.resize((size.width, size.height), Image.Resampling.BILINEAR)
    return np.asarray(converted, dtype=np.uint8)


def preprocessing(size: ImageSize) -> str:
    """What ``prepare`` does, in words (config.json records it)."""
    return f"{size.mode}, alpha on white, bilinear resize, /255"


def resize_pixels(pixels: np.ndarray, size: ImageSize) -> np.ndarray:
    """uint8 (n, h, w[, 3]) to size.height x size.width, as ``prepare`` would have resized."""
    target = (size.width, size.height)
    return np.stack([np.asarray(Image.fromarray(p).resize(target, Image.Resampling.BILINEAR)) for p in pixels])


def load(source: str | Path | bytes, size: ImageSize, name: str | None = None) -> np.ndarray:
    """Open, validate and prepare one image: uint8 (height, width)."""
    return prepare(open_image(source, name), size)


def to_model_input(batch: np.ndarray) -> np.ndarray:
    """uint8 (n, h, w) or (n, h, w, 3) to float32 (n, h, w, channels) in [0, 1], the models' input convention."""
    return scaled(batch.astype(np.float32))


def scaled(batch: Any) -> Any:
    """A batch of float pixel values in 0..255, grey (n, h, w) or colour (n, h, w, 3), to the models'
    (n, h, w, channels) in [0, 1]: the one place the convention is written. Any array with
    ``[..., None]`` and ``/`` (NumPy, or a TensorFlow tensor in the training pipeline, which keeps
    uint8 images in memory and converts each batch)."""
    return (batch[..., None] if len(batch.shape) == 3 else batch) / WHITE
