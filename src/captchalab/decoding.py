"""What every head's decoding shares: readings (``Prediction``), decode-time ``Constraints``
(a length range, allowed characters, a case policy) and abstaining. NumPy only: no TensorFlow
here. How each head reads its output, and what a reading's confidence is, is in heads.py.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from captchalab.charset import BLANK, Charset, expand_ranges, parse_length
from captchalab.errors import UsageError

CASE_POLICIES = ("any", "lower", "upper")


@dataclass(frozen=True)
class Prediction:
    text: str
    confidence: float
    abstained: bool = False  # below the caller's --min-confidence, or ood: better ask for a new captcha
    # The image is unlike the model's validation images (ood.py): the reading, however confident, is
    # likely wrong. None: the model has no reference to compare with.
    ood: bool | None = None


@dataclass(frozen=True)
class Constraints:
    """What the answer may look like: ``min_length``..``max_length`` characters, only ``allowed``
    ones (None: the model's charset), and a case policy: ``any`` (as read), ``lower`` or ``upper``
    (the site ignores case: both cases of a letter count as one, answered in that case)."""

    min_length: int = 0
    max_length: int | None = None
    allowed: str | None = None
    case: str = "any"

    def __post_init__(self) -> None:
        if self.case not in CASE_POLICIES:
            raise UsageError(f"case policy '{self.case}' is not one of {', '.join(CASE_POLICIES)}")
        if self.min_length < 0 or (self.max_length is not None and self.max_length < max(1, self.min_length)):
            raise UsageError(f"length range {self.min_length}-{self.max_length} is empty; give e.g. 4-6")
        if self.allowed is not None and not self.allowed:
            raise UsageError("the allowed characters are empty; give e.g. --allowed 'a-z0-9'")

    @classmethod
    def parse(
        cls, length: int | str | None = None, allowed: str | None = None, case: str | None = None,
        charset: Charset | None = None,
    ) -> Constraints:
        """From command-line style values: ``length`` "5", "4-6", "4-" or "-6"; ``allowed`` "a-z0-9".

        With the model's ``charset``, ``allowed`` is kept to the symbols it can produce (in either case),
        so ranges are never expanded past it: the cost is bounded by the charset, whatever is asked."""
        low, high = parse_length(length) if length is not None and str(length).strip() else (0, None)
        if not allowed:
            return cls(low, high, None, case or "any")
        if charset is None:
            return cls(low, high, expand_ranges(allowed), case or "any")
        symbols = charset.symbols
        kept = expand_ranges(allowed, "".join(dict.fromkeys(symbols + symbols.lower() + symbols.upper())))
        if not kept:
            raise UsageError(f"none of the allowed characters '{allowed[:40]}' is in the model's charset '{symbols}'")
        return cls(low, high, kept, case or "any")

    @property
    def active(self) -> bool:
        return bool(self.min_length or self.max_length is not None or self.allowed is not None or self.case != "any")

    @property
    def reshapes_classes(self) -> bool:
        """The allowed characters or the case policy change the class probabilities (``constrain``);
        a length range alone only restricts the search."""
        return self.allowed is not None or self.case != "any"

    def fold(self, text: str) -> str:
        return text.lower() if self.case == "lower" else text.upper() if self.case == "upper" else text

    def allowed_symbols(self, charset: Charset) -> set[str]:
        """The allowed characters as the model writes them: a case-insensitive model's one symbol
        per letter stands for both cases, then the case policy applies."""
        return {self.fold(charset.normalize(ch)) for ch in self.allowed or ""}

    def unproducible(self, charset: Charset) -> str | None:
        """Why some allowed characters can never be answered by a model of ``charset``; None when all can."""
        if self.allowed is None:
            return None
        produced = {self.fold(ch) for ch in charset.symbols}
        missing = "".join(ch for ch in self.allowed if self.fold(charset.normalize(ch)) not in produced)
        if not missing:
            return None
        fixes = [case for case in ("lower", "upper")
                 if self.case == "any" and replace(self, case=case).unproducible(charset) is None]
        hint = f"; if the site ignores case, add --case {fixes[0]}" if fixes else ""
        return (f"the model cannot produce {_shown(missing)} of the allowed characters (its symbols: "
                f"{_shown(charset.symbols)}), so its answers never contain them{hint}")


def _shown(symbols: str, limit: int = 40) -> str:
    return f"'{symbols}'" if len(symbols) <= limit else f"'{symbols[:limit]}...' ({len(symbols)} symbols)"


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def abstain(readings: list[list[Prediction]], min_confidence: float | None) -> list[list[Prediction]]:
    """Mark the best reading of each image as abstained when its confidence is below ``min_confidence``,
    or when its image is flagged ``ood``: a caller who asks to abstain wants no confident reading of
    an image the model has never seen the like of."""
    if not min_confidence:
        return readings
    return [[replace(r[0], abstained=True), *r[1:]] if r and (r[0].confidence < min_confidence or r[0].ood) else r
            for r in readings]


# --------------------------------------------------------------------------- constrained decoding


def constrain(probs: np.ndarray, charset: Charset, constraints: Constraints) -> tuple[np.ndarray, Charset]:
    """Apply the case policy (merge both cases of a letter) and zero the disallowed symbols.

    Returns the new probabilities (not renormalized) over the returned, possibly smaller, charset.
    """
    symbols = "".join(dict.fromkeys(constraints.fold(ch) for ch in charset.symbols))
    target = Charset(symbols)
    merge = np.zeros((charset.num_classes, target.num_classes), dtype=probs.dtype)
    merge[BLANK, BLANK] = 1.0
    for i, ch in enumerate(charset.symbols, start=1):
        merge[i, target.index_of(constraints.fold(ch))] = 1.0
    folded = probs @ merge
    if constraints.allowed is not None:
        allowed = constraints.allowed_symbols(charset)
        keep = np.array([True] + [ch in allowed for ch in symbols])
        if not keep[1:].any():
            raise UsageError(f"none of the allowed characters '{constraints.allowed}' is in the model's "
                             f"charset '{charset.symbols}'")
        folded = folded * keep
    return folded, target
