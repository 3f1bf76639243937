"""mediaedge.webhook: signature checks and event parsing, as tables; a property test for hostile input."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mediaedge.errors import WebhookError
from mediaedge.webhook import (
    MAX_BODY,
    DeleteEvent,
    PublishEvent,
    PurgeEvent,
    event_from_json,
    event_to_json,
    parse_events,
    sign,
    signed_headers,
    verify,
)

SECRET = "s3cret"
NOW = 1_700_000_000.0
TS = "1700000000"
BODY = b'{"events":[{"type":"purge","tag":"x"}]}'
SIG = sign(SECRET, TS, BODY)


def check(secret=SECRET, timestamp=TS, signature=SIG, body=BODY, now=NOW):
    verify(secret, timestamp=timestamp, signature=signature, body=body, now=now)


# --- sign ----------------------------------------------------------------------


def test_sign_is_hmac_sha256_over_timestamp_dot_body():
    # Known answer: printf '1700000000.{}' | openssl dgst -sha256 -hmac s3cret
    import hashlib
    import hmac

    expected = hmac.new(b"s3cret", b"1700000000.{}", hashlib.sha256).hexdigest()
    assert sign("s3cret", 1700000000, b"{}") == "sha256=" + expected
    assert sign("s3cret", "1700000000", b"{}") == "sha256=" + expected


def test_signed_headers_verify():
    headers = signed_headers(SECRET, BODY, NOW + 0.7)
    check(timestamp=headers["X-Mediaedge-Timestamp"], signature=headers["X-Mediaedge-Signature"])


# --- verify: accepted ------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({}, id="plain"),
        pytest.param({"signature": SIG.upper().replace("SHA256=", "sha256=")}, id="uppercase hex"),
        pytest.param({"now": NOW + 300}, id="300 s old"),
        pytest.param({"now": NOW - 300}, id="300 s in the future"),
        pytest.param({"timestamp": " " + TS + " ", "signature": " " + SIG}, id="surrounding spaces"),
        pytest.param(
            {"timestamp": "1700000000.25", "signature": sign(SECRET, "1700000000.25", BODY)},
            id="fractional timestamp",
        ),
        pytest.param({"body": b"x" * MAX_BODY, "signature": sign(SECRET, TS, b"x" * MAX_BODY)}, id="1 MiB"),
        pytest.param({"body": b"", "signature": sign(SECRET, TS, b"")}, id="empty body"),
    ],
)
def test_verify_accepts(kwargs):
    check(**kwargs)


# --- verify: refused -------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, status, words",
    [
        # no secret configured: 503 before anything else
        ({"secret": None}, 503, "no webhook secret configured"),
        ({"secret": ""}, 503, "no webhook secret configured"),
        ({"secret": None, "signature": None, "body": b"x" * (MAX_BODY + 1)}, 503, "disabled"),
        # size: 413, checked before the headers
        ({"body": b"x" * (MAX_BODY + 1)}, 413, "limit"),
        ({"body": b"x" * (MAX_BODY + 1), "signature": None, "timestamp": None}, 413, "limit"),
        # missing headers
        ({"timestamp": None}, 401, "X-Mediaedge-Timestamp: header required"),
        ({"signature": None}, 401, "X-Mediaedge-Signature: header required"),
        # malformed timestamp
        ({"timestamp": ""}, 401, "X-Mediaedge-Timestamp: must be unix seconds"),
        ({"timestamp": "yesterday"}, 401, "X-Mediaedge-Timestamp"),
        ({"timestamp": "-1700000000"}, 401, "X-Mediaedge-Timestamp"),
        ({"timestamp": "1.7e9"}, 401, "X-Mediaedge-Timestamp"),
        ({"timestamp": "0x6553F100"}, 401, "X-Mediaedge-Timestamp"),
        ({"timestamp": "１７００００００００"}, 401, "X-Mediaedge-Timestamp"),  # fullwidth digits
        ({"timestamp": "nan"}, 401, "X-Mediaedge-Timestamp"),
        ({"timestamp": "9" * 400}, 401, "X-Mediaedge-Timestamp"),
        # malformed signature
        ({"signature": ""}, 401, "X-Mediaedge-Signature: must be sha256=<64 hex digits>"),
        ({"signature": SIG[len("sha256="):]}, 401, "must be sha256="),  # no prefix
        ({"signature": "sha1=" + SIG[len("sha256="):]}, 401, "must be sha256="),
        ({"signature": "SHA256=" + SIG[len("sha256="):]}, 401, "must be sha256="),
        ({"signature": "sha256:" + SIG[len("sha256="):]}, 401, "must be sha256="),
        ({"signature": SIG[:-1]}, 401, "must be sha256="),  # 63 digits
        ({"signature": SIG + "0"}, 401, "must be sha256="),  # 65 digits
        ({"signature": SIG[:-1] + "g"}, 401, "must be sha256="),
        ({"signature": SIG + ", " + SIG}, 401, "must be sha256="),  # header sent twice
        ({"signature": "sha256=" + "é" * 64}, 401, "must be sha256="),
        # clock skew, both ways
        ({"now": NOW + 301}, 401, "301 s old"),
        ({"now": NOW - 301}, 401, "301 s in the future"),
        ({"now": NOW + 86400 * 365}, 401, "old"),
        # wrong MAC
        ({"body": BODY + b" "}, 401, "does not match"),  # tampered body
        ({"body": BODY.replace(b"x", b"y")}, 401, "does not match"),
        ({"timestamp": "1700000001", "now": NOW}, 401, "does not match"),  # timestamp not the signed one
        ({"secret": "other"}, 401, "does not match"),
        ({"signature": "sha256=" + "0" * 64}, 401, "does not match"),
    ],
)
def test_verify_refuses(kwargs, status, words):
    with pytest.raises(WebhookError) as info:
        check(**kwargs)
    assert info.value.status == status
    assert words in info.value.message
    assert json.loads(info.value.body()) == {"error": info.value.message}


# --- parse_events: accepted ---------------------------------------------------------


def body_of(*events, **top) -> bytes:
    return json.dumps({"events": list(events), **top}).encode()


@pytest.mark.parametrize(
    "event, expected",
    [
        ({"type": "publish", "path": "/media/a.jpg", "revision": "r1"}, PublishEvent("/media/a.jpg", "r1")),
        (
            {"type": "publish", "path": "/media/a.jpg", "revision": "2024-01-02 03:04:05", "prewarm": True},
            PublishEvent("/media/a.jpg", "2024-01-02 03:04:05", prewarm=True),
        ),
        ({"type": "delete", "path": "/media/a.jpg"}, DeleteEvent("/media/a.jpg")),
        (
            {"type": "delete", "path": "/media/a.jpg", "abort_inflight": True},
            DeleteEvent("/media/a.jpg", abort_inflight=True),
        ),
        ({"type": "purge", "path": "/media/a.jpg"}, PurgeEvent(path="/media/a.jpg")),
        ({"type": "purge", "prefix": "/media/cat/"}, PurgeEvent(prefix="/media/cat/")),
        ({"type": "purge", "tag": "product-42"}, PurgeEvent(tag="product-42")),
        (
            {"type": "purge", "tag": "p", "soft": True, "abort_inflight": False},
            PurgeEvent(tag="p", soft=True),
        ),
        # paths are brought to the cache key's canonical form
        ({"type": "delete", "path": "/media/a%41.jpg"}, DeleteEvent("/media/aA.jpg")),
        ({"type": "delete", "path": "/media/a b.jpg"}, DeleteEvent("/media/a%20b.jpg")),
        ({"type": "delete", "path": "/media/é.jpg"}, DeleteEvent("/media/%C3%A9.jpg")),
        ({"type": "delete", "path": "http://shop.example/media/a.jpg"}, DeleteEvent("/media/a.jpg")),
        (
            {"type": "publish", "path": "/media/get/?name=a%2ejpg", "revision": "7"},
            PublishEvent("/media/get/?name=a%2Ejpg", "7"),
        ),
        # prefixes too, and they may stop anywhere a canonical target continues
        ({"type": "purge", "prefix": "/"}, PurgeEvent(prefix="/")),
        ({"type": "purge", "prefix": "/media/a%7e"}, PurgeEvent(prefix="/media/a~")),
        ({"type": "purge", "prefix": "/media/a%2"}, PurgeEvent(prefix="/media/a%2")),
        ({"type": "purge", "prefix": "/media/a%c"}, PurgeEvent(prefix="/media/a%C")),
        ({"type": "purge", "prefix": "/media/a%"}, PurgeEvent(prefix="/media/a%")),
        ({"type": "purge", "prefix": "/media/."}, PurgeEvent(prefix="/media/.")),
        ({"type": "purge", "prefix": "/media/get/?"}, PurgeEvent(prefix="/media/get/?")),
        ({"type": "purge", "prefix": "/media/get/?name=a b"}, PurgeEvent(prefix="/media/get/?name=a%20b")),
    ],
)
def test_parse_one_event(event, expected):
    assert parse_events(body_of(event)) == [expected]


def test_parse_keeps_order_and_accepts_1000():
    events = [{"type": "delete", "path": f"/media/{i}.jpg"} for i in range(1000)]
    parsed = parse_events(body_of(*events))
    assert [e.path for e in parsed] == [f"/media/{i}.jpg" for i in range(1000)]


def test_parse_accepts_whitespace_and_escapes():
    body = b' \n{ "events" : [ {"type":"purge", "tag":"a\\u0062c"} ] }\n'
    assert parse_events(body) == [PurgeEvent(tag="abc")]


# --- parse_events: refused ---------------------------------------------------------

PUB = {"type": "publish", "path": "/media/a.jpg", "revision": "r1"}


def replace(event: dict, **changes) -> dict:
    out = {**event, **changes}
    return {k: v for k, v in out.items() if v is not DROP}


DROP = object()


REFUSED = [
    # the document
    (b"", "body is not valid JSON"),
    (b"{", "body is not valid JSON"),
    (b"\xff\xfe{}", "body is not valid JSON: not UTF-8"),
    (b'{"events": [], }', "body is not valid JSON"),
    (b'{"events": NaN}', "body is not valid JSON"),
    (b'{"events": [Infinity]}', "body is not valid JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "body is not valid JSON"),  # nesting bomb
    (b'{"events": [' + b"9" * 10_000 + b"]}", "body is not valid JSON"),  # 10,000-digit integer
    (b"[]", 'body: must be a JSON object {"events": [...]}'),
    (b'"events"', "body: must be a JSON object"),
    (b"null", "body: must be a JSON object"),
    (b"{}", "events: required"),
    (b'{"events": {}}', "events: must be a list"),
    (b'{"events": null}', "events: must be a list"),
    (body_of(PUB, dry_run=True), 'body.dry_run: unknown key'),
    (b'{"events": [], "events": []}', "body.events: given twice"),
    # counts
    (body_of(), "events: 1 to 1000 events, got 0"),
    (body_of(*[PUB] * 1001), "events: 1 to 1000 events, got 1001"),
    # event shape
    (body_of(PUB, "delete /x"), "events[1]: must be an object"),
    (body_of(PUB, PUB, PUB, None), "events[3]: must be an object"),
    (body_of({"path": "/x"}), "events[0].type: required"),
    (body_of({"type": 1, "path": "/x"}), "events[0].type: must be a string"),
    (body_of({"type": "flush"}), 'events[0].type: unknown type "flush"'),
    (body_of({"type": "PURGE", "tag": "a"}), 'events[0].type: unknown type "PURGE"'),
    (body_of({"type": "x" * 1000}), "events[0].type: unknown type \"" + "x" * 64 + "\\u2026\""),
    (b'{"events": [{"type": "purge", "tag": "a", "tag": "b"}]}', "events[0].tag: given twice"),
    (body_of(replace(PUB, color="red")), "events[0].color: unknown key"),
    (body_of(replace(PUB, **{"we ird\n": 1})), 'events[0]["we ird\\n"]: unknown key'),
    (body_of(replace(PUB, soft=True)), "events[0].soft: not allowed on publish"),
    (body_of(replace(PUB, abort_inflight=True)), "events[0].abort_inflight: not allowed on publish"),
    (body_of({"type": "delete", "path": "/x", "revision": "r"}), "events[0].revision: not allowed on delete"),
    (body_of({"type": "delete", "path": "/x", "soft": True}), "events[0].soft: not allowed on delete"),
    (body_of({"type": "delete", "path": "/x", "prewarm": True}), "events[0].prewarm: not allowed on delete"),
    (body_of({"type": "purge", "tag": "t", "prewarm": True}), "events[0].prewarm: not allowed on purge"),
    (body_of({"type": "purge", "tag": "t", "revision": "r"}), "events[0].revision: not allowed on purge"),
    # paths
    (body_of(PUB, PUB, PUB, replace(PUB, path=DROP)), "events[3].path: required"),
    (body_of({"type": "delete"}), "events[0].path: required"),
    (body_of(replace(PUB, path=None)), "events[0].path: must be a string"),
    (body_of(replace(PUB, path=["/x"])), "events[0].path: must be a string"),
    (body_of(replace(PUB, path="")), "events[0].path: must not be empty"),
    (body_of(replace(PUB, path="media/a.jpg")), "events[0].path: request target must start with '/'"),
    (body_of(replace(PUB, path="/media/../etc/passwd")), "events[0].path: dot segment"),
    (body_of(replace(PUB, path="/media/a%2Fb")), "events[0].path: encoded slash"),
    (body_of(replace(PUB, path="/media/a\x00b")), "events[0].path: request target contains a control character"),
    (body_of(replace(PUB, path="/media/%zz")), "events[0].path: malformed percent-escape"),
    (body_of(replace(PUB, path="/media/\ud800")), "events[0].path: invalid character"),
    (body_of(replace(PUB, path="/" + "a" * 5000)), "events[0].path: request target longer than 4096"),
    (body_of({"type": "purge", "path": "/a/./b"}), "events[0].path: dot segment"),
    # revision
    (body_of(replace(PUB, revision=DROP)), "events[0].revision: required"),
    (body_of(replace(PUB, revision=7)), "events[0].revision: must be a string"),
    (body_of(replace(PUB, revision="")), "events[0].revision: must not be empty"),
    (body_of(replace(PUB, revision="r" * 257)), "events[0].revision: longer than 256 characters"),
    (body_of(replace(PUB, revision="r\n1")), "events[0].revision: printable ASCII only"),
    (body_of(replace(PUB, revision="r\x7f")), "events[0].revision: printable ASCII only"),
    (body_of(replace(PUB, revision="r\u00e9")), "events[0].revision: printable ASCII only"),
    (body_of(replace(PUB, revision=" r1")), "events[0].revision: printable ASCII only, without leading"),
    (body_of(replace(PUB, revision="r1 ")), "events[0].revision: printable ASCII only, without leading"),
    # booleans are JSON booleans
    (body_of(replace(PUB, prewarm="true")), "events[0].prewarm: must be true or false"),
    (body_of(replace(PUB, prewarm=1)), "events[0].prewarm: must be true or false"),
    (body_of(replace(PUB, prewarm=None)), "events[0].prewarm: must be true or false"),
    (body_of({"type": "delete", "path": "/x", "abort_inflight": 0}), "events[0].abort_inflight: must be true or false"),
    (body_of({"type": "purge", "tag": "t", "soft": "yes"}), "events[0].soft: must be true or false"),
    # purge selectors
    (body_of({"type": "purge"}), "events[0]: purge needs exactly one of path, prefix, tag"),
    (body_of({"type": "purge", "soft": True}), "events[0]: purge needs exactly one of path, prefix, tag"),
    (body_of({"type": "purge", "path": "/a", "tag": "t"}), "events[0]: purge needs exactly one of path, prefix, tag (got path, tag)"),
    (body_of({"type": "purge", "path": "/a", "prefix": "/a", "tag": "t"}), "events[0]: purge needs exactly one of path, prefix, tag (got path, prefix, tag)"),
    (body_of({"type": "purge", "prefix": "media/"}), "events[0].prefix: must start with '/'"),
    (body_of({"type": "purge", "prefix": ""}), "events[0].prefix: must start with '/'"),
    (body_of({"type": "purge", "prefix": 5}), "events[0].prefix: must be a string"),
    (body_of({"type": "purge", "prefix": "/media/../"}), "events[0].prefix: dot segment"),
    (body_of({"type": "purge", "prefix": "/media/a%2f"}), "events[0].prefix: encoded slash"),
    (body_of({"type": "purge", "prefix": "/media/\x01"}), "events[0].prefix: request target contains a control"),
    (body_of({"type": "purge", "tag": ""}), "events[0].tag: must not be empty"),
    (body_of({"type": "purge", "tag": "a b"}), "events[0].tag: one Surrogate-Key token"),
    (body_of({"type": "purge", "tag": "a\tb"}), "events[0].tag: one Surrogate-Key token"),
    (body_of({"type": "purge", "tag": "é"}), "events[0].tag: one Surrogate-Key token"),
    (body_of({"type": "purge", "tag": "t" * 1025}), "events[0].tag: longer than 1024"),
    (body_of({"type": "purge", "tag": ["a"]}), "events[0].tag: must be a string"),
]


@pytest.mark.parametrize("body, message", REFUSED, ids=[m for _, m in REFUSED])
def test_parse_refuses(body, message):
    with pytest.raises(WebhookError) as info:
        parse_events(body)
    assert info.value.status == 400
    assert info.value.message.startswith(message), info.value.message
    json.loads(info.value.body())  # always a JSON answer


def test_parse_names_the_first_bad_event():
    body = body_of(PUB, PUB, {"type": "purge", "tag": "a b"}, {"type": "flush"})
    with pytest.raises(WebhookError, match=r"^events\[2\]\.tag"):
        parse_events(body)


def test_path_errors_do_not_echo_the_path():
    with pytest.raises(WebhookError) as info:
        parse_events(body_of(replace(PUB, path="/media/../<script>")))
    assert "<script>" not in info.value.message


# --- the log's form -------------------------------------------------------------------

EVENTS = [
    PublishEvent("/media/a.jpg", "r1"),
    PublishEvent("/media/get/?name=a%20b", "2024-01-01 00:00:00", prewarm=True),
    DeleteEvent("/media/a.jpg"),
    DeleteEvent("/media/a.jpg", abort_inflight=True),
    PurgeEvent(path="/media/a.jpg"),
    PurgeEvent(prefix="/media/a%2", soft=True),
    PurgeEvent(tag="product-1", soft=True, abort_inflight=True),
]


@pytest.mark.parametrize("event", EVENTS, ids=repr)
def test_event_json_round_trip(event):
    d = event_to_json(event)
    assert event_from_json(json.loads(json.dumps(d))) == event
    # the canonical form is also a valid webhook event that parses to the same thing
    assert parse_events(body_of(d)) == [event]


def test_event_to_json_is_explicit():
    assert event_to_json(PurgeEvent(tag="t")) == {"type": "purge", "tag": "t", "soft": False, "abort_inflight": False}
    assert event_to_json(PublishEvent("/a", "r")) == {"type": "publish", "path": "/a", "revision": "r", "prewarm": False}
    assert event_to_json(DeleteEvent("/a")) == {"type": "delete", "path": "/a", "abort_inflight": False}


def test_event_from_json_takes_paths_as_stored():
    # The accepting node already normalised; every node must apply the same key.
    assert event_from_json({"type": "delete", "path": "/media/a%41"}) == DeleteEvent("/media/a%41")


@pytest.mark.parametrize(
    "d, message",
    [
        ({}, "event.type: required"),
        ({"type": "flush"}, "event.type: unknown type"),
        ({"invalid": "garbage"}, "event.type: required"),
        ({"type": "purge"}, "event: purge needs exactly one"),
        ({"type": "publish", "path": "/a"}, "event.revision: required"),
        ([], "event: must be an object"),
    ],
)
def test_event_from_json_refuses(d, message):
    with pytest.raises(ValueError, match="^" + message.replace("[", r"\[")):
        event_from_json(d)


def test_event_to_json_refuses_other_objects():
    with pytest.raises(TypeError):
        event_to_json("purge")  # type: ignore[arg-type]


# --- property: nothing but WebhookError, whatever arrives --------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=8,
)
target_like = st.one_of(st.text(max_size=40).map(lambda t: "/" + t), st.text(max_size=40), json_values)
flag_like = st.one_of(st.booleans(), json_values)
event_like = st.fixed_dictionaries(
    {"type": st.sampled_from(["publish", "delete", "purge", "x"])},
    optional={
        "path": target_like,
        "prefix": target_like,
        "tag": st.one_of(st.from_regex(r"[a-z0-9-]{1,10}", fullmatch=True), st.text(max_size=20), json_values),
        "revision": st.one_of(st.from_regex(r"[a-z0-9 :-]{1,10}", fullmatch=True), st.text(max_size=20), json_values),
        "prewarm": flag_like,
        "soft": flag_like,
        "abort_inflight": flag_like,
    },
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_parse_events_never_raises_other_errors_on_bytes(body):
    try:
        parse_events(body)
    except WebhookError as e:
        assert e.status == 400


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(event_like, json_values), min_size=0, max_size=4))
def test_parse_events_never_raises_other_errors_on_json(events):
    try:
        parse_events(json.dumps({"events": events}).encode())
    except WebhookError as e:
        assert e.status == 400


plain_target = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30).map(lambda t: "/media/" + t)
valid_events = st.one_of(
    st.builds(lambda p, r, w: {"type": "publish", "path": p, "revision": r, "prewarm": w},
              plain_target, st.from_regex(r"[!-~]([ -~]{0,20}[!-~])?", fullmatch=True), st.booleans()),
    st.builds(lambda p, a: {"type": "delete", "path": p, "abort_inflight": a}, plain_target, st.booleans()),
    st.builds(lambda k, v, s, a: {"type": "purge", k: v, "soft": s, "abort_inflight": a},
              st.sampled_from(["path", "prefix"]), plain_target, st.booleans(), st.booleans()),
    st.builds(lambda t: {"type": "purge", "tag": t}, st.from_regex(r"[!-~]{1,30}", fullmatch=True)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(valid_events, min_size=1, max_size=5))
def test_accepted_events_round_trip_through_the_log_form(events):
    try:
        parsed = parse_events(json.dumps({"events": events}).encode())
    except WebhookError as e:  # only a target that normalize_target refuses
        assert e.status == 400 and (".path: " in e.message or ".prefix: " in e.message)
        return
    assert len(parsed) == len(events)
    for event in parsed:
        assert event_from_json(json.loads(json.dumps(event_to_json(event)))) == event
        assert parse_events(body_of(event_to_json(event))) == [event]  # canonical form is a fixed point


@settings(max_examples=500, deadline=None)
@given(
    secret=st.one_of(st.none(), st.text(max_size=20)),
    timestamp=st.one_of(st.none(), st.text(max_size=30), st.integers(-10**12, 10**12).map(str)),
    signature=st.one_of(st.none(), st.text(max_size=80), st.binary(min_size=32, max_size=32).map(lambda b: "sha256=" + b.hex())),
    body=st.binary(max_size=200),
    now=st.floats(min_value=0, max_value=4e9),
)
def test_verify_never_raises_other_errors(secret, timestamp, signature, body, now):
    try:
        verify(secret, timestamp=timestamp, signature=signature, body=body, now=now)
    except WebhookError as e:
        assert e.status in (401, 503)
    else:  # accepted only when really signed
        assert secret and signature and timestamp
        assert signature.strip().lower() == sign(secret, timestamp.strip(), body)


@settings(max_examples=200, deadline=None)
@given(secret=st.text(min_size=1, max_size=30), body=st.binary(max_size=300), offset=st.integers(-300, 300))
def test_verify_accepts_what_sign_makes(secret, body, offset):
    verify(secret, timestamp=TS, signature=sign(secret, TS, body), body=body, now=NOW + offset)


def test_replay_key_is_the_mac_in_lower_case():
    from mediaedge.webhook import replay_key

    mac = "AbCd" * 16
    assert replay_key(f" sha256={mac}\t") == mac.lower()
    assert replay_key(f"sha256={mac.lower()}") == replay_key(f"sha256={mac.upper()}")
    with pytest.raises(ValueError):
        replay_key("sha256=zz")
