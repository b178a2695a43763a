"""The wide synthetic world: every image a new captcha style, drawn from broad priors.

``draw(rng)`` samples a :class:`Recipe`: a label (lengths 1-10, exact case by default), a
font file, a random :class:`~captchalab.data.style.Style` (size, text height, spacing down to
touching and overlapping characters, colours, background profile, clutter) and
:class:`~captchalab.data.style.Effects` (rotation, per-character scale and offset, hollow,
shadowed, bolder or multicoloured text, noisy, textured or gridded backgrounds), plus
image-level steps after drawing (elastic and perspective warps, blur, rescaling to the output
size, JPEG). ``render(recipe)`` draws it with style.py's look-alike renderer; ``sample``
does both. Every random choice comes from the one ``random.Random`` given: a seed fixes the
images.

Held out on purpose, so that benchmarks on them stay honest: the PyPI ``captcha`` and
``wheezy.captcha`` generators, ``multicolorcaptcha`` (its renderer and every font file it
ships) and data/synthetic.py's look (the ``captcha`` generator). See docs/world.md.
"""

from __future__ import annotations

import io
import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata, util
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter, ImageFont

from captchalab.charset import Charset
from captchalab.data import style
from captchalab.data.style import Effects, FontChoice, LookAlike, Style
from captchalab.data.synthetic import Workers, length_bounds, write_set
from captchalab.errors import UsageError

DEFAULT_CHARSET = "0-9a-zA-Z"
DEFAULT_LENGTH = "1-10"
OUTPUT_HEIGHT = (26, 80)  # output images are this tall ...
OUTPUT_WIDTH = (80, 280)  # ... and this wide
MIN_CONTRAST = 90  # text and background brightness differ by at least this (0-255)
MIN_CANVAS_HEIGHT = 40  # drawn at least this tall, then rescaled: small fonts render too coarsely to read
RESAMPLING = (Image.Resampling.NEAREST, Image.Resampling.BOX, Image.Resampling.BILINEAR,
              Image.Resampling.BICUBIC, Image.Resampling.LANCZOS)


# --------------------------------------------------------------------------- fonts


@dataclass(frozen=True)
class FontFamily:
    """Font files that ship inside a Python package, and their licence."""

    name: str
    package: str  # the PyPI distribution
    module: str  # its import name
    folder: str  # where the files are, inside the module's folder
    patterns: tuple[str, ...]
    licence: str

    def files(self) -> list[str]:
        """The family's font files on this machine (none when its package is not installed)."""
        spec = util.find_spec(self.module)  # finds the package without importing it (matplotlib is slow)
        if spec is None or not spec.submodule_search_locations:
            return []
        folder = Path(next(iter(spec.submodule_search_locations))) / self.folder
        return sorted({str(p) for pattern in self.patterns for p in folder.glob(pattern)})

    def version(self) -> str | None:
        try:
            return metadata.version(self.package)
        except metadata.PackageNotFoundError:
            return None


_MPL = "mpl-data/fonts/ttf"
_OFL = "SIL Open Font License 1.1"
_APACHE = "Apache License 2.0"
# No font file of multicolorcaptcha, captcha or wheezy.captcha: those generators are held out,
# and with their fonts kept out too a model trained here is font-held-out on them as well.
FAMILIES: tuple[FontFamily, ...] = (
    FontFamily("DejaVu Sans", "matplotlib", "matplotlib", _MPL, ("DejaVuSans.ttf", "DejaVuSans-*.ttf"),
               "Bitstream Vera licence + public-domain DejaVu changes (matplotlib's LICENSE_DEJAVU)"),
    FontFamily("DejaVu Sans Mono", "matplotlib", "matplotlib", _MPL, ("DejaVuSansMono*.ttf",),
               "Bitstream Vera licence + public-domain DejaVu changes (matplotlib's LICENSE_DEJAVU)"),
    FontFamily("DejaVu Serif", "matplotlib", "matplotlib", _MPL, ("DejaVuSerif.ttf", "DejaVuSerif-*.ttf"),
               "Bitstream Vera licence + public-domain DejaVu changes (matplotlib's LICENSE_DEJAVU)"),
    FontFamily("STIX General", "matplotlib", "matplotlib", _MPL, ("STIXGeneral*.ttf",),
               f"{_OFL} (matplotlib's LICENSE_STIX)"),
    FontFamily("Roboto", "font-roboto", "font_roboto", "files", ("Roboto-*.ttf",), _APACHE),
    FontFamily("Source Sans Pro", "font-source-sans-pro", "font_source_sans_pro", "files",
               ("SourceSansPro-*.ttf",), _OFL),
    FontFamily("Source Serif Pro", "font-source-serif-pro", "font_source_serif_pro", "files",
               ("SourceSerifPro-*.ttf",), _OFL),
    FontFamily("Caladea", "font-caladea", "font_caladea", "files", ("Caladea-*.ttf",), _APACHE),
    FontFamily("Fredoka One", "font-fredoka-one", "font_fredoka_one", "files", ("FredokaOne-*.ttf",), _OFL),
    FontFamily("Intuitive", "font-intuitive", "font_intuitive", "files", ("Intuitive.ttf",), _OFL),
    FontFamily("Hanken Grotesk", "font-hanken-grotesk", "font_hanken_grotesk", "files",
               ("HankenGrotesk-*.otf",), _OFL),
    FontFamily("Manrope", "font-manrope", "font_manrope", "files", ("Manrope-*.ttf",), _OFL),
    FontFamily("Lato", "font-lato", "font_lato", "files", ("Lato-*.ttf",), _OFL),
)


@lru_cache(maxsize=1)
def fonts() -> tuple[tuple[str, ...], ...]:
    """Per installed family, its font files (families whose package is missing left out)."""
    return tuple(files for files in (family.files() for family in FAMILIES) if files)


def _pick_font(rng: random.Random, symbols: str) -> str:
    """A family, then one of its files, that draws every symbol. Whether a file covers the symbols is
    checked when it is first picked (checking all of them takes seconds)."""
    path = rng.choice(rng.choice(fonts() or ((),)) or ("",))
    if path and _covers(path, symbols):
        return path
    return rng.choice(rng.choice(_usable(symbols)))


@lru_cache(maxsize=8)
def _usable(symbols: str) -> tuple[tuple[str, ...], ...]:
    found = [usable for usable in (tuple(p for p in files if _covers(p, symbols)) for files in fonts()) if usable]
    if not found:
        raise UsageError(f"no installed font draws every symbol of '{symbols}'; "
                         "pip install 'captchalab[world]' (matplotlib and the font packages)")
    return tuple(found)


@lru_cache(maxsize=4096)
def _covers(path: str, symbols: str) -> bool:
    return style._covers(_font(path, 40), symbols)


@lru_cache(maxsize=512)
def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


@lru_cache(maxsize=512)
def _proportions(path: str) -> tuple[float, float]:
    """(capital height, mean character ink width), per pixel of font size."""
    font = _font(path, 100)
    top, bottom = font.getbbox("H")[1::2]
    widths = [box[2] - box[0] for box in (font.getbbox(ch) for ch in "0123456789abcdefghkmnopsuxzABDEHKMNRSUXZ")]
    return (bottom - top) / 100, float(np.mean(widths)) / 100


# --------------------------------------------------------------------------- the recipe


@dataclass(frozen=True)
class Recipe:
    """Everything one image is drawn from."""

    text: str
    style: Style  # the canvas the look-alike renderer draws on
    font: FontChoice
    effects: Effects
    seed: int  # the look-alike renderer's own random choices (jitter, clutter, sine warp, stroke texture)
    size: tuple[int, int]  # output (width, height)
    resampling: Image.Resampling  # how the canvas is rescaled to the output size
    elastic: float = 0.0  # strength of a smooth random displacement, share of the height (0 = none)
    perspective: float = 0.0  # largest corner shift, share of the side (0 = none)
    blur: float = 0.0  # Gaussian blur radius on the canvas (0 = none)
    jpeg: int = 0  # JPEG quality of the output (0 = none)

    def families(self) -> set[str]:
        """The effect families this recipe uses (docs/world.md lists them)."""
        e, s = self.effects, self.style
        flags = {
            "per-character scale": e.char_scale > 0, "overlapping characters": s.char_width < 0.8 * self._natural(),
            "hollow": e.hollow > 0, "shadow": e.shadow != (0, 0), "bolder strokes": e.thicken,
            "per-character colours": e.char_colours, "gradient background": s.backgrounds[0][0] != s.backgrounds[0][-1],
            "textured background": e.texture > 0, "noisy background": e.noise > 8, "grid": e.grid > 0,
            "lines and arcs": s.clutter >= 0.02, "dots": s.speckle > 0, "elastic warp": self.elastic > 0,
            "perspective warp": self.perspective > 0, "blur": self.blur > 0, "JPEG": self.jpeg > 0,
            "light text on dark": sum(s.text_colours[0]) > sum(s.backgrounds[0][0]),
            "upscaled": self.size[1] > s.height, "large rotation": e.rotation > 20,
        }
        return {name for name, on in flags.items() if on}

    def _natural(self) -> float:
        """Mean character width of the font at the drawn size: spacing below it overlaps."""
        return _proportions(self.font.path)[1] * self.font.size


FAMILY_NAMES = ("per-character scale", "overlapping characters", "hollow", "shadow", "bolder strokes",
                "per-character colours", "gradient background", "textured background", "noisy background", "grid",
                "lines and arcs", "dots", "elastic warp", "perspective warp", "blur", "JPEG", "light text on dark",
                "upscaled", "large rotation")


def draw(rng: random.Random, charset: str = DEFAULT_CHARSET, length: int | str | tuple[int, int] = DEFAULT_LENGTH,
         ) -> Recipe:
    """A recipe: a label of ``charset`` with a length in ``length`` (5, "1-10" or (1, 10)) and a new style."""
    low, high = length if isinstance(length, tuple) else length_bounds(length)
    symbols = Charset.parse(charset).symbols
    text = "".join(rng.choice(symbols) for _ in range(rng.randint(low, high)))
    path = _pick_font(rng, symbols)
    size, canvas = _sizes(rng, len(text))
    rotation = rng.choice((5.0, 12.0, 20.0, 32.0))
    geometry, font = _layout(rng, path, text, canvas, rotation)
    text_colours, backgrounds = _colours(rng)
    look = Style(width=canvas[0], height=canvas[1], charset=symbols, lengths={len(text): 1.0},
                 text_colours=text_colours, backgrounds=backgrounds, **geometry,
                 clutter=rng.uniform(0.02, 0.1) if rng.random() < 0.45 else 0.0,
                 speckle=rng.uniform(0.003, 0.03) if rng.random() < 0.3 else 0.0)
    return Recipe(text=text, style=look, font=font, effects=_effects(rng, geometry["text_height"], rotation),
                  seed=rng.getrandbits(32), size=size, resampling=rng.choice(RESAMPLING),
                  elastic=_maybe(rng, 0.2, 0.01, 0.04), perspective=_maybe(rng, 0.2, 0.02, 0.08),
                  blur=_maybe(rng, 0.2, 0.3, 1.2), jpeg=round(_maybe(rng, 0.35, 8, 75)))


def _maybe(rng: random.Random, share: float, low: float, high: float) -> float:
    """A value in [low, high] for ``share`` of the images, else 0; draws the same numbers either way."""
    on, value = rng.random() < share, rng.uniform(low, high)
    return value if on else 0.0


def _sizes(rng: random.Random, n: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """(output size, canvas size): heights log-uniform, varied aspect ratios, wide enough for ``n``
    characters; the canvas is 0.7-2.2 times the output (up- or downscaled afterwards), never too small."""
    height = round(math.exp(rng.uniform(*(math.log(v) for v in OUTPUT_HEIGHT))))
    width = round(height * rng.uniform(1.6, 5.0))
    width = min(OUTPUT_WIDTH[1], max(OUTPUT_WIDTH[0], width, 12 * n + 20))
    scale = max(rng.uniform(0.7, 2.2), MIN_CANVAS_HEIGHT / height)
    return (width, height), (round(width * scale), round(height * scale))


def _layout(rng: random.Random, path: str, text: str, canvas: tuple[int, int], rotation: float,
            ) -> tuple[dict[str, Any], FontChoice]:
    """Text height, spacing (down to touching and overlapping) and position, all inside the canvas;
    the font at that height. Sizes are per pixel of capital height unless named otherwise."""
    width, height = canvas
    cap, mean_width = _proportions(path)
    glyph_width = mean_width / cap  # a character's ink width
    spacing = glyph_width * rng.uniform(0.6, 1.45)  # below 1: touching, then overlapping
    turn, most = math.radians(rotation / 2), math.radians(rotation)  # a typical and the largest turn
    # the renderer overlaps characters by at most 0.35 of their (rotated) ink width: the pitch it reaches
    pitch = max(spacing, 0.65 * (glyph_width * math.cos(turn) + math.sin(turn)))
    tall = 1.35 * (math.cos(most) + glyph_width * math.sin(most))  # ascenders, descenders and turns
    text_height = min(height * rng.uniform(0.38, 0.66), 0.8 * height / tall,
                      0.8 * width / (1.1 * pitch * len(text)))  # 1.1: size and spacing jitter
    span = 1.1 * pitch * text_height * len(text)
    left = 0.07 * width + max(0.0, 0.86 * width - span) * rng.random()
    centre = height / 2 + rng.uniform(-1, 1) * max(0.0, 0.8 * height - tall * text_height) / 2
    char_width = spacing * text_height
    geometry = {"text_height": text_height, "text_center": centre, "text_left": left, "text_right": left + span,
                "char_width": char_width, "stroke": text_height * rng.uniform(0.06, 0.16)}
    return geometry, FontChoice(path, max(6, round(text_height / cap)), 1.0)


def _colours(rng: random.Random) -> tuple[tuple[style.RGB, ...], tuple[tuple[style.RGB, ...], ...]]:
    """(text colours, one background profile): dark on light or light on dark, tinted, at least
    a clear contrast apart; the background flat or a gradient across the width."""
    light_text = rng.random() < 0.3
    ink_levels, ground_levels = ((165, 255), (0, 90)) if light_text else ((0, 110), (165, 255))
    ground = _tinted(rng, ground_levels)
    end = _tinted(rng, ground_levels) if rng.random() < 0.35 else ground
    inks = tuple(_contrasting(rng, ink_levels, (ground, end)) for _ in range(rng.randint(1, 5)))
    profile = tuple(_mix(ground, end, i / (style.PROFILE_POINTS - 1)) for i in range(style.PROFILE_POINTS))
    return inks, (profile,)


def _contrasting(rng: random.Random, levels: tuple[int, int], grounds: tuple[style.RGB, ...]) -> style.RGB:
    """A tinted colour whose brightness differs from every ground's by at least MIN_CONTRAST (when
    20 draws find one: tints can close the gap the levels leave)."""
    for _ in range(20):
        colour = _tinted(rng, levels)
        if all(abs(_luma(colour) - _luma(g)) >= MIN_CONTRAST for g in grounds):
            break
    return colour


def _luma(colour: style.RGB) -> float:
    r, g, b = colour
    return 0.299 * r + 0.587 * g + 0.114 * b


def _tinted(rng: random.Random, levels: tuple[int, int]) -> style.RGB:
    level, tint = rng.uniform(*levels), rng.uniform(0, 70)
    r, g, b = (min(255, max(0, round(level + rng.uniform(-tint, tint)))) for _ in range(3))
    return (r, g, b)


def _mix(a: style.RGB, b: style.RGB, t: float) -> style.RGB:
    r, g, bl = (round(x + (y - x) * t) for x, y in zip(a, b))
    return (r, g, bl)


def _effects(rng: random.Random, text_height: float, rotation: float) -> Effects:
    """Glyph and background effects; each family on for a share of the images."""
    hollow = 3 if text_height < 34 else 5
    shift = max(1, round(text_height / 18))
    return Effects(
        rotation=rotation, char_scale=_maybe(rng, 0.4, 0.05, 0.18),
        offset=rng.uniform(0.0, 0.1), baseline=True,  # baseline keeps exact case readable (p/P, o/O)
        char_colours=rng.random() < 0.25, thicken=rng.random() < 0.15,
        hollow=hollow if rng.random() < 0.12 else 0,
        shadow=(rng.choice((-shift, shift)), shift) if rng.random() < 0.15 else (0, 0),
        noise=rng.choice((4.0, 4.0, 12.0, 30.0)), texture=_maybe(rng, 0.25, 10, 45),
        grid=rng.randint(5, 16) if rng.random() < 0.12 else 0,
    )


# --------------------------------------------------------------------------- drawing


def render(recipe: Recipe) -> Image.Image:
    """The recipe's image: style.py's look-alike drawing, then the image-level steps."""
    drawer = LookAlike(recipe.style, seed=recipe.seed, fonts=[recipe.font], generator_share=0.0,
                       effects=recipe.effects)
    image = drawer.render(recipe.text)
    steps = random.Random(recipe.seed ^ 0x5EED)  # the steps' own draws: independent of the drawing's
    if recipe.elastic:
        image = _elastic(image, steps, recipe.elastic)
    if recipe.perspective:
        image = _perspective(image, steps, recipe.perspective)
    if recipe.blur:
        image = image.filter(ImageFilter.GaussianBlur(recipe.blur))
    image = image.resize(recipe.size, recipe.resampling)
    if recipe.jpeg:
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=recipe.jpeg)
        image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    return image


def sample(rng: random.Random, charset: str = DEFAULT_CHARSET,
           length: int | str | tuple[int, int] = DEFAULT_LENGTH) -> tuple[str, Image.Image]:
    """(label, image) of a new style; the same ``rng`` state gives the same pair."""
    recipe = draw(rng, charset, length)
    return recipe.text, render(recipe)


def _elastic(image: Image.Image, rng: random.Random, strength: float) -> Image.Image:
    """A smooth random displacement field (a coarse random grid, enlarged bicubically)."""
    width, height = image.size
    noise = np.random.default_rng(rng.getrandbits(32)).uniform(-1, 1, (2, rng.randint(3, 5), rng.randint(4, 10)))
    dx, dy = (np.asarray(Image.fromarray(n.astype(np.float32), "F").resize((width, height), Image.Resampling.BICUBIC))
              * strength * height for n in noise)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    return Image.fromarray(_bilinear(np.asarray(image, dtype=np.float32), xs + dx, ys + dy), "RGB")


def _bilinear(pixels: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """``pixels`` (h, w, 3) read at fractional positions (edges repeat), as uint8."""
    height, width = pixels.shape[:2]
    xs, ys = np.clip(xs, 0, width - 1), np.clip(ys, 0, height - 1)
    x0, y0 = np.minimum(xs.astype(int), width - 2), np.minimum(ys.astype(int), height - 2)
    fx, fy = (xs - x0)[..., None], (ys - y0)[..., None]
    top = pixels[y0, x0] * (1 - fx) + pixels[y0, x0 + 1] * fx
    bottom = pixels[y0 + 1, x0] * (1 - fx) + pixels[y0 + 1, x0 + 1] * fx
    return np.clip(top * (1 - fy) + bottom * fy, 0, 255).astype(np.uint8)


def _perspective(image: Image.Image, rng: random.Random, strength: float) -> Image.Image:
    """Each corner pulled outwards by up to ``strength`` of the side: a skewed, slightly smaller
    picture (never cropped), the uncovered border in the image's edge colour."""
    width, height = image.size
    out = [(0, 0), (width, 0), (width, height), (0, height)]
    signs = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
    source = [(x + sx * rng.uniform(0, strength) * width, y + sy * rng.uniform(0, strength) * height)
              for (x, y), (sx, sy) in zip(out, signs)]
    rows = []
    for (x, y), (u, v) in zip(out, source):  # output (x, y) reads input (u, v)
        rows += [[x, y, 1, 0, 0, 0, -u * x, -u * y], [0, 0, 0, x, y, 1, -v * x, -v * y]]
    coeffs = np.linalg.solve(np.array(rows, dtype=np.float64), np.array(source, dtype=np.float64).ravel())
    pixels = np.asarray(image)
    edge = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]]).mean(axis=0)
    r, g, b = (round(float(v)) for v in edge)
    return image.transform(image.size, Image.Transform.PERSPECTIVE, tuple(coeffs), Image.Resampling.BILINEAR,
                           fillcolor=(r, g, b))


# --------------------------------------------------------------------------- writing a set


class World:
    """A sampler of the world for ``synthetic.write_set``: its state is ``rng``."""

    def __init__(self, charset: str = DEFAULT_CHARSET, length: int | str | tuple[int, int] = DEFAULT_LENGTH,
                 seed: int = 0) -> None:
        self.charset = charset
        self.length = length if isinstance(length, tuple) else length_bounds(length)
        self.rng = random.Random(seed)
        _pick_font(random.Random(0), Charset.parse(charset).symbols)  # no font for the charset: fail before writing

    def sample(self) -> tuple[str, Image.Image]:
        return sample(self.rng, self.charset, self.length)


def provenance() -> dict[str, Any]:
    """The installed font families the world draws from: files, package versions, licences."""
    return {"families": [{"name": f.name, "package": f.package, "version": f.version(), "licence": f.licence,
                          "files": [Path(p).name for p in f.files()]} for f in FAMILIES if f.files()]}


def generate_world(
    out: str | Path, count: int, seed: int = 0, charset: str = DEFAULT_CHARSET, length: int | str = DEFAULT_LENGTH,
    progress: Callable[[int], None] | None = None, force: bool = False, workers: int | Workers = 0,
) -> Path:
    """Write ``count`` world images, ``labels.csv`` and ``world.json`` (fonts, versions, licences) to the
    new folder ``out``, as ``synthetic.write_set`` writes: complete or not at all, resumable."""
    if count < 1:
        raise UsageError(f"--count must be at least 1, got {count}")
    world = World(charset, length, seed)
    recipe = {"generator": "world", "count": count, "seed": seed, "charset": charset, "length": str(length),
              **provenance()}
    return write_set(Path(out), world, count, recipe, progress, force,
                     extra={"world.json": json.dumps(recipe, indent=2) + "\n"}, workers=workers)
