"""The addon in plain `mitmdump -s addons/mediaedge.py`, configured the mitmproxy way."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

import requests

from mediaedge.signing import sign_target
from tests.edge import REPO, Route, Upstream, free_port, venv_executable, wait_until


def test_addon_loads_in_mitmdump_and_caches(tmp_path):
    mitmdump = venv_executable("mitmdump")
    assert mitmdump, "mitmdump is installed with mitmproxy"
    up = Upstream()
    up.routes["/media/m.jpg"] = Route(body=b"from the app", headers={"X-Media-Revision": "m1"})
    port, admin = free_port(), free_port()
    cmd = [mitmdump, "-q", "--mode", f"reverse:{up.url}@127.0.0.1:{port}", "-s", os.path.join(REPO, "addons", "mediaedge.py"),
           "--set", f"mediaedge_origin_db=sqlite:///{tmp_path}/o.db", "--set", f"mediaedge_cache_dir={tmp_path}/cache",
           "--set", f"mediaedge_admin_listen=127.0.0.1:{admin}",
           "--set", "mediaedge_signed_prefix=/media/p/", "--set", "mediaedge_signing_key=k1:s3cret"]
    up.routes["/media/p/s.jpg"] = Route(body=b"signed", headers={"X-Media-Revision": "s1"})
    log = open(tmp_path / "mitmdump.log", "wb")
    proc = subprocess.Popen(cmd, cwd=str(tmp_path), stdout=log, stderr=subprocess.STDOUT)
    try:
        def up_() -> bool:
            assert proc.poll() is None, (tmp_path / "mitmdump.log").read_text()
            requests.get(f"http://127.0.0.1:{admin}/healthz", timeout=1).raise_for_status()
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True

        wait_until(up_, 30, 0.1, "mitmdump to listen")
        url = f"http://127.0.0.1:{port}/media/m.jpg"
        r = requests.get(url, timeout=10)
        assert r.content == b"from the app" and "fwd=miss" in r.headers["Cache-Status"]
        assert requests.get(f"http://127.0.0.1:{port}/media/p/s.jpg", timeout=10).status_code == 403
        link = sign_target("/media/p/s.jpg", "s3cret", int(time.time()) + 60, "k1")
        r = requests.get(f"http://127.0.0.1:{port}{link}", timeout=10)
        assert (r.status_code, r.content, r.headers["Cache-Control"]) == (200, b"signed", "private")
        up.close()  # the app server dies: hits still served (lazy connections)
        r = requests.get(url, timeout=10)
        assert r.content == b"from the app" and r.headers["Cache-Status"].startswith("mediaedge; hit")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_every_setting_but_listen_is_a_mitmdump_option_with_the_tables_help():
    """One spelling of each setting: the addon's options are derived from OPTIONS."""
    from mitmproxy.test import taddons

    from mediaedge.addons.mediaedge import MediaEdge
    from mediaedge.config import OPTIONS

    addon = MediaEdge()
    with taddons.context(addon) as tctx:
        options = tctx.options._options
        for o in OPTIONS:
            name = "mediaedge_" + o.name.replace("-", "_")
            if o.name == "listen":
                assert name not in options  # mitmproxy's own listen_host/listen_port
                continue
            assert name in options, name
            assert options[name].help.startswith(o.help), name
            assert (options[name].typespec is not str) == o.repeatable, name
        assert "mediaedge_config" in options


def test_addon_refuses_an_admin_plane_beyond_loopback_without_a_token(tmp_path):
    mitmdump = venv_executable("mitmdump")
    assert mitmdump, "mitmdump is installed with mitmproxy"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAEDGE_")}
    cmd = [mitmdump, "-q", "--mode", f"reverse:http://127.0.0.1:9@127.0.0.1:{free_port()}",
           "-s", os.path.join(REPO, "addons", "mediaedge.py"),
           "--set", f"mediaedge_origin_db=sqlite:///{tmp_path}/o.db", "--set", f"mediaedge_cache_dir={tmp_path}/cache",
           "--set", f"mediaedge_admin_listen=0.0.0.0:{free_port()}"]
    p = subprocess.run(cmd, cwd=str(tmp_path), capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode != 0
    assert "--admin-token: required when --admin-listen (0.0.0.0:" in p.stdout + p.stderr
    assert not (tmp_path / "cache").exists()
