"""Build the bad-input corpus that tests/test_badinput.py runs every command against.

Nothing binary is committed: every case is made here, in a few milliseconds, from one
reference captcha. Run by hand to look at the files:

    python tests/badinput/make_corpus.py OUT [--run RUN]

Each ``Case`` says which group it belongs to (``image``: one image file; ``labels``: a
dataset; ``model``: a run folder or model file), the exit code every command must give
(0: valid input that must work) and a fragment the one-line error message must contain
besides the file's name.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

CHARSET = "0-9A-F"
WIDTH, HEIGHT = 96, 32
GOOD = (("good_0.png", "AB12"), ("good_1.png", "C3D45"), ("good_2.png", "0F9E"))
BAD_LABEL = "7A3C"  # the label given to an image case inside a dataset
GROUPS = ("image", "labels", "model")
DATA, MODEL, RUN_FOLDER = 3, 4, 5  # exit codes of DataError, ModelError, RunFolderError (docs/errors.md)


@dataclass(frozen=True)
class Context:
    root: Path
    reference: Image.Image  # 8-bit grayscale, WIDTH x HEIGHT
    run: Path | None  # a trained run folder with model.onnx, for the model cases


@dataclass(frozen=True)
class Case:
    name: str
    group: str  # "image", "labels" or "model"
    exit_code: int  # 0: valid input that must work
    fragment: str  # what the message must say (lower case), besides the file name
    build: Callable[[Context], Path]
    train_args: tuple[str, ...] = ()  # extra `captchalab train` options the case needs
    commands: tuple[str, ...] = ()  # the commands it applies to; empty: all of its group
    skippable: bool = True  # --skip-bad can go on without the entry (not when a whole file is unusable)


# ---------------------------------------------------------------- helpers


def printable(text: str) -> str:
    """How captchalab shows a name with undecodable (non-UTF-8) bytes: \\udcXX escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def reference_image(seed: int = 3) -> Image.Image:
    from captchalab.charset import Charset
    from captchalab.data.images import ImageSize
    from captchalab.data.synthetic import Renderer

    renderer = Renderer(Charset.parse(CHARSET), 4, ImageSize(HEIGHT, WIDTH), seed)
    return renderer.render("7A3C").convert("L")


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bilevel_png(width: int, height: int, extra: bytes = b"", rows: int | None = None) -> bytes:
    """A 1-bit PNG of zeros, built chunk by chunk so huge sizes cost kilobytes, not gigabytes."""
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    row = b"\0" * (1 + (width + 7) // 8)
    packer = zlib.compressobj(9)
    body = b"".join(packer.compress(row) for _ in range(height if rows is None else rows)) + packer.flush()
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + extra + png_chunk(b"IDAT", body)
            + png_chunk(b"IEND", b""))


def _encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _write(ctx: Context, name: str | bytes, data: bytes) -> Path:
    folder = ctx.root / "images"
    folder.mkdir(parents=True, exist_ok=True)
    path = Path(os.fsdecode(os.path.join(os.fsencode(folder), os.fsencode(name))))
    path.write_bytes(data)
    return path


def _dataset(ctx: Context, name: str, rows: list[list[str]] | None, csv_text: str | None = None,
             extra: dict[str, bytes] | None = None, encoding: str = "utf-8") -> Path:
    """A folder with the good images, ``extra`` files, and labels.csv from ``rows`` or ``csv_text``."""
    folder = ctx.root / "labels" / name
    folder.mkdir(parents=True)
    for file, _ in GOOD:
        shutil.copy(ctx.root / "good" / file, folder / file)
    for file, data in (extra or {}).items():
        (folder / file).write_bytes(data)
    if csv_text is None and rows is not None:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows([["file", "label"], *rows])
        csv_text = buffer.getvalue()
    if csv_text is not None:
        (folder / "labels.csv").write_bytes(csv_text.encode(encoding))
    return folder


def _good_rows() -> list[list[str]]:
    return [[file, label] for file, label in GOOD]


def _relabel(label: str) -> Callable[[], list[list[str]]]:
    """The good rows with good_0.png's label replaced."""
    return lambda: [["good_0.png", label], *_good_rows()[1:]]


def _copy_run(ctx: Context, name: str, keep_onnx: bool = False) -> Path:
    if ctx.run is None:
        raise ValueError("model cases need --run RUN")
    folder = ctx.root / "models" / name
    shutil.copytree(ctx.run, folder)
    if not keep_onnx:
        (folder / "model.onnx").unlink()
    return folder


def _edit_config(ctx: Context, name: str, edit: Callable[[dict], object]) -> Path:
    folder = _copy_run(ctx, name)
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


# ---------------------------------------------------------------- image cases


def _empty(ctx: Context) -> Path:
    return _write(ctx, "empty.png", b"")


def _truncated_png(ctx: Context) -> Path:
    data = _encoded(ctx.reference, "PNG")
    return _write(ctx, "truncated.png", data[: len(data) // 2])


def _truncated_jpeg(ctx: Context) -> Path:
    data = _encoded(ctx.reference, "JPEG", quality=90)
    return _write(ctx, "truncated.jpg", data[: len(data) // 2])


def _text_named_png(ctx: Context) -> Path:
    return _write(ctx, "notes.png", b"file,label\nthis is text, not an image\n")


def _pixel_bomb(ctx: Context) -> Path:
    return _write(ctx, "bomb_100000x100000.png", bilevel_png(100_000, 100_000, rows=64))


def _text_bomb(ctx: Context) -> Path:
    """A valid 96x32 PNG whose zTXt chunk inflates to 64 MB."""
    text = png_chunk(b"zTXt", b"Comment\0\0" + zlib.compress(b"\0" * (64 << 20), 9))
    return _write(ctx, "bomb_ztxt.png", bilevel_png(WIDTH, HEIGHT, extra=text))


def _huge(ctx: Context) -> Path:
    return _write(ctx, "huge_20000x20000.png", bilevel_png(20_000, 20_000))


def _oversize_bytes(ctx: Context) -> Path:
    from captchalab.data.images import MAX_BYTES

    noise = np.random.default_rng(0).integers(0, 256, MAX_BYTES + 1024, dtype=np.uint8).tobytes()
    return _write(ctx, "oversize.png", _encoded(ctx.reference, "PNG") + noise)


def _one_pixel(ctx: Context) -> Path:
    return _write(ctx, "one_pixel.png", _encoded(Image.new("L", (1, 1), 128), "PNG"))


def _gray16(ctx: Context) -> Path:
    wide = np.asarray(ctx.reference, dtype=np.uint16) * 257
    return _write(ctx, "gray16.png", _encoded(Image.fromarray(wide), "PNG"))


def palette_with_transparency(reference: Image.Image) -> Image.Image:
    """The reference as a palette image (index i = gray i) whose top-left 8x8 block uses index 0:
    black in the palette, but transparent, so it must read as white."""
    pixels = np.maximum(np.asarray(reference), 1)
    pixels[:8, :8] = 0
    image = Image.frombytes("P", reference.size, pixels.tobytes())
    image.putpalette([v for i in range(256) for v in (i, i, i)])
    image.info["transparency"] = 0
    return image


def _palette_transparent(ctx: Context) -> Path:
    image = palette_with_transparency(ctx.reference)
    return _write(ctx, "palette_transparent.png", _encoded(image, "PNG", transparency=0))


def _cmyk(ctx: Context) -> Path:
    return _write(ctx, "cmyk.jpg", _encoded(ctx.reference.convert("CMYK"), "JPEG", quality=95))


def _animated(ctx: Context) -> Path:
    second = Image.fromarray(255 - np.asarray(ctx.reference))
    data = _encoded(ctx.reference, "GIF", save_all=True, append_images=[second], duration=100, loop=0)
    return _write(ctx, "animated.gif", data)


def _exif_rotated(ctx: Context) -> Path:
    """Pixels stored turned 90 degrees, with EXIF orientation 6 saying how to turn them back."""
    exif = Image.Exif()
    exif[0x0112] = 6
    stored = ctx.reference.transpose(Image.Transpose.ROTATE_90)
    return _write(ctx, "exif_rotated.jpg", _encoded(stored, "JPEG", quality=95, exif=exif.tobytes()))


def _jpeg_named_png(ctx: Context) -> Path:
    return _write(ctx, "really_a_jpeg.png", _encoded(ctx.reference, "JPEG", quality=95))


def _rgba(ctx: Context) -> Path:
    image = ctx.reference.convert("RGBA")
    image.putalpha(Image.new("L", image.size, 255))
    return _write(ctx, "rgba.webp", _encoded(image, "WEBP", lossless=True))


def _bilevel_bmp(ctx: Context) -> Path:
    return _write(ctx, "bilevel.bmp", _encoded(ctx.reference.convert("1"), "BMP"))


def _non_utf8_name(ctx: Context) -> Path:
    return _write(ctx, b"\xff\xfe-latin1-\xe9.png", _encoded(ctx.reference, "PNG"))


def _eps_named_png(ctx: Context) -> Path:
    """PostScript named .png: Pillow would hand it to Ghostscript (an interpreter) if allowed to guess."""
    return _write(ctx, "really_eps.png", EPS)


EPS = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 96 32\n"
       b"newpath 0 0 moveto 96 32 lineto stroke showpage\n%%EOF\n")


def _tiff(ctx: Context) -> Path:
    """TIFF is not among the formats read (images.FORMATS): a file path and a folder agree on it."""
    return _write(ctx, "scan.tif", _encoded(ctx.reference, "TIFF"))


def _unicode_name(ctx: Context) -> Path:
    return _write(ctx, "验证码 ÄÖ.png", _encoded(ctx.reference, "PNG"))


# ---------------------------------------------------------------- label cases


def _labels(name: str, rows: Callable[[], list[list[str]]]) -> Callable[[Context], Path]:
    return lambda ctx: _dataset(ctx, name, rows())


def _bom(ctx: Context) -> Path:
    return _dataset(ctx, "bom", None, csv_text="file,label\n" + "".join(f"{f},{lbl}\n" for f, lbl in GOOD),
                    encoding="utf-8-sig")


def _latin1(ctx: Context) -> Path:
    return _dataset(ctx, "latin1", None, csv_text="file,label\ngood_0.png,AB12\ngood_1.png,C3D45\n# é\n",
                    encoding="latin-1")


def _empty_csv(ctx: Context) -> Path:
    return _dataset(ctx, "empty_csv", None, csv_text="")


def _header_only(ctx: Context) -> Path:
    return _dataset(ctx, "header_only", None, csv_text="file,label\n")


def _short_row(ctx: Context) -> Path:
    return _dataset(ctx, "short_row", None, csv_text="file,label\ngood_0.png,AB12\ngood_1.png\n")


def _no_images(ctx: Context) -> Path:
    folder = ctx.root / "labels" / "no_images"
    folder.mkdir(parents=True)
    (folder / "readme.txt").write_text("no images here")
    return folder


def _split_csv(ctx: Context) -> Path:
    """DATA given as a CSV file (train.csv) beside the images, one row pointing into a folder."""
    folder = _dataset(ctx, "split_csv", None)
    (folder / "sub").mkdir()
    shutil.copy(folder / "good_0.png", folder / "sub" / "AB12.png")
    rows = "file,label\nsub/AB12.png,AB12\n" + "".join(f"{f},{lbl}\n" for f, lbl in GOOD[1:])
    (folder / "train.csv").write_text(rows)
    return folder / "train.csv"


def _folder_row(ctx: Context) -> Path:
    folder = _dataset(ctx, "folder_row", [*_good_rows(), ["adir.png", "AB12"]])
    (folder / "adir.png").mkdir()
    return folder


def _names_folder(ctx: Context, name: str, files: dict[bytes, bytes]) -> Path:
    folder = ctx.root / "labels" / name
    folder.mkdir(parents=True)
    for file, label in GOOD:
        shutil.copy(ctx.root / "good" / file, folder / f"{label}_{file}")
    for raw, data in files.items():
        Path(os.fsdecode(os.path.join(os.fsencode(folder), raw))).write_bytes(data)
    return folder


def _non_utf8_label(ctx: Context) -> Path:
    return _names_folder(ctx, "non_utf8_label", {b"AB\xff\xfe_1.png": _encoded(ctx.reference, "PNG")})


def _unicode_label(ctx: Context) -> Path:
    """File names carry the labels, one of them in Cyrillic: a valid charset of its own."""
    return _names_folder(ctx, "unicode_label", {"ДА12_1.png".encode(): _encoded(ctx.reference, "PNG")})


def _unicode_csv(ctx: Context) -> Path:
    folder = _dataset(ctx, "unicode_csv", [*_good_rows(), ["验证码 ÄÖ.png", "7A3C"]])
    (folder / "验证码 ÄÖ.png").write_bytes(_encoded(ctx.reference, "PNG"))
    return folder


# ---------------------------------------------------------------- model cases


def _missing_run(ctx: Context) -> Path:
    return ctx.root / "models" / "no_such_run"


def _no_config(ctx: Context) -> Path:
    folder = _copy_run(ctx, "no_config")
    (folder / "config.json").unlink()
    return folder


def _no_weights(ctx: Context) -> Path:
    folder = _copy_run(ctx, "no_weights")
    (folder / "model.keras").unlink()
    return folder


def _truncated_keras(ctx: Context) -> Path:
    folder = _copy_run(ctx, "truncated_keras")
    data = (folder / "model.keras").read_bytes()
    (folder / "model.keras").write_bytes(data[: len(data) // 3])
    return folder


def _config_mismatch(ctx: Context) -> Path:
    """config.json claims two more symbols than the weights were trained for."""
    return _edit_config(ctx, "config_mismatch", lambda c: c["charset"].update(symbols=c["charset"]["symbols"] + "XY"))


def _set(key: str, value: object) -> Callable[[dict], object]:
    return lambda config: config.__setitem__(key, value)


def _bad_json(ctx: Context) -> Path:
    folder = _copy_run(ctx, "config_bad_json")
    (folder / "config.json").write_text('{"version": 1, "model": ')
    return folder


def _deep_config(ctx: Context) -> Path:
    folder = _copy_run(ctx, "config_deep_json")
    (folder / "config.json").write_text('{"version": 1, "options": ' + "[" * 100_000 + "]" * 100_000 + "}")
    return folder


def _truncated_onnx(ctx: Context) -> Path:
    source = (ctx.run or Path()) / "model.onnx"
    path = ctx.root / "models" / "truncated.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(source.read_bytes()[:2000])
    return path


def _edited_metadata(name: str, edit: Callable[[dict], object]) -> Callable[[Context], Path]:
    """The run's model.onnx with its captchalab metadata edited: it no longer fits the network."""
    def build(ctx: Context) -> Path:
        config = json.loads(((ctx.run or Path()) / "config.json").read_text())
        edit(config)
        return _onnx_metadata(ctx, name, json.dumps(config))

    return build


def _onnx_metadata(ctx: Context, name: str, value: str | None) -> Path:
    import onnx

    proto = onnx.load(str((ctx.run or Path()) / "model.onnx"))
    kept = [(p.key, p.value) for p in proto.metadata_props if p.key != "captchalab_config"]
    del proto.metadata_props[:]
    for key, old in [*kept, *([("captchalab_config", value)] if value is not None else [])]:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, old
    path = ctx.root / "models" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))
    return path


def marker_lambda(marker: Path) -> Callable:
    """A function that leaves ``marker`` behind when it runs: the payload of the malicious files."""
    return eval(f"lambda x: (__import__('pathlib').Path({str(marker)!r}).touch(), x)[1]")


def lambda_model_config(marker: Path) -> str:
    """config.json of a Keras model whose Lambda layer runs code when deserialized."""
    import keras

    inputs = keras.Input((HEIGHT, WIDTH, 1), name="image")
    outputs = keras.layers.Lambda(marker_lambda(marker), name="payload")(inputs)
    model = keras.Model(inputs, keras.layers.Flatten()(outputs))
    tmp = marker.parent / "lambda-tmp.keras"
    model.save(tmp)
    with zipfile.ZipFile(tmp) as archive:
        config = archive.read("config.json").decode()
    tmp.unlink()
    marker.unlink(missing_ok=True)  # building the model above ran the payload once, on purpose
    return config


def _lambda_config(ctx: Context) -> Path:
    """The run's model.keras with its config swapped for a Lambda payload; weights untouched.

    The rebuild-from-config.json loader must load it (the weights fit) without running it.
    """
    folder = _copy_run(ctx, "lambda_in_keras")
    config = lambda_model_config(ctx.root / "PAYLOAD_RAN")
    original = (folder / "model.keras").read_bytes()
    with zipfile.ZipFile(io.BytesIO(original)) as src, zipfile.ZipFile(folder / "model.keras", "w") as dst:
        for item in src.infolist():
            dst.writestr(item, config if item.filename == "config.json" else src.read(item.filename))
    return folder


def _lambda_model(ctx: Context) -> Path:
    """model.keras replaced by a whole different model with a Lambda layer: must be refused."""
    import keras

    folder = _copy_run(ctx, "lambda_model")
    marker = ctx.root / "PAYLOAD_RAN"
    inputs = keras.Input((HEIGHT, WIDTH, 1), name="image")
    hidden = keras.layers.Lambda(marker_lambda(marker), name="payload")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(hidden)))
    model.save(folder / "model.keras")
    marker.unlink(missing_ok=True)
    return folder


# ---------------------------------------------------------------- the table


def _configured(name: str, edit: Callable[[dict], object]) -> Callable[[Context], Path]:
    return lambda ctx: _edit_config(ctx, name, edit)


def _csv_only(name: str, text: str) -> Callable[[Context], Path]:
    return lambda ctx: _dataset(ctx, name, None, csv_text=text)


def _meta(name: str, value: str | None) -> Callable[[Context], Path]:
    return lambda ctx: _onnx_metadata(ctx, name, value)


def _image_cases() -> list[Case]:
    i = "image"
    return [
        Case("empty_file", i, DATA, "empty", _empty),
        Case("truncated_png", i, DATA, "damaged", _truncated_png),
        Case("truncated_jpeg", i, DATA, "damaged", _truncated_jpeg),
        Case("text_named_png", i, DATA, "not a readable image", _text_named_png),
        Case("pixel_bomb", i, DATA, "too many pixels", _pixel_bomb),
        Case("ztxt_bomb", i, DATA, "damaged", _text_bomb),
        Case("huge_20000x20000", i, DATA, "too many pixels", _huge),
        Case("oversize_bytes", i, DATA, "byte limit", _oversize_bytes),
        Case("one_pixel", i, 0, "", _one_pixel),
        Case("gray16", i, 0, "", _gray16),
        Case("palette_transparent", i, 0, "", _palette_transparent),
        Case("cmyk_jpeg", i, 0, "", _cmyk),
        Case("animated_gif", i, 0, "", _animated),
        Case("exif_rotated", i, 0, "", _exif_rotated),
        Case("jpeg_named_png", i, 0, "", _jpeg_named_png),
        Case("rgba_webp", i, 0, "", _rgba),
        Case("bilevel_bmp", i, 0, "", _bilevel_bmp),
        Case("non_utf8_name", i, 0, "", _non_utf8_name, commands=("solve", "api")),
        Case("unicode_name", i, 0, "", _unicode_name),
        Case("eps_named_png", i, DATA, "not a readable image", _eps_named_png),
        Case("tiff", i, DATA, "not a readable image", _tiff, commands=("solve", "api")),
    ]


def _label_cases() -> list[Case]:
    lab, whole = "labels", {"skippable": False}
    return [
        Case("empty_label", lab, DATA, "empty label", _labels("empty_label", _relabel(""))),
        Case("unknown_characters", lab, DATA, "outside the charset", _labels("unknown", _relabel("XZ12")),
             train_args=("--charset", CHARSET)),
        Case("whitespace_label", lab, DATA, "whitespace", _labels("whitespace", _relabel("AB 12"))),
        Case("duplicate_rows", lab, DATA, "duplicate", _labels("duplicate", lambda: [*_good_rows(), GOOD[1]])),
        Case("missing_file", lab, DATA, "no such file", _labels("missing", lambda: [*_good_rows(), ["gone.png", "A"]])),
        Case("folder_as_image", lab, DATA, "is a folder", _folder_row),
        Case("non_utf8_label", lab, DATA, "not valid utf-8", _non_utf8_label),
        Case("wrong_header", lab, DATA, "header", _csv_only("wrong_header", "image,text\ngood_0.png,AB12\n"), **whole),
        Case("header_only_csv", lab, DATA, "no rows", _csv_only("header_only", "file,label\n"), **whole),
        Case("empty_csv", lab, DATA, "empty", _csv_only("empty_csv", ""), **whole),
        Case("latin1_csv", lab, DATA, "utf-8", _latin1, **whole),
        Case("short_row", lab, DATA, "expected 'file,label'", _short_row, **whole),
        Case("no_images", lab, DATA, "no labels.csv and no images", _no_images, **whole),
        Case("missing_dataset", lab, DATA, "no such file or folder", lambda ctx: ctx.root / "nowhere", **whole),
        Case("bom", lab, 0, "", _bom),
        Case("unicode_csv", lab, 0, "", _unicode_csv),
        Case("unicode_label", lab, 0, "", _unicode_label, commands=("train",)),
        Case("split_csv_file", lab, 0, "", _split_csv),
        Case("label_300_characters", lab, DATA, "label longer than 256 characters",
             _labels("long_label", _relabel("A" * 300))),
        Case("control_character_label", lab, DATA, "control characters", _labels("control", _relabel("AB\x0712"))),
    ]


def _model_cases() -> list[Case]:
    mod = "model"
    return [
        Case("missing_run", mod, MODEL, "no such run folder", _missing_run),
        Case("no_config", mod, MODEL, "config.json: missing", _no_config),
        Case("no_weights", mod, MODEL, "model.keras: missing", _no_weights),
        Case("truncated_keras", mod, MODEL, "cannot load weights", _truncated_keras),
        Case("config_mismatch", mod, MODEL, "does not match config.json", _config_mismatch),
        Case("config_bad_json", mod, MODEL, "not valid json", _bad_json),
        Case("config_wrong_version", mod, MODEL, "'version': input should be 1",
             _configured("wrong_version", _set("version", 9))),
        Case("config_bad_type", mod, MODEL, "'max_length': input should be a valid integer",
             _configured("bad_type", _set("max_length", "5"))),
        Case("config_dropout", mod, MODEL, "'options.dropout'", _configured("dropout", lambda c: c["options"].update(
            dropout=5.0))),
        Case("config_rnn_units", mod, MODEL, "'options.rnn_units'", _configured("rnn_units", lambda c: c[
            "options"].update(rnn_units=10**8))),
        Case("config_deep_json", mod, MODEL, "json nested", _deep_config),
        Case("config_unknown_field", mod, MODEL, "'train.eval_me': unexpected keyword argument",
             _configured("unknown_field", lambda c: c["train"].update(eval_me="os.system('touch x')"))),
        Case("config_negative_size", mod, MODEL, "image.height",
             _configured("negative_size", lambda c: c["image"].update(height=-32))),
        Case("config_unknown_model", mod, MODEL, "unknown model", _configured("no_model", _set("model", "lambda"))),
        Case("config_bad_charset", mod, MODEL, "charset", _configured("bad_charset", _set("charset", {"symbols": ""}))),
        Case("lambda_model", mod, MODEL, "cannot load weights", _lambda_model),
        Case("lambda_in_keras_config", mod, 0, "", _lambda_config),
        Case("truncated_onnx", mod, MODEL, "not a loadable onnx model", _truncated_onnx),
        Case("onnx_no_metadata", mod, MODEL, "no captchalab metadata", _meta("plain.onnx", None)),
        Case("onnx_bad_metadata", mod, MODEL, "'version': input should be 1", _meta("bad_meta.onnx", '{"version": 0}')),
        Case("onnx_deep_metadata", mod, MODEL, "json nested", _meta("deep_meta.onnx", "[" * 100_000 + "]" * 100_000)),
        Case("onnx_metadata_image_size", mod, MODEL, "but the network takes shape",
             _edited_metadata("meta_size.onnx", lambda c: c["image"].update(width=c["image"]["width"] * 8))),
        Case("onnx_metadata_charset", mod, MODEL, "but the network's output has shape",
             _edited_metadata("meta_charset.onnx", lambda c: c["charset"].update(symbols=c["charset"]["symbols"]
                                                                                 + "XYZ"))),
        Case("onnx_metadata_dropout", mod, 0, "",  # options are the network's business, not the reader's
             _edited_metadata("meta_options.onnx", lambda c: c["options"].update(dropout=0.5))),
    ]


def _cases() -> list[Case]:
    return [*_image_cases(), *_label_cases(), *_model_cases()]


CASES = _cases()


def build(root: Path, run: Path | None = None, groups: tuple[str, ...] = GROUPS) -> dict[str, Path]:
    """Make every case of ``groups`` under ``root``; returns {case name: its input path}."""
    root.mkdir(parents=True, exist_ok=True)
    reference = reference_image()
    good = root / "good"
    good.mkdir(exist_ok=True)
    for seed, (file, label) in enumerate(GOOD):
        from captchalab.charset import Charset
        from captchalab.data.images import ImageSize
        from captchalab.data.synthetic import Renderer

        Renderer(Charset.parse(CHARSET), 4, ImageSize(HEIGHT, WIDTH), seed).render(label).save(good / file)
    ctx = Context(root, reference, run)
    return {case.name: case.build(ctx) for case in CASES if case.group in groups}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--run", type=Path, help="a trained run folder (for the model cases)")
    args = parser.parse_args()
    groups = GROUPS if args.run else GROUPS[:2]
    for name, path in build(args.out, args.run, groups).items():
        print(f"{name:24} {path}")


if __name__ == "__main__":
    main()
