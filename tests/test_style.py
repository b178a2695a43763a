"""Style estimation and look-alike rendering (generate --like)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from captchalab.data import style
from captchalab.data.synthetic import generate
from captchalab.errors import DataError, RunFolderError, UsageError
from clirun import run_cli

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"
BLUE, YELLOW = (20, 40, 160), (250, 220, 40)


def _font() -> ImageFont.FreeTypeFont:
    try:
        return ImageFont.truetype(FONT, 30)
    except OSError:
        from captcha import image as captcha_image

        return ImageFont.truetype(str(Path(captcha_image.__file__).parent / "data" / "DroidSansMono.ttf"), 30)


@pytest.fixture(scope="module")
def painted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Yellow digits on blue, 180x60, text 22 pixels tall starting at x=30: a style we know exactly."""
    folder = tmp_path_factory.mktemp("painted")
    rng = np.random.default_rng(0)
    font = _font()
    rows = []
    for i in range(30):
        label = "".join(rng.choice(list("234789"), size=int(rng.integers(4, 6))))
        image = Image.new("RGB", (180, 60), BLUE)
        draw = ImageDraw.Draw(image)
        left, top, _, bottom = draw.textbbox((0, 0), label, font=font)
        draw.text((30 - left, 30 - (top + bottom) / 2), label, font=font, fill=YELLOW)
        image.save(folder / f"{i}.png")
        rows.append((f"{i}.png", label))
    with open(folder / "labels.csv", "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("file", "label"), *rows])
    return folder


def test_estimate_reads_size_charset_lengths_colours_and_geometry(painted: Path) -> None:
    found = style.estimate(painted)
    assert (found.width, found.height) == (180, 60)
    assert found.charset == "234789"
    assert set(found.lengths) == {4, 5} and abs(sum(found.lengths.values()) - 1) < 1e-9
    assert np.abs(np.array(found.text_colours[0]) - YELLOW).max() < 40
    assert all(np.abs(np.array(c) - BLUE).max() < 25 for c in found.backgrounds[0])
    digit_height = _font().getbbox("8")[3] - _font().getbbox("8")[1]
    assert abs(found.text_height - digit_height) <= 3
    assert abs(found.text_left - 30) <= 3 and abs(found.text_center - 30) <= 3
    assert found.images_measured == 30


def test_estimate_of_look_alikes_matches_the_original(painted: Path, tmp_path: Path) -> None:
    original = style.estimate(painted)
    folder = style.generate_like(tmp_path / "like", painted, 60, seed=3)
    copy = style.estimate(folder)
    assert (copy.width, copy.height, copy.charset) == (original.width, original.height, original.charset)
    assert set(copy.lengths) == set(original.lengths)
    assert abs(copy.text_height - original.text_height) <= 0.25 * original.text_height
    assert abs(copy.text_left - original.text_left) <= 0.1 * original.width
    assert np.abs(np.array(copy.text_colours[0]) - YELLOW).max() < 60
    saved = style.Style.from_dict(json.loads((folder / "style.json").read_text()))
    assert saved == style.estimate(painted, seed=3)


def test_generate_like_is_seeded_and_writes_a_dataset(painted: Path, tmp_path: Path) -> None:
    a = style.generate_like(tmp_path / "a", painted, 12, seed=5)
    b = style.generate_like(tmp_path / "b", painted, 12, seed=5)
    c = style.generate_like(tmp_path / "c", painted, 12, seed=6)
    assert (a / "labels.csv").read_text() == (b / "labels.csv").read_text()
    assert all((a / n).read_bytes() == (b / n).read_bytes() for n in ("000000.png", "000011.png"))
    assert (a / "labels.csv").read_text() != (c / "labels.csv").read_text()
    rows = list(csv.reader((a / "labels.csv").open()))[1:]
    assert len(rows) == 12 and all(set(label) <= set("234789") and 4 <= len(label) <= 5 for _, label in rows)
    assert Image.open(a / "000000.png").size == (180, 60)


def test_overrides_change_length_charset_and_size(painted: Path, tmp_path: Path) -> None:
    folder = style.generate_like(tmp_path / "o", painted, 10, seed=0, length="6", charset="A-C", size="90x30")
    rows = list(csv.reader((folder / "labels.csv").open()))[1:]
    assert all(len(label) == 6 and set(label) <= set("ABC") for _, label in rows)
    assert Image.open(folder / "000000.png").size == (90, 30)


def test_fonts_are_matched_by_stroke_and_width(painted: Path) -> None:
    found = style.estimate(painted)
    fonts = style.match_fonts(found)
    assert 1 <= len(fonts) <= 4
    assert all(Path(f.path).is_file() and f.size > 0 for f in fonts)
    assert fonts == sorted(fonts, key=lambda f: -f.weight)


def test_a_charset_no_font_can_draw_is_a_clear_error(painted: Path) -> None:
    found = style.override(style.estimate(painted), None, "\ue000\ue001", None)
    with pytest.raises(UsageError, match="font"):
        style.match_fonts(found)


def test_unreadable_sets_are_data_errors(tmp_path: Path) -> None:
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "AB12.png").write_bytes(b"not an image")
    with pytest.raises(DataError):
        style.estimate(tmp_path / "bad")


def test_measure_finds_light_text_on_dark(tmp_path: Path) -> None:
    image = Image.new("RGB", (120, 40), (10, 10, 10))
    ImageDraw.Draw(image).text((20, 8), "7342", font=_font(), fill=(240, 240, 240))
    found = style.measure(style.as_rgb(image))
    assert found is not None and min(found.text_colour) > 150 and max(found.background[0]) < 40
    assert style.measure(style.as_rgb(Image.new("RGB", (50, 20), (255, 255, 255)))) is None


def test_cli_generate_like(tiny_set: Path, tmp_path: Path) -> None:
    outcome = run_cli("generate", tmp_path / "like", "--like", tiny_set, "--count", "5", "--quiet")
    assert outcome.code == 0, outcome.text
    assert (tmp_path / "like" / "style.json").exists()
    assert len(list((tmp_path / "like").glob("*.png"))) == 5
    again = run_cli("generate", tmp_path / "like", "--like", tiny_set, "--count", "5", "--quiet")
    assert again.failed_cleanly(RunFolderError.exit_code, "already holds files")


def test_look_alikes_of_the_captcha_generator_are_trainable_data(tmp_path: Path) -> None:
    source = generate(tmp_path / "src", 20, length="4", charset="0-9", size="128x48", seed=2)
    folder = style.generate_like(tmp_path / "like", source, 20, seed=1)
    from captchalab.data.folder import load_dataset

    dataset = load_dataset(folder)
    assert len(dataset) == 20 and dataset.pixels.shape[1:] == (48, 128)
    assert dataset.pixels.std() > 10  # not blank images


def _letters(folder: Path, drawn_case: str, label_case: str, count: int = 40) -> Path:
    """Black letters drawn naturally (on one baseline) in ``drawn_case``, labelled in ``label_case``."""
    folder.mkdir()
    rng = np.random.default_rng(1)
    font, rows = _font(), []
    for i in range(count):
        text = "".join(rng.choice(list("abdefghjkpqrty2345"), size=5))
        image = Image.new("RGB", (200, 60), (250, 250, 250))
        ImageDraw.Draw(image).text((20, 8), getattr(text, drawn_case)(), font=font, fill=(20, 20, 20))
        image.save(folder / f"{i}.png")
        rows.append((f"{i}.png", getattr(text, label_case)()))
    with open(folder / "labels.csv", "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("file", "label"), *rows])
    return folder


@pytest.mark.parametrize(("drawn", "labelled", "expected"), [
    ("lower", "lower", "labels"),  # the ascenders and descenders show lower case
    ("lower", "upper", "lower"),
    ("upper", "lower", "both"),  # no lower-case shapes, yet lower-case labels: a site that ignores case
    ("upper", "upper", "labels"),
])
def test_the_glyphs_case_comes_from_the_images(tmp_path: Path, drawn: str, labelled: str, expected: str) -> None:
    estimated = style.estimate(_letters(tmp_path / "set", drawn, labelled))
    assert estimated.glyph_case == expected
    assert estimated.charset == getattr(estimated.charset, labelled)()  # the labels keep their case


def test_look_alikes_draw_the_glyphs_case_and_keep_the_labels(tmp_path: Path) -> None:
    estimated = style.estimate(_letters(tmp_path / "set", "upper", "lower"))
    renderer = style.LookAlike(estimated, seed=0, generator_share=0.0)
    drawn: list[str] = []
    glyph = renderer._glyph
    renderer._glyph = lambda path, size, ch: drawn.append(ch) or glyph(path, size, ch)  # type: ignore[method-assign]
    labels = [renderer.sample()[0] for _ in range(20)]
    assert all(label == label.lower() for label in labels)
    assert {ch for ch in drawn if ch.isupper()} and {ch for ch in drawn if ch.islower()}
    assert "A" in estimated.glyphs and "a" in estimated.glyphs
