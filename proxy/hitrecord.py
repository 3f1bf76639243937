"""A small entry's hit record: what a plain hit needs, computed when the entry is written.

A disk hit used to rebuild, per request, what the memory tier computes once per entry:
the metadata decoded into an `EntryMeta` (its `Headers`), the freshness facts and the
`HitTemplate` (a full `plan_response`). That was most of a disk hit's own cost (about
60 of 90 µs in process). The store now writes this record next to the metadata in every
trailer (proxy/storage.py, `encode_trailer`), computed from the very metadata written with
it, so it can never describe another version of the entry: a renewal or a soft purge
rewrites both together.

What the record depends on besides the metadata (the settings that shape freshness and
the template, and this format's version) is its `fingerprint`; a record written under
other settings is ignored and the entry is decoded the long way, exactly as before.

Plain JSON (no pickle): a list of atoms, read back into the same `HitTemplate` and
`EntryFacts` the memory tier keeps (tests/test_hitrecord.py checks they are equal).
"""
from __future__ import annotations

import hashlib
import json
from typing import NamedTuple

from mediaedge.policy.decide import EntryFacts
from mediaedge.policy.freshness import Freshness
from mediaedge.respond import HitTemplate

VERSION = 1  # bump when HitTemplate, EntryFacts or plan_response's plain answer changes


# Compact on purpose: small entries live inside SQLite pages (4 KiB), and a row that
# grows past half a page takes a page of its own. Measured with 1 KiB bodies: a record
# written as plainly as the metadata (480 bytes) doubled the database (2.1 → 4.1 GB at 1M
# entries). So the settings are a short digest, the body's SHA-256 is its first 64 bits
# (what a torn or flipped row is checked against; the metadata keeps the whole), and the
# three per-request fields are kept by position and value only.
SHA256_KEPT = 16  # hex digits of the body's SHA-256 kept in the record
PER_REQUEST = (b"Date", b"Age", b"Cache-Status")  # the template's fields replaced on every hit


def fingerprint(*, revision_header: str, browser_cache_control: str | None, default_ttl: float,
                negative_ttl: float) -> str:
    """The settings a record was computed under (with this format's version), digested."""
    settings = json.dumps([VERSION, revision_header, browser_cache_control, float(default_ttl), float(negative_ttl)])
    return hashlib.sha256(settings.encode()).hexdigest()[:8]


class HitRecord(NamedTuple):
    """A stored small entry as a plain hit serves it, and what keeping it in memory needs."""

    size: int
    sha256: str  # its first SHA256_KEPT hex digits
    vary_values: tuple[str | None, ...]
    tags: tuple[str, ...]
    template: HitTemplate
    facts: EntryFacts


def encode(fp: str, record: HitRecord) -> bytes:
    """JSON text without newlines (the trailer separates it from the metadata by one)."""
    t, f = record.template, record.facts
    at = (t.date_at, t.age_at, t.cache_status_at)
    kept = [[k.decode("latin-1"), v.decode("latin-1")] for i, (k, v) in enumerate(t.pairs) if i not in at]
    return json.dumps([
        fp, record.size, record.sha256, list(record.vary_values), list(record.tags),
        t.status, kept, list(at), [t.pairs[i][1].decode("latin-1") for i in at], t.cache_status_prefix,
        f.date, f.age_header, list(f.fresh), f.request_time, f.response_time, f.negative, f.soft_stale,
    ], separators=(",", ":")).encode()


def decode(raw: bytes, fp: str) -> HitRecord | None:
    """The record, or None when it was written under other settings (or is not one)."""
    try:
        (written_fp, size, sha256, vary_values, tags, status, kept, at, values, prefix,
         date, age_header, fresh, request_time, response_time, negative, soft_stale) = json.loads(raw)
        if written_fp != fp:
            return None
        pairs = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in kept]
        for i, name, value in sorted(zip(at, PER_REQUEST, values, strict=True)):
            pairs.insert(i, (name, value.encode("latin-1")))
        date_at, age_at, cs_at = at
        if any(type(i) is not int or not 0 <= i < len(pairs) or pairs[i][0] != name
               for i, name in zip(at, PER_REQUEST, strict=True)):
            return None  # valid JSON, but not a record our writer makes: decode the long way
        template = HitTemplate(status, tuple(pairs), age_at, cs_at, date_at, prefix)
        facts = EntryFacts(date, age_header, Freshness(*fresh), request_time, response_time, negative, soft_stale)
        return HitRecord(size, sha256, tuple(vary_values), tuple(tags), template, facts)
    except (ValueError, TypeError, UnicodeError):
        return None


def body_matches(record: HitRecord, body: bytes) -> bool:
    """The body is the one the record was written for (length and SHA-256 prefix)."""
    return len(body) == record.size and hashlib.sha256(body).hexdigest()[:SHA256_KEPT] == record.sha256
