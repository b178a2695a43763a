"""The one data step of the benches: captcha_images_v2, found or fetched, always checked.

    python bench/data.py            # prints the folder; downloads it only when no copy is found

Where it looks, in order: ``$CAPTCHALAB_DATA/captcha_images_v2``, then the shared copy beside
the checkout (``../shared/data/captcha_images_v2``), then ``bench/.data/captcha_images_v2``
(a previous download). When none holds the images, it downloads the zip the Keras OCR example
uses (``SOURCE``) into ``bench/.data``. Whichever copy it uses, the 1,040 PNGs must match
``CHECKSUM`` (sha256 over the sorted file names and bytes), so every bench reads the same images.

The split is the one the results were measured on: the sorted file names shuffled with
``random.Random(42)``, the first 104 ``test.csv``, the other 936 ``train.csv``. A copy that
lacks the CSV files gets them written; one that has them must agree.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import random
import shutil
import sys
import urllib.request
import zipfile
from pathlib import Path

NAME = "captcha_images_v2"
SOURCE = "https://github.com/AakashKumarNain/CaptchaCracker/raw/master/captcha_images_v2.zip"
CHECKSUM = "894e6fc14c1cd3d5add0d6afb59d2dd71d23f74114e54ae58492184c7996c421"  # the 1,040 PNGs
IMAGES = 1040
TEST_IMAGES = 104
SPLIT_SEED = 42
ROOT = Path(__file__).resolve().parent.parent
DOWNLOADS = ROOT / "bench" / ".data"
MAX_ZIP_BYTES = 64 * 1024 * 1024


def content_checksum(images: Path) -> str:
    """sha256 over each PNG's name and bytes, in sorted name order."""
    digest = hashlib.sha256()
    for path in sorted(images.glob("*.png")):
        digest.update(path.name.encode("utf-8") + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


def candidates() -> list[Path]:
    found = [Path(os.environ["CAPTCHALAB_DATA"]) / NAME] if os.environ.get("CAPTCHALAB_DATA") else []
    return [*found, ROOT.parent / "shared" / "data" / NAME, DOWNLOADS / NAME]


def captcha_images_v2(download: bool = True) -> Path:
    """The checked folder (``images/``, ``train.csv``, ``test.csv``); downloads only when no copy exists."""
    for folder in candidates():
        if (folder / "images").is_dir():
            return _checked(folder)
    if not download:
        raise SystemExit(f"{NAME} not found in {', '.join(map(str, candidates()))}; run python bench/data.py")
    return _checked(_download(DOWNLOADS / NAME))


def _checked(folder: Path) -> Path:
    images = folder / "images"
    count = len(list(images.glob("*.png")))
    got = content_checksum(images)
    if count != IMAGES or got != CHECKSUM:
        raise SystemExit(f"{folder}: {count} PNGs with checksum {got}; expected {IMAGES} with {CHECKSUM}. "
                         "Remove the folder (or fix $CAPTCHALAB_DATA) and run python bench/data.py again")
    _write_split(folder)
    return folder


def _split(names: list[str]) -> tuple[list[str], list[str]]:
    order = sorted(names)
    random.Random(SPLIT_SEED).shuffle(order)
    return sorted(order[TEST_IMAGES:]), sorted(order[:TEST_IMAGES])


def _write_split(folder: Path) -> None:
    """train.csv and test.csv as measured; existing ones must be the same split."""
    train, test = _split([p.name for p in (folder / "images").glob("*.png")])
    for name, files in (("train.csv", train), ("test.csv", test)):
        rows = [("file", "label"), *((f"images/{f}", Path(f).stem) for f in files)]
        path = folder / name
        if path.exists():
            with open(path, newline="", encoding="utf-8") as handle:
                if [tuple(r) for r in csv.reader(handle)] != rows:
                    raise SystemExit(f"{path}: not the split the results were measured on; remove it to rewrite it")
            continue
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerows(rows)
        path.write_text(text.getvalue(), encoding="utf-8")


def _download(folder: Path) -> Path:
    print(f"downloading {SOURCE}", file=sys.stderr)
    with urllib.request.urlopen(SOURCE, timeout=60) as response:
        payload = response.read(MAX_ZIP_BYTES + 1)
    if len(payload) > MAX_ZIP_BYTES:
        raise SystemExit(f"{SOURCE}: larger than {MAX_ZIP_BYTES} bytes; not the expected archive")
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    (partial / "images").mkdir(parents=True)
    with zipfile.ZipFile(io.BytesIO(payload)) as archive:
        for entry in archive.infolist():
            name = Path(entry.filename).name  # flat: no path from the archive is trusted
            if not entry.is_dir() and name.endswith(".png") and not name.startswith("."):
                (partial / "images" / name).write_bytes(archive.read(entry))
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return folder


if __name__ == "__main__":
    print(captcha_images_v2())
