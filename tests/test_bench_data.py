"""bench/data.py: captcha_images_v2 found or downloaded, and checked against its pinned checksum either way."""

from __future__ import annotations

import importlib.util
import io
import zipfile
from pathlib import Path
from types import ModuleType

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """bench/data.py with its search path, download folder and source pointed at a tiny local archive."""
    spec = importlib.util.spec_from_file_location("bench_data", ROOT / "bench" / "data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        for name in ("2b827", "3den6", "x3deb", "yyn57"):
            png = io.BytesIO()
            Image.new("L", (20, 10), 200).save(png, format="PNG")
            zipped.writestr(f"captcha_images_v2/{name}.png", png.getvalue())
        zipped.writestr("__MACOSX/._2b827.png", b"junk")
    (tmp_path / "v2.zip").write_bytes(archive.getvalue())
    monkeypatch.setattr(module, "SOURCE", (tmp_path / "v2.zip").as_uri())
    monkeypatch.setattr(module, "DOWNLOADS", tmp_path / "downloads")
    monkeypatch.setattr(module, "candidates", lambda: [tmp_path / "nowhere", tmp_path / "downloads" / module.NAME])
    monkeypatch.setattr(module, "IMAGES", 4)
    monkeypatch.setattr(module, "TEST_IMAGES", 1)
    return module


def test_download_is_checked_and_split(data: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "CHECKSUM", "0" * 64)
    with pytest.raises(SystemExit, match="expected 4 with 0000"):
        data.captcha_images_v2()
    good = data.content_checksum(tmp_path / "downloads" / data.NAME / "images")
    monkeypatch.setattr(data, "CHECKSUM", good)
    folder = data.captcha_images_v2()  # the copy downloaded above, found and checked
    assert sorted(p.name for p in (folder / "images").iterdir()) == ["2b827.png", "3den6.png", "x3deb.png",
                                                                   "yyn57.png"]
    test = (folder / "test.csv").read_text().splitlines()
    train = (folder / "train.csv").read_text().splitlines()
    assert test[0] == train[0] == "file,label" and len(test) == 2 and len(train) == 4
    assert test[1].split(",")[1] == Path(test[1].split(",")[0]).stem
    (folder / "images" / "2b827.png").write_bytes(b"changed")
    with pytest.raises(SystemExit, match="checksum"):
        data.captcha_images_v2()


def test_a_different_split_on_disk_is_refused(data: ModuleType, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "CHECKSUM", "0" * 64)
    with pytest.raises(SystemExit):
        data.captcha_images_v2()
    folder = tmp_path / "downloads" / data.NAME
    monkeypatch.setattr(data, "CHECKSUM", data.content_checksum(folder / "images"))
    (folder / "test.csv").write_text("file,label\nimages/yyn57.png,yyn57\n")
    (folder / "train.csv").write_text("file,label\n")
    with pytest.raises(SystemExit, match="not the split"):
        data.captcha_images_v2()


def test_the_pinned_split_is_the_one_of_the_measured_results() -> None:
    """The rule reproduces the committed split's sizes (the shared copy, when present, is checked in full)."""
    spec = importlib.util.spec_from_file_location("bench_data", ROOT / "bench" / "data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    train, test = module._split([f"{i:05d}.png" for i in range(module.IMAGES)])
    assert (len(train), len(test)) == (936, 104) and not set(train) & set(test)
    shared = ROOT.parent / "shared" / "data" / module.NAME
    if (shared / "images").is_dir():
        assert module.captcha_images_v2(download=False) == shared
