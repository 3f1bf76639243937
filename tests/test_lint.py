"""ruff and mypy --strict pass over the code (scripts/lint), on every Python we support."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_and_mypy_strict_pass() -> None:
    out = subprocess.run(["bash", str(ROOT / "scripts" / "lint"), sys.executable],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-3000:]
