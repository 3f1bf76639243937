import ipaddress

import pytest

from mediaedge.policy.purge import ALLOW, PurgeDecision, client_address, purge_decision

LOOPBACK = (ipaddress.ip_network("127.0.0.1/32"),)
NETS = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128"))


@pytest.mark.parametrize(
    "client, allowed, media, status",
    [
        # none configured: 405 for everyone, loopback included (it used to be obeyed)
        ("127.0.0.1", (), True, 405),
        ("::1", (), True, 405),
        ("10.1.2.3", (), False, 405),
        (None, (), True, 405),
        # outside the list: 403, whatever the target
        ("127.0.0.2", LOOPBACK, True, 403),
        ("192.168.1.1", NETS, True, 403),
        ("192.168.1.1", NETS, False, 403),
        (None, LOOPBACK, True, 403),
        ("not-an-address", LOOPBACK, True, 403),
        ("", LOOPBACK, True, 403),
        # inside: media targets purged, others 404
        ("127.0.0.1", LOOPBACK, True, 200),
        ("10.255.0.1", NETS, True, 200),
        ("::1", NETS, True, 200),
        ("::ffff:10.0.0.5", NETS, True, 200),  # IPv4-mapped (dual-stack listener)
        ("::ffff:127.0.0.1", LOOPBACK, True, 200),
        ("127.0.0.1", LOOPBACK, False, 404),
    ],
)
def test_purge_decision(client, allowed, media, status):
    decision = purge_decision(client, allowed, media=media)
    assert decision.status == status
    assert decision.reason and "\n" not in decision.reason


@pytest.mark.parametrize(
    "client, allowed, status",
    [("127.0.0.1", (), 405), ("127.0.0.2", LOOPBACK, 403), ("127.0.0.1", LOOPBACK, 400)],
)
def test_refused_media_target_is_400_only_for_allowed_clients(client, allowed, status):
    assert purge_decision(client, allowed, media=False, refused=True).status == status


def test_purge_decision_bodies():
    assert purge_decision("127.0.0.1", (), media=True) == PurgeDecision(
        405, "PURGE is not enabled on this node (--allow-purge-from)")
    assert purge_decision("127.0.0.2", LOOPBACK, media=True) == PurgeDecision(403, "PURGE is not allowed from this address")
    assert ALLOW == "GET, HEAD"


@pytest.mark.parametrize(
    "client, expected",
    [
        ("127.0.0.1", "127.0.0.1"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("fe80::1%eth0", "fe80::1"),
        ("::1", "::1"),
        ("junk", None),
        (None, None),
    ],
)
def test_client_address(client, expected):
    address = client_address(client)
    assert (str(address) if address is not None else None) == expected
