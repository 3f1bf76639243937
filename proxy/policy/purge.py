"""Who may PURGE on the data plane, and what a PURGE is answered. Pure.

Contract section 1, `--allow-purge-from CIDR`: "client addresses whose `PURGE`
requests on the data plane are obeyed (Varnish's purge ACL); with none, `PURGE`
is answered `405`. A proxy in front on the same host makes every client
`127.0.0.1`: allow loopback only when nothing else connects through it."

A PURGE is never forwarded to the app: it is a request to this cache, and an
app that does not know the method must not be the one to decide it (nor learn
of it). Choices where the contract is silent:
  - a client outside the list gets `403` (Varnish: "403 Not allowed.");
  - only media targets are purged: the edge never stores anything else, so a
    PURGE of a non-media target from an allowed client is `404` (nothing here
    under that name), which tells a purge script its path lacks the prefix;
  - the ACL is checked before the target, so a refused client learns nothing
    about paths.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# RFC 9110 15.5.6: "The origin server MUST generate an Allow header field in a
# 405 response containing a list of the target resource's currently supported methods."
ALLOW = "GET, HEAD"


@dataclass(frozen=True)
class PurgeDecision:
    """`status` 200: purge the target; else answer `status` with `reason` as a plain-text line."""

    status: int
    reason: str


def purge_decision(client: str | None, allowed: tuple[Network, ...], *, media: bool,
                   refused: bool = False) -> PurgeDecision:
    """The answer to a PURGE from `client` (its address as text; None when unknown).

    `media`: the canonical target is under a media prefix. `refused`: the target
    failed normalisation but looks media (mediaedge.policy.target.looks_media), which
    an allowed client is told as 400, as a GET would be.
    """
    if not allowed:
        return PurgeDecision(405, "PURGE is not enabled on this node (--allow-purge-from)")
    address = client_address(client)
    if address is None or not any(address in net for net in allowed):
        return PurgeDecision(403, "PURGE is not allowed from this address")
    if refused:
        return PurgeDecision(400, "bad request target")
    if not media:
        return PurgeDecision(404, "not a media target: nothing is cached under it")
    return PurgeDecision(200, "ok")


def client_address(client: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The client's address; an IPv4-mapped IPv6 one (a dual-stack listener) as the IPv4 it is."""
    if not client:
        return None
    try:
        address = ipaddress.ip_address(client.split("%", 1)[0])  # an IPv6 zone id is not part of the address
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
