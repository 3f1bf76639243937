"""python -m tests.djangosite DB_URL FILE NAME MIMETYPE: see the package docstring."""
from __future__ import annotations

import hashlib
import json
import sys

from mediaedge.dbapi import parse_db_url


def _database(url: str) -> dict:
    u = parse_db_url(url)
    if u.dialect == "sqlite":
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": u.path}
    if u.dialect == "postgresql":
        return {"ENGINE": "django.db.backends.postgresql", "NAME": u.database, "USER": u.user or "",
                "PASSWORD": u.password or "", "HOST": u.host, "PORT": str(u.port or 5432)}
    import pymysql  # Django's MySQL backend on PyMySQL (the project's driver), as mysqlclient

    pymysql.version_info = (2, 2, 1, "final", 0)
    pymysql.install_as_MySQLdb()
    return {"ENGINE": "django.db.backends.mysql", "NAME": u.database, "USER": u.user or "root",
            "PASSWORD": u.password or "", "HOST": u.host, "PORT": str(u.port or 3306),
            "OPTIONS": {"charset": "utf8mb4"}}


def main(url: str, path: str, name: str, mimetype: str) -> None:
    import django
    from django.conf import settings

    settings.configure(
        DEBUG=False, SECRET_KEY="test", ALLOWED_HOSTS=["*"], USE_TZ=True,
        INSTALLED_APPS=["tests.djangosite.console.apps.ConsoleConfig"],
        DATABASES={"default": _database(url)},
        ROOT_URLCONF="tests.djangosite.urls",
        STORAGES={"default": {"BACKEND": "db_file_storage.storage.DatabaseFileStorage"}},
    )
    django.setup()
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.core.management import call_command
    from django.test import Client

    from tests.djangosite.console.models import Console

    call_command("migrate", run_syncdb=True, verbosity=0)
    with open(path, "rb") as f:
        data = f.read()
    console = Console.objects.create(name="c", picture=SimpleUploadedFile(name, data, content_type=mimetype))
    out = {"name": console.picture.name, "url": console.picture.url}
    client = Client()
    for form in ("get", "download"):
        r = client.get(f"/files/{form}/", {"name": console.picture.name})
        body = b"".join(r.streaming_content) if r.streaming else r.content
        out[form] = {"status": r.status_code, "sha256": hashlib.sha256(body).hexdigest(),
                     "content_type": r["Content-Type"]}
    print(json.dumps(out))


if __name__ == "__main__":
    main(*sys.argv[1:5])
