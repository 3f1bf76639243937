import pytest

from mediaedge.policy.cachecontrol import delta_seconds, parse_cache_control


@pytest.mark.parametrize(
    "value, expected",
    [
        # absent and empty
        (None, {}),
        ("", {}),
        (" , ,, ", {}),
        # plain directives, names lower-cased, arguments kept as sent
        ("max-age=60", {"max-age": "60"}),
        ("Max-Age=60, PUBLIC", {"max-age": "60", "public": None}),
        ("no-store", {"no-store": None}),
        ("public, max-age=60, s-maxage=120", {"public": None, "max-age": "60", "s-maxage": "120"}),
        ("max-age = 60 ,  public  ", {"max-age": "60", "public": None}),
        ("x-custom=Token", {"x-custom": "Token"}),
        # quoted arguments are unquoted; commas inside them do not split
        ('max-age="60"', {"max-age": "60"}),
        ('no-cache="Set-Cookie, X-Foo", max-age=5', {"no-cache": "Set-Cookie, X-Foo", "max-age": "5"}),
        ('private="a\\"b"', {"private": 'a"b'}),
        ('ext="unterminated, max-age=5', {"ext": "unterminated, max-age=5"}),
        ('ext="a"junk, max-age=5', {"ext": "a", "max-age": "5"}),
        # first occurrence wins (RFC 9111 4.2.1)
        ("max-age=60, max-age=10", {"max-age": "60"}),
        ("MAX-AGE=60, max-age=10", {"max-age": "60"}),
        # empty arguments and junk tolerated
        ("max-age=", {"max-age": ""}),
        ("max-age, public", {"max-age": None, "public": None}),
        ("=60, public", {"public": None}),
        ("max age=60, public", {"public": None}),
        ("max-age=60;public", {"max-age": "60;public"}),
        ("\x00, public", {"public": None}),
        ("s-maxage=1=2", {"s-maxage": "1=2"}),
    ],
)
def test_parse_cache_control(value, expected):
    assert parse_cache_control(value) == expected


@pytest.mark.parametrize(
    "value, expected",
    [
        # valid
        ("0", 0),
        ("60", 60),
        (" 60 ", 60),
        ("007", 7),
        ("2147483647", 2147483647),
        # overflow clamps to 2**31 (RFC 9111 1.2.2)
        ("2147483648", 2**31),
        ("2147483649", 2**31),
        ("99999999999999999999999999999", 2**31),
        ("9" * 5000, 2**31),
        ("0000000000000000000005", 5),
        # invalid
        (None, None),
        ("", None),
        ("-1", None),
        ("+1", None),
        ("1.5", None),
        ("1e3", None),
        ("60s", None),
        ("6 0", None),
        ("٣", None),  # Arabic-Indic digit
        ("²", None),
    ],
)
def test_delta_seconds(value, expected):
    assert delta_seconds(value) == expected
