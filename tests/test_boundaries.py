"""The repo's shape: the core never imports the mitmdump addon file, and nothing in the
repo points at files outside it (a user's clone has only what is in it)."""
from __future__ import annotations

import ast
import pathlib
import subprocess

REPO = pathlib.Path(__file__).resolve().parent.parent


def _imports(path: pathlib.Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_no_core_module_imports_the_addon():
    for path in sorted((REPO / "proxy").rglob("*.py")):
        assert not {n for n in _imports(path) if n.startswith("mediaedge.addons")}, path


def test_nothing_points_outside_the_repo():
    # Spelled in pieces so this file does not name them itself.
    outside = ("FACTS" + ".md", "CONTRACT" + ".md", "../" + "shared/")
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    found = []
    for name in files:
        try:
            text = (REPO / name).read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
            continue
        found += [f"{name}: {word}" for word in outside if word in text]
    assert found == []
