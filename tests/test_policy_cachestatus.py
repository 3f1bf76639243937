import pytest

from mediaedge.policy.cachestatus import cache_status


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        # the contract's strings (section 2)
        ({"hit": True}, "mediaedge; hit"),
        ({"hit": True, "ttl": 42}, "mediaedge; hit; ttl=42"),
        ({"hit": True, "ttl": -5}, "mediaedge; hit; ttl=-5"),
        ({"fwd": "miss", "fwd_status": 200, "stored": True, "detail": "upstream"}, "mediaedge; fwd=miss; fwd-status=200; stored; detail=upstream"),
        ({"fwd": "miss", "fwd_status": 200, "stored": True, "detail": "db"}, "mediaedge; fwd=miss; fwd-status=200; stored; detail=db"),
        ({"fwd": "bypass", "fwd_status": 200, "detail": "upstream"}, "mediaedge; fwd=bypass; fwd-status=200; detail=upstream"),
        ({"fwd": "miss", "fwd_status": 200, "collapsed": True, "detail": "db"}, "mediaedge; fwd=miss; fwd-status=200; collapsed; detail=db"),
        ({"fwd": "uri-miss"}, "mediaedge; fwd=uri-miss"),
        # RFC 9211 definition order: hit, fwd, fwd-status, ttl, stored, collapsed, detail
        (
            {"detail": "x", "collapsed": True, "stored": True, "ttl": 7, "fwd_status": 404, "fwd": "stale", "hit": True},
            "mediaedge; hit; fwd=stale; fwd-status=404; ttl=7; stored; collapsed; detail=x",
        ),
        ({}, "mediaedge"),
        ({"ttl": 0}, "mediaedge; ttl=0"),
        # detail: a token when it can be, else a quoted sf-string
        ({"detail": "db/magento2:v1"}, "mediaedge; detail=db/magento2:v1"),
        ({"detail": "origin down"}, 'mediaedge; detail="origin down"'),
        ({"detail": 'a"b\\c'}, 'mediaedge; detail="a\\"b\\\\c"'),
        ({"detail": "1st"}, 'mediaedge; detail="1st"'),
        ({"detail": "é\nx"}, 'mediaedge; detail="x"'),
        ({"detail": ""}, 'mediaedge; detail=""'),
        # fwd is a token: characters a token cannot hold are dropped
        ({"fwd": "mi ss"}, "mediaedge; fwd=miss"),
        ({"fwd": " "}, "mediaedge"),
    ],
)
def test_cache_status(kwargs, expected):
    assert cache_status(**kwargs) == expected
