"""docs/private-media.md: the Django and PHP signing helpers it prints produce exactly the
signatures mediaedge checks (the published vectors, and random targets against
mediaedge.signing.sign_target)."""
from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

from conftest import require
from mediaedge.signing import sign_target

DOC = (Path(__file__).resolve().parent.parent / "docs" / "private-media.md").read_text(encoding="utf-8")


def block(language: str, containing: str) -> str:
    for match in re.finditer(r"```" + language + r"\n(.*?)```", DOC, re.S):
        if containing in match.group(1):
            return match.group(1)
    raise AssertionError(f"no {language} block with {containing!r} in docs/private-media.md")


def vectors() -> list[tuple[str, str, int, str | None, str]]:
    rows = re.findall(r"^\| `(/[^`]*)` \| `([^`]*)` \| `(\d+)` \|\s*(?:`([^`]*)`)?\s*\| `([^`]*)` \|$", DOC, re.M)
    assert len(rows) == 2
    return [(t, s, int(e), k or None, link) for t, s, e, k, link in rows]


def cases() -> list[tuple[str, str, int, str | None]]:
    rng = random.Random(7)
    alphabet = "abcXYZ019-._~%2F/=+;,"
    out = [(t, s, e, k) for t, s, e, k, _ in vectors()]
    for i in range(60):
        path = "/media/p/" + "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 20)))
        query = "&".join(f"q{j}={rng.randrange(100)}" for j in range(rng.randrange(0, 4)))
        target = path + ("?" + query if query or i % 7 == 0 else "")
        out.append((target, f"secret-{i}", rng.randrange(0, 10**12), rng.choice([None, "k1", "2025a"])))
    return out


def test_published_vectors() -> None:
    for target, secret, exp, kid, link in vectors():
        assert sign_target(target, secret, exp, kid) == link


def test_django_template_tag() -> None:
    django = types.ModuleType("django")
    django_template = types.ModuleType("django.template")
    django_conf = types.ModuleType("django.conf")

    class Library:
        def simple_tag(self, f):  # noqa: ANN001
            return f

    django_template.Library = Library  # type: ignore[attr-defined]
    django_conf.settings = types.SimpleNamespace(MEDIAEDGE_SIGNING_KEY=("2025a", "s3cret"))  # type: ignore[attr-defined]
    django.template, django.conf = django_template, django_conf  # type: ignore[attr-defined]
    saved = {k: sys.modules.get(k) for k in ("django", "django.template", "django.conf")}
    sys.modules.update({"django": django, "django.template": django_template, "django.conf": django_conf})
    try:
        namespace: dict[str, object] = {}
        exec(compile(block("python", "register = template.Library()"), "private-media.md", "exec"), namespace)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    doc_sign = namespace["sign_target"]
    for target, secret, exp, kid in cases():
        assert doc_sign(target, secret, exp, kid) == sign_target(target, secret, exp, kid), target  # type: ignore[operator]
    link = namespace["signed_media"]("/media/paid/intro.mp4", 60)  # type: ignore[operator]
    assert re.fullmatch(r"/media/paid/intro\.mp4\?exp=\d+&kid=2025a&sig=[\w-]{43}", link)


@pytest.mark.full
def test_php_function(tmp_path: Path) -> None:
    php = shutil.which("php")
    if php is None:
        require("php-cli is not installed (scripts/install-deps.sh installs it)")
    function = block("php", "function mediaedge_sign")
    all_cases = cases()
    script = tmp_path / "sign.php"
    script.write_text(function + "\n$cases = json_decode(file_get_contents('php://stdin'), true);\n"
                      "foreach ($cases as $c) { echo mediaedge_sign($c[0], $c[1], $c[2], $c[3]), \"\\n\"; }\n")
    result = subprocess.run([php, str(script)], input=json.dumps(all_cases), capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [sign_target(*c) for c in all_cases]
