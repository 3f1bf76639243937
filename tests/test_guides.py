"""docs/magento.md and docs/django.md: their code runs, against a real edge.

- the serve commands of both guides are valid `mediaedge serve` flags;
- Magento (full tier, PHP): `registration.php`, the observer and `Webhook.php` pass
  `php -l`, the XML files parse and name the same module; the observer, run by PHP
  with stand-ins for the three Magento/PSR types it uses, sends signed deletes that a
  real edge (the guide's flags, a `media_storage_file_storage` table on SQLite)
  accepts, after which it serves the changed row;
- Django: the sender's `signature` is the edge's, and the signal handlers, run with
  stand-ins for Django's dispatch, publish a new revision to a real edge in front of
  an app; the django-db-file-storage `sql` route serves a row through a real edge.
"""
from __future__ import annotations

import base64
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import requests

from mediaedge import webhook
from mediaedge.cli import _settings, build_parser
from mediaedge.config import OPTIONS
from tests.conftest import require
from tests.edge import REPO, Edge, Route, Upstream

DOCS = Path(REPO) / "docs"
SECRET = "guide-secret"


def block(doc: str, marker: str) -> str:
    text = (DOCS / doc).read_text(encoding="utf-8")
    match = re.search(rf"<!-- {marker} -->\s*```[a-z]*\n(.*?)```", text, re.S)
    assert match, f"no block marked {marker} in docs/{doc}"
    return match.group(1)


def serve_argv(doc: str, marker: str) -> list[str]:
    """The `mediaedge serve` command of a guide's block, as arguments after `serve`."""
    text = block(doc, marker).replace("\\\n", " ")
    line = next(line for line in text.splitlines() if line.startswith("mediaedge serve "))
    return shlex.split(line, comments=True)[2:]


def flag_value(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


@pytest.mark.parametrize("doc, marker", [("magento.md", "magento-serve"), ("django.md", "django-serve")])
def test_the_guides_serve_commands_are_valid_settings(doc, marker):
    args = build_parser().parse_args(["serve", *serve_argv(doc, marker)])
    settings = _settings(args, *(o.name.replace("-", "_") for o in OPTIONS))
    assert settings.state_db is not None  # both guides keep the invalidation log apart
    if doc == "magento.md":
        assert settings.origin_profile == "magento2"
        assert settings.media_prefixes == ("/media/", "/pub/media/")


# --- Magento ----------------------------------------------------------------------------

def need_php() -> None:
    if not shutil.which("php"):
        require("php (Debian's php-cli)")
    modules = subprocess.run(["php", "-m"], capture_output=True, text=True, timeout=30).stdout.split()
    if "curl" not in modules:
        require("php's curl extension (Debian's php-curl)")


@pytest.mark.full
def test_magento_module_files_are_valid(tmp_path):
    need_php()
    for marker in ("magento-registration", "magento-observer", "magento-webhook"):
        path = tmp_path / f"{marker}.php"
        path.write_text(block("magento.md", marker), encoding="utf-8")
        done = subprocess.run(["php", "-l", str(path)], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stdout + done.stderr
    module = ET.fromstring(block("magento.md", "magento-module-xml").encode())
    assert module.find("module").get("name") == "Vendor_Mediaedge"
    assert "'Vendor_Mediaedge'" in block("magento.md", "magento-registration")
    events = ET.fromstring(block("magento.md", "magento-events-xml").encode())
    observer = events.find("event/observer")
    assert events.find("event").get("name") == "catalog_product_save_commit_after"
    assert observer.get("instance") == "Vendor\\Mediaedge\\Observer\\ProductMediaSaved"
    text = (DOCS / "magento.md").read_text(encoding="utf-8")
    assert "bin/magento module:enable Vendor_Mediaedge" in text


STUBS = r"""<?php
namespace Magento\Framework\Event {
    interface ObserverInterface { public function execute(Observer $observer); }
    class Observer {
        public function __construct(private $event) {}
        public function getEvent() { return $this->event; }
    }
}
namespace Psr\Log {
    interface LoggerInterface { public function error($message, array $context = []); }
}
"""

MAIN = r"""<?php
require __DIR__ . '/stubs.php';
require __DIR__ . '/Webhook.php';
require __DIR__ . '/ProductMediaSaved.php';

class Product {
    public function getMediaGallery($key) {
        return [['file' => '/a/b/shoe.jpg'], ['file' => '/a/b/gone.jpg', 'removed' => 1]];
    }
}
class SaveEvent {
    public function __construct(private $product) {}
    public function getProduct() { return $this->product; }
}
class StderrLogger implements Psr\Log\LoggerInterface {
    public function error($message, array $context = []) { fwrite(STDERR, $message . "\n"); }
}
$webhook = new Vendor\Mediaedge\Model\Webhook($argv[1]);
$observer = new Vendor\Mediaedge\Observer\ProductMediaSaved($webhook, new StderrLogger());
$observer->execute(new Magento\Framework\Event\Observer(new SaveEvent(new Product())));
echo "saved\n";
"""


def magento_db(path: Path, content: bytes, upload_time: str) -> None:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE IF NOT EXISTS media_storage_file_storage (file_id INTEGER PRIMARY KEY, "
                "content BLOB, upload_time TEXT, filename TEXT, directory_id INTEGER, directory TEXT)")
    con.execute("INSERT OR REPLACE INTO media_storage_file_storage VALUES (1, ?, ?, 'shoe.jpg', 1, "
                "'catalog/product/a/b')", (content, upload_time))
    con.commit()
    con.close()


@pytest.mark.full
def test_magento_observer_against_a_real_edge(tmp_path):
    need_php()
    for name, text in (("stubs.php", STUBS), ("main.php", MAIN),
                       ("Webhook.php", block("magento.md", "magento-webhook")),
                       ("ProductMediaSaved.php", block("magento.md", "magento-observer"))):
        (tmp_path / name).write_text(text, encoding="utf-8")
    db = tmp_path / "magento.db"
    magento_db(db, b"old shoe", "2024-05-01 10:00:00")
    # The guide's flags, with SQLite in place of MySQL and no Magento upstream.
    argv = serve_argv("magento.md", "magento-serve")
    for flag in ("--upstream", "--origin-db", "--cache-dir"):
        i = argv.index(flag)
        del argv[i:i + 2]
    argv[argv.index("--state-db") + 1] = f"sqlite:///{tmp_path / 'state.db'}"
    edge = Edge(str(tmp_path), origin_db=f"sqlite:///{db}", args=argv,
                env={"MEDIAEDGE_WEBHOOK_SECRET": SECRET}).start()
    try:
        for target in ("/media/catalog/product/a/b/shoe.jpg", "/pub/media/catalog/product/a/b/shoe.jpg"):
            assert edge.get(target).content == b"old shoe"
            r = edge.get(target)
            assert r.content == b"old shoe" and r.headers["Cache-Status"].startswith("mediaedge; hit")
        magento_db(db, b"new shoe!", "2024-05-02 11:00:00")  # the product's image replaced
        assert edge.get("/media/catalog/product/a/b/shoe.jpg").content == b"old shoe"  # still cached
        php = ["php", str(tmp_path / "main.php"), edge.admin]
        done = subprocess.run(php, capture_output=True, text=True, timeout=60,
                              env={"PATH": "/usr/bin:/bin", "MEDIAEDGE_WEBHOOK_SECRET": SECRET})
        assert (done.returncode, done.stdout, done.stderr) == (0, "saved\n", "")
        r = edge.get("/media/catalog/product/a/b/shoe.jpg")
        assert r.content == b"new shoe!" and "fwd=miss" in r.headers["Cache-Status"]
        assert edge.stats()["invalidations_by_type"]["delete"] == 2
        # A wrong secret: the save still succeeds, the refusal is logged.
        done = subprocess.run(php, capture_output=True, text=True, timeout=60,
                              env={"PATH": "/usr/bin:/bin", "MEDIAEDGE_WEBHOOK_SECRET": "wrong"})
        assert done.returncode == 0 and done.stdout == "saved\n"
        assert done.stderr.startswith("mediaedge webhook refused: 401 ")
    finally:
        edge.stop()


# --- Django -----------------------------------------------------------------------------

class _Signal:
    def __init__(self) -> None:
        self.receivers: list[tuple[object, object]] = []

    def connect(self, receiver, sender=None) -> None:
        self.receivers.append((receiver, sender))

    def send(self, sender, **kwargs) -> None:
        for receiver, wanted in self.receivers:
            if wanted is None or wanted is sender:
                receiver(sender=sender, **kwargs)


def django_stand_ins(monkeypatch, admin: str, secret: str) -> types.SimpleNamespace:
    """Just what the guide's code imports from Django, and an `assets` package to hold it."""
    def module(name: str, **attrs: object) -> types.ModuleType:
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        monkeypatch.setitem(sys.modules, name, m)
        return m

    settings = types.SimpleNamespace(MEDIAEDGE_ADMIN=admin, MEDIAEDGE_WEBHOOK_SECRET=secret)
    signals = types.SimpleNamespace(post_save=_Signal(), post_delete=_Signal())

    def receiver(signal, sender=None):
        def decorate(f):
            signal.connect(f, sender=sender)
            return f
        return decorate

    module("django")
    module("django.conf", settings=settings)
    module("django.db", transaction=types.SimpleNamespace(on_commit=lambda f: f()))  # the commit has happened
    module("django.db.models")
    module("django.db.models.signals", post_save=signals.post_save, post_delete=signals.post_delete)
    module("django.dispatch", receiver=receiver)

    class Asset:
        def __init__(self, url: str, revision: str) -> None:
            self.file = types.SimpleNamespace(url=url)
            self.revision = revision

    package = module("assets")
    package.__path__ = []
    module("assets.models", Asset=Asset)
    sender = module("assets.mediaedge")
    exec(compile(block("django.md", "django-sender"), "docs/django.md#sender", "exec"), sender.__dict__)
    handlers = module("assets.signals")
    handlers.__package__ = "assets"
    exec(compile(block("django.md", "django-signals"), "docs/django.md#signals", "exec"), handlers.__dict__)
    return types.SimpleNamespace(settings=settings, signals=signals, Asset=Asset, sender=sender)


def test_django_signature_is_the_edges(monkeypatch):
    namespace: dict = {}
    monkeypatch.setitem(sys.modules, "django", types.ModuleType("django"))
    conf = types.ModuleType("django.conf")
    conf.settings = None
    monkeypatch.setitem(sys.modules, "django.conf", conf)
    exec(compile(block("django.md", "django-sender"), "docs/django.md", "exec"), namespace)
    body = b'{"events":[{"type":"purge","tag":"t"}]}'
    for secret, ts in (("s3cret", "1700000000"), ("ünïcode", "0"), ("x" * 64, "2000000000")):
        assert namespace["signature"](secret, ts, body) == webhook.sign(secret, ts, body)


def test_django_signals_publish_to_a_real_edge(tmp_path, monkeypatch):
    up = Upstream()
    up.routes["/media/assets/a.jpg"] = Route(body=b"first", headers={"X-Media-Revision": "rev-1"})
    edge = Edge(str(tmp_path), upstream=up.url, args=["--state-db", f"sqlite:///{tmp_path / 'state.db'}"],
                env={"MEDIAEDGE_WEBHOOK_SECRET": SECRET}).start()
    try:
        django = django_stand_ins(monkeypatch, edge.admin + "/", SECRET)
        assert edge.get("/media/assets/a.jpg").content == b"first"
        assert edge.get("/media/assets/a.jpg").headers["Cache-Status"].startswith("mediaedge; hit")
        # The app saves a new file: it serves the new revision, the signal publishes it.
        up.routes["/media/assets/a.jpg"] = Route(body=b"second", headers={"X-Media-Revision": "rev-2"})
        django.signals.post_save.send(sender=django.Asset, instance=django.Asset("/media/assets/a.jpg", "rev-2"))
        r = edge.get("/media/assets/a.jpg")
        assert (r.content, r.headers["X-Media-Revision"]) == (b"second", "rev-2")
        assert edge.get("/media/assets/a.jpg").headers["Cache-Status"].startswith("mediaedge; hit")
        # Deleted: the entry is dropped; the app now answers 404.
        up.routes["/media/assets/a.jpg"] = Route(status=404, body=b"gone")
        django.signals.post_delete.send(sender=django.Asset, instance=django.Asset("/media/assets/a.jpg", "rev-2"))
        assert edge.get("/media/assets/a.jpg").status_code == 404
        stats = edge.stats()["invalidations_by_type"]
        assert (stats["publish"], stats["delete"]) == (1, 1)
        django.settings.MEDIAEDGE_WEBHOOK_SECRET = "wrong"
        with pytest.raises(RuntimeError, match="refused the webhook: 401"):
            django.sender.send_to_mediaedge([{"type": "purge", "tag": "t"}])
    finally:
        edge.stop()
        up.close()


def test_django_db_file_storage_route_through_a_real_edge(tmp_path):
    name = "console.ConsolePicture/bytes/filename/mimetype/cat photo.png"
    data = bytes(range(256)) * 10
    db = tmp_path / "site.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE console_consolepicture (id INTEGER PRIMARY KEY, bytes TEXT, filename VARCHAR(255), "
                "mimetype VARCHAR(50))")
    con.execute("INSERT INTO console_consolepicture VALUES (1, ?, ?, 'image/png')",
                (base64.b64encode(data).decode(), name))
    con.commit()
    con.close()
    config = tmp_path / "edge.toml"
    config.write_text(block("django.md", "django-sql-route"), encoding="utf-8")
    edge = Edge(str(tmp_path), origin_db=f"sqlite:///{db}",
                args=["--origin-profile", "sql", "--config", str(config),
                      "--state-db", f"sqlite:///{tmp_path / 'state.db'}"]).start()
    try:
        target = "/files/get/?name=" + requests.utils.quote(name, safe="").replace("%20", "+")
        r = edge.get(target)
        assert (r.status_code, r.content, r.headers["Content-Type"]) == (200, data, "image/png")
        assert edge.get(target).headers["Cache-Status"].startswith("mediaedge; hit")
        assert edge.get("/files/get/?name=missing.png").status_code == 404
    finally:
        edge.stop()
