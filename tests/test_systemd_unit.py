"""conf/mediaedge.service passes `systemd-analyze verify` once ExecStart names an installed mediaedge."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import require
from tests.edge import REPO

UNIT = os.path.join(REPO, "conf", "mediaedge.service")


@pytest.mark.full
def test_unit_verifies_with_the_installed_mediaedge(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        require("systemd-analyze (Debian's systemd package)")
    installed = os.path.join(os.path.dirname(sys.executable), "mediaedge")
    assert os.access(installed, os.X_OK), installed
    text = open(UNIT, encoding="utf-8").read()
    assert "ExecStart=/opt/mediaedge/bin/mediaedge serve" in text
    unit = tmp_path / "mediaedge.service"
    unit.write_text(text.replace("/opt/mediaedge/bin/mediaedge", installed), encoding="utf-8")
    out = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "mediaedge.service" not in out.stderr, out.stderr


def test_unit_is_hardened_and_restarts():
    text = open(UNIT, encoding="utf-8").read()
    for line in ("DynamicUser=yes", "ProtectSystem=strict", "NoNewPrivileges=yes", "StateDirectory=mediaedge",
                 "CacheDirectory=mediaedge", "Restart=on-failure", "TimeoutStopSec=15", "CapabilityBoundingSet="):
        assert f"\n{line}\n" in text, line
