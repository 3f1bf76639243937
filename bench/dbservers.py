"""Throw-away PostgreSQL and MariaDB servers for the test suite and the bench (tests/dbservers.py
re-exports them).

Each server lives in its own temporary directory (data, unix socket, log), listens
on a free 127.0.0.1 port, and is stopped and deleted by `stop()`. Nothing here
touches the system services that Debian's packages install.

Readiness is a bounded poll (connect until it works or the deadline passes);
when the server process dies first, the error carries the tail of its log.
Missing binaries raise `ServerUnavailable`; conftest turns that into a skip in
the quick tier and a failure in the full tier (MEDIAEDGE_FULL=1).
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from collections.abc import Callable

from bench.ports import free_port  # one implementation for the tests and the bench

START_TIMEOUT = 90.0  # seconds; mariadb-install-db alone can take ~10 s on a slow CI box
STOP_TIMEOUT = 30.0


class ServerUnavailable(Exception):
    """The binaries for a database server are not installed."""


class ServerFailed(Exception):
    """A database server was found but did not start."""


def wait_until(ready: Callable[[], bool], proc: subprocess.Popen, log: str, what: str) -> None:
    """Poll `ready()` until it returns True; fail early if `proc` exits, late at the deadline."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerFailed(f"{what} exited with {proc.returncode}: {_tail(log)}")
        if ready():
            return
        time.sleep(0.1)
    raise ServerFailed(f"{what} not ready after {START_TIMEOUT:.0f} s: {_tail(log)}")


def _die_with_parent() -> None:
    """Runs in the server's child process: SIGTERM it if the test process dies (e.g. a killed CI job).

    prctl is looked up here, in the parent: after the switch to the postgres
    account the child may not be able to import anything from root's Python.
    """
    _prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG


def _load_prctl():
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux: no parent-death signal, servers stop at teardown only
        return lambda *args: 0


_prctl = _load_prctl()


def _tail(path: str, lines: int = 15) -> str:
    try:
        with open(path, errors="replace") as f:
            return " | ".join(f.read().splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _run(cmd: list[str], log: str, **kw) -> None:
    with open(log, "ab") as out:
        res = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=START_TIMEOUT, **kw)
    if res.returncode != 0:
        raise ServerFailed(f"{os.path.basename(cmd[0])} failed ({res.returncode}): {_tail(log)}")


@dataclass
class _Server:
    tmpdir: str = ""
    port: int = 0
    proc: subprocess.Popen | None = None
    log: str = ""
    _counter: int = field(default=0, repr=False)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(self._stop_signal)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if self.tmpdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = ""

    _stop_signal = signal.SIGTERM

    def _ready(self) -> bool:
        raise NotImplementedError

    def _started(self, what: str) -> bool:
        """True once ready; False if it lost the race for its port (try another); raises otherwise."""
        try:
            wait_until(self._ready, self.proc, self.log, what)
            return True
        except ServerFailed:
            lost_port = self.proc.poll() is not None and "in use" in _tail(self.log, 5)
            if not lost_port:
                self.stop()
                raise
            return False

    def _next_name(self) -> str:
        self._counter += 1
        return f"t{os.getpid()}_{self._counter}"


# --- PostgreSQL -------------------------------------------------------------


def find_pg_bin() -> str:
    """The directory holding initdb and postgres: $MEDIAEDGE_PG_BIN, PATH, or Debian's layout."""
    candidates = [os.environ.get("MEDIAEDGE_PG_BIN", "")]
    which = shutil.which("initdb")
    candidates.append(os.path.dirname(which) if which else "")
    # Debian keeps them off PATH, one directory per major version; prefer the newest.
    versions = glob.glob("/usr/lib/postgresql/*/bin")
    candidates += sorted(versions, key=lambda p: int(p.split("/")[-2]) if p.split("/")[-2].isdigit() else 0, reverse=True)
    for d in candidates:
        if d and os.access(os.path.join(d, "initdb"), os.X_OK) and os.access(os.path.join(d, "postgres"), os.X_OK):
            return d
    raise ServerUnavailable("PostgreSQL binaries not found (initdb, postgres); run scripts/install-deps.sh")


def _unprivileged_user() -> pwd.struct_passwd | None:
    """PostgreSQL refuses to run as root: pick the `postgres` account (or `nobody`) then."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise ServerUnavailable("running as root and no 'postgres' or 'nobody' user to run PostgreSQL as")


class PostgresServer(_Server):
    user = "mediaedge"
    password = "mediaedge-test"
    _stop_signal = signal.SIGINT  # "fast" shutdown: SIGTERM would wait for clients to leave

    def start(self) -> PostgresServer:
        bindir = find_pg_bin()
        account = _unprivileged_user()
        # Not under pytest's tmp_path: /tmp/pytest-of-root is 0700, which the postgres account cannot enter.
        self.tmpdir = tempfile.mkdtemp(prefix="mediaedge-pg-")
        data, sock = os.path.join(self.tmpdir, "data"), os.path.join(self.tmpdir, "sock")
        os.mkdir(sock)
        self.log = os.path.join(self.tmpdir, "server.log")
        pwfile = os.path.join(self.tmpdir, "pw")
        with open(pwfile, "w") as f:
            f.write(self.password + "\n")
        as_user: dict = {}
        if account is not None:
            for p in (self.tmpdir, sock, pwfile):
                os.chown(p, account.pw_uid, account.pw_gid)
            as_user = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
        open(self.log, "w").close()
        if account is not None:
            os.chown(self.log, account.pw_uid, account.pw_gid)
        _run(
            [os.path.join(bindir, "initdb"), "-D", data, "-U", self.user, f"--pwfile={pwfile}",
             "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync", "-E", "UTF8", "--locale=C"],
            self.log, **as_user,
        )
        for _attempt in range(3):  # the free port can be taken between probe and bind
            self.port = free_port()
            out = open(self.log, "ab")
            self.proc = subprocess.Popen(
                [os.path.join(bindir, "postgres"), "-D", data, "-p", str(self.port), "-k", sock,
                 "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "full_page_writes=off",
                 "-c", "synchronous_commit=off", "-c", "max_connections=100"],
                stdout=out, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent, **as_user,
            )
            out.close()
            if self._started("postgres"):
                break
        else:
            self.stop()
            raise ServerFailed(f"postgres found no free port: {_tail(self.log)}")
        self.execute("CREATE DATABASE mediaedge")
        return self

    def url(self, database: str = "mediaedge") -> str:
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{database}"

    def _ready(self) -> bool:
        import psycopg

        try:
            psycopg.connect(self._conninfo("postgres"), connect_timeout=2).close()
            return True
        except psycopg.OperationalError:
            return False

    def _conninfo(self, database: str) -> str:
        return f"host=127.0.0.1 port={self.port} user={self.user} password={self.password} dbname={database}"

    def execute(self, statement: str) -> None:
        import psycopg

        with psycopg.connect(self._conninfo("postgres"), autocommit=True) as conn:
            conn.execute(statement)

    def create_database(self) -> str:
        """A new empty database; returns its URL (for per-test isolation)."""
        name = self._next_name()
        self.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


# --- MariaDB ------------------------------------------------------------------


def find_mariadb_bins() -> tuple[str, str]:
    """(server, install-db) executables: mariadbd/mysqld and mariadb-install-db/mysql_install_db."""
    path = os.environ.get("PATH", "") + ":/usr/sbin:/usr/bin:/usr/local/sbin:/usr/local/bin"
    server = shutil.which("mariadbd", path=path) or shutil.which("mysqld", path=path)
    install = shutil.which("mariadb-install-db", path=path) or shutil.which("mysql_install_db", path=path)
    if not server or not install:
        raise ServerUnavailable("MariaDB binaries not found (mariadbd, mariadb-install-db); run scripts/install-deps.sh")
    return server, install


class MariaDbServer(_Server):
    # 1 GiB: a LONGBLOB can only be written and read in windows no larger than
    # max_allowed_packet, and CONCAT() results are capped by it too (see origins/db.py).
    max_allowed_packet = "1G"

    def start(self) -> MariaDbServer:
        server, install = find_mariadb_bins()
        self.tmpdir = tempfile.mkdtemp(prefix="mediaedge-mariadb-")
        data = os.path.join(self.tmpdir, "data")
        self.log = os.path.join(self.tmpdir, "server.log")
        self.sock = os.path.join(self.tmpdir, "mysqld.sock")
        root = ["--user=root"] if os.geteuid() == 0 else []
        _run([install, "--no-defaults", f"--datadir={data}", "--skip-test-db",
              "--auth-root-authentication-method=normal", *root], self.log)
        for _attempt in range(3):
            self.port = free_port()
            self.proc = subprocess.Popen(
                [server, "--no-defaults", f"--datadir={data}", f"--port={self.port}",
                 "--bind-address=127.0.0.1", f"--socket={self.sock}",
                 f"--pid-file={os.path.join(self.tmpdir, 'mysqld.pid')}", f"--log-error={self.log}",
                 "--skip-grant-tables", "--skip-log-bin", "--innodb-flush-log-at-trx-commit=0",
                 "--innodb-buffer-pool-size=256M", "--innodb-log-file-size=512M",
                 f"--max-allowed-packet={self.max_allowed_packet}", *root],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent,
            )
            if self._started("mariadbd"):
                break
        else:
            self.stop()
            raise ServerFailed(f"mariadbd found no free port: {_tail(self.log)}")
        self.execute("CREATE DATABASE mediaedge CHARACTER SET utf8mb4")
        return self

    def url(self, database: str = "mediaedge") -> str:
        return f"mysql://root@127.0.0.1:{self.port}/{database}"

    def _connect(self, database: str | None = None):
        import pymysql

        return pymysql.connect(host="127.0.0.1", port=self.port, user="root", database=database,
                               connect_timeout=2, autocommit=True, charset="utf8mb4")

    def _ready(self) -> bool:
        import pymysql

        try:
            self._connect().close()
            return True
        except pymysql.err.OperationalError:
            return False

    def execute(self, statement: str, database: str | None = None) -> None:
        conn = self._connect(database)
        try:
            with conn.cursor() as cur:
                cur.execute(statement)
        finally:
            conn.close()

    def create_database(self) -> str:
        name = self._next_name()
        self.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        return self.url(name)
