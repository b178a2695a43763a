import csv
import shutil

import numpy as np
import pytest
from PIL import Image

from captchalab.charset import Charset
from captchalab.data.folder import load_dataset, read_labels_csv, typical_size, write_labels_csv
from captchalab.data.images import ImageSize
from captchalab.data.synthetic import generate
from captchalab.errors import DataError, RunFolderError


def test_generate_is_deterministic_by_seed(tmp_path):
    a = generate(tmp_path / "a", 5, seed=7)
    b = generate(tmp_path / "b", 5, seed=7)
    c = generate(tmp_path / "c", 5, seed=8)
    assert (a / "labels.csv").read_text() == (b / "labels.csv").read_text()
    assert (a / "000003.png").read_bytes() == (b / "000003.png").read_bytes()
    assert (a / "labels.csv").read_text() != (c / "labels.csv").read_text()


def test_generate_never_overwrites(tmp_path):
    generate(tmp_path / "a", 2)
    with pytest.raises(RunFolderError, match="already holds files"):
        generate(tmp_path / "a", 2)


def test_length_range_and_size(tmp_path):
    folder = generate(tmp_path / "d", 20, length="3-4", charset="AB", size="64x24", seed=2)
    data = load_dataset(folder)
    assert {len(label) for label in data.labels} <= {3, 4}
    assert data.pixels.shape[1:] == (24, 64)
    assert set("".join(data.labels)) <= {"A", "B"}


def test_labels_from_file_names(tmp_path):
    for name in ("AB12.png", "AB12_0002.png", "ZZ9.png"):
        Image.new("L", (40, 20), 255).save(tmp_path / name)
    data = load_dataset(tmp_path)
    assert sorted(data.labels) == ["AB12", "AB12", "ZZ9"]
    assert data.charset.symbols == "129ABZ"


def test_split_csv_paths_are_relative_to_the_csv(tiny_set, tmp_path):
    root = tmp_path / "set"
    shutil.copytree(tiny_set, root)
    rows = list(csv.reader((root / "labels.csv").read_text().splitlines()))
    (root / "train.csv").write_text("\n".join(",".join(r) for r in rows[:11]) + "\n")
    data = load_dataset(root / "train.csv")
    assert len(data) == 10


def test_every_problem_is_reported_at_once(tiny_set, tmp_path):
    root = tmp_path / "bad"
    shutil.copytree(tiny_set, root)
    (root / "000001.png").write_bytes(b"")
    lines = (root / "labels.csv").read_text().splitlines()
    lines[3] = "000002.png,AB!"
    lines.append("missing.png,ABCD")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as error:
        load_dataset(root, charset=Charset.parse("0-9A-F"))
    message = str(error.value)
    assert "000001.png" in message and "000002.png" in message and "missing.png" in message
    assert "--skip-bad" in message
    data = load_dataset(root, charset=Charset.parse("0-9A-F"), skip_bad=True)
    assert len(data) == 38 and len(data.skipped) == 3


def test_transparency_is_composited_on_white(tmp_path):
    image = Image.new("RGBA", (30, 20), (0, 0, 0, 0))
    image.putpixel((5, 5), (0, 0, 0, 255))
    image.save(tmp_path / "A.png")
    pixels = load_dataset(tmp_path).pixels[0]
    assert pixels[0, 0] == 255 and pixels[5, 5] == 0
    assert pixels.dtype == np.uint8


def _labelled(folder, images):
    """A folder of (name, label, PIL image) with its labels.csv."""
    folder.mkdir()
    for name, _, image in images:
        image.save(folder / name, exif=image.getexif())
    write_labels_csv(folder / "labels.csv", [(name, label) for name, label, _ in images])
    return folder


def test_one_size_survey_for_datasets_and_styles(tmp_path):
    """load_dataset and style.estimate take the image size from the same survey: as shown
    (EXIF rotation applied), and a set of oversized images is refused by both, in the same words."""
    from captchalab.data import style

    turned = Image.new("RGB", (30, 90), "white")  # stored 30 wide, 90 tall; shown turned: 90x30
    turned.getexif()[0x0112] = 6
    upright = [(f"{i}.png", "AB", Image.new("RGB", (90, 30), "white")) for i in range(2)]
    folder = _labelled(tmp_path / "turned", [*upright, *((f"t{i}.jpg", "AB", turned) for i in range(3))])
    assert style.typical_size is typical_size  # estimate's survey is the loader's
    assert load_dataset(folder).size == typical_size(folder, ["t0.jpg", "0.png"]) == ImageSize(30, 90)
    huge = _labelled(tmp_path / "huge", [(f"{i}.png", "AB", Image.new("L", (4097, 20), 255)) for i in range(2)])
    with pytest.raises(DataError, match="4097x20 are over the size limits") as from_load:
        load_dataset(huge)
    with pytest.raises(DataError) as from_style:
        style.estimate(huge)
    assert str(from_load.value) == str(from_style.value)


def test_labels_csv_writer_round_trips_through_the_reader(tmp_path):
    rows = [("a,b.png", 'q"1'), ("dir/é.png", "x,y"), ("c.png", "-")]
    path = write_labels_csv(tmp_path / "sub" / "labels.csv", rows)
    assert read_labels_csv(path) == rows
    assert path.read_bytes().startswith(b"file,label\n")
    assert not [p for p in path.parent.iterdir() if p.name != "labels.csv"]  # no temporary left behind


def test_one_length_parser_with_one_rule_for_generate_and_solve(tmp_path):
    """"4-" means 4 or more wherever a length is read: solve takes it, generate (which needs an
    upper end) refuses it instead of reading it as 4, as it did before."""
    import typer.main

    from captchalab.charset import parse_length
    from captchalab.cli import app
    from captchalab.decoding import Constraints
    from captchalab.errors import UsageError
    from clirun import run_cli

    assert [parse_length(t) for t in ("5", " 4-6 ", "4-", "-6", 3)] == [(5, 5), (4, 6), (4, None), (0, 6), (3, 3)]
    assert Constraints.parse("4-") == Constraints(4, None)
    with pytest.raises(UsageError, match="no upper end"):
        generate(tmp_path / "open", 2, length="4-")
    assert not (tmp_path / "open").exists()
    refused = run_cli("generate", tmp_path / "cli", "-n", "2", "--length", "4-")
    assert refused.failed_cleanly(2, "no upper end")
    for bad in ("x", "4-x", "0-3", "3-40"):
        with pytest.raises(UsageError, match="length"):
            generate(tmp_path / "bad", 2, length=bad)
    solve = typer.main.get_command(app).commands["solve"]
    assert "4- (4 or more)" in next(p.help for p in solve.params if p.name == "length")
