"""mediaedge.config: the pure parsers as tables, then precedence and errors of load_settings."""
from __future__ import annotations

import socket
from pathlib import Path

import pytest

from mediaedge.errors import ConfigError
from mediaedge.policy.signing import SigningKey
from mediaedge.config import (
    OPTIONS,
    Settings,
    format_hostport,
    format_size,
    load_settings,
    parse_duration,
    parse_hostport,
    parse_size,
)

REPO = Path(__file__).resolve().parent.parent
KiB, MiB, GiB, TiB = 1024, 1024**2, 1024**3, 1024**4


def load(cli: dict[str, object] | None = None, env: dict[str, str] | None = None,
         config: Path | str | None = None) -> Settings:
    return load_settings(cli or {}, env or {}, config_path=str(config) if config else None)


def toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mediaedge.toml"
    path.write_text(text, encoding="utf-8")
    return path


# --- parse_size -----------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # plain bytes
        ("1", 1),
        ("1048576", MiB),
        (4096, 4096),
        ("  42  ", 42),
        ("100B", 100),
        # decimal units
        ("100KB", 100_000),
        ("10GB", 10_000_000_000),
        ("2MB", 2_000_000),
        ("1TB", 10**12),
        # binary units
        ("512MiB", 512 * MiB),
        ("1GiB", GiB),
        ("1.5GiB", GiB + GiB // 2),
        ("2TiB", 2 * TiB),
        ("64KiB", 64 * KiB),
        # single letters are binary, like nginx and Varnish
        ("64k", 64 * KiB),
        ("64K", 64 * KiB),
        ("8M", 8 * MiB),
        ("2G", 2 * GiB),
        ("1T", TiB),
        # case and spacing
        ("512mib", 512 * MiB),
        ("10 gb", 10_000_000_000),
        ("1gIb", GiB),
        (".5GiB", GiB // 2),
        # fractions round down to whole bytes
        ("1.0000000001KiB", KiB),
    ],
)
def test_parse_size(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "", "abc", "GiB", "10XB", "1.5", "10 G B", "1e9", "0x10", "--1",
        "-1", "-5MiB", "0", "0GiB", "0.0000001KiB", 0, -1, True, 1.5, None,
    ],
)
def test_parse_size_rejects(text: object) -> None:
    with pytest.raises(ValueError):
        parse_size(text)  # type: ignore[arg-type]


@pytest.mark.parametrize(("size", "shown"), [(GiB, "1GiB"), (128 * MiB, "128MiB"), (1000, "1000")])
def test_format_size(size: int, shown: str) -> None:
    assert format_size(size) == shown
    assert parse_size(shown) == size


# --- parse_duration ---------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "expected"),
    [("86400", 86400.0), ("0", 0.0), ("1.5", 1.5), (10, 10.0), (0.25, 0.25), ("500ms", 0.5),
     ("30s", 30.0), ("10m", 600.0), ("12h", 43200.0), ("1d", 86400.0), ("1w", 604800.0),
     (" 2 H ", 7200.0)],
)
def test_parse_duration(text: str | float, expected: float) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "soon", "-1", "1y", "nan", "inf", -1, float("inf"), True])
def test_parse_duration_rejects(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)  # type: ignore[arg-type]


# --- parse_hostport ---------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("0.0.0.0:80", ("0.0.0.0", 80)),
        ("localhost:8081", ("localhost", 8081)),
        ("[::1]:8080", ("::1", 8080)),
        ("[::]:443", ("::", 443)),
        (":8080", ("127.0.0.1", 8080)),
        ("8080", ("127.0.0.1", 8080)),
        (" 127.0.0.1:0 ", ("127.0.0.1", 0)),
        ("h:65535", ("h", 65535)),
        (8080, ("127.0.0.1", 8080)),
        (("10.0.0.1", 9000), ("10.0.0.1", 9000)),
    ],
)
def test_parse_hostport(text: object, expected: tuple[str, int]) -> None:
    assert parse_hostport(text) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text",
    ["", "host", "host:", "host:http", "host:65536", "host:-1", "::1:8080", "[::1]", "[::1]8080",
     "[nothost]:80", "[]:80", "a b:80", True, None],
)
def test_parse_hostport_rejects(text: object) -> None:
    with pytest.raises(ValueError):
        parse_hostport(text)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["127.0.0.1:8080", "[::1]:8080", "example.org:0"])
def test_format_hostport_round_trips(text: str) -> None:
    assert format_hostport(parse_hostport(text)) == text


# --- defaults -----------------------------------------------------------------

def test_defaults_match_the_contract() -> None:
    s = load()
    assert s.listen == ("127.0.0.1", 8080)
    assert s.admin_listen == ("127.0.0.1", 8081)
    assert s.upstream is None
    assert s.origin_db == "sqlite:///var/origin.db"
    assert s.origin_profile == "native"
    assert s.state_db is None and s.state_db_url == "sqlite:///var/origin.db"
    assert s.cache_dir == "var/cache"
    assert s.cache_size == GiB
    assert s.max_object_size == GiB // 8
    assert s.media_prefixes == ("/media/",)
    assert s.revision_header == "X-Media-Revision"
    assert (s.default_ttl, s.negative_ttl, s.upstream_timeout, s.grace) == (86400, 10, 10, 86400)
    assert s.webhook_secret is None
    assert s.node_id == f"{socket.gethostname()}:8080"
    assert s.access_log is None
    assert s.config_path is None
    assert s.admin_url == "http://127.0.0.1:8081"


@pytest.mark.parametrize(
    ("cache_size", "expected"),
    [("1GiB", 128 * MiB), ("10GB", 1_250_000_000), ("800", 100), ("7", 1)],
)
def test_max_object_size_defaults_to_an_eighth(cache_size: str, expected: int) -> None:
    assert load({"cache_size": cache_size}).max_object_size == expected


def test_node_id_follows_listen_port() -> None:
    assert load({"listen": "0.0.0.0:9090"}).node_id == f"{socket.gethostname()}:9090"
    assert load({"node-id": "edge-1"}).node_id == "edge-1"


@pytest.mark.parametrize(
    ("admin_listen", "url"),
    [("0.0.0.0:8081", "http://127.0.0.1:8081"), ("[::]:9", "http://[::1]:9"),
     ("[::1]:9", "http://[::1]:9"), ("edge.internal:8081", "http://edge.internal:8081")],
)
def test_admin_url(admin_listen: str, url: str) -> None:
    assert load({"admin_listen": admin_listen}).admin_url == url


# --- normalisation -----------------------------------------------------------

@pytest.mark.parametrize(
    ("cli", "field", "expected"),
    [
        ({"upstream": "http://app:8000/"}, "upstream", "http://app:8000"),
        ({"upstream": "HTTPS://app.example/base//"}, "upstream", "https://app.example/base"),
        ({"upstream": ""}, "upstream", None),
        ({"origin_profile": "Magento2"}, "origin_profile", "magento2"),
        ({"media_prefix": ["/media/", "/static/", "/media/"]}, "media_prefixes",
         ("/media/", "/static/")),
        ({"media_prefix": "/a/, /b/"}, "media_prefixes", ("/a/", "/b/")),
        ({"media_prefix": ["/"]}, "media_prefixes", ("/",)),
        ({"state_db": "postgresql://u:p@db/st"}, "state_db", "postgresql://u:p@db/st"),
        ({"default_ttl": "1d"}, "default_ttl", 86400.0),
        ({"negative_ttl": "0"}, "negative_ttl", 0.0),
        ({"upstream_timeout": "250ms"}, "upstream_timeout", 0.25),
        ({"webhook_secret": "s3cret"}, "webhook_secret", "s3cret"),
        ({"access_log": "-"}, "access_log", "-"),
        ({"max_object_size": "1GiB"}, "max_object_size", GiB),
        ({"revision_header": "X-Rev"}, "revision_header", "X-Rev"),
    ],
)
def test_values_are_normalised(cli: dict[str, object], field: str, expected: object) -> None:
    assert getattr(load(cli), field) == expected


def test_state_db_url_prefers_state_db() -> None:
    s = load({"origin_db": "mysql://m:p@shop/magento", "state_db": "sqlite:///var/state.db"})
    assert s.state_db_url == "sqlite:///var/state.db"


@pytest.mark.parametrize("value", ["none", "NONE", " none "])
def test_origin_db_none_is_a_plain_http_cache_whose_log_lives_in_the_cache_dir(value: str) -> None:
    s = load({"origin_db": value, "upstream": "http://app:8000", "cache_dir": "/srv/edge/cache"})
    assert s.origin_db is None and s.as_dict()["origin-db"] == "none"
    assert s.state_db_url == "sqlite:////srv/edge/cache/invalidations.db"
    s = load({"origin_db": value, "upstream": "http://app:8000", "state_db": "postgresql://u:p@h:5432/state"})
    assert s.state_db_url == "postgresql://u:p@h:5432/state"


# --- precedence: flag > env > TOML > default ------------------------------------

def test_precedence_for_each_layer(tmp_path: Path) -> None:
    conf = toml(tmp_path, 'cache-size = "3MiB"\nnegative_ttl = 30\nlisten = "127.0.0.1:7000"\n')
    env = {"MEDIAEDGE_CACHE_SIZE": "2MiB", "MEDIAEDGE_NEGATIVE_TTL": "20"}
    cli = {"cache_size": "1MiB"}

    s = load(cli, env, conf)
    assert s.cache_size == MiB  # flag beats env and file
    assert s.negative_ttl == 20  # env beats file
    assert s.listen == ("127.0.0.1", 7000)  # file beats default
    assert s.grace == 86400  # default
    assert s.config_path == str(conf)

    assert load({}, env, conf).cache_size == 2 * MiB
    assert load({}, {}, conf).cache_size == 3 * MiB
    assert load({}, {}, None).cache_size == GiB


def test_config_path_from_environment(tmp_path: Path) -> None:
    conf = toml(tmp_path, 'origin-profile = "magento1"\n')
    s = load_settings({}, {"MEDIAEDGE_CONFIG": str(conf)}, config_path=None)
    assert s.origin_profile == "magento1"
    assert s.config_path == str(conf)


def test_config_flag_beats_config_env(tmp_path: Path) -> None:
    chosen = toml(tmp_path, 'origin-profile = "magento2"\n')
    env = {"MEDIAEDGE_CONFIG": str(tmp_path / "missing.toml")}
    assert load_settings({}, env, config_path=str(chosen)).origin_profile == "magento2"
    from_cli = load_settings({"config": str(chosen)}, env, config_path=None)
    assert from_cli.origin_profile == "magento2"


def test_media_prefix_layers(tmp_path: Path) -> None:
    conf = toml(tmp_path, 'media-prefix = ["/file/", "/img/"]\n')
    assert load({}, {}, conf).media_prefixes == ("/file/", "/img/")
    env = {"MEDIAEDGE_MEDIA_PREFIX": "/media/,/static/"}
    assert load({}, env, conf).media_prefixes == ("/media/", "/static/")
    assert load({"media_prefix": ["/x/"]}, env, conf).media_prefixes == ("/x/",)


def test_none_values_in_cli_are_ignored() -> None:
    assert load({"cache_size": None, "upstream": None}).cache_size == GiB


def test_empty_env_is_unset_but_switches_off_optional_settings(tmp_path: Path) -> None:
    conf = toml(tmp_path, 'upstream = "http://app:8000"\ncache-size = "2MiB"\n')
    s = load({}, {"MEDIAEDGE_UPSTREAM": "", "MEDIAEDGE_CACHE_SIZE": ""}, conf)
    assert s.upstream is None
    assert s.cache_size == 2 * MiB


def test_unrelated_environment_is_ignored() -> None:
    assert load({}, {"MEDIAEDGE_SOMETHING_ELSE": "x", "CACHE_SIZE": "1"}).cache_size == GiB


def test_toml_takes_native_types(tmp_path: Path) -> None:
    conf = toml(tmp_path, "cache_size = 1048576\ndefault-ttl = 60.5\nadmin-listen = 9001\n")
    s = load({}, {}, conf)
    assert (s.cache_size, s.default_ttl, s.admin_listen) == (MiB, 60.5, ("127.0.0.1", 9001))


def test_example_config_holds_the_defaults() -> None:
    example = REPO / "conf" / "mediaedge.toml"
    from_file = load({}, {}, example)
    assert from_file.as_dict() | {"config": None} == load().as_dict()


def test_example_config_documents_every_setting() -> None:
    text = (REPO / "conf" / "mediaedge.toml").read_text(encoding="utf-8")
    missing = [o.name for o in OPTIONS if f"{o.name} = " not in text]
    assert missing == []


# --- errors: one line, naming the setting ---------------------------------------

@pytest.mark.parametrize(
    ("cli", "env", "setting", "fragment"),
    [
        ({"cache_size": "abc"}, {}, "--cache-size",
         "--cache-size: malformed size 'abc' (use bytes, 512MiB or 10GB)"),
        ({"cache_size": "0"}, {}, "--cache-size", "positive"),
        ({}, {"MEDIAEDGE_CACHE_SIZE": "lots"}, "--cache-size", "(from MEDIAEDGE_CACHE_SIZE)"),
        ({"max_object_size": "-1"}, {}, "--max-object-size", "positive"),
        ({"cache_size": "1MiB", "max_object_size": "2MiB"}, {}, "--max-object-size",
         "larger than --cache-size"),
        ({"origin_profile": "magento3"}, {}, "--origin-profile",
         "--origin-profile: unknown profile 'magento3' (choose native, magento2, magento1 or sql)"),
        ({"listen": "nowhere"}, {}, "--listen", "HOST:PORT"),
        ({"listen": "127.0.0.1:99999"}, {}, "--listen", "65535"),
        ({"admin_listen": "::1:8081"}, {}, "--admin-listen", "brackets"),
        ({"admin_listen": "127.0.0.1:8080"}, {}, "--admin-listen", "same address as --listen"),
        ({"upstream": "ftp://app"}, {}, "--upstream", "http"),
        ({"upstream": "http://"}, {}, "--upstream", "http"),
        ({"upstream": "http://app:port"}, {}, "--upstream", "port"),
        ({"upstream": "http://app/?x=1"}, {}, "--upstream", "query"),
        ({"upstream": "http://u:pw@app"}, {}, "--upstream", "credentials"),
        ({"origin_db": "oracle://x/y"}, {}, "--origin-db", "oracle"),
        ({"origin_db": ""}, {}, "--origin-db", "empty"),
        ({"origin_db": "none"}, {}, "--origin-db", "--origin-db: none needs --upstream"),
        ({"state_db": "postgresql://h/"}, {}, "--state-db", "no database"),
        ({"cache_dir": " "}, {}, "--cache-dir", "empty"),
        ({"media_prefix": ["/media"]}, {}, "--media-prefix", "did you mean '/media/'"),
        ({"media_prefix": ["media/"]}, {}, "--media-prefix", "start and end with '/'"),
        ({}, {"MEDIAEDGE_MEDIA_PREFIX": ","}, "--media-prefix", "at least one"),
        ({"revision_header": "X Rev"}, {}, "--revision-header", "header name"),
        ({"default_ttl": "forever"}, {}, "--default-ttl", "malformed duration"),
        ({"negative_ttl": "-5"}, {}, "--negative-ttl", "negative"),
        ({"upstream_timeout": "0"}, {}, "--upstream-timeout", "more than 0"),
        ({"grace": "x"}, {}, "--grace", "malformed duration"),
        ({"node_id": "  "}, {}, "--node-id", "empty"),
        ({"bogus": "1"}, {}, "--bogus", "unknown setting"),
        ({"signed_prefix": ["/media/p/"]}, {}, "--signed-prefix", "needs at least one --signing-key"),
        ({"signed_prefix": ["/private/"], "signing_key": ["s"]}, {}, "--signed-prefix", "not under a --media-prefix"),
        ({"signed_prefix": ["/media/p"], "signing_key": ["s"]}, {}, "--signed-prefix", "did you mean"),
        ({"signing_key": ["k1:"]}, {}, "--signing-key", "empty secret"),
        ({"signing_key": ["k1:a", "k1:b"]}, {}, "--signing-key", "given twice"),
        ({"auth_prefix": ["/media/m/"]}, {}, "--auth-prefix", "needs --auth-url"),
        ({"auth_prefix": ["/m/"], "auth_url": "http://app/auth"}, {}, "--auth-prefix", "not under a --media-prefix"),
        ({"auth_url": "ftp://app/auth"}, {}, "--auth-url", "http"),
        ({"auth_ttl": "-1"}, {}, "--auth-ttl", "negative"),
    ],
)
def test_errors_name_the_setting(cli: dict[str, object], env: dict[str, str], setting: str,
                                 fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(cli, env)
    assert info.value.setting == setting
    message = str(info.value)
    assert message.startswith(f"{setting}: ")
    assert fragment in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("cache-size = ", "invalid TOML"),
        ("cache-sise = '1GiB'", "unknown setting 'cache-sise' (did you mean 'cache-size'?)"),
        ("frobnicate = 1", "unknown setting 'frobnicate'"),
        ("[server]\nlisten = ':1'", "unknown setting 'server'"),
        ("cache-size = '1GiB'\ncache_size = '2GiB'", "set twice"),
    ],
)
def test_bad_config_files_name_config(tmp_path: Path, text: str, fragment: str) -> None:
    conf = toml(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load({}, {}, conf)
    assert info.value.setting == "--config"
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_bad_value_in_config_file_names_setting_and_file(tmp_path: Path) -> None:
    conf = toml(tmp_path, 'cache-size = "huge"\n')
    with pytest.raises(ConfigError) as info:
        load({}, {}, conf)
    assert info.value.setting == "--cache-size"
    assert str(conf) in str(info.value)


@pytest.mark.parametrize("value", ["true", "[1, 2]", "{a = 1}"])
def test_wrong_toml_types_are_errors(tmp_path: Path, value: str) -> None:
    conf = toml(tmp_path, f"revision-header = {value}\n")
    with pytest.raises(ConfigError) as info:
        load({}, {}, conf)
    assert info.value.setting == "--revision-header"


def test_unreadable_config(tmp_path: Path) -> None:
    for path in (tmp_path / "missing.toml", tmp_path):
        with pytest.raises(ConfigError) as info:
            load({}, {}, path)
        assert info.value.setting == "--config"
        assert "cannot read" in str(info.value)


def test_not_utf8_config(tmp_path: Path) -> None:
    conf = tmp_path / "latin1.toml"
    conf.write_bytes(b'node-id = "caf\xe9"\n')
    with pytest.raises(ConfigError) as info:
        load({}, {}, conf)
    assert info.value.setting == "--config"


# --- reporting ------------------------------------------------------------------

def test_as_dict_and_repr_hide_secrets() -> None:
    s = load({
        "webhook_secret": "hunter2",
        "origin_db": "postgresql://media:dbpass@db:5432/media",
        "state_db": "mysql://st:statepass@db/state",
    })
    shown = s.as_dict()
    assert shown["webhook-secret"] == "***"
    assert shown["origin-db"] == "postgresql://media@db:5432/media"
    for text in (repr(s), s.describe(), str(shown)):
        assert "hunter2" not in text and "dbpass" not in text and "statepass" not in text
    assert s.webhook_secret == "hunter2"  # the value itself is intact


def test_private_media_settings_and_layers(tmp_path: Path) -> None:
    s = load()
    assert (s.signing_keys, s.signed_prefixes, s.auth_url, s.auth_prefixes, s.auth_ttl) == ((), (), None, (), 60.0)
    s = load({"signing_key": ["k1:one", "two"], "signed_prefix": ["/media/p/", "/media/q/"],
              "auth_url": "http://127.0.0.1:8000/auth/", "auth_prefix": ["/media/m/"], "auth_ttl": "5m"})
    assert s.signing_keys == (SigningKey("k1", b"one"), SigningKey(None, b"two"))
    assert s.signed_prefixes == ("/media/p/", "/media/q/") and s.auth_prefixes == ("/media/m/",)
    assert (s.auth_url, s.auth_ttl) == ("http://127.0.0.1:8000/auth", 300.0)
    env = {"MEDIAEDGE_SIGNING_KEY": "new:n,old:o", "MEDIAEDGE_SIGNED_PREFIX": "/media/p/"}
    assert [k.kid for k in load({}, env).signing_keys] == ["new", "old"]
    config = tmp_path / "m.toml"
    config.write_text('signing-key = ["a:1"]\nsigned-prefix = ["/media/p/"]\nauth-ttl = 0\n')
    s = load_settings({}, {}, config_path=str(config))
    assert s.signing_keys == (SigningKey("a", b"1"),) and s.auth_ttl == 0.0
    shown = load({"signing_key": ["k1:hunter2", "hunter3"]}).as_dict()
    assert shown["signing-key"] == ["k1:***", "***"]
    assert "hunter" not in repr(load({"signing_key": ["k1:hunter2", "hunter3"]}))


def test_describe_is_one_line_per_setting() -> None:
    lines = load().describe().splitlines()
    assert "cache-size = 1GiB" in lines
    assert "max-object-size = 128MiB" in lines
    assert len(lines) == len(OPTIONS) + 1  # and config


def test_settings_is_frozen() -> None:
    s = load()
    with pytest.raises(AttributeError):
        s.cache_size = 1  # type: ignore[misc]


# --- durations: every duration setting takes 500ms / 10m / 7d, and says so --------------

def test_every_duration_setting_takes_units_and_its_help_says_so():
    from mediaedge.config import DURATION_FORMS

    durations = [o for o in OPTIONS if o.metavar in ("SECONDS", "DURATION")]
    assert {o.name for o in durations} >= {"default-ttl", "negative-ttl", "upstream-timeout", "grace",
                                            "log-retention", "browser-ttl", "db-timeout", "auth-ttl"}
    for option in durations:
        assert option.takes_duration, option.name
        assert DURATION_FORMS in option.full_help
        for text, seconds in (("500ms", 0.5), ("10m", 600.0), ("7d", 604800.0), ("1.5", 1.5)):
            assert option.parse(text) == seconds, (option.name, text)
    assert not [o.name for o in OPTIONS if o.takes_duration and o not in durations]
