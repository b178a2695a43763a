"""docs/errors.md lists every error message the package raises (found by reading src/ with ast)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ERRORS = {"UsageError", "DataError", "CharsetError", "ImageError", "ModelError", "RunFolderError", "UnknownModel",
          "CaptchaLabError", "HttpError"}
MIN_PIECE = 8  # shorter literal text (": ", "; ") says nothing about which message it is


def literal_pieces(node: ast.AST) -> list[str]:
    """The constant text of a message: a string, the literal parts of an f-string or of a + b."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.JoinedStr):
        return [v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str)]
    if isinstance(node, ast.BinOp):
        return literal_pieces(node.left) + literal_pieces(node.right)
    return []


def raise_sites() -> list[tuple[str, str]]:
    """(where, longest literal piece) of every error built in src/captchalab."""
    sites = []
    for path in sorted((ROOT / "src" / "captchalab").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            name = getattr(node.func, "id", getattr(node.func, "attr", None))
            if name in ERRORS:
                message = node.args[-1] if name == "HttpError" else node.args[0]
                pieces = [p.strip() for p in literal_pieces(message)]
                longest = max(pieces, key=len, default="")
                if len(longest) >= MIN_PIECE:
                    sites.append((f"{path.relative_to(ROOT)}:{node.lineno}", longest))
    return sites


def test_the_scan_finds_the_messages():
    assert len(raise_sites()) > 50


def test_every_error_message_is_in_docs_errors_md():
    doc = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
    missing = [f"{where}: {piece}" for where, piece in raise_sites() if piece not in doc]
    assert not missing, "add these messages (cause, fix, exit code) to docs/errors.md:\n" + "\n".join(missing)
