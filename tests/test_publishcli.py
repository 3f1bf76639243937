"""mediaedge.publishcli against a real local HTTP server that checks signatures with mediaedge.webhook."""
from __future__ import annotations

import argparse
import json
import re
import shutil
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mediaedge import webhook
from tests.conftest import require
from mediaedge.publishcli import run_publish, run_purge

SECRET = "test-secret"
DOCS = Path(__file__).resolve().parent.parent / "docs" / "webhooks.md"


class Admin:
    """A stand-in for the admin plane's POST /publish: verify, parse, record, answer."""

    def __init__(self, secret: str | None = SECRET) -> None:
        self.secret = secret
        self.requests: list[list[webhook.Event]] = []
        self.seq = 0
        self.override: tuple[int, bytes, str] | None = None  # status, body, content type
        admin = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if admin.override is not None:
                    return self.answer(*admin.override)
                if self.path != "/publish":
                    return self.answer(404, b"not found\n", "text/plain")
                try:
                    webhook.verify(
                        admin.secret,
                        timestamp=self.headers.get(webhook.TIMESTAMP_HEADER),
                        signature=self.headers.get(webhook.SIGNATURE_HEADER),
                        body=body,
                        now=time.time(),
                    )
                    events = webhook.parse_events(body)
                except webhook.WebhookError as e:
                    return self.answer(e.status, e.body(), "application/json")
                admin.requests.append(events)
                admin.seq += len(events)
                self.answer(200, json.dumps({"accepted": len(events), "seq": admin.seq}).encode(), "application/json")

            def answer(self, status: int, body: bytes, ctype: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def events(self) -> list[webhook.Event]:
        return [e for batch in self.requests for e in batch]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def admin():
    server = Admin()
    yield server
    server.close()


@pytest.fixture(autouse=True)
def no_env_secret(monkeypatch):
    monkeypatch.delenv("MEDIAEDGE_WEBHOOK_SECRET", raising=False)
    monkeypatch.delenv("MEDIAEDGE_SECRET", raising=False)


def publish_args(admin_url: str, *paths: str, **kw) -> argparse.Namespace:
    defaults = dict(revision=None, delete=False, prewarm=False, abort_inflight=False, secret=SECRET)
    return argparse.Namespace(paths=list(paths), admin=admin_url, **{**defaults, **kw})


def purge_args(admin_url: str, **kw) -> argparse.Namespace:
    defaults = dict(path=None, prefix=None, tag=None, soft=False, abort_inflight=False, secret=SECRET)
    return argparse.Namespace(admin=admin_url, **{**defaults, **kw})


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- publish ----------------------------------------------------------------------------


def test_publish_sends_signed_events_and_prints_the_answer(admin, capsys):
    code = run_publish(publish_args(admin.url, "/media/a.jpg", "/media/b c.jpg", revision="r7", prewarm=True,
                                    json=True))
    out, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(out) == {"accepted": 2, "seq": 2}
    assert admin.events == [
        webhook.PublishEvent("/media/a.jpg", "r7", prewarm=True),
        webhook.PublishEvent("/media/b%20c.jpg", "r7", prewarm=True),
    ]


def test_publish_delete(admin, capsys):
    assert run_publish(publish_args(admin.url, "/media/a.jpg", delete=True, abort_inflight=True)) == 0
    assert admin.events == [webhook.DeleteEvent("/media/a.jpg", abort_inflight=True)]


def test_admin_without_scheme_or_with_slash(admin, capsys):
    host_port = admin.url.removeprefix("http://")
    assert run_publish(publish_args(host_port, "/media/a.jpg", delete=True)) == 0
    assert run_publish(publish_args(admin.url + "/", "/media/a.jpg", delete=True)) == 0
    assert len(admin.requests) == 2


def test_many_paths_are_split_into_batches(admin, capsys):
    paths = [f"/media/{i}.jpg" for i in range(2500)]
    assert run_publish(publish_args(admin.url, *paths, revision="r1", json=True)) == 0
    assert [len(batch) for batch in admin.requests] == [1000, 1000, 500]
    assert [e.path for e in admin.events] == paths
    assert json.loads(capsys.readouterr().out) == {"accepted": 2500, "seq": 2500, "requests": 3}


def test_long_paths_are_split_under_a_mebibyte(admin, capsys):
    paths = [f"/media/{i}-" + "x" * 4000 for i in range(300)]  # 300 events, about 1.2 MB
    assert run_publish(publish_args(admin.url, *paths, delete=True)) == 0
    assert len(admin.requests) == 2
    assert [e.path for e in admin.events] == paths


@pytest.mark.parametrize(
    "kw, words",
    [
        ({}, "give --revision R"),
        ({"revision": ""}, "give --revision R"),
        ({"revision": "r", "delete": True}, "not both"),
        ({"delete": True, "prewarm": True}, "--prewarm needs --revision"),
        ({"revision": "r", "abort_inflight": True}, "--abort-inflight needs --delete"),
    ],
)
def test_publish_usage_errors_send_nothing(admin, capsys, kw, words):
    assert run_publish(publish_args(admin.url, "/media/a.jpg", **kw)) == 2
    err = capsys.readouterr().err
    assert err.startswith("mediaedge: error: publish: ") and words in err
    assert admin.requests == []


def test_publish_needs_a_path(admin, capsys):
    assert run_publish(publish_args(admin.url, revision="r")) == 2
    assert admin.requests == []


# --- purge -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw, expected",
    [
        ({"path": "/media/a.jpg"}, webhook.PurgeEvent(path="/media/a.jpg")),
        ({"prefix": "/media/cat/", "soft": True}, webhook.PurgeEvent(prefix="/media/cat/", soft=True)),
        ({"tag": "product-1", "abort_inflight": True}, webhook.PurgeEvent(tag="product-1", abort_inflight=True)),
    ],
)
def test_purge(admin, capsys, kw, expected):
    assert run_purge(purge_args(admin.url, json=True, **kw)) == 0
    assert admin.events == [expected]
    assert json.loads(capsys.readouterr().out) == {"accepted": 1, "seq": 1}


@pytest.mark.parametrize("kw", [{}, {"path": "/a", "tag": "t"}, {"all": True, "tag": "t"}])
def test_purge_needs_exactly_one_selector(admin, capsys, kw):
    assert run_purge(purge_args(admin.url, **kw)) == 2
    assert "exactly one of --path, --prefix, --tag, --all" in capsys.readouterr().err
    assert admin.requests == []


def test_purge_all_is_a_purge_of_the_prefix_slash(admin, capsys):
    assert run_purge(purge_args(admin.url, all=True)) == 0
    assert admin.events == [webhook.PurgeEvent(prefix="/")]
    assert capsys.readouterr().out == "purged prefix /, every entry (seq 1)\n"


# --- what was done, in words ---------------------------------------------------------------

@pytest.mark.parametrize("events, answer, words", [
    ([{"type": "publish", "path": "/media/a.jpg", "revision": "r7"}], {"accepted": 1, "seq": 12},
     "published /media/a.jpg as revision r7 (seq 12)"),
    ([{"type": "publish", "path": "/media/a.jpg", "revision": "r7", "prewarm": True}] * 2, {"accepted": 2, "seq": 3},
     "published 2 paths as revision r7, prewarming (seq 3)"),
    ([{"type": "delete", "path": "/media/a.jpg"}], {"accepted": 1, "seq": 4}, "deleted /media/a.jpg (seq 4)"),
    ([{"type": "delete", "path": "/m/a", "abort_inflight": True}] * 3, {"accepted": 3, "seq": 9, "requests": 2},
     "deleted 3 paths, downloads in flight cut (seq 9, 2 requests)"),
    ([{"type": "purge", "prefix": "/media/"}], {"accepted": 1, "seq": 12}, "purged prefix /media/ (seq 12)"),
    ([{"type": "purge", "path": "/media/a.jpg"}], {"accepted": 1, "seq": 1}, "purged path /media/a.jpg (seq 1)"),
    ([{"type": "purge", "tag": "p-1", "soft": True}], {"accepted": 1, "seq": 2},
     "soft-purged tag p-1, marked stale (served while one refetch runs) (seq 2)"),
    ([{"type": "purge", "prefix": "/"}], {"accepted": 1, "seq": 5, "replayed": True},
     "purged prefix /, every entry (seq 5); a replay of an earlier request: nothing changed"),
])
def test_summary(events, answer, words):
    from mediaedge.publishcli import summary

    assert summary(events, answer) == words


def test_words_by_default(admin, capsys):
    assert run_purge(purge_args(admin.url, prefix="/media/")) == 0
    assert capsys.readouterr().out == "purged prefix /media/ (seq 1)\n"
    assert run_publish(publish_args(admin.url, "/media/a.jpg", revision="r2")) == 0
    assert capsys.readouterr().out == "published /media/a.jpg as revision r2 (seq 2)\n"


# --- refusals and failures ----------------------------------------------------------------


def test_wrong_secret_prints_the_servers_error(admin, capsys):
    assert run_purge(purge_args(admin.url, tag="t", secret="wrong")) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "mediaedge: error: 401 X-Mediaedge-Signature: does not match the body and timestamp\n"


def test_server_without_secret(admin, capsys):
    admin.secret = None
    assert run_purge(purge_args(admin.url, tag="t")) == 1
    assert capsys.readouterr().err == "mediaedge: error: 503 publish is disabled: no webhook secret configured\n"


def test_schema_refusal_names_the_field(admin, capsys):
    assert run_purge(purge_args(admin.url, tag="two words")) == 1
    err = capsys.readouterr().err
    assert err.startswith("mediaedge: error: 400 events[0].tag: ")


def test_non_json_refusal(admin, capsys):
    admin.override = (404, b"<html>\n<h1>Not Found</h1>\n</html>", "text/html")
    assert run_purge(purge_args(admin.url, tag="t")) == 1
    assert capsys.readouterr().err == "mediaedge: error: 404 <html>\n"


def test_200_that_is_not_json_is_an_error(admin, capsys):
    admin.override = (200, b"ok", "text/plain")
    assert run_purge(purge_args(admin.url, tag="t")) == 1
    assert capsys.readouterr().err == "mediaedge: error: 200 ok\n"


def test_no_secret_is_a_usage_error(admin, capsys):
    assert run_purge(purge_args(admin.url, tag="t", secret=None)) == 2
    err = capsys.readouterr().err
    assert err.startswith("mediaedge: error: no webhook secret") and err.count("\n") == 1
    assert admin.requests == []


def test_secret_from_the_environment(admin, capsys, monkeypatch):
    monkeypatch.setenv("MEDIAEDGE_WEBHOOK_SECRET", SECRET)
    assert run_purge(purge_args(admin.url, tag="t", secret=None)) == 0


def test_secret_from_a_file(admin, capsys, tmp_path):
    path = tmp_path / "secret"
    path.write_text(SECRET + "\n")
    assert run_purge(purge_args(admin.url, tag="t", secret=None, secret_file=str(path))) == 0
    path.write_text("")
    assert run_purge(purge_args(admin.url, tag="t", secret=None, secret_file=str(path))) == 2
    assert capsys.readouterr().err.endswith("--secret-file: " + repr(str(path)) + " is empty\n")


def test_unreachable_admin_is_one_line(capsys):
    url = f"http://127.0.0.1:{unused_port()}"
    assert run_purge(purge_args(url, tag="t")) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"mediaedge: error: cannot reach {url}/publish: ") and err.count("\n") == 1


def test_silent_admin_times_out(capsys, monkeypatch):
    import mediaedge.publishcli as publishcli

    monkeypatch.setattr(publishcli, "TIMEOUT", 0.3)
    with socket.socket() as listener:  # accepts connections, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        assert run_purge(purge_args(url, tag="t")) == 1
    assert "no answer within" in capsys.readouterr().err


# --- through the real command line ------------------------------------------------------------


def test_mediaedge_publish_command(admin, capsys):
    from mediaedge.cli import main

    code = main(["publish", "/media/a.jpg", "--revision", "r2", "--admin", admin.url, "--secret", SECRET])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert admin.events == [webhook.PublishEvent("/media/a.jpg", "r2")]
    assert out == "published /media/a.jpg as revision r2 (seq 1)\n"
    assert err == ("mediaedge: warning: --secret is visible to other users in ps; prefer "
                   "MEDIAEDGE_WEBHOOK_SECRET or --secret-file\n")


def test_mediaedge_purge_command_secret_file_env_and_json(admin, capsys, tmp_path, monkeypatch):
    from mediaedge.cli import main

    path = tmp_path / "secret"
    path.write_text(SECRET)
    assert main(["purge", "--all", "--admin", admin.url, "--secret-file", str(path), "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == {"accepted": 1, "seq": 1} and err == ""
    monkeypatch.setenv("MEDIAEDGE_WEBHOOK_SECRET", SECRET)
    assert main(["purge", "--prefix", "/media/x/", "--admin", admin.url]) == 0
    assert capsys.readouterr().out == "purged prefix /media/x/ (seq 2)\n"
    assert main(["purge", "--all", "--admin", admin.url, "--secret-file", str(tmp_path / "none")]) == 2
    assert "--secret-file: cannot read" in capsys.readouterr().err
    assert admin.events == [webhook.PurgeEvent(prefix="/"), webhook.PurgeEvent(prefix="/media/x/")]


# --- the shell example in docs/webhooks.md works -----------------------------------------------


def doc_block(marker: str) -> str:
    """The fenced code block that follows `<!-- marker -->` in docs/webhooks.md."""
    text = DOCS.read_text()
    match = re.search(rf"<!-- {marker} -->\s*```[a-z]*\n(.*?)```", text, re.S)
    assert match, f"no block marked {marker} in {DOCS}"
    return match.group(1)


@pytest.mark.skipif(not (shutil.which("curl") and shutil.which("openssl")), reason="needs curl and openssl")
def test_shell_example_in_the_docs(admin, tmp_path):
    script = tmp_path / "mediaedge-webhook.sh"
    script.write_text(doc_block("shell-example"))
    env = {"PATH": "/usr/bin:/bin:/usr/local/bin", "MEDIAEDGE_ADMIN": admin.url, "MEDIAEDGE_WEBHOOK_SECRET": SECRET}
    events = '[{"type":"publish","path":"/media/a.jpg","revision":"r9"},{"type":"purge","tag":"product-1"}]'
    done = subprocess.run(["sh", str(script), events], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"accepted": 2, "seq": 2}
    assert admin.events == [webhook.PublishEvent("/media/a.jpg", "r9"), webhook.PurgeEvent(tag="product-1")]
    # a refusal makes the script fail with the server's answer
    env["MEDIAEDGE_WEBHOOK_SECRET"] = "wrong"
    done = subprocess.run(["sh", str(script), events], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode != 0 and "does not match" in done.stdout + done.stderr


@pytest.mark.full
def test_php_example_in_the_docs(admin, tmp_path):
    """The Magento module's Webhook class, run on its own with plain PHP."""
    php_has_curl = shutil.which("php") and "curl" in subprocess.run(
        ["php", "-m"], capture_output=True, text=True, timeout=30).stdout.split()
    if not php_has_curl:
        require("php with its curl extension (Debian's php-cli and php-curl)")
    script = tmp_path / "send.php"
    script.write_text(
        doc_block("php-send")
        + f"\n$webhook = new Webhook('{admin.url}/', '{SECRET}');\n"
        + "echo json_encode($webhook->send([['type' => 'delete', 'path' => '/media/catalog/product/a/b/ab.jpg']]));\n"
        + "try { (new Webhook('" + admin.url + "', 'wrong'))->send([['type' => 'purge', 'tag' => 't']]); }\n"
        + "catch (\\RuntimeException $e) { fwrite(STDERR, $e->getMessage()); }\n"
    )
    done = subprocess.run(["php", str(script)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout) == {"accepted": 1, "seq": 1}
    assert admin.events == [webhook.DeleteEvent("/media/catalog/product/a/b/ab.jpg")]
    assert done.stderr == "mediaedge webhook refused: 401 X-Mediaedge-Signature: does not match the body and timestamp"


def test_django_sender_in_the_docs(admin, monkeypatch):
    """The Django example's send_to_mediaedge, with a stand-in for django.conf.settings."""
    import sys
    import types

    conf = types.ModuleType("django.conf")
    conf.settings = types.SimpleNamespace(MEDIAEDGE_ADMIN=admin.url + "/", MEDIAEDGE_WEBHOOK_SECRET=SECRET)
    monkeypatch.setitem(sys.modules, "django", types.ModuleType("django"))
    monkeypatch.setitem(sys.modules, "django.conf", conf)
    namespace: dict = {}
    exec(compile(doc_block("python-send"), str(DOCS), "exec"), namespace)
    send = namespace["send_to_mediaedge"]
    assert send([{"type": "publish", "path": "/media/assets/a.jpg", "revision": "0123456789abcdef"}]) == {
        "accepted": 1,
        "seq": 1,
    }
    assert admin.events == [webhook.PublishEvent("/media/assets/a.jpg", "0123456789abcdef")]
    conf.settings.MEDIAEDGE_WEBHOOK_SECRET = "wrong"
    with pytest.raises(RuntimeError, match="refused the webhook: 401"):
        send([{"type": "purge", "tag": "t"}])
