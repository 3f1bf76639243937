"""GET /metrics: the Stats counters in the Prometheus text format (contract section 5).

A custom collector reads the counters at scrape time from a private
CollectorRegistry: nothing is registered globally (the default registry would
also export this process's GC and platform metrics under names we do not
promise, and would refuse a second registration in tests), and the hot path
keeps incrementing plain ints instead of prometheus_client's locked values.
The process collector is added on purpose (`process_resident_memory_bytes`,
`process_cpu_seconds_total`, `process_open_fds`...): the standard names every
Prometheus user's memory and file-descriptor alerts already use.

Counter families are named without `_total`; prometheus_client appends it, so
the exposed names are exactly the contract's (`mediaedge_requests_total`...).

The Content-Type is the 0.0.4 text format rather than prometheus_client's
default 1.0.0: every name here is a legacy (ASCII) name, so the bodies are the
same, and 0.0.4 is understood by every scraper (Prometheus 2 and 3, Grafana
Agent, VictoriaMetrics, Datadog) without a fallback protocol setting.
"""
from __future__ import annotations

import math
import platform
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from mediaedge.stats import RESULT_FIELDS, RESULTS, Stats


class StatsCollector(Collector):
    """Exposes one Stats object and the cache's current size."""

    def __init__(self, stats: Stats, *, entries: int, cache_bytes: int, cache_size: int | None = None) -> None:
        self.stats = stats
        self.entries = entries
        self.cache_bytes = cache_bytes
        self.cache_size = cache_size

    def collect(self) -> Iterator[Metric]:
        snap = self.stats.snapshot(entries=self.entries, cache_bytes=self.cache_bytes, cache_size=self.cache_size or 0)

        requests = CounterMetricFamily("mediaedge_requests", "Media requests by cache result.", labels=["result"])
        for result in RESULTS:
            requests.add_metric([result], snap[RESULT_FIELDS[result]])
        yield requests

        fetches = CounterMetricFamily(
            "mediaedge_origin_fetches", "Fetches from the origins by outcome.", labels=["origin", "outcome"]
        )
        for origin, outcomes in snap["origin_fetch_outcomes"].items():
            for outcome, n in outcomes.items():
                fetches.add_metric([origin, outcome], n)
        yield fetches

        served = CounterMetricFamily(
            "mediaedge_served_bytes", "Media body bytes sent to clients by source.", labels=["source"]
        )
        for source, n in snap["bytes_served"].items():
            served.add_metric([source], n)
        yield served

        yield GaugeMetricFamily("mediaedge_cache_entries", "Entries in the on-disk cache.", value=snap["entries"])
        yield GaugeMetricFamily("mediaedge_cache_bytes", "Bytes used by the on-disk cache.", value=snap["cache_bytes"])
        if self.cache_size is not None:
            yield GaugeMetricFamily(
                "mediaedge_cache_size_bytes", "The configured bound on the cache (--cache-size).", value=self.cache_size
            )

        invalidations = CounterMetricFamily(
            "mediaedge_invalidations", "Invalidation events applied, by type.", labels=["type"]
        )
        for type_, n in snap["invalidations_by_type"].items():
            invalidations.add_metric([type_], n)
        yield invalidations

        denied = CounterMetricFamily(
            "mediaedge_denied", "Private-media requests refused (also counted as errors), by reason.",
            labels=["reason"],
        )
        for reason, n in snap["denied_by_reason"].items():
            denied.add_metric([reason], n)
        yield denied

        yield CounterMetricFamily(
            "mediaedge_coalesced", "Requests that joined an origin fetch already running.", value=snap["coalesced"]
        )
        yield CounterMetricFamily(
            "mediaedge_revalidated", "Responses served from cache after a 304 revalidation (also hits).",
            value=snap.get("revalidated", 0),
        )
        yield CounterMetricFamily(
            "mediaedge_disk_errors", "Cache disk write failures (responses passed through unstored).",
            value=snap.get("disk_errors", 0),
        )

        by_prefix = CounterMetricFamily(
            "mediaedge_prefix_requests", "Media requests by media prefix and cache result.", labels=["prefix", "result"]
        )
        for prefix, view in snap["prefixes"].items():
            for result in RESULTS:
                by_prefix.add_metric([prefix, result], view[RESULT_FIELDS[result]])
        yield by_prefix

        durations = HistogramMetricFamily(
            "mediaedge_request_duration_seconds",
            "Time from request to last response byte, by cache result.",
            labels=["result"],
        )
        for result, (buckets, _count, total) in self.stats.duration_histogram().items():
            durations.add_metric([result], [(_le(bound), n) for bound, n in buckets], sum_value=total)
        yield durations


def _le(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(bound)


@dataclass(frozen=True)
class NodeFacts:
    """What /metrics tells about the node besides the Stats counters."""

    evictions: int = 0  # entries evicted for room since start (mediaedge.storage)
    lag_seconds: float = 0.0  # how far behind the invalidation log (mediaedge.invalidation)
    lag_events: int = 0


def build_info() -> dict[str, str]:
    """The versions behind mediaedge_build_info, so a dashboard can tell nodes apart after an upgrade."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        own = version("mediaedge")
    except PackageNotFoundError:
        own = "0+unknown"
    try:
        from mitmproxy.version import VERSION as mitmproxy_version
    except ImportError:
        mitmproxy_version = "unknown"
    return {"version": own, "python": platform.python_version(), "mitmproxy": mitmproxy_version}


class NodeCollector(Collector):
    """Build info, evictions and the invalidation lag."""

    def __init__(self, facts: NodeFacts) -> None:
        self.facts = facts

    def collect(self) -> Iterator[Metric]:
        info = build_info()
        build = GaugeMetricFamily("mediaedge_build_info", "Versions of this node; always 1.", labels=list(info))
        build.add_metric(list(info.values()), 1)
        yield build
        yield CounterMetricFamily("mediaedge_evictions", "Cache entries evicted to stay under --cache-size.",
                                  value=self.facts.evictions)
        yield GaugeMetricFamily(
            "mediaedge_invalidation_lag_seconds",
            "Seconds since this node last had applied every event of the invalidation log "
            "(stays under a second while it keeps up; grows while it cannot read or apply the log).",
            value=self.facts.lag_seconds)
        yield GaugeMetricFamily(
            "mediaedge_invalidation_lag_events",
            "Events in the invalidation log this node has not applied yet (highest seq minus applied seq).",
            value=self.facts.lag_events)


# The process's memory, CPU, open files and start time (process_resident_memory_bytes...),
# read from /proc at scrape time. Created once, unregistered: each scrape's private
# registry registers it.
_PROCESS = ProcessCollector(registry=None)


def render_metrics(stats: Stats, *, entries: int, cache_bytes: int, cache_size: int | None = None,
                   node: NodeFacts | None = None) -> tuple[bytes, str]:
    """The /metrics body and its Content-Type."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatsCollector(stats, entries=entries, cache_bytes=cache_bytes, cache_size=cache_size))
    registry.register(NodeCollector(node or NodeFacts()))
    registry.register(_PROCESS)
    return generate_latest(registry), CONTENT_TYPE_PLAIN_0_0_4
