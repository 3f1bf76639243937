"""`mediaedge serve` as a user starts it: one line per listener, clean stop, one-line startup errors."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys

import pytest
import requests

from tests.edge import REPO, free_port, wait_until


def _serve(cwd: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "mediaedge", "serve", *args], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_defaults_print_one_line_per_listener_and_stop_cleanly(tmp_path, sig):
    port, admin = free_port(), free_port()
    # only the ports differ from the defaults: var/origin.db and var/cache are created in cwd
    p = _serve(str(tmp_path), "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}")
    try:
        wait_until(lambda: requests.get(f"http://127.0.0.1:{admin}/healthz", timeout=1).ok, 30, 0.1)
        # the admin plane opens first; the data plane once mitmproxy has bound it
        wait_until(lambda: socket.create_connection(("127.0.0.1", port), timeout=1).close() is None, 30, 0.05)
        r = requests.get(f"http://127.0.0.1:{port}/media/nothing.jpg", timeout=5)
        assert r.status_code == 404 and "detail=db" in r.headers["Cache-Status"]
        r = requests.get(f"http://127.0.0.1:{port}/not-media", timeout=5)
        assert r.status_code == 404 and r.headers["Content-Type"].startswith("text/plain")
        assert (tmp_path / "var" / "origin.db").exists() and (tmp_path / "var" / "cache").is_dir()
    finally:
        p.send_signal(sig)
        out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 2 and str(port) in lines[0] and str(admin) in lines[1]
    assert "Traceback" not in err


def test_port_in_use_is_one_line(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        p = _serve(str(tmp_path), "--listen", f"127.0.0.1:{busy}", "--admin-listen", f"127.0.0.1:{free_port()}")
        out, err = p.communicate(timeout=30)
    assert p.returncode != 0
    assert err.strip().count("\n") == 0 and "--listen" in err and "Traceback" not in err


@pytest.mark.parametrize("args,setting", [
    (["--origin-db", "postgresql://u:p@127.0.0.1:1/db"], "--origin-db"),
    (["--state-db", "mysql://root@127.0.0.1:1/db"], "--state-db"),
    (["--access-log", "/nonexistent-dir/x.log"], "--access-log"),
])
def test_unusable_databases_and_files_are_one_line(tmp_path, args, setting):
    p = _serve(str(tmp_path), "--listen", f"127.0.0.1:{free_port()}", "--admin-listen",
               f"127.0.0.1:{free_port()}", *args)
    out, err = p.communicate(timeout=60)
    assert p.returncode != 0
    assert err.strip().count("\n") == 0 and setting in err and "Traceback" not in err, err


@pytest.mark.full
def test_readme_first_command_on_a_fresh_copy(tmp_path):
    """The README's first command, minus the venv: a fresh clone, settings only for the ports."""
    dst = tmp_path / "checkout"
    subprocess.run(["git", "clone", "-q", REPO, str(dst)], check=True)
    port, admin = free_port(), free_port()
    env = {**os.environ, "MEDIAEDGE_LISTEN": f"127.0.0.1:{port}", "MEDIAEDGE_ADMIN_LISTEN": f"127.0.0.1:{admin}",
           "PYTHONPATH": str(dst)}
    p = subprocess.Popen([sys.executable, "-m", "mediaedge", "serve"], cwd=str(dst), env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: requests.get(f"http://127.0.0.1:{admin}/healthz", timeout=1).ok, 30, 0.1)
        # the admin plane opens before mitmproxy binds the data port: wait for that one too
        wait_until(lambda: socket.create_connection(("127.0.0.1", port), timeout=1).close() is None, 30, 0.1)
        assert requests.get(f"http://127.0.0.1:{port}/media/x.png", timeout=5).status_code == 404
    finally:
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=30)
    assert p.returncode == 0
    shutil.rmtree(dst)


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_ipv6_listen_addresses_serve_on_both_planes(tmp_path):
    assert _ipv6_loopback(), "this machine has ::1"
    port, admin = free_port(), free_port()
    p = _serve(str(tmp_path), "--listen", f"[::1]:{port}", "--admin-listen", f"[::1]:{admin}")
    try:
        wait_until(lambda: requests.get(f"http://[::1]:{admin}/healthz", timeout=1).ok, 30, 0.1)
        assert p.stdout is not None
        lines = [p.stdout.readline().strip(), p.stdout.readline().strip()]  # printed once both are up
        r = requests.get(f"http://[::1]:{port}/media/nothing.jpg", timeout=5)
        assert r.status_code == 404 and "detail=db" in r.headers["Cache-Status"]
        assert p.poll() is None
    finally:
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    assert lines == [f"mediaedge: data plane on http://[::1]:{port} (upstream none: database origin only)",
                     f"mediaedge: admin plane on http://[::1]:{admin}"]
    assert not out.strip()


# mediaedge with its own free-port check switched off, so that mitmproxy's bind is the
# one that finds the port taken (the race between our check and mitmproxy's bind).
_NO_PRECHECK = ("import sys; sys.path.insert(0, sys.argv.pop(1)); import mediaedge.serve as s; "
                "s._check_free = lambda *a: None; from mediaedge.cli import main; sys.exit(main(sys.argv[1:]))")


def test_data_port_taken_after_our_check_is_one_line_and_nonzero(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        p = subprocess.run([sys.executable, "-c", _NO_PRECHECK, REPO, "serve", "--listen", f"127.0.0.1:{port}",
                            "--admin-listen", f"127.0.0.1:{free_port()}"],
                           cwd=str(tmp_path), text=True, capture_output=True, timeout=60)
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert "data plane on" not in p.stdout  # never announced as up
    err = [line for line in p.stderr.splitlines() if line.strip() and " INFO " not in line]
    assert len(err) == 1 and err[0].startswith("mediaedge: error: --listen: cannot listen on 127.0.0.1:"), err
    assert "Traceback" not in p.stderr
