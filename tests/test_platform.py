"""The mitmproxy and h11 this Python gets are the ones pyproject.toml pins for it (the
wraps in proxy/http1guard.py and proxy/serve.py were checked against exactly these)."""
from __future__ import annotations

import sys

import h11
import mitmproxy.version


def test_mitmproxy_and_h11_match_the_pins_for_this_python() -> None:
    if sys.version_info < (3, 12):
        assert mitmproxy.version.VERSION == "11.0.2"
        assert h11.__version__ == "0.14.0"
    else:
        assert mitmproxy.version.VERSION.startswith("12."), mitmproxy.version.VERSION
        assert h11.__version__ == "0.16.0"


def test_the_private_parts_we_wrap_exist() -> None:
    """What proxy/http1guard.py, proxy/clienthost.py and proxy/serve.py reach into, on this mitmproxy."""
    from h11._readers import ChunkedReader
    from h11._receivebuffer import ReceiveBuffer
    from mitmproxy import http, options
    from mitmproxy.proxy import server
    from mitmproxy.proxy.layers.http import _base, _events, _http1

    if sys.version_info < (3, 12):
        assert isinstance(server.TCP_TIMEOUT, int)  # mitmproxy 11: a module constant
    else:
        assert "tcp_timeout" in options.Options()  # mitmproxy 12: an option
    assert callable(getattr(http.MessageData, "__post_init__", None))
    for cls in (_http1.Http1Server, _http1.Http1Client):
        assert callable(cls.read_headers) and callable(cls.read_body)
    assert callable(_http1.make_error_response) and _base.ReceiveHttp
    assert _events.ResponseProtocolError.code and _events.RequestProtocolError.code
    buf = ReceiveBuffer()
    buf += b"abc"
    assert bytes(buf._data) == b"abc" and buf._extract(1) == b"a"
    assert hasattr(ChunkedReader(), "_bytes_to_discard")
    # proxy/http1guard.py's close of an abandoned transport, proxy/clienthost.py's wrap
    assert callable(server.ConnectionHandler.handle_connection) and server.ConnectionIO().writer is None
    from mitmproxy.proxy.layers.http import HttpStream
    assert callable(HttpStream.state_wait_for_request_headers)


def test_idle_timeout_reaches_mitmproxy() -> None:
    """`mediaedge serve`'s 30 s idle timeout is set where this mitmproxy reads it."""
    from mitmproxy import options
    from mitmproxy.proxy import server

    from mediaedge.serve import IDLE_TIMEOUT, set_idle_timeout

    opts = options.Options()
    set_idle_timeout(opts)
    if "tcp_timeout" in opts:
        assert opts.tcp_timeout == IDLE_TIMEOUT
    else:
        assert server.TCP_TIMEOUT == IDLE_TIMEOUT
