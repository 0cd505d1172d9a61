"""House rules that code review alone lets slip: library code logs instead of printing, no global switches."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "replknet"
LIBRARY_FILES = sorted(p for p in SRC.rglob("*.py") if "cli" not in p.relative_to(SRC).parts)


@pytest.mark.parametrize("path", LIBRARY_FILES, ids=lambda p: str(p.relative_to(SRC)))
def test_library_code_does_not_print_or_use_global_switches(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    prints = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "print"]
    assert not prints, f"{path.name}: print() at lines {prints}; log with logging.getLogger(__name__) instead"
    sync_bn_globals = [
        n.lineno
        for n in ast.walk(tree)
        if isinstance(n, ast.Global) and any("sync" in name.lower() for name in n.names)
    ]
    assert not sync_bn_globals, f"{path.name}: a module-global SyncBN switch at lines {sync_bn_globals}"
