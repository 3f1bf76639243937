"""The real `python -m mediaedge` command in a subprocess: errors are one line, help works.

No test here starts a server: a setting error stops `serve` before mediaedge.serve runs.
Argument wiring of the other subcommands is checked in-process with fake modules.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from mediaedge import cli
from mediaedge.errors import DatabaseError, OriginError, StartupError

REPO = Path(__file__).resolve().parent.parent


def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None
        ) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAEDGE_")}
    clean["PYTHONPATH"] = str(REPO) + os.pathsep + clean.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-m", "mediaedge", *args],
        capture_output=True, text=True, timeout=60, env=clean | (env or {}), cwd=cwd or REPO,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("mediaedge: error: ")
    for fragment in fragments:
        assert fragment in lines[0]


# --- serve: bad settings -----------------------------------------------------------

def test_malformed_cache_size() -> None:
    result = run("serve", "--cache-size", "abc")
    assert_one_line_error(result, "--cache-size", "'abc'")
    assert result.returncode == 2


def test_unknown_profile() -> None:
    assert_one_line_error(run("serve", "--origin-profile", "magento3"), "--origin-profile",
                          "magento3")


def test_unreadable_config(tmp_path: Path) -> None:
    assert_one_line_error(run("serve", "--config", str(tmp_path / "nope.toml")), "--config")


def test_invalid_config(tmp_path: Path) -> None:
    conf = tmp_path / "bad.toml"
    conf.write_text("cache-size = [\n", encoding="utf-8")
    assert_one_line_error(run("serve", "--config", str(conf)), "--config", "invalid TOML")


def test_bad_value_from_environment() -> None:
    result = run("serve", env={"MEDIAEDGE_LISTEN": "nowhere"})
    assert_one_line_error(result, "--listen", "MEDIAEDGE_LISTEN")


def test_bad_value_from_config_env(tmp_path: Path) -> None:
    conf = tmp_path / "m.toml"
    conf.write_text('origin-profile = "oracle"\n', encoding="utf-8")
    result = run("serve", env={"MEDIAEDGE_CONFIG": str(conf)})
    assert_one_line_error(result, "--origin-profile", str(conf))


def test_unknown_flag_is_one_line() -> None:
    result = run("serve", "--cache-sise", "1GiB")
    assert_one_line_error(result, "--cache-sise")
    assert result.returncode == 2


# --- help and version ---------------------------------------------------------------

def test_help() -> None:
    result = run("--help")
    assert result.returncode == 0
    for command in ("serve", "import", "stats", "publish", "purge", "sign"):
        assert command in result.stdout


def test_serve_help_lists_every_flag_with_its_default() -> None:
    result = run("serve", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())  # undo argparse's wrapping
    for option in cli.OPTIONS:
        assert option.flag in text
        assert option.env in text
    for default in ("127.0.0.1:8080", "127.0.0.1:8081", "sqlite:///var/origin.db", "1GiB",
                    "an eighth of --cache-size", "X-Media-Revision", "86400"):
        assert f"Default: {default}" in text
    assert "--config" in text


@pytest.mark.parametrize("command", ["import", "stats", "publish", "purge", "sign"])
def test_subcommand_help(command: str) -> None:
    result = run(command, "--help")
    assert result.returncode == 0
    assert f"mediaedge {command}" in result.stdout


# --- sign ---------------------------------------------------------------------------

def test_sign_prints_a_link_that_verifies() -> None:
    import time

    from mediaedge.policy.signing import Allowed, SigningKey, verify

    before = time.time()
    result = run("sign", "/media/p/a b.jpg?w=1", "--ttl", "10m", "--signing-key", "new:s-new",
                 "--signing-key", "old:s-old", "--key-id", "old")
    assert result.returncode == 0, result.stderr
    link = result.stdout.splitlines()[-1]
    assert link.startswith("/media/p/a b.jpg?w=1&exp=") and "&kid=old&sig=" in link
    exp = int(link.split("exp=")[1].split("&")[0])
    assert before + 600 <= exp <= time.time() + 602
    keys = (SigningKey("new", b"s-new"), SigningKey("old", b"s-old"))
    assert verify(link, keys, time.time()) == Allowed("/media/p/a b.jpg?w=1")
    # the first key by default, from the environment; a key without id adds no kid
    result = run("sign", "/media/p/x.jpg", env={"MEDIAEDGE_SIGNING_KEY": "plain"})
    link = result.stdout.splitlines()[-1]
    assert "kid=" not in link and verify(link, (SigningKey(None, b"plain"),), time.time()) == Allowed("/media/p/x.jpg")


@pytest.mark.parametrize("args,fragment", [
    (("sign", "/media/p/a.jpg"), "--signing-key: no key"),
    (("sign", "/media/p/a.jpg", "--signing-key", "a:s", "--key-id", "b"), "--key-id"),
    (("sign", "media/a.jpg", "--signing-key", "s"), "TARGET"),
    (("sign", "/media/a.jpg?sig=1", "--signing-key", "s"), "TARGET"),
    (("sign", "/media/a.jpg", "--signing-key", "s", "--ttl", "soon"), "--ttl"),
])
def test_sign_errors_are_one_line(args: tuple[str, ...], fragment: str) -> None:
    assert_one_line_error(run(*args), fragment)


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("mediaedge ")


def test_no_command_is_a_usage_error() -> None:
    assert_one_line_error(run(), "COMMAND")


# --- wiring, in process, with fake modules --------------------------------------------

@pytest.fixture
def fake_modules(monkeypatch: pytest.MonkeyPatch) -> dict[str, argparse.Namespace]:
    """Install fake mediaedge.importer/statscli/publishcli/serve that record what they get."""
    for key in list(os.environ):
        if key.startswith("MEDIAEDGE_"):
            monkeypatch.delenv(key)
    seen: dict[str, argparse.Namespace] = {}

    def recorder(name: str):  # noqa: ANN202 - a tiny test double
        def record(args: object) -> int:
            seen[name] = args  # type: ignore[assignment]
            return 0
        return record

    modules = {
        "mediaedge.importer": {"run": recorder("import")},
        "mediaedge.statscli": {"run": recorder("stats")},
        "mediaedge.publishcli": {"run_publish": recorder("publish"), "run_purge": recorder("purge")},
        "mediaedge.serve": {"run": recorder("serve")},
    }
    for name, functions in modules.items():
        module = types.ModuleType(name)
        for attr, fn in functions.items():
            setattr(module, attr, fn)
        monkeypatch.setitem(sys.modules, name, module)
    return seen


def test_serve_passes_settings(fake_modules: dict[str, object]) -> None:
    argv = ["serve", "--cache-size", "2MiB", "--media-prefix", "/a/", "--media-prefix", "/b/"]
    assert cli.main(argv) == 0
    settings = fake_modules["serve"]
    assert settings.cache_size == 2 * 1024**2  # type: ignore[attr-defined]
    assert settings.media_prefixes == ("/a/", "/b/")  # type: ignore[attr-defined]


def test_import_resolves_origin_db(fake_modules: dict[str, argparse.Namespace],
                                   monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert cli.main(["import", str(tmp_path)]) == 0
    args = fake_modules["import"]
    assert (args.dir, args.origin_db, args.url_prefix) == (str(tmp_path), "sqlite:///var/origin.db",
                                                           "/media/")
    monkeypatch.setenv("MEDIAEDGE_ORIGIN_DB", "sqlite:///env.db")
    assert cli.main(["import", str(tmp_path)]) == 0
    assert fake_modules["import"].origin_db == "sqlite:///env.db"
    assert cli.main(["import", str(tmp_path), "--origin-db", "sqlite:///flag.db",
                     "--url-prefix", "/files/"]) == 0
    assert fake_modules["import"].origin_db == "sqlite:///flag.db"
    assert fake_modules["import"].url_prefix == "/files/"


def test_import_rejects_bad_url_prefix(fake_modules: dict[str, object],
                                       capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert cli.main(["import", str(tmp_path), "--url-prefix", "media"]) == 2
    assert capsys.readouterr().err.startswith("mediaedge: error: --url-prefix: ")


def test_stats_defaults(fake_modules: dict[str, argparse.Namespace]) -> None:
    assert cli.main(["stats"]) == 0
    args = fake_modules["stats"]
    assert (args.admin, args.json, args.watch) == ("http://127.0.0.1:8081", False, None)
    assert cli.main(["stats", "--admin", "http://edge:9/", "--json", "--watch", "2"]) == 0
    args = fake_modules["stats"]
    assert (args.admin, args.json, args.watch) == ("http://edge:9", True, 2.0)


def test_admin_url_follows_settings(fake_modules: dict[str, argparse.Namespace],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDIAEDGE_ADMIN_LISTEN", "0.0.0.0:9181")
    assert cli.main(["stats"]) == 0
    assert fake_modules["stats"].admin == "http://127.0.0.1:9181"


def test_publish_and_purge_arguments(fake_modules: dict[str, argparse.Namespace],
                                     monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    conf = tmp_path / "m.toml"
    conf.write_text('webhook-secret = "from-file"\n', encoding="utf-8")
    assert cli.main(["publish", "/media/a.jpg", "/media/b.jpg", "--revision", "r2",
                     "--config", str(conf)]) == 0
    args = fake_modules["publish"]
    assert args.paths == ["/media/a.jpg", "/media/b.jpg"]
    assert (args.revision, args.delete, args.prewarm, args.secret) == ("r2", False, False,
                                                                       "from-file")
    monkeypatch.setenv("MEDIAEDGE_WEBHOOK_SECRET", "from-env")
    assert cli.main(["purge", "--prefix", "/media/cat/", "--soft", "--abort-inflight"]) == 0
    args = fake_modules["purge"]
    assert (args.path, args.prefix, args.tag) == (None, "/media/cat/", None)
    assert (args.soft, args.abort_inflight, args.secret) == (True, True, "from-env")
    assert cli.main(["purge", "--tag", "t", "--secret", "flag"]) == 0
    assert fake_modules["purge"].secret == "flag"
    assert cli.main(["publish", "/media/a.jpg", "--delete", "--abort-inflight",
                     "--admin", "edge:8081"]) == 0
    args = fake_modules["publish"]
    assert (args.delete, args.abort_inflight, args.admin) == (True, True, "http://edge:8081")


def test_publish_without_secret_is_a_setting_error(
        fake_modules: dict[str, object], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["publish", "/media/a.jpg", "--delete"]) == 2
    assert capsys.readouterr().err.startswith("mediaedge: error: --secret: ")


@pytest.mark.parametrize(
    "argv",
    [["publish", "/a", "--revision", "r", "--delete"], ["purge"], ["purge", "--path", "/a",
                                                                   "--tag", "t"],
     ["stats", "--watch", "0"]],
)
def test_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("mediaedge: error: ") and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("error", "expected"),
    [(StartupError("--origin-db: cannot open sqlite:///x"), "--origin-db: cannot open sqlite:///x"),
     (StartupError("--listen: cannot listen on 127.0.0.1:8080:\n  Address already in use"),
      "--listen: cannot listen on 127.0.0.1:8080: Address already in use"),
     (DatabaseError("--state-db: cannot connect"), "--state-db: cannot connect"),
     (OriginError("origin database failed"), "origin database failed")],
)
def test_startup_errors_are_one_line(fake_modules: dict[str, object],
                                     monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str],
                                     error: Exception, expected: str) -> None:
    def fail(settings: object) -> int:
        raise error
    monkeypatch.setattr(sys.modules["mediaedge.serve"], "run", fail)
    assert cli.main(["serve"]) == 1
    assert capsys.readouterr().err == f"mediaedge: error: {expected}\n"


def test_a_bug_is_not_hidden_behind_one_line(fake_modules: dict[str, object],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Only mediaedge's own errors (mediaedge.errors) are one line; anything else is a bug."""
    def fail(settings: object) -> int:
        raise KeyError("a bug")
    monkeypatch.setattr(sys.modules["mediaedge.serve"], "run", fail)
    with pytest.raises(KeyError):
        cli.main(["serve"])


def test_keyboard_interrupt_exits_quietly(fake_modules: dict[str, object],
                                          monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    def interrupted(settings: object) -> int:
        raise KeyboardInterrupt
    monkeypatch.setattr(sys.modules["mediaedge.serve"], "run", interrupted)
    assert cli.main(["serve"]) == 0
    assert capsys.readouterr().err == ""


def test_missing_module_is_one_line(monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "mediaedge.statscli", None)  # import raises ModuleNotFoundError
    assert cli.main(["stats"]) == 1
    assert "mediaedge.statscli" in capsys.readouterr().err
