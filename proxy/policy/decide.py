"""The engine's decisions, pure: what the cache holds and what an origin answered in,
a decision with its reason out; the clock and the settings are passed in.

- `on_lookup(facts, now, settings)`: serve a stored entry (`Serve`), serve it and refresh
  it in the background (`ServeStale`), revalidate it (`Revalidate`) or fetch
  (`Fetch`), keeping a stale entry for origin failures when its grace allows it.
- `on_upstream_answer(answer, ...)` / `on_database_row(row, ...)` / `on_not_found(...)`:
  store what came (`Store`, which builds the `EntryMeta` once the body is known),
  pass it on unstored (`Pass`), or ask the next origin (`FallBack`).
- `published_conflict(published, revision)`: "the published revision wins", the one
  spelling of that rule (filling, committing, renewing).

The engine (proxy/engine.py) only performs what these say: lookups, fetches, commits.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import NamedTuple, Protocol

from mediaedge.headers import Headers
from mediaedge.origins.contenttype import guess_content_type
from mediaedge.policy.armour import deception_armour
from mediaedge.policy.cachecontrol import delta_seconds
from mediaedge.policy.fallback import Fallback, asks_database
from mediaedge.policy.freshness import Freshness, classify, current_age, freshness
from mediaedge.policy.httpdate import format_http_date, parse_http_date
from mediaedge.policy.storable import storability
from mediaedge.policy.target import vary_names, vary_values
from mediaedge.storage import EntryMeta

# Fields origins use to talk to caches in front of them: never stored, never passed on.
STRIPPED_FROM_ORIGIN = ("surrogate-key", "xkey", "surrogate-control", "set-cookie2")
NOT_FOUND_BODY = b"not found\n"
NOT_FOUND_HEADERS = Headers([("Content-Type", "text/plain; charset=utf-8")])


class DecideSettings(Protocol):
    """The slice of the settings the decisions read (`EngineConfig` provides it)."""

    @property
    def default_ttl(self) -> float: ...
    @property
    def negative_ttl(self) -> float: ...
    @property
    def grace(self) -> float: ...
    @property
    def max_object_size(self) -> int: ...


# ------------------------------------------------------------------ lookups
class EntryFacts(NamedTuple):
    """What a stored entry's state depends on besides the clock (kept with memory-tier entries)."""

    date: float | None  # the stored Date, parsed
    age_header: float | None  # the stored Age, parsed
    fresh: Freshness
    request_time: float
    response_time: float
    negative: bool
    soft_stale: bool


def entry_facts(meta: EntryMeta, settings: DecideSettings) -> EntryFacts:
    """The facts of a stored entry: its dates and its freshness under the settings."""
    date = parse_http_date(_first(meta.headers, "date"))
    age_header = delta_seconds(_first(meta.headers, "age"))
    if meta.negative:
        fresh = Freshness(settings.negative_ttl, "negative", 0.0, None, False)
    else:
        # A database row says nothing about freshness; the Last-Modified we derive from
        # its updated_at must not turn into a (short) heuristic lifetime: --default-ttl.
        headers = meta.headers.without("last-modified") if meta.source == "db" else meta.headers
        fresh = freshness(headers, default_ttl=settings.default_ttl, response_time=meta.response_time)
    return EntryFacts(date, age_header, fresh, meta.request_time, meta.response_time, meta.negative,
                      meta.soft_stale)


def entry_age(facts: EntryFacts, now: float) -> float:
    """RFC 9111 4.2.3 current_age of the entry at `now`."""
    return current_age(date=facts.date, age_header=facts.age_header, request_time=facts.request_time,
                       response_time=facts.response_time, now=now)


class Serve(NamedTuple):
    """Fresh: answer from the entry, nothing else."""

    age: float
    fresh: Freshness
    reason: str = "fresh"


class ServeStale(NamedTuple):
    """Answer from the entry, reported stale, and refresh it with one background fetch
    (a revalidation when `revalidate`)."""

    age: float
    fresh: Freshness
    revalidate: bool
    reason: str  # stale-while-revalidate | soft-purged


class Revalidate(NamedTuple):
    """Expired but revalidatable: ask the origin whether the entry still holds
    (conditional GET, or the row's revision); `stale_fallback`: serve it if origins fail."""

    stale_fallback: bool
    reason: str


class Fetch(NamedTuple):
    """Fetch from the origins; `stale_fallback`: the entry is kept for origin failures
    (stale-if-error / --grace)."""

    stale_fallback: bool
    reason: str  # miss | expired | stale-if-error | soft-purged-expired


Lookup = Serve | ServeStale | Revalidate | Fetch


def entry_state(age: float, fresh: Freshness, negative: bool, grace: float) -> str:
    """'fresh', 'stale-while-revalidate', 'stale-if-error' or 'expired'; a negative entry
    is fresh for its lifetime, then expired (no stale use of "not found")."""
    if negative:
        return "fresh" if age < fresh.lifetime else "expired"
    return classify(age, fresh, grace=grace)


def on_lookup(facts: EntryFacts | None, now: float, settings: DecideSettings, *,
              revalidatable: bool = False) -> Lookup:
    """What to do with what the cache holds for a request (None: nothing).

    `revalidatable`: the entry may be revalidated once expired (policy.revalidate.can_revalidate)."""
    if facts is None:
        return Fetch(False, "miss")
    age = entry_age(facts, now)
    state = entry_state(age, facts.fresh, facts.negative, settings.grace)
    if state == "fresh" and not facts.soft_stale:
        return Serve(age, facts.fresh)
    if state in ("fresh", "stale-while-revalidate") or facts.soft_stale and state != "expired":
        return ServeStale(age, facts.fresh, revalidatable,
                          "soft-purged" if facts.soft_stale else "stale-while-revalidate")
    stale_fallback = state == "stale-if-error"
    if revalidatable:
        return Revalidate(stale_fallback, state)
    return Fetch(stale_fallback, state)


def serves_fresh(facts: EntryFacts, now: float) -> float | None:
    """The hot path's question: the entry's age when it is served as a plain hit, else None.
    The same rule as `on_lookup`'s `Serve` (fresh means age < lifetime, negative or not),
    without building a decision: it runs on every hot hit."""
    if facts.soft_stale:
        return None
    age = current_age(date=facts.date, age_header=facts.age_header, request_time=facts.request_time,
                      response_time=facts.response_time, now=now)
    return age if age < facts.fresh.lifetime else None


# ------------------------------------------------------------------ "published revision wins"
def published_conflict(published: str | None, revision: str | None, *, negative: bool = False) -> bool:
    """Does a published revision forbid storing (or renewing) this entry? A publish names the
    truth: an entry of any other revision is not kept. Negative entries ("absent") and
    answers with no revision known are not weighed."""
    return published is not None and revision is not None and not negative and revision != published


def adopts_published(published: str | None, revision: str) -> bool:
    """A database row whose revision is not the published one is stored anyway (the database
    is the source of truth): the publish named a revision neither origin has."""
    return published is not None and revision != published


# ------------------------------------------------------------------ origin answers
@dataclass(frozen=True)
class Store:
    """Keep the answer: shared with the fetch's joiners, committed once its body is complete."""

    target: str
    source: str  # upstream | db
    status: int
    headers: Headers  # as stored and sent (origin-internal fields stripped)
    negative: bool = False
    tags: tuple[str, ...] = ()
    vary: tuple[str, ...] = ()
    vary_values: tuple[str | None, ...] = ()
    # The origin's explicit revision (a resource's version, shared by Vary variants);
    # "": derived per representation. None: the final revision is the key (database rows).
    key_revision: str | None = ""
    reason: str = "ok"
    shareable: bool = True

    def meta(self, *, revision: str, size: int, sha256: str, blocks: str, request_time: float,
             response_time: float) -> EntryMeta:
        """The entry to commit, once the body is known (the one place an EntryMeta is built)."""
        return EntryMeta(
            target=self.target, revision=revision, status=self.status, headers=self.headers, size=size,
            sha256=sha256, blocks=blocks, request_time=request_time, response_time=response_time,
            source=self.source, negative=self.negative, vary=self.vary, vary_values=self.vary_values,
            tags=self.tags, key_revision=revision if self.key_revision is None else self.key_revision,
        )


@dataclass(frozen=True)
class Pass:
    """Pass the answer on without storing it."""

    reason: str  # the rule: no-store, private, set-cookie, size, deception, range, published, ...
    shareable: bool  # joiners may read it (not client-specific)
    negative: bool = False
    # Remembered for later seeks (policy.seek.remember), and a Range fetch may be dropped
    # after its head (policy.seek.abandon_fetch).
    remember: bool = False
    detail: str = ""  # what the rule saw, for the log (the deception armour's finding)


@dataclass(frozen=True)
class FallBack:
    """Ask the database origin. `otherwise`: what to do with the upstream's answer when the
    database has no row (None: `policy.fallback.after_origins` decides from its status)."""

    reason: str
    status: int | None = None
    otherwise: Store | Pass | None = None


class UpstreamAnswer(NamedTuple):
    """The upstream's head, its body unread."""

    target: str
    status: int
    headers: Headers  # end-to-end, as received
    request_headers: Headers  # the fetching request's (the leader's)
    revision: str | None  # policy.target.revision_from
    explicit_revision: str | None  # the revision header itself, when sent
    length: int | None  # Content-Length, when sent


def on_upstream_answer(a: UpstreamAnswer, *, published: str | None, has_database: bool,
                       settings: DecideSettings, fallback: Fallback | None = None,
                       forward_range: bool = False) -> Store | Pass | FallBack:
    """The upstream answered: fall back to the database (its 404/410/5xx; a representation
    of another revision than the published one), store it, or pass it on.

    `fallback`: the database had no row and `policy.fallback` sends the upstream's own
    answer (then only explicit freshness stores a 5xx); `forward_range`: a seek passed on."""
    if fallback is None and asks_database(a.status, upstream_failed=False):
        return FallBack(f"upstream answered {a.status}", a.status)
    policy = storability(method="GET", status=a.status, request_headers=a.request_headers,
                         response_headers=a.headers,
                         explicit_only=fallback is not None and fallback.explicit_only)
    reason, storable = policy.reason, policy.storable
    shareable, detail = policy.shareable, ""
    armour = deception_armour(target=a.target, status=a.status, response_headers=a.headers) if storable else None
    if armour is not None:
        # Not stored and not shared with joiners: likely someone's page (fwd=bypass).
        reason, storable, shareable, detail = "deception", False, False, armour
    decision: Store | Pass
    if forward_range:
        decision = Pass("range", False, policy.negative)  # the upstream's 206/416/200 as it came
    elif not storable:
        decision = Pass(reason, shareable, policy.negative, remember=fallback is None, detail=detail)
    elif a.length is not None and a.length > settings.max_object_size:
        decision = Pass("size", shareable, policy.negative, remember=fallback is None)
    elif published_conflict(published, a.revision, negative=policy.negative):
        decision = Pass("published", shareable, policy.negative)
    else:
        vary = vary_names(a.headers) or ()
        decision = Store(a.target, "upstream", a.status, a.headers.without(*STRIPPED_FROM_ORIGIN),
                         negative=policy.negative, tags=surrogate_keys(a.headers), vary=vary,
                         vary_values=vary_values(vary, a.request_headers), key_revision=a.explicit_revision or "")
    if fallback is None and published is not None and a.status == 200 and a.revision != published and has_database:
        # Published revision wins: the app server lags; the database is the truth — when it
        # has the file. Media only the app has (no row) is served from the app, unstored.
        return FallBack("published revision", a.status, decision)
    return decision


class DatabaseRow(NamedTuple):
    """What the engine needs of a database row (origins.db.DbObject), its blob unread."""

    target: str
    path: str
    size: int | None
    revision: str | None
    content_type: str | None
    updated_at: float | None
    tags: tuple[str, ...]


def database_headers(row: DatabaseRow) -> Headers:
    """The head the edge makes for a row: its type (stored, else guessed) and Last-Modified."""
    pairs = [("Content-Type", row.content_type or guess_content_type(row.path))]
    if row.updated_at is not None:
        pairs.append(("Last-Modified", format_http_date(row.updated_at)))
    return Headers(pairs)


def on_database_row(row: DatabaseRow, settings: DecideSettings) -> Store | Pass:
    """A row was found: stored unless larger than --max-object-size. Its revision (or, for
    revisionless rows, its body's hash) is the key; a published revision does not forbid it
    (`adopts_published`)."""
    headers = database_headers(row)
    if row.size is not None and row.size > settings.max_object_size:
        return Pass("size", True, remember=True)
    return Store(row.target, "db", 200, headers, tags=row.tags, key_revision=None)


def on_not_found(target: str, source: str, *, upstream_error_kind: str | None) -> Store | Pass:
    """No origin has it: a "not found" of our own, remembered for --negative-ttl, unless our
    own upstream request failed as a request (a client's odd fields might provoke that)."""
    if upstream_error_kind == "error":
        return Pass("upstream-error", False, negative=True)
    return Store(target, source, 404, NOT_FOUND_HEADERS, negative=True, tags=())


def renewed(stored: EntryMeta, *, headers: Headers | None = None, request_time: float,
            response_time: float) -> EntryMeta:
    """The stored entry after a revalidation said "unchanged": new times (and the 304's
    fields); a soft purge is answered by it too."""
    return replace(stored, headers=stored.headers if headers is None else headers,
                   request_time=request_time, response_time=response_time, soft_stale=False)


def surrogate_keys(headers: Headers) -> tuple[str, ...]:
    """The tags an answer carries (Surrogate-Key / xkey), in order, once each."""
    keys: list[str] = []
    for name in ("surrogate-key", "xkey"):
        for value in headers.get_all(name):
            keys.extend(value.split())
    return tuple(dict.fromkeys(keys))


def content_length(headers: Headers) -> int | None:
    raw = headers.get("content-length")
    if raw is None or not raw.strip().isdigit():
        return None
    return int(raw.strip())


def _first(headers: Headers, name: str) -> str | None:
    values = headers.get_all(name)
    return values[0] if values else None
