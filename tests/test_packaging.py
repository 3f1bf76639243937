"""One import name: the distribution installs `mediaedge` and nothing generic.

The code lives in the repo's `proxy/` and `addons/` folders; the build maps them to
`mediaedge` and `mediaedge.addons`, so a site-packages that also holds PyPI's `proxy.py`
(which installs a top-level `proxy`) is not broken by us.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.full
def test_the_wheel_holds_one_top_level_package_named_mediaedge(tmp_path: Path) -> None:
    # Build from a copy of the tracked layout, so the checkout gets no build/ directory.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "proxy", "addons"):
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, src / name)
    out = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)],
        check=True, capture_output=True, timeout=600,
    )
    (wheel,) = out.glob("mediaedge-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"mediaedge"}
    for module in ("mediaedge/cli.py", "mediaedge/signing.py", "mediaedge/__main__.py",
                   "mediaedge/policy/freshness.py", "mediaedge/origins/db.py",
                   "mediaedge/addons/mediaedge.py"):
        assert module in names
    entry = [n for n in names if n.endswith("entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(entry[0]).decode()
    assert "mediaedge = mediaedge.cli:main" in text


def test_python_dash_m_mediaedge_is_the_console_script(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "mediaedge", "--version"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    script = Path(sys.executable).with_name("mediaedge")
    out2 = subprocess.run([str(script), "--version"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip()
    assert out.stdout == out2.stdout


def test_no_generic_top_level_name_is_importable_from_outside_the_repo(tmp_path: Path) -> None:
    code = ("import importlib.util as u, mediaedge.signing as s;"
            "print(u.find_spec('proxy') is None, u.find_spec('addons') is None,"
            " s.sign_target('/m/a.jpg', 'k', 1).startswith('/m/a.jpg?exp=1&sig='))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["True", "True", "True"], out.stderr
