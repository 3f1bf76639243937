"""mediaedge.policy.decide: every engine decision with its reason, pure (no sockets, clock passed in)."""
from dataclasses import dataclass

import pytest

from mediaedge.headers import Headers
from mediaedge.policy.decide import (
    DatabaseRow, EntryFacts, FallBack, Fetch, Pass, Revalidate, Serve, ServeStale, Store, UpstreamAnswer,
    adopts_published, entry_facts, on_database_row, on_lookup, on_not_found, on_upstream_answer,
    published_conflict, serves_fresh,
)
from mediaedge.policy.fallback import Fallback
from mediaedge.storage import EntryMeta

T0 = 1_000_000.0


@dataclass(frozen=True)
class S:
    default_ttl: float = 3600.0
    negative_ttl: float = 10.0
    grace: float = 86400.0
    max_object_size: int = 1 << 20


SETTINGS = S()


def meta(headers=(), *, source="upstream", negative=False, soft_stale=False, revision="r1", status=200) -> EntryMeta:
    return EntryMeta(target="/m/a.jpg", revision=revision, status=status, headers=Headers(list(headers)), size=3,
                     sha256="x", request_time=T0, response_time=T0, source=source, negative=negative,
                     soft_stale=soft_stale)


def facts(*headers, **kw) -> EntryFacts:
    return entry_facts(meta(headers, **kw), SETTINGS)


# ------------------------------------------------------------------ on_lookup
def test_nothing_stored_is_a_miss():
    assert on_lookup(None, T0, SETTINGS) == Fetch(False, "miss")


def test_fresh_entry_is_served_with_its_age():
    d = on_lookup(facts(("Cache-Control", "max-age=60")), T0 + 10, SETTINGS)
    assert isinstance(d, Serve) and d.age == pytest.approx(10) and d.fresh.lifetime == 60 and d.reason == "fresh"


def test_default_ttl_applies_without_freshness_information():
    d = on_lookup(facts(), T0 + 3599, SETTINGS)
    assert isinstance(d, Serve) and d.fresh.source == "default"


def test_stale_while_revalidate_serves_stale_and_refreshes():
    f = facts(("Cache-Control", "max-age=60, stale-while-revalidate=30"))
    d = on_lookup(f, T0 + 70, SETTINGS, revalidatable=True)
    assert d == ServeStale(d.age, f.fresh, True, "stale-while-revalidate")
    assert on_lookup(f, T0 + 70, SETTINGS).revalidate is False  # refetched whole: no validator


def test_soft_purged_entry_is_served_stale_within_its_lifetime_and_grace():
    f = facts(("Cache-Control", "max-age=60"), soft_stale=True)
    assert on_lookup(f, T0 + 1, SETTINGS).reason == "soft-purged"
    assert isinstance(on_lookup(f, T0 + 1000, SETTINGS), ServeStale)  # stale-if-error window (grace)


def test_expired_within_grace_fetches_and_keeps_the_entry_for_failures():
    f = facts(("Cache-Control", "max-age=60"))
    assert on_lookup(f, T0 + 120, SETTINGS) == Fetch(True, "stale-if-error")
    assert on_lookup(f, T0 + 120, SETTINGS, revalidatable=True) == Revalidate(True, "stale-if-error")


def test_expired_beyond_grace_fetches_without_stale():
    f = facts(("Cache-Control", "max-age=60"))
    assert on_lookup(f, T0 + 60 + 86400 + 1, SETTINGS) == Fetch(False, "expired")


def test_must_revalidate_forbids_stale_use_past_lifetime():
    f = facts(("Cache-Control", "max-age=60, must-revalidate"))
    assert on_lookup(f, T0 + 61, SETTINGS) == Fetch(False, "expired")


def test_negative_entry_lives_negative_ttl_then_expires_with_no_stale_use():
    f = facts(negative=True, status=404)
    assert isinstance(on_lookup(f, T0 + 9, SETTINGS), Serve)
    assert on_lookup(f, T0 + 11, SETTINGS) == Fetch(False, "expired")


def test_database_entries_ignore_their_derived_last_modified():
    # a row's updated_at becomes Last-Modified; it must not make a short heuristic lifetime
    f = facts(("Last-Modified", "Mon, 01 Jan 2001 00:00:00 GMT"), source="db")
    assert f.fresh.lifetime == SETTINGS.default_ttl


def test_serves_fresh_is_on_lookups_serve_rule():
    cases = [facts(("Cache-Control", "max-age=60")), facts(("Cache-Control", "max-age=60"), soft_stale=True),
             facts(negative=True, status=404)]
    for f in cases:
        for dt in (0, 5, 30, 61, 100000):
            age = serves_fresh(f, T0 + dt)
            d = on_lookup(f, T0 + dt, SETTINGS)
            assert (age is not None) == isinstance(d, Serve)
            if age is not None:
                assert age == d.age


# ------------------------------------------------------------------ published revision wins
@pytest.mark.parametrize("published, revision, negative, conflict", [
    (None, "r1", False, False),
    ("r1", "r1", False, False),
    ("r2", "r1", False, True),
    ("r2", "r1", True, False),  # "absent" is not weighed against a publish
    ("r2", None, False, False),  # revision not known yet (hashed from the body)
])
def test_published_conflict(published, revision, negative, conflict):
    assert published_conflict(published, revision, negative=negative) is conflict


def test_database_row_adopts_an_unknown_published_revision():
    assert adopts_published("r9", "r1") and not adopts_published("r1", "r1") and not adopts_published(None, "r1")


# ------------------------------------------------------------------ upstream answers
def answer(status=200, *headers, revision="r1", length=3, target="/m/a.jpg", request=()) -> UpstreamAnswer:
    return UpstreamAnswer(target, status, Headers(list(headers)), Headers(list(request)), revision, revision, length)


def decide(a: UpstreamAnswer, **kw):
    kw.setdefault("published", None)
    kw.setdefault("has_database", True)
    return on_upstream_answer(a, settings=SETTINGS, **kw)


def test_a_representation_is_stored_with_its_tags_and_vary_key():
    a = answer(200, ("Content-Type", "image/jpeg"), ("Surrogate-Key", "a b a"), ("Vary", "Accept"),
               request=[("Accept", "image/webp")])
    d = decide(a)
    assert isinstance(d, Store)
    assert (d.tags, d.vary, d.vary_values, d.key_revision) == (("a", "b"), ("accept",), ("image/webp",), "r1")
    assert "surrogate-key" not in d.headers  # the origin's cache fields are not kept
    m = d.meta(revision="r1", size=3, sha256="s", blocks="", request_time=1.0, response_time=2.0)
    assert (m.target, m.status, m.source, m.tags, m.key_revision, m.size) == ("/m/a.jpg", 200, "upstream", ("a", "b"),
                                                                               "r1", 3)


@pytest.mark.parametrize("status", [404, 410, 500, 503])
def test_upstream_not_found_or_failing_falls_back_to_the_database(status):
    assert decide(answer(status)) == FallBack(f"upstream answered {status}", status)


def test_after_the_fallback_the_upstreams_own_answer_is_judged_not_fallen_back_again():
    d = decide(answer(503), fallback=Fallback("upstream", "x", stale_first=True, explicit_only=True))
    assert d == Pass("status", True)  # a 5xx is stored only with explicit freshness
    d = decide(answer(404), fallback=Fallback("upstream", "x"))
    assert isinstance(d, Store) and d.negative


def test_published_revision_wins_asks_the_database_first():
    d = decide(answer(200, revision="old"), published="new")
    assert isinstance(d, FallBack) and d.reason == "published revision"
    assert d.otherwise == Pass("published", True)  # no row: served from the app, not stored
    assert isinstance(decide(answer(200, revision="old"), published="new", has_database=False), Pass)
    assert isinstance(decide(answer(200, revision="new"), published="new"), Store)


@pytest.mark.parametrize("headers, reason, shareable", [
    ([("Cache-Control", "no-store")], "no-store", False),
    ([("Cache-Control", "private")], "private", False),
    ([("Set-Cookie", "a=b")], "set-cookie", False),
])
def test_unstorable_answers_pass_with_their_rule(headers, reason, shareable):
    d = decide(answer(200, *headers))
    assert d == Pass(reason, shareable, remember=True)


def test_too_big_passes_and_is_remembered_for_seeks():
    assert decide(answer(200, length=SETTINGS.max_object_size + 1)) == Pass("size", True, remember=True)


def test_a_forwarded_seek_is_never_stored_or_shared():
    assert decide(answer(206), forward_range=True) == Pass("range", False)


def test_deception_armour_refuses_a_page_under_a_media_name():
    d = decide(answer(200, ("Content-Type", "text/html")))
    assert isinstance(d, Pass) and (d.reason, d.shareable, d.remember) == ("deception", False, True)
    assert "text/html" in d.detail  # the finding goes to the log


# ------------------------------------------------------------------ database rows, not found
def row(size=3, revision="r1") -> DatabaseRow:
    return DatabaseRow("/m/a.jpg", "m/a.jpg", size, revision, None, 978307200.0, ("t",))


def test_database_row_is_stored_keyed_by_its_revision():
    d = on_database_row(row(), SETTINGS)
    assert isinstance(d, Store)
    assert d.headers.get("content-type") == "image/jpeg" and d.headers.get("last-modified")
    m = d.meta(revision="sha256:abc", size=3, sha256="s", blocks="", request_time=1.0, response_time=1.0)
    assert (m.key_revision, m.source, m.tags) == ("sha256:abc", "db", ("t",))


def test_database_row_too_big_passes():
    assert on_database_row(row(size=SETTINGS.max_object_size + 1), SETTINGS) == Pass("size", True, remember=True)


def test_not_found_is_remembered_unless_our_request_failed_as_a_request():
    d = on_not_found("/m/a.jpg", "db", upstream_error_kind="timeout")
    assert isinstance(d, Store) and d.negative and d.status == 404
    assert on_not_found("/m/a.jpg", "db", upstream_error_kind="error") == Pass("upstream-error", False, negative=True)
