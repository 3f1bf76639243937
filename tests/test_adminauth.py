"""mediaedge.adminauth (the --admin-token check) and the config rule that requires a
token when the admin plane listens beyond loopback: tables of pure cases."""
from __future__ import annotations

import pytest

from mediaedge.adminauth import authorized, bearer_token, query_token
from mediaedge.config import admin_token_problem, is_loopback, load_settings


@pytest.mark.parametrize(("header", "token"), [
    ("Bearer abc", "abc"),
    ("bearer abc", "abc"),  # the scheme is case-insensitive (RFC 9110 11.1)
    ("Bearer   abc  ", "abc"),
    ("Basic YWxhZGRpbjpvcGVuc2VzYW1l", None),
    ("Bearer", None),
    ("Bearer ", None),
    ("", None),
    ("abc", None),
])
def test_bearer_token(header, token):
    headers = {"authorization": header} if header else {}
    assert bearer_token(headers) == token


@pytest.mark.parametrize(("target", "token"), [
    ("/?token=abc", "abc"),
    ("/?a=1&token=abc", "abc"),
    ("/?token=a%2Bb", "a+b"),
    ("/", None),
    ("/?token=a&token=b", None),  # ambiguous: refused
    ("/?tok=abc", None),
])
def test_query_token(target, token):
    assert query_token(target) == token


@pytest.mark.parametrize(("expected", "headers", "target", "query_ok", "allowed"), [
    # no token configured: the admin plane is open (loopback only, see below)
    (None, {}, "/stats", False, True),
    ("", {}, "/stats", False, True),
    # the header
    ("s3cret", {"authorization": "Bearer s3cret"}, "/stats", False, True),
    ("s3cret", {"authorization": "Bearer s3cre"}, "/stats", False, False),
    ("s3cret", {"authorization": "Bearer s3cretX"}, "/stats", False, False),
    ("s3cret", {}, "/stats", False, False),
    ("s3cret", {"authorization": "Basic s3cret"}, "/stats", False, False),
    # the query, only where allowed (the dashboard page)
    ("s3cret", {}, "/?token=s3cret", True, True),
    ("s3cret", {}, "/stats?token=s3cret", False, False),
    ("s3cret", {}, "/?token=wrong", True, False),
    # a header wins over the query: a wrong header is not rescued by a right query
    ("s3cret", {"authorization": "Bearer wrong"}, "/?token=s3cret", True, False),
    # non-ASCII offered tokens are compared, not crashed on
    ("s3cret", {"authorization": "Bearer s\udcffcret"}, "/", True, False),
    ("tøken", {"authorization": "Bearer tøken"}, "/", False, True),
])
def test_authorized(expected, headers, target, query_ok, allowed):
    assert authorized(expected, headers, target, query_ok=query_ok) is allowed


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("", False), ("10.0.0.5", False), ("edge.internal", False),
])
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(("cli", "env", "problem"), [
    ({}, {}, False),
    ({"admin_listen": "127.0.0.1:9001"}, {}, False),
    ({"admin_listen": "[::1]:9001"}, {}, False),
    ({"admin_listen": "0.0.0.0:9001"}, {}, True),
    ({"admin_listen": "10.1.2.3:9001"}, {}, True),
    ({"admin_listen": "0.0.0.0:9001", "admin_token": "t"}, {}, False),
    ({"admin_listen": "0.0.0.0:9001"}, {"MEDIAEDGE_ADMIN_TOKEN": "t"}, False),
    ({"admin_listen": "0.0.0.0:9001"}, {"MEDIAEDGE_ADMIN_TOKEN": ""}, True),
])
def test_a_token_is_required_beyond_loopback(cli, env, problem):
    settings = load_settings(cli, env, config_path=None)
    error = admin_token_problem(settings)
    assert (error is not None) is problem
    if error is not None:
        assert str(error).startswith("--admin-token: required when --admin-listen (")
        assert "\n" not in str(error)


def test_token_from_toml_and_hidden_in_the_settings_dump(tmp_path):
    conf = tmp_path / "m.toml"
    conf.write_text('admin-token = "from-file"\nadmin-listen = "0.0.0.0:9001"\n', encoding="utf-8")
    settings = load_settings({}, {}, config_path=str(conf))
    assert settings.admin_token == "from-file"
    assert admin_token_problem(settings) is None
    assert settings.as_dict()["admin-token"] == "***"
    assert "from-file" not in repr(settings) and "from-file" not in settings.describe()
