"""The one place that knows about character indices.

Index 0 is reserved: it is the CTC blank for sequence models and the "no character here"
padding class for models with one head per position. Symbols start at index 1.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from captchalab.errors import CharsetError, UsageError

BLANK = 0
MAX_LABEL_LENGTH = 256  # the longest label a model can have: checked when training and when loading


def label_problem(label: str, charset: Charset | None = None, max_length: int | None = None) -> tuple[str, str] | None:
    """What makes ``label`` unusable, as (kind, detail), or None: the one rule for every label.

    ``max_length``: a fixed-length model's own limit, tighter than MAX_LABEL_LENGTH.
    """
    if not label:
        return "empty label", ""
    if any(ch.isspace() for ch in label):
        return "label contains whitespace", repr(label)
    try:
        label.encode("utf-8")
    except UnicodeEncodeError:
        return "label is not valid UTF-8 (a file name in another encoding); rename the file", ""
    if not label.isprintable():
        return "label contains control characters", ascii(label)
    if charset is not None and charset.unknown(label):
        return f"characters outside the charset '{charset.symbols}'", f"{label!r} has {charset.unknown(label)!r}"
    if max_length is not None and len(label) > max_length:
        return f"label longer than the model's {max_length} characters", repr(label)
    if len(label) > MAX_LABEL_LENGTH:
        return f"label longer than {MAX_LABEL_LENGTH} characters", f"{len(label)} characters"
    return None


def parse_length(length: int | str) -> tuple[int, int | None]:
    """A label length or range as users write it, to (least, most), inclusive; most None: no limit.

    ``5`` is exactly 5, ``"4-6"`` 4 to 6, ``"4-"`` 4 or more, ``"-6"`` at most 6 (least 0). The one
    parser of ``solve --length`` (decoding.Constraints) and ``generate --length`` (which needs both
    ends); the ranges each accepts are checked where they are used.
    """
    text = str(length).strip()
    least, dash, most = text.partition("-")
    try:
        low = int(least) if least else 0
        return low, (int(most) if most else None) if dash else low
    except ValueError:
        raise UsageError(f"length '{text}' is not a number or a range like 4-6") from None


def expand_ranges(spec: str, within: str | None = None) -> str:
    """Expand ``"0-9A-Z"`` into ``"0123456789AB...Z"``; a ``-`` at either end is literal.

    With ``within``, only its symbols are kept, and a range is matched against them rather than
    enumerated: ``"\x01-\U0010ffff"`` then costs ``len(within)`` steps, not a million.
    """
    symbols: list[str] = []
    i = 0
    while i < len(spec):
        if i + 2 < len(spec) and spec[i + 1] == "-":
            start, end = ord(spec[i]), ord(spec[i + 2])
            if end < start:
                raise CharsetError(f"charset range '{spec[i:i + 3]}' runs backwards; write it low-high")
            if within is None:
                symbols.extend(chr(c) for c in range(start, end + 1))
            else:
                symbols.extend(ch for ch in within if start <= ord(ch) <= end)
            i += 3
        else:
            if within is None or spec[i] in within:
                symbols.append(spec[i])
            i += 1
    return "".join(dict.fromkeys(symbols))


@dataclass(frozen=True)
class Charset:
    """An ordered set of symbols plus the case policy."""

    symbols: str
    case_insensitive: bool = False

    def __post_init__(self) -> None:
        if not self.symbols:
            raise CharsetError("the charset is empty; give one such as --charset '0-9A-Z'")
        if any(ch.isspace() for ch in self.symbols):
            raise CharsetError("the charset contains whitespace; labels cannot use it")
        if len(set(self.symbols)) != len(self.symbols):
            raise CharsetError(f"the charset '{self.symbols}' repeats a symbol")

    @classmethod
    def parse(cls, spec: str, case_insensitive: bool = False) -> Charset:
        symbols = expand_ranges(spec)
        if case_insensitive:
            symbols = "".join(dict.fromkeys(symbols.upper()))
        return cls(symbols, case_insensitive)

    @classmethod
    def from_labels(cls, labels: Iterable[str], case_insensitive: bool = False) -> Charset:
        text = "".join(labels)
        if case_insensitive:
            text = text.upper()
        return cls("".join(sorted(set(text))), case_insensitive)

    @property
    def num_classes(self) -> int:
        """Symbols plus the blank."""
        return len(self.symbols) + 1

    def normalize(self, text: str) -> str:
        return text.upper() if self.case_insensitive else text

    def unknown(self, text: str) -> str:
        """The characters of ``text`` that this charset cannot encode, in order of appearance."""
        known = set(self.symbols)
        return "".join(dict.fromkeys(ch for ch in self.normalize(text) if ch not in known))

    def encode(self, text: str) -> list[int]:
        index = self._index
        try:
            return [index[ch] for ch in self.normalize(text)]
        except KeyError as missing:
            raise CharsetError(
                f"label '{text}' has character {missing} outside the charset '{self.symbols}'"
            ) from None

    def encode_batch(self, labels: Sequence[str], length: int) -> np.ndarray:
        """Training targets: (len(labels), length) int32, each label's indices cut to ``length`` and
        padded with BLANK (the "no character" class of a model with one head per position)."""
        targets = np.full((len(labels), length), BLANK, dtype=np.int32)
        for row, label in enumerate(labels):
            codes = self.encode(label)[:length]
            targets[row, : len(codes)] = codes
        return targets

    def index_of(self, symbol: str) -> int | None:
        """The class index of ``symbol`` as written (no case folding); None when it is not a symbol."""
        return self._index.get(symbol)

    def decode(self, indices: Sequence[int] | Iterable[int]) -> str:
        """Indices to text; the blank and out-of-range indices are dropped."""
        n = len(self.symbols)
        return "".join(self.symbols[i - 1] for i in indices if 0 < i <= n)

    @cached_property
    def _index(self) -> dict[str, int]:
        return {ch: i + 1 for i, ch in enumerate(self.symbols)}

    def to_dict(self) -> dict[str, object]:
        return {"symbols": self.symbols, "case_insensitive": self.case_insensitive}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Charset:
        symbols, folded = data.get("symbols"), data.get("case_insensitive", False)
        if not isinstance(symbols, str) or not isinstance(folded, bool):
            raise CharsetError("charset in config.json must be {'symbols': str, 'case_insensitive': bool}")
        return cls(symbols, folded)
