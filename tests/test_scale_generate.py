"""generate on all cores: the same seed gives the same images whatever the number of worker processes."""

from __future__ import annotations

from pathlib import Path

from captchalab.data import synthetic
from captchalab.data.style import generate_like


def _contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_same_images_with_one_or_two_workers(tmp_path: Path) -> None:
    count = 2 * synthetic.CHECKPOINT_EVERY + 7  # three chunks, the last one short
    one = synthetic.generate(tmp_path / "one", count, "3-5", size="64x24", seed=9, workers=1)
    two = synthetic.generate(tmp_path / "two", count, "3-5", size="64x24", seed=9, workers=2)
    other = synthetic.generate(tmp_path / "other", 5, "3-5", size="64x24", seed=10, workers=1)
    assert _contents(one) == _contents(two)
    assert len(_contents(one)) == count + 1  # the images and labels.csv
    assert (one / "000000.png").read_bytes() != (other / "000000.png").read_bytes()


def test_a_longer_set_starts_with_the_shorter_one(tmp_path: Path) -> None:
    """Image i depends on (seed, i) alone: more images, or a resumed run, never change the first ones."""
    short = synthetic.generate(tmp_path / "short", 5, size="64x24", seed=3, workers=1)
    long = synthetic.generate(tmp_path / "long", synthetic.CHECKPOINT_EVERY + 5, size="64x24", seed=3, workers=2)
    assert all(content == (long / name).read_bytes() for name, content in _contents(short).items()
               if name != "labels.csv")


def test_like_is_the_same_with_one_or_two_workers(tiny_set: Path, tmp_path: Path) -> None:
    count = synthetic.CHECKPOINT_EVERY + 3
    one = generate_like(tmp_path / "one", tiny_set, count, seed=2, workers=1)
    two = generate_like(tmp_path / "two", tiny_set, count, seed=2, workers=2)
    assert _contents(one) == _contents(two)
