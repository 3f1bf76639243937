"""The README's tour runs as written: its lines are read from README.md itself.

The block after `<!-- tour -->` is run line by line, in order, by one bash
process (so `export`, `&` and `kill %1` behave as in a terminal), in a copy of
the repository's files (tracked and untracked, not ignored: no venv, no var/).
Two documented substitutions only:
- the setup block (`<!-- tour-setup -->`: venv, pip install, activate) is not run;
  the bin directory of the venv running the tests goes first on PATH instead;
- ports 8080 and 8081 become free ports: in the text of the lines
  (`localhost:8080` -> `localhost:P`) and, for `serve` and the commands that find
  the admin plane from the settings, through MEDIAEDGE_LISTEN / MEDIAEDGE_ADMIN_LISTEN.

Every line of the tour must have a row in EXPECTED (a new line without one fails
the test), which gives the exit status and what its output must contain.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import require
from tests.edge import REPO, free_port

README = Path(REPO) / "README.md"
TIMEOUT = 180  # seconds, the whole tour


def tour_lines(text: str) -> list[str]:
    """The commands of the `<!-- tour -->` block: one per line, `\\` continuations joined."""
    match = re.search(r"<!-- tour -->\s*```sh\n(.*?)```", text, re.S)
    assert match, "README.md has no ```sh block after <!-- tour -->"
    lines: list[str] = []
    pending = ""
    for line in match.group(1).splitlines():
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        if line.strip() and not line.lstrip().startswith("#"):
            lines.append(line)
    return lines


def with_ports(line: str, port: int, admin_port: int) -> str:
    line = re.sub(r"\b(localhost|127\.0\.0\.1):8080\b", rf"\g<1>:{port}", line)
    return re.sub(r"\b(localhost|127\.0\.0\.1):8081\b", rf"\g<1>:{admin_port}", line)


def copy_repo(dest: Path) -> None:
    listed = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, (n.decode() for n in listed)):
        source = Path(REPO) / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


def script(lines: list[str], out: Path) -> str:
    """Each line in a group whose output goes to its own files, then its exit status."""
    parts = []
    for i, line in enumerate(lines):
        parts.append(f'{{ {line}\n}} >"{out}/{i}.out" 2>"{out}/{i}.err" </dev/null; echo $? >"{out}/{i}.rc"\n')
    return "".join(parts)


# (a regex the line must match, its exit status, regexes its stdout must match)
EXPECTED: list[tuple[str, int, list[str]]] = [
    (r"^export MEDIAEDGE_WEBHOOK_SECRET=", 0, []),
    (r"^mkdir -p var/sample/catalog", 0, []),
    (r"^mediaedge import var/sample\b", 0, [r"^imported 2, unchanged 0, failed 0 \(\d+ bytes\)$"]),
    (r"^mediaedge check\b", 0, [r"^origin database .*: ok$", r"^cache directory var/cache: ok$"]),
    (r"^mediaedge serve &", 0, []),
    (r"^curl .*--retry-connrefused", 0, []),
    (r"^curl -s -D - -o /dev/null localhost:\d+/media/logo\.png", 0,
     [r"^HTTP/1\.1 200 ", r"^Cache-Status: mediaedge; fwd=miss; fwd-status=200; stored; detail=db$"]),
    (r"^curl -s -D - -o /dev/null localhost:\d+/media/logo\.png", 0,
     [r"^HTTP/1\.1 200 ", r"^Cache-Status: mediaedge; hit; ttl=\d+$"]),
    (r"^curl .*Range: bytes=0-99", 0, [r"^HTTP/1\.1 206 ", r"^Content-Range: bytes 0-99/\d+$"]),
    (r"^curl -si localhost:\d+/media/catalog/new\.txt", 0, [r"^HTTP/1\.1 404 ", r"^not found$"]),
    (r"^echo 'a new file' > var/sample/catalog/new\.txt && mediaedge import", 0,
     [r"^imported 1, unchanged 2, failed 0 \(\d+ bytes\)$"]),
    (r"^sleep 1\b", 0, []),
    (r"^curl -si localhost:\d+/media/catalog/new\.txt", 0,
     [r"^HTTP/1\.1 200 ", r"^Cache-Status: mediaedge; fwd=miss; fwd-status=200; stored; detail=db$",
      r"^a new file$"]),
    (r"^mediaedge stats\b", 0, [r"hit ratio\s+40\.0%", r"requests by result"]),
    (r"^curl -s localhost:\d+/stats", 0, [r'"hits": ?2\b']),
    (r"^curl -s localhost:\d+/metrics", 0, [r'^mediaedge_requests_total\{result="hit"\} 2\.0$']),
    (r"^mediaedge publish /media/catalog/hello\.txt --delete", 0, [r"^deleted /media/catalog/hello\.txt \(seq \d+\)$"]),
    (r"^mediaedge purge --prefix /media/catalog/", 0, [r"^purged prefix /media/catalog/ \(seq \d+\)$"]),
    (r"^mediaedge purge --all", 0, [r"^purged prefix /, every entry \(seq \d+\)$"]),
    (r"^kill %1; wait", 0, []),
]


def test_the_tour_is_listed_line_by_line():
    lines = tour_lines(README.read_text(encoding="utf-8"))
    assert len(lines) == len(EXPECTED), lines
    for line, (pattern, _, _) in zip(lines, EXPECTED):
        assert re.search(pattern, line), (pattern, line)
    setup = re.search(r"<!-- tour-setup -->\s*```sh\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert setup and "pip install -e ." in setup.group(1) and ".venv/bin/activate" in setup.group(1)


def test_the_readme_tour_runs_as_written(tmp_path):
    for tool in ("bash", "curl", "git"):
        if not shutil.which(tool):
            require(f"{tool}, which the README's tour uses")
    clone, out = tmp_path / "clone", tmp_path / "out"
    clone.mkdir()
    out.mkdir()
    copy_repo(clone)
    port, admin_port = free_port(), free_port()
    lines = [with_ports(line, port, admin_port) for line in tour_lines(README.read_text(encoding="utf-8"))]
    bin_dir = os.path.dirname(sys.executable)
    env = {
        "PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "COLUMNS": "100",
        "MEDIAEDGE_LISTEN": f"127.0.0.1:{port}",
        "MEDIAEDGE_ADMIN_LISTEN": f"127.0.0.1:{admin_port}",
    }
    started = time.monotonic()
    process = subprocess.Popen(["bash", "-c", script(lines, out)], cwd=clone, env=env, start_new_session=True)
    try:
        process.wait(TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise AssertionError(f"the tour did not finish within {TIMEOUT} s") from None
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    elapsed = time.monotonic() - started
    print(f"\nthe README tour took {elapsed:.1f} s ({len(lines)} lines)")

    def read(i: int, kind: str) -> str:
        path = out / f"{i}.{kind}"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    for i, (line, (_, rc, patterns)) in enumerate(zip(lines, EXPECTED)):
        stdout, stderr = read(i, "out"), read(i, "err")
        where = f"tour line {i + 1}: {line}\nstdout:\n{stdout}\nstderr:\n{stderr}"
        assert read(i, "rc").strip() == str(rc), where
        for pattern in patterns:
            assert re.search(pattern, stdout, re.M), f"{pattern!r} not in the output of {where}"
        assert "Traceback" not in stderr, where
    # serve's own output went to its line's files: two listener lines, a clean stop
    serve = next(i for i, line in enumerate(lines) if line.startswith("mediaedge serve &"))
    assert f"data plane on http://127.0.0.1:{port}" in read(serve, "out")
    assert f"admin plane on http://127.0.0.1:{admin_port}" in read(serve, "out")
    assert "Traceback" not in read(serve, "err")
    stats = json.loads(read(next(i for i, line in enumerate(lines) if "/stats" in line), "out"))
    assert (stats["requests"], stats["hits"], stats["misses"], stats["errors"]) == (5, 2, 3, 0)
    assert elapsed < TIMEOUT
