"""Style-matched synthetic captchas: estimate a target set's look, render look-alikes.

``estimate(DATA)`` measures what a few hundred (or a few dozen) images and labels reveal
about a captcha: image size, label lengths, charset, background and text colours, the
text box (height, position, width per character), stroke width and clutter. ``LookAlike``
renders new labelled images with those properties from the fonts installed on this
machine, mixing Pillow drawing (per-character jitter, rotation, lines, arcs, dots, stroke
texture, a sine warp) with the PyPI ``captcha`` generator. Every random choice comes from
one seeded generator: the same seed gives the same images.

The fonts are matched by simulation: each candidate font is rendered cleanly and measured
with the same code that measured the target, and the fonts whose stroke width and
character width (relative to the text height) come closest are used, at the size that
reproduces the target's text height.
"""

from __future__ import annotations

import json
import math
import random
import string
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageFont

from captchalab.charset import Charset
from captchalab.data import images
from captchalab.data.folder import list_entries, typical_size
from captchalab.data.ink import closing, otsu_threshold
from captchalab.data.synthetic import Workers, length_bounds
from captchalab.errors import DataError, ImageError, UsageError

RGB = tuple[int, int, int]
PROFILE_POINTS = 8  # background colour sampled at this many points from left to right
MAX_PALETTE = 32
FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "~/.fonts", "~/.local/share/fonts",
             "/Library/Fonts", "/System/Library/Fonts", "C:/Windows/Fonts")
MAX_FONTS_SCANNED = 300
CAPTCHA_GENERATOR_SHARE = 0.2  # share of images drawn by the PyPI captcha generator


# --------------------------------------------------------------------------- measuring


@dataclass(frozen=True)
class Measure:
    """What one image shows: geometry in pixels, colours in RGB."""

    text_height: float
    text_center: float  # vertical centre of the text band
    text_left: float
    text_right: float
    stroke: float  # mean stroke width, 2 * ink area / ink perimeter inside the text box
    clutter: float  # share of ink outside the text box (lines, dots)
    speckle: float  # share of ink pixels with at most one inked 4-neighbour (texture, dots)
    text_colour: RGB
    background: tuple[RGB, ...]  # PROFILE_POINTS colours, left to right


def as_rgb(image: Image.Image) -> np.ndarray:
    """float32 (h, w, 3) in 0..255; transparency composited on white, as the models see it."""
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return np.asarray(image.convert("RGB"), dtype=np.float32)


def _background(rgb: np.ndarray) -> np.ndarray:
    """Per-column background colour (w, 3): the median of the top and bottom rows, where text
    rarely reaches, smoothed across columns."""
    rows = max(1, round(0.15 * rgb.shape[0]))
    columns = np.median(np.concatenate([rgb[:rows], rgb[-rows:]]), axis=0)
    window = max(1, rgb.shape[1] // 10)
    kernel = np.ones(window) / window
    padded = np.pad(columns, ((window // 2, window - 1 - window // 2), (0, 0)), mode="edge")
    return np.stack([np.convolve(padded[:, c], kernel, mode="valid") for c in range(3)], axis=1)


def ink_mask(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ink mask (h, w) bool, per-column background (w, 3)) of one image."""
    background = _background(rgb)
    diff = np.abs(rgb - background[None]).max(axis=2)
    threshold = max(24.0, otsu_threshold(diff, top=255.0))
    return diff > threshold, background


def _band(counts: np.ndarray, share: float = 0.3) -> tuple[int, int]:
    """First and last index whose (smoothed) ink count reaches ``share`` of the 90th percentile."""
    smooth = np.convolve(counts, np.ones(3) / 3, mode="same")
    level = share * max(1e-6, float(np.percentile(smooth[smooth > 0], 90)) if (smooth > 0).any() else 1.0)
    above = np.flatnonzero(smooth >= level)
    if len(above) == 0:
        return 0, len(counts) - 1
    return int(above[0]), int(above[-1])


def _stroke(mask: np.ndarray) -> float:
    """Mean stroke width, 2 * area / perimeter, of the closed ink."""
    mask = closing(mask)
    area = float(mask.sum())
    edges = float((mask[:, 1:] != mask[:, :-1]).sum() + (mask[1:] != mask[:-1]).sum())
    return 2 * area / edges if edges else 0.0


def _speckle(mask: np.ndarray) -> float:
    padded = np.pad(mask, 1)
    neighbours = (padded[:-2, 1:-1].astype(int) + padded[2:, 1:-1] + padded[1:-1, :-2] + padded[1:-1, 2:])
    ink = float(mask.sum())
    return float((mask & (neighbours <= 1)).sum()) / ink if ink else 0.0


def measure(rgb: np.ndarray) -> Measure | None:
    """Measure one image; None when it shows no ink at all."""
    mask, background = ink_mask(rgb)
    if mask.sum() < 10:
        return None
    left, right = _band(mask.sum(axis=0))
    top, bottom = _band(mask[:, left : right + 1].sum(axis=1))
    box = mask[top : bottom + 1, left : right + 1]
    diff = np.abs(rgb - background[None]).max(axis=2)
    strong = mask & (diff >= np.median(diff[mask]))
    points = np.linspace(0, rgb.shape[1] - 1, PROFILE_POINTS).round().astype(int)
    return Measure(
        text_height=float(bottom - top + 1), text_center=(top + bottom) / 2,
        text_left=float(left), text_right=float(right), stroke=_stroke(box),
        clutter=1.0 - float(box.sum()) / float(mask.sum()), speckle=_speckle(mask),
        text_colour=_colour(np.median(rgb[strong], axis=0)),
        background=tuple(_colour(background[p]) for p in points),
    )


def _colour(values: Sequence[float] | np.ndarray) -> RGB:
    r, g, b = (round(float(v)) for v in values)
    return (r, g, b)


# --------------------------------------------------------------------------- the style


@dataclass(frozen=True)
class Style:
    """A captcha style: what look-alike rendering needs. Saved as style.json beside the images."""

    width: int
    height: int
    charset: str
    lengths: dict[int, float]  # label length -> share
    text_height: float  # medians over the measured images, in pixels
    text_center: float
    text_left: float
    text_right: float
    char_width: float  # (right - left) / label length
    stroke: float
    clutter: float
    speckle: float
    spread: dict[str, float] = field(default_factory=dict)  # standard deviations of the above
    text_colours: tuple[RGB, ...] = ((0, 0, 0),)
    backgrounds: tuple[tuple[RGB, ...], ...] = (((255, 255, 255),) * PROFILE_POINTS,)
    images_measured: int = 0
    # The case the glyphs are drawn in, the labels keep theirs: "labels" (as written), "upper",
    # "lower", or "both" (each letter either way) where labels in one case may not show the glyphs'
    # (a site that ignores case: lower-case labels of upper-case glyphs). See glyph_case().
    glyph_case: str = "labels"

    @property
    def glyphs(self) -> str:
        """Every symbol the look-alikes draw: the charset in the glyph case."""
        return _in_case(self.charset, self.glyph_case, None)

    @property
    def size(self) -> images.ImageSize:
        return images.ImageSize(self.height, self.width)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["lengths"] = {str(k): v for k, v in self.lengths.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Style:
        try:
            values = dict(data)
            values["lengths"] = {int(k): float(v) for k, v in data["lengths"].items()}
            values["text_colours"] = tuple(tuple(int(v) for v in c) for c in data["text_colours"])
            values["backgrounds"] = tuple(tuple(tuple(int(v) for v in c) for c in p) for p in data["backgrounds"])
            if values.get("glyph_case", "labels") not in GLYPH_CASES:
                raise ValueError(f"glyph_case must be one of {', '.join(GLYPH_CASES)}")
            return cls(**values)
        except (KeyError, TypeError, ValueError) as error:
            raise DataError(f"style description is invalid ({error}); estimate it again") from None


def estimate(data: str | Path, sample: int = 300, seed: int = 0) -> Style:
    """Estimate the style of a labelled dataset (folder or CSV) from up to ``sample`` images."""
    root, entries = list_entries(data)
    labels = [label for _, label in entries if label]
    if not labels:
        raise DataError(f"{data}: no labels to learn the charset and lengths from")
    picked = random.Random(seed).sample(entries, min(sample, len(entries)))
    size, measures = _measured([root / name for name, _ in picked], data)
    lengths = Counter(len(label) for label in labels)
    style = _summarize(measures, size, Charset.from_labels(labels).symbols,
                       {k: v / len(labels) for k, v in sorted(lengths.items())},
                       float(np.mean([len(label) for label in labels])))
    labelled = [(root / name, label) for name, label in picked if label]
    return replace(style, glyph_case=glyph_case(labelled, size))


def estimate_unlabelled(paths: Sequence[Path], length: int | str, charset: str, sample: int = 300,
                        seed: int = 0) -> Style:
    """The style of unlabelled images: what they show is measured, lengths (uniform over ``length``,
    "5" or "4-6") and ``charset`` are what the caller knows of the labels."""
    if not paths:
        raise DataError("no images to estimate the style from")
    picked = random.Random(seed).sample(list(paths), min(sample, len(paths)))
    size, measures = _measured(picked, Path(picked[0]).parent)
    low, high = length_bounds(length)
    lengths = {k: 1.0 / (high - low + 1) for k in range(low, high + 1)}
    return _summarize(measures, size, Charset.parse(charset).symbols, lengths, (low + high) / 2)


def _measured(paths: Sequence[Path], source: str | Path) -> tuple[images.ImageSize, list[Measure]]:
    """The typical size of ``paths`` and the measures of those that show text."""
    size = typical_size(Path(source), (str(Path(p).absolute()) for p in paths))  # absolute: the root names only
    measures = [m for m in (_measure_file(Path(p), size) for p in paths) if m is not None]
    if not measures:
        raise DataError(f"{source}: none of the images could be read or shows any text")
    return size, measures


def _measure_file(path: Path, size: images.ImageSize) -> Measure | None:
    image = _open_at(path, size)
    return None if image is None else measure(as_rgb(image))


def _summarize(
    measures: list[Measure], size: images.ImageSize, charset: str, lengths: dict[int, float], mean_length: float
) -> Style:
    def column(name: str) -> np.ndarray:
        return np.array([getattr(m, name) for m in measures], dtype=np.float64)

    widths = (column("text_right") - column("text_left") + 1) / mean_length
    stats = {name: column(name) for name in ("text_height", "text_center", "text_left", "text_right",
                                              "stroke", "clutter", "speckle")}
    stats["char_width"] = widths
    medians = {name: float(np.median(values)) for name, values in stats.items()}
    spread = {name: float(np.std(values)) for name, values in stats.items()}
    return Style(width=size.width, height=size.height, charset=charset, lengths=lengths, spread=spread,
                 text_colours=_palette([m.text_colour for m in measures]),
                 backgrounds=_palette([m.background for m in measures]),
                 images_measured=len(measures), **medians)


# --------------------------------------------------------------------------- the glyphs' case

GLYPH_CASES = ("labels", "upper", "lower", "both")  # "upper": only from a hand-edited style.json
CASE_EVIDENCE = 0.4  # correlation that says the glyphs rise and fall as lower-case letters would
CASE_MIN_IMAGES = 30


def glyph_case(labelled: Sequence[tuple[Path, str]], size: images.ImageSize) -> str:
    """The case to draw look-alike glyphs in, from images and their labels.

    Labels with letters of both cases show the glyphs' case: "labels". Where the letters are all
    of one case, the images decide: lower-case glyphs reach above and below the text's core
    (b, d, g, p, ...) where the label has such letters, so where the ink's reach above and
    below the core follows the reach of the labels drawn in lower case in clean fonts, the
    glyphs are lower case. Upper-case labels are then "lower", lower-case ones "labels". Without
    that evidence upper-case labels are believed ("labels"), but lower-case ones are not: a
    site that ignores case may label upper-case glyphs in lower case (issue 12, set B), and a
    generator that scales every glyph to one height hides lower case just as well, so both
    cases are drawn ("both").
    """
    letters = "".join(ch for _, label in labelled for ch in label if ch.isalpha())
    if not letters or (letters != letters.lower() and letters != letters.upper()):
        return "labels"
    lower_labels = letters == letters.lower()
    if _looks_lower_case(labelled, size):
        return "labels" if lower_labels else "lower"
    return "both" if lower_labels else "labels"


def _looks_lower_case(labelled: Sequence[tuple[Path, str]], size: images.ImageSize) -> bool:
    fonts = _reference_fonts()
    seen, expected = [], []
    for path, label in labelled:
        image = _open_at(path, size)
        reach = None if image is None else _reach(as_rgb(image))
        if reach is None or not fonts:
            continue
        drawn = [_reach(_draw_plain(font, label.lower())) for font in fonts]
        if any(r is None for r in drawn):
            continue
        seen.append(reach)
        expected.append(np.mean(drawn, axis=0))
    if len(seen) < CASE_MIN_IMAGES:
        return False
    seen_, expected_ = np.array(seen), np.array(expected)
    correlations = [np.corrcoef(seen_[:, k], expected_[:, k])[0, 1] for k in range(2)
                    if seen_[:, k].std() > 1e-6 and expected_[:, k].std() > 1e-6]
    return bool(correlations) and max(correlations) >= CASE_EVIDENCE


def _reach(rgb: np.ndarray) -> np.ndarray | None:
    """How far the ink reaches above and below the rows most letters cover, per core height."""
    mask, _ = ink_mask(rgb)
    if mask.sum() < 10:
        return None
    left, right = _band(mask.sum(axis=0))
    rows = np.convolve(mask[:, left : right + 1].sum(axis=1).astype(float), np.ones(3) / 3, mode="same")
    peak = float(np.percentile(rows[rows > 0], 90))
    reached, core = np.flatnonzero(rows >= 0.08 * peak), np.flatnonzero(rows >= 0.5 * peak)
    height = max(1, core[-1] - core[0] + 1)
    return np.array([(core[0] - reached[0]) / height, (reached[-1] - core[-1]) / height])


def _draw_plain(font: ImageFont.FreeTypeFont, text: str) -> np.ndarray:
    image = Image.new("RGB", (font.size * len(text) + 2 * font.size, 3 * font.size), (255, 255, 255))
    ImageDraw.Draw(image).text((font.size, font.size // 2), text, font=font, fill=(0, 0, 0))
    return np.asarray(image, dtype=np.float32)


def _open_at(path: Path, size: images.ImageSize) -> Image.Image | None:
    try:
        image = images.open_image(path)
    except ImageError:
        return None
    if image.size != (size.width, size.height):
        image = image.convert("RGBA").resize((size.width, size.height), Image.Resampling.BILINEAR)
    return image


def _reference_fonts(count: int = 3, size: int = 48) -> list[ImageFont.FreeTypeFont]:
    """The first ``count`` installed fonts that draw every letter in both cases."""
    found = []
    for path in installed_fonts():
        try:
            font = _font(path, size)
        except OSError:
            continue
        if _covers(font, string.ascii_letters):
            found.append(font)
            if len(found) == count:
                break
    return found


def _in_case(text: str, case: str, rng: random.Random | None) -> str:
    """``text`` drawn in ``case``; "both" turns each letter either way (with ``rng``), or, without
    one, gives every symbol in both cases (a charset)."""
    if case == "upper":
        return text.upper()
    if case == "lower":
        return text.lower()
    if case == "both":
        if rng is None:
            return "".join(dict.fromkeys(text + text.upper() + text.lower()))
        return "".join(ch.upper() if rng.random() < 0.5 else ch.lower() for ch in text)
    return text


def _palette(items: Sequence[Any]) -> tuple[Any, ...]:
    """Up to MAX_PALETTE items, spread evenly over the measured images."""
    step = max(1, len(items) // MAX_PALETTE)
    return tuple(items[::step][:MAX_PALETTE])


# --------------------------------------------------------------------------- fonts


@dataclass(frozen=True)
class FontChoice:
    path: str
    size: int  # pixel size that reproduces the target text height
    weight: float


def installed_fonts() -> list[str]:
    """TrueType/OpenType fonts on this machine plus the one the captcha package ships."""
    from captcha import image as captcha_image

    found = [str(Path(captcha_image.__file__).parent / "data" / "DroidSansMono.ttf")]
    for folder in FONT_DIRS:
        base = Path(folder).expanduser()
        if base.is_dir():
            found += sorted(str(p) for p in base.rglob("*") if p.suffix.lower() in (".ttf", ".otf"))
    return [f for f in dict.fromkeys(found) if Path(f).is_file()][:MAX_FONTS_SCANNED]


def _covers(font: ImageFont.FreeTypeFont, charset: str) -> bool:
    """Every symbol has a glyph of its own (not the 'missing glyph' box)."""
    try:
        boxes = {ch: font.getmask(ch).getbbox() for ch in charset}
        missing = font.getmask("\uffff").getbbox()
    except (OSError, ValueError):
        return False
    return all(box is not None for box in boxes.values()) and sum(b == missing for b in boxes.values()) <= 1


def match_fonts(style: Style, fonts: Sequence[str] | None = None, keep: int = 4, seed: int = 0) -> list[FontChoice]:
    """The ``keep`` installed fonts that look most like the target, each at its matching size."""
    key = (json.dumps(style.to_dict(), sort_keys=True), tuple(fonts) if fonts is not None else None, keep, seed)
    if key not in _MATCHED:
        _MATCHED[key] = _match_fonts(style, fonts, keep, seed)
    return list(_MATCHED[key])


_MATCHED: dict[tuple, list[FontChoice]] = {}


def _match_fonts(style: Style, fonts: Sequence[str] | None, keep: int, seed: int) -> list[FontChoice]:
    scored = []
    for path in fonts if fonts is not None else installed_fonts():
        fitted = _fit_font(path, style, seed)
        if fitted is not None:
            scored.append(fitted)
    if not scored:
        raise UsageError("no installed font can draw every symbol of the charset; install a TrueType font")
    scored.sort(key=lambda item: item[0])
    best = scored[:keep]
    return [FontChoice(path, size, 1.0 / (1.0 + 4 * score)) for score, path, size in best]


def _fit_font(path: str, style: Style, seed: int) -> tuple[float, str, int] | None:
    """(distance to the target, path, pixel size) from clean renders measured like the target."""
    probe_size = max(8, round(style.text_height / 0.72))
    try:
        font = ImageFont.truetype(path, probe_size)
    except (OSError, ValueError):
        return None
    if not _covers(font, style.glyphs):
        return None
    rng = random.Random(seed)
    clean = _clean_style(style)
    found = []
    for _ in range(6):
        text = _in_case(_label(style, rng), style.glyph_case, rng)
        sample = measure(as_rgb(_draw_clean(clean, font, text)))
        if sample is not None:
            found.append((sample, len(text)))
    if not found:
        return None
    height = float(np.median([m.text_height for m, _ in found]))
    scale = style.text_height / max(1.0, height)
    stroke = float(np.median([m.stroke for m, _ in found])) * scale / max(1.0, style.text_height)
    char_width = float(np.median([(m.text_right - m.text_left + 1) / n for m, n in found])) * scale
    target_stroke = max(1e-3, style.stroke / max(1.0, style.text_height))
    distance = abs(math.log(max(1e-3, stroke) / target_stroke)) + 0.5 * abs(math.log(char_width / style.char_width))
    return distance, path, max(6, round(probe_size * scale))


def _clean_style(style: Style) -> Style:
    return Style(width=style.width * 3, height=style.height * 2, charset=style.charset, lengths=style.lengths,
                 text_height=style.text_height, text_center=style.height, text_left=style.width / 2,
                 text_right=style.width * 2.5, char_width=style.char_width, stroke=style.stroke,
                 clutter=0.0, speckle=0.0)


def _draw_clean(style: Style, font: ImageFont.FreeTypeFont, text: str) -> Image.Image:
    """Black text at its natural spacing on white, no noise: how a font measures."""
    image = Image.new("RGB", (style.width, style.height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    box = draw.textbbox((0, 0), text, font=font)
    draw.text((style.text_left - box[0], style.text_center - (box[1] + box[3]) / 2), text, font=font, fill=(0, 0, 0))
    return image


def _label(style: Style, rng: random.Random) -> str:
    lengths = list(style.lengths)
    n = rng.choices(lengths, weights=[style.lengths[k] for k in lengths])[0]
    return "".join(rng.choice(style.charset) for _ in range(n))


# --------------------------------------------------------------------------- rendering


@dataclass(frozen=True)
class Effects:
    """Rendering choices that ``estimate`` does not measure. The defaults are the look-alike
    renderer's own look (and draw nothing extra from the generator, so a seed gives the same
    images as before); the wide synthetic world (data/world.py) sets them per image."""

    rotation: float = 10.0  # each character turns by up to this many degrees either way
    char_scale: float = 0.0  # each character's size varies by up to this share either way
    offset: float = 0.04  # vertical jitter of each character, standard deviation / text height
    baseline: bool = False  # characters sit on the font's baseline (keeps p/P, o/O apart) instead of centred
    char_colours: bool = False  # each character in its own colour from the style's text colours
    thicken: bool = False  # strokes one pixel bolder all round
    hollow: int = 0  # outline only: the ink minus its erosion by a square this wide (odd, 0 = solid)
    shadow: tuple[int, int] = (0, 0)  # a darker copy of the text, shifted by (dx, dy) pixels, behind it
    noise: float = 4.0  # per-pixel background noise, standard deviation up to this
    texture: float = 0.0  # smooth blotchy background variation of about this amplitude (grey levels)
    grid: int = 0  # background grid lines every this many pixels (0 = none)


class LookAlike:
    """Renders labelled images in a style; the same seed gives the same images and labels."""

    def __init__(self, style: Style, seed: int = 0, fonts: Sequence[FontChoice] | None = None,
                 generator_share: float = CAPTCHA_GENERATOR_SHARE, effects: Effects | None = None) -> None:
        self.style = style
        self.rng = random.Random(seed)
        self.fonts = list(fonts) if fonts is not None else match_fonts(style, seed=seed)
        self.generator_share = generator_share
        self.effects = effects or Effects()
        self._generator: Any = None

    def sample(self) -> tuple[str, Image.Image]:
        text = _label(self.style, self.rng)
        if self.rng.random() < self.generator_share:
            return text, self._from_generator(text)
        return text, self._draw(text)

    def render(self, text: str) -> Image.Image:
        """``text`` drawn in the style by the look-alike drawing (never the captcha generator)."""
        return self._draw(text)

    def _draw(self, text: str) -> Image.Image:
        s, rng, e = self.style, self.rng, self.effects
        text = _in_case(text, s.glyph_case, rng)
        choice = rng.choices(self.fonts, weights=[f.weight for f in self.fonts])[0]
        mask = Image.new("L", (s.width, s.height), 0)
        spans = self._place_text(mask, text, choice)
        mask = _ink_shape(mask, e)
        self._clutter(mask)
        mask = self._texture(_warp(mask, rng, s.text_height))
        if rng.random() < 0.5:
            mask = mask.filter(ImageFilter.GaussianBlur(rng.uniform(0.2, 0.7)))
        background = self._background()
        colour: RGB | np.ndarray = rng.choice(s.text_colours)
        if e.char_colours:  # by column: the sine warp moves pixels only up and down, so colours stay on their glyph
            colour = _column_colours(s.width, colour, [(x0, x1, rng.choice(s.text_colours)) for x0, x1 in spans])
        if e.shadow != (0, 0):
            shade = np.asarray(colour, dtype=np.float32) * rng.uniform(0.2, 0.6)
            background = np.asarray(_compose(_shifted(mask, e.shadow), background, shade, rng), dtype=np.float32)
        return _compose(mask, background, colour, rng)

    def _place_text(self, mask: Image.Image, text: str, choice: FontChoice) -> list[tuple[int, int]]:
        """Paste the characters into ``mask``; their column spans, left to right."""
        s, rng, e = self.style, self.rng, self.effects
        spread = s.spread.get
        height = _jitter(rng, s.text_height, spread("text_height", 0.0), 0.08 * s.text_height)
        size = max(6, round(choice.size * height / s.text_height))
        glyphs = [self._glyph(choice.path, size, ch) for ch in text]
        width = _jitter(rng, s.char_width, spread("char_width", 0.0), 0.08 * s.char_width) * len(text)
        inked = sum(g.width for g, _ in glyphs)
        gap = max(-0.35 * inked / len(text), (width - inked) / max(1, len(text) - 1)) if len(text) > 1 else 0.0
        x = _jitter(rng, s.text_left, spread("text_left", 0.0), 0.03 * s.width)
        centre = _jitter(rng, s.text_center, spread("text_center", 0.0), 0.03 * s.height)
        spans = []
        for glyph, drop in glyphs:
            y = centre - glyph.height / 2 + drop + rng.gauss(0, e.offset * s.text_height)
            mask.paste(255, (round(x), round(y)), glyph)
            spans.append((round(x), round(x) + glyph.width))
            x += glyph.width + gap + rng.gauss(0, 0.05 * s.char_width)
        return spans

    def _glyph(self, path: str, size: int, ch: str) -> tuple[Image.Image, float]:
        """(the character's rotated ink, how far below the text's centre line its centre sits)."""
        e, rng = self.effects, self.rng
        angle = rng.uniform(-e.rotation, e.rotation)
        if e.char_scale:
            size = max(6, round(size * rng.uniform(1 - e.char_scale, 1 + e.char_scale)))
        font = _font(path, size)
        if e.baseline:
            return _glyph_on_baseline(font, ch, angle)
        return _glyph(font, ch, angle), 0.0

    def _clutter(self, mask: Image.Image) -> None:
        s, rng = self.style, self.rng
        draw = ImageDraw.Draw(mask)
        width = max(1, round(_jitter(rng, s.stroke, 0, 0.3 * s.stroke)))
        lines = _poisson(rng, 0.4 + 4 * s.clutter)
        for _ in range(lines):
            if rng.random() < 0.6:
                points = [(rng.uniform(0, s.width * 0.3), rng.uniform(0, s.height)),
                          (rng.uniform(s.width * 0.35, s.width * 0.65), rng.uniform(0, s.height)),
                          (rng.uniform(s.width * 0.7, s.width), rng.uniform(0, s.height))]
                draw.line(points, fill=255, width=max(1, round(width * rng.uniform(0.4, 1.0))), joint="curve")
            else:
                x0, y0 = rng.uniform(-s.width * 0.2, s.width * 0.5), rng.uniform(-s.height * 0.5, s.height * 0.5)
                box = (x0, y0, x0 + rng.uniform(0.4, 1.2) * s.width, y0 + rng.uniform(0.6, 1.6) * s.height)
                start = rng.uniform(0, 360)
                draw.arc(box, start, start + rng.uniform(60, 180), fill=255, width=max(1, round(width * 0.7)))
        for _ in range(_poisson(rng, 30 * s.speckle * s.width * s.height / 2000)):
            x, y = rng.uniform(0, s.width), rng.uniform(0, s.height)
            r = rng.uniform(0.5, 1.5)
            draw.ellipse((x - r, y - r, x + r, y + r), fill=255)

    def _texture(self, mask: Image.Image) -> Image.Image:
        """Ragged stroke edges or pinholes, as sprayed or dithered captcha text looks."""
        rng = self.rng
        if rng.random() > min(0.9, 0.2 + 10 * self.style.speckle):
            return mask
        noise = np.random.default_rng(rng.getrandbits(32)).random((mask.height, mask.width)).astype(np.float32)
        if rng.random() < 0.7:
            soft = np.asarray(mask.filter(ImageFilter.GaussianBlur(rng.uniform(0.8, 1.6))), dtype=np.float32) / 255
            ragged = soft + (noise - 0.5) * rng.uniform(0.4, 0.9) > 0.5
            return Image.fromarray((ragged * 255).astype(np.uint8))
        keep = noise > rng.uniform(0.05, 0.25)
        return Image.fromarray((np.asarray(mask, dtype=np.float32) * keep).astype(np.uint8))

    def _background(self) -> np.ndarray:
        s, rng, e = self.style, self.rng, self.effects
        profile = np.array(rng.choice(s.backgrounds), dtype=np.float32)
        xs = np.linspace(0, s.width - 1, len(profile))
        columns = np.stack([np.interp(np.arange(s.width), xs, profile[:, c]) for c in range(3)], axis=1)
        columns = columns + np.array([rng.gauss(0, 6) for _ in range(3)], dtype=np.float32)
        noise = np.random.default_rng(rng.getrandbits(32)).normal(0, rng.uniform(0, e.noise), (s.height, s.width, 1))
        pixels = columns[None] + noise
        if e.texture:
            pixels = pixels + _blotches(rng, s.width, s.height, e.texture)
        if e.grid:
            pixels = _grid(pixels, rng, e.grid)
        return np.clip(pixels, 0, 255)

    def _from_generator(self, text: str) -> Image.Image:
        """The PyPI captcha generator's drawing (white on black, used as a mask) in the style's colours."""
        from captchalab.data.synthetic import _seeded

        s, rng = self.style, self.rng
        if self._generator is None:
            from captcha.image import ImageCaptcha

            sizes = tuple(sorted({max(8, round(f.size * k)) for f in self.fonts for k in (1.0, 1.2)}))
            self._generator = ImageCaptcha(s.width, s.height, [f.path for f in self.fonts], sizes)
        text = _in_case(text, s.glyph_case, rng)
        with _seeded(rng):
            drawn = self._generator.generate_image(text, bg_color=(0, 0, 0), fg_color=(255, 255, 255, 255))
        return _compose(drawn.convert("L"), self._background(), rng.choice(s.text_colours), rng)


def _jitter(rng: random.Random, centre: float, spread: float, least: float) -> float:
    """A draw around ``centre`` with the measured spread, but at least ``least``."""
    return rng.gauss(centre, max(spread, least))


def _poisson(rng: random.Random, mean: float) -> int:
    limit, k, p = math.exp(-min(mean, 30.0)), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


@lru_cache(maxsize=256)
def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


def _glyph(font: ImageFont.FreeTypeFont, ch: str, angle: float) -> Image.Image:
    """One character's ink as an 'L' mask, rotated and cropped to its ink."""
    left, top, right, bottom = font.getbbox(ch)
    pad = 4
    canvas = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 0)
    ImageDraw.Draw(canvas).text((pad - left, pad - top), ch, font=font, fill=255)
    rotated = canvas.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True)
    box = rotated.getbbox()
    return rotated.crop(box) if box else rotated


def _glyph_on_baseline(font: ImageFont.FreeTypeFont, ch: str, angle: float) -> tuple[Image.Image, float]:
    """One character drawn in the font's full line box (ascent to descent, so its height above the
    baseline is kept), rotated about the box centre and cropped to its ink; with how far the ink's
    centre sits below the centre of the capitals' band."""
    ascent, descent, cap_top = _line_metrics(font)
    left, _, right, _ = font.getbbox(ch)
    pad = 4
    canvas = Image.new("L", (right - left + 2 * pad, ascent + descent + 2 * pad), 0)
    ImageDraw.Draw(canvas).text((pad - left, pad), ch, font=font, fill=255)
    rotated = canvas.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True)
    box = rotated.getbbox() or (0, 0, rotated.width, rotated.height)
    # the line box's centre stays the rotated canvas's centre; the capitals' band centre is fixed in the font
    band_centre = rotated.height / 2 + (pad + (cap_top + ascent) / 2) - canvas.height / 2
    return rotated.crop(box), (box[1] + box[3]) / 2 - band_centre


@lru_cache(maxsize=256)
def _line_metrics(font: ImageFont.FreeTypeFont) -> tuple[int, int, int]:
    """(ascent, descent, top of the capitals) of a font: the same for each of its characters."""
    ascent, descent = font.getmetrics()
    return ascent, descent, font.getbbox("H")[1]


def _ink_shape(mask: Image.Image, effects: Effects) -> Image.Image:
    """Bolder strokes, or outlines only (hollow letters), as the effects ask."""
    if effects.thicken:
        mask = mask.filter(ImageFilter.MaxFilter(3))
    if effects.hollow:
        mask = ImageChops.subtract(mask, mask.filter(ImageFilter.MinFilter(effects.hollow)))
    return mask


def _shifted(mask: Image.Image, offset: tuple[int, int]) -> Image.Image:
    moved = Image.new("L", mask.size, 0)
    moved.paste(mask, offset)
    return moved


def _column_colours(width: int, base: RGB, spans: Sequence[tuple[int, int, RGB]]) -> np.ndarray:
    """(1, width, 3) colours: each character's columns in its own colour, the rest in ``base``."""
    colours = np.tile(np.array(base, dtype=np.float32), (1, width, 1))
    for x0, x1, colour in spans:
        colours[0, max(0, x0) : max(0, x1)] = colour
    return colours


def _blotches(rng: random.Random, width: int, height: int, amplitude: float) -> np.ndarray:
    """(h, w, 3) smooth random variation: a coarse random grid, enlarged bicubically."""
    cells = np.random.default_rng(rng.getrandbits(32)).uniform(0, 255, (rng.randint(2, 6), rng.randint(3, 12), 3))
    coarse = Image.fromarray(cells.astype(np.uint8), "RGB").resize((width, height), Image.Resampling.BICUBIC)
    return (np.asarray(coarse, dtype=np.float32) / 255 - 0.5) * 2 * amplitude


def _grid(pixels: np.ndarray, rng: random.Random, step: int) -> np.ndarray:
    """Thin lines every ``step`` pixels both ways, under the text, in a colour halfway between the
    background's and a random one (a grid in the text's own contrast would hide the text)."""
    mean = pixels.reshape(-1, 3).mean(axis=0)
    colour = (mean + np.array([rng.uniform(0, 255) for _ in range(3)], dtype=np.float32)) / 2
    pixels = pixels.copy()
    x0, y0 = rng.randrange(step), rng.randrange(step)
    pixels[y0::step, :] = colour
    pixels[:, x0::step] = colour
    return pixels


def _warp(mask: Image.Image, rng: random.Random, text_height: float) -> Image.Image:
    """A gentle vertical sine displacement across the width, half of the time."""
    if rng.random() < 0.5:
        return mask
    array = np.asarray(mask)
    height, width = array.shape
    amplitude = rng.uniform(0.02, 0.08) * text_height
    period = rng.uniform(0.6, 1.5) * width
    phase = rng.uniform(0, 2 * math.pi)
    shift = np.round(amplitude * np.sin(2 * math.pi * np.arange(width) / period + phase)).astype(int)
    rows = np.clip(np.arange(height)[:, None] - shift[None, :], 0, height - 1)
    return Image.fromarray(array[rows, np.arange(width)[None, :]])


def _compose(mask: Image.Image, background: np.ndarray, colour: RGB | np.ndarray, rng: random.Random) -> Image.Image:
    """``colour``: one RGB, or an array that broadcasts to the image (a colour per column)."""
    alpha = np.asarray(mask, dtype=np.float32)[..., None] / 255.0
    ink = np.array(colour, dtype=np.float32) + np.array([rng.gauss(0, 8) for _ in range(3)], dtype=np.float32)
    pixels = background * (1 - alpha) + (ink if ink.ndim == 3 else ink[None, None]) * alpha
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


# --------------------------------------------------------------------------- writing a set


def generate_like(
    out: str | Path,
    like: str | Path,
    count: int,
    seed: int = 0,
    length: int | str | None = None,
    charset: str | None = None,
    size: images.ImageSize | str | None = None,
    progress: Callable[[int], None] | None = None,
    force: bool = False,
    workers: int | Workers = 0,
) -> Path:
    """Write ``count`` look-alikes of the dataset ``like`` (plus labels.csv and style.json) to ``out``.

    ``length``, ``charset`` and ``size`` override what was estimated. Written as ``synthetic.write_set``
    writes: complete or not at all, and an interrupted run continues on a rerun.
    """
    if count < 1:
        raise UsageError(f"--count must be at least 1, got {count}")
    style = override(estimate(like, seed=seed), length, charset, size)
    return write_look_alikes(out, style, count, seed, progress, force, workers)


def write_look_alikes(
    out: str | Path, style: Style, count: int, seed: int = 0, progress: Callable[[int], None] | None = None,
    force: bool = False, workers: int | Workers = 0, font_seed: int | None = None,
) -> Path:
    """``count`` look-alikes of ``style`` (plus labels.csv and style.json) in the new folder ``out``; the
    fonts are those ``match_fonts`` picks with ``font_seed`` (default: ``seed``), so that other images of
    another seed can share one set's fonts."""
    from captchalab.data.synthetic import write_set

    fonts_from = seed if font_seed is None else font_seed
    recipe = {"generator": "like", "count": count, "seed": seed, "style": style.to_dict()}
    if fonts_from != seed:
        recipe["font_seed"] = fonts_from
    sampler = LookAlike(style, seed, fonts=match_fonts(style, seed=fonts_from))
    return write_set(Path(out), sampler, count, recipe, progress, force,
                     extra={"style.json": json.dumps(style.to_dict(), indent=2) + "\n"}, workers=workers)


def override(
    style: Style,
    length: int | str | None,
    charset: str | None,
    size: images.ImageSize | str | None,
) -> Style:
    """The style with the user's explicit length range, charset or image size (geometry rescaled)."""
    if length is not None:
        low, high = length_bounds(length)
        style = replace(style, lengths={k: 1.0 / (high - low + 1) for k in range(low, high + 1)})
    if charset is not None:
        symbols = Charset.parse(charset).symbols
        both = symbols != symbols.lower() and symbols != symbols.upper()
        # case-sensitive symbols are drawn as the labels say; otherwise the estimated case still holds
        style = replace(style, charset=symbols, glyph_case="labels" if both else style.glyph_case)
    if size is not None:
        size = images.ImageSize.parse(size) if isinstance(size, str) else size
        sx, sy = size.width / style.width, size.height / style.height
        style = replace(style, width=size.width, height=size.height, text_height=style.text_height * sy,
                        text_center=style.text_center * sy, text_left=style.text_left * sx,
                        text_right=style.text_right * sx, char_width=style.char_width * sx,
                        stroke=style.stroke * math.sqrt(sx * sy))
    return style
