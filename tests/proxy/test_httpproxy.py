"""HTTP proxy core: CONNECT and absolute-form requests, golden bytes, whole and byte at a time."""

from __future__ import annotations

import h11
import pytest
from sunbeam.services.proxy.httpproxy import (
    ConnectRequest,
    ForwardRequest,
    HttpProxyServer,
    ProtocolError,
    State,
)

OK_200 = b"HTTP/1.1 200 Connection established\r\n\r\n"


def error_reply(status: int, phrase: str) -> bytes:
    body = f"{status} {phrase}\n".encode()
    return (f"HTTP/1.1 {status} {phrase}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


def run(chunks: list[bytes], proxy: HttpProxyServer | None = None):
    proxy = proxy or HttpProxyServer()
    events, out, body = [], b"", b""
    for chunk in chunks:
        events += proxy.receive_data(chunk)
        out += proxy.data_to_send()
        body += proxy.body_data()
    return proxy, events, out, body


def splits(wire: bytes) -> list[list[bytes]]:
    return [[wire], [wire[i : i + 1] for i in range(len(wire))], [wire[:7], wire[7:40], wire[40:]]]


# --- CONNECT ---------------------------------------------------------------------------

CURL_CONNECT = (b"CONNECT peer-1:8000 HTTP/1.1\r\nHost: peer-1:8000\r\nUser-Agent: curl/7.88.1\r\n"
                b"Proxy-Connection: Keep-Alive\r\n\r\n")


@pytest.mark.parametrize("chunks", splits(CURL_CONNECT + b"\x16\x03\x01early"))
def test_connect_then_200_and_early_data(chunks):
    proxy, events, out, body = run(chunks)
    assert events == [ConnectRequest("peer-1", 8000)]
    assert (out, body, proxy.state) == (b"", b"", State.CONNECT_PENDING)
    proxy.reply_connect(True)
    assert proxy.data_to_send() == OK_200
    assert proxy.state is State.TUNNEL
    assert proxy.leftover() == b"\x16\x03\x01early"
    with pytest.raises(RuntimeError):
        proxy.receive_data(b"more")


@pytest.mark.parametrize(
    ("target", "host", "port"),
    [(b"[FD7A:115C:A1E0::2]:22", "fd7a:115c:a1e0::2", 22), (b"100.64.0.2:443", "100.64.0.2", 443),
     (b"Peer-1.Tailnet.Test.:65535", "peer-1.tailnet.test.", 65535)],
)
def test_connect_authorities(target, host, port):
    _, events, _, _ = run([b"CONNECT " + target + b" HTTP/1.1\r\nHost: " + target + b"\r\n\r\n"])
    assert events == [ConnectRequest(host, port)]


def test_early_data_sent_while_the_connect_is_pending():
    proxy, events, _, _ = run([CURL_CONNECT, b"abc", b"def"])
    assert len(events) == 1
    proxy.reply_connect(True)
    assert proxy.leftover() == b"abcdef"


def test_connect_refused_with_status():
    proxy, _, _, _ = run([CURL_CONNECT])
    proxy.reply_connect(False, 504)
    assert proxy.data_to_send() == error_reply(504, "Gateway Timeout")
    assert proxy.state is State.CLOSED
    assert proxy.receive_data(b"x") == []


def test_connect_default_refusal_is_502():
    proxy, _, _, _ = run([CURL_CONNECT])
    proxy.reply_connect(False)
    assert proxy.data_to_send() == error_reply(502, "Bad Gateway")


def test_connect_early_data_is_bounded():
    proxy = HttpProxyServer(max_early_data=8)
    assert proxy.receive_data(CURL_CONNECT + b"12345678") == [ConnectRequest("peer-1", 8000)]
    assert proxy.receive_data(b"9") == [ProtocolError("early_data_overflow")]
    assert proxy.state is State.CLOSED and proxy.data_to_send() == b""
    proxy = HttpProxyServer(max_early_data=8)
    assert proxy.receive_data(CURL_CONNECT + b"123456789") == [ConnectRequest("peer-1", 8000),
                                                               ProtocolError("early_data_overflow")]


def test_eof_while_the_connect_is_pending_is_remembered():
    proxy, _, _, _ = run([CURL_CONNECT + b"bye", b""])
    assert proxy.eof_received
    proxy.reply_connect(True)
    assert proxy.leftover() == b"bye"


# --- absolute-form requests ------------------------------------------------------------

CURL_GET = (b"GET http://peer-1:8000/x?q=1 HTTP/1.1\r\nHost: peer-1:8000\r\nUser-Agent: curl/7.88.1\r\n"
            b"Accept: */*\r\nProxy-Connection: Keep-Alive\r\n\r\n")
GET_UPSTREAM = (b"GET /x?q=1 HTTP/1.1\r\nHost: peer-1:8000\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n"
                b"Connection: close\r\n\r\n")


@pytest.mark.parametrize("chunks", splits(CURL_GET))
def test_get_is_rewritten_to_origin_form(chunks):
    proxy, events, out, body = run(chunks)
    assert events == [ForwardRequest("peer-1", 8000, GET_UPSTREAM)]
    assert (out, body) == (b"", b"")
    assert proxy.request_complete


def test_host_header_is_replaced_hop_by_hop_headers_dropped():
    wire = (b"GET http://Peer-1.tailnet.test/a/b#frag HTTP/1.1\r\nHost: elsewhere:99\r\n"
            b"Proxy-Authorization: Basic dTpw\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n"
            b"Keep-Alive: timeout=5\r\nTE: trailers\r\nUpgrade: websocket\r\nX-End: kept\r\n\r\n")
    _, events, _, _ = run([wire])
    assert events == [ForwardRequest("peer-1.tailnet.test", 80,
                                     b"GET /a/b HTTP/1.1\r\nHost: Peer-1.tailnet.test\r\nX-End: kept\r\n"
                                     b"Connection: close\r\n\r\n")]


@pytest.mark.parametrize(
    ("target", "origin", "host", "port"),
    [(b"http://peer-1", b"/", "peer-1", 80), (b"http://peer-1?x=1", b"/?x=1", "peer-1", 80),
     (b"HTTP://[fd7a:115c:a1e0::2]:8080/p", b"/p", "fd7a:115c:a1e0::2", 8080),
     (b"http://100.64.0.2:81/%20a?b=c&d", b"/%20a?b=c&d", "100.64.0.2", 81)],
)
def test_absolute_targets(target, origin, host, port):
    _, events, _, _ = run([b"HEAD " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n"])
    [event] = events
    assert (event.host, event.port) == (host, port)
    assert event.head.startswith(b"HEAD " + origin + b" HTTP/1.1\r\nHost: ")


POST_CL = (b"POST http://peer-1:8000/post HTTP/1.1\r\nHost: peer-1:8000\r\nContent-Length: 11\r\n"
           b"Content-Type: text/plain\r\n\r\nhello world")


@pytest.mark.parametrize("chunks", splits(POST_CL))
def test_content_length_body_streams_through(chunks):
    proxy, events, out, body = run(chunks)
    assert events == [ForwardRequest("peer-1", 8000, b"POST /post HTTP/1.1\r\nHost: peer-1:8000\r\n"
                                     b"Content-Length: 11\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n")]
    assert body == b"hello world" and out == b""
    assert proxy.request_complete


def test_body_is_handed_out_as_it_arrives():
    proxy, events, _, body = run([POST_CL[:-6]])
    assert len(events) == 1 and body == b"hello" and not proxy.request_complete
    assert proxy.receive_data(b" world") == [] and proxy.body_data() == b" world"
    assert proxy.request_complete


CHUNKED = (b"PUT http://peer-1:8000/up HTTP/1.1\r\nHost: peer-1:8000\r\nTransfer-Encoding: chunked\r\n"
           b"Content-Length: 999\r\n\r\n"  # both: T-E wins, C-L must not reach upstream (RFC 9112 6.3)
           b"5;name=val\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n")


@pytest.mark.parametrize("chunks", splits(CHUNKED))
def test_chunked_body_is_re_encoded(chunks):
    _, events, _, body = run(chunks)
    assert events == [ForwardRequest("peer-1", 8000, b"PUT /up HTTP/1.1\r\nHost: peer-1:8000\r\n"
                                     b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")]
    # Reassemble what upstream sees with an independent h11 server: same body, trailer kept.
    upstream = h11.Connection(h11.SERVER)
    upstream.receive_data(events[0].head + body)
    got, trailers = b"", None
    while (ev := upstream.next_event()) not in (h11.PAUSED, h11.NEED_DATA):
        if type(ev) is h11.Data:
            got += ev.data
        elif type(ev) is h11.EndOfMessage:
            trailers = list(ev.headers)
    assert got == b"hello world" and trailers == [(b"x-trailer", b"t")]
    assert b";name=val" not in body  # chunk extensions stop here


def test_keep_alive_second_request_is_discarded():
    third = b"GET http://peer-2/ HTTP/1.1\r\nHost: peer-2\r\n\r\n"
    proxy, events, _, _ = run([CURL_GET + CURL_GET, third])
    assert events == [ForwardRequest("peer-1", 8000, GET_UPSTREAM)]
    assert proxy.discarded == len(CURL_GET) + len(third)
    assert proxy.receive_data(b"") == [] and proxy.eof_received


def test_http10_request_goes_upstream_as_11_with_host():
    _, events, _, _ = run([b"GET http://peer-1/ HTTP/1.0\r\nUser-Agent: old\r\n\r\n"])
    assert events == [ForwardRequest("peer-1", 80, b"GET / HTTP/1.1\r\nHost: peer-1\r\nUser-Agent: old\r\n"
                                     b"Connection: close\r\n\r\n")]


def test_reply_error_for_a_forward_request():
    proxy, _, _, _ = run([CURL_GET])
    proxy.reply_error(502, "no route to peer-1")
    body = b"no route to peer-1\n"
    assert proxy.data_to_send() == (b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain; charset=utf-8\r\n"
                                    b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
    assert proxy.state is State.CLOSED


def test_reply_error_while_the_body_is_still_arriving():
    proxy, _, _, _ = run([POST_CL[:-3]])
    proxy.reply_error(503)
    assert proxy.data_to_send().startswith(b"HTTP/1.1 503 Service Unavailable\r\n")


def test_error_replies_to_head_carry_no_body():
    """Regression (found by tests/fuzz): a 400 or 502 with a body answering HEAD made h11
    raise LocalProtocolError, which killed the proxy."""
    proxy, events, out, _ = run([b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n"])
    assert isinstance(events[-1], ProtocolError) and events[-1].reason == "not_absolute_form"
    assert out.startswith(b"HTTP/1.1 400 Bad Request\r\n") and out.endswith(b"\r\n\r\n")  # headers only
    proxy, events, _, _ = run([b"HEAD http://peer-1/ HTTP/1.1\r\nHost: peer-1\r\n\r\n"])
    assert isinstance(events[0], ForwardRequest)
    proxy.reply_error(502, "no route to peer-1")
    reply = proxy.data_to_send()
    assert reply.startswith(b"HTTP/1.1 502 Bad Gateway\r\n") and reply.endswith(b"\r\n\r\n")


# --- malformed -------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("wire", "reason", "status"),
    [
        (b"GARBAGE\r\n\r\n", "bad_request", 400),
        (b"\x05\x01\x00", "bad_request", 400),  # a SOCKS greeting: h11 rejects it before a line ends
        (b"GET / HTTP/1.1\r\nHost: peer-1\r\n\r\n", "not_absolute_form", 400),
        (b"OPTIONS * HTTP/1.1\r\nHost: peer-1\r\n\r\n", "not_absolute_form", 400),
        (b"GET https://peer-1/ HTTP/1.1\r\nHost: peer-1\r\n\r\n", "unsupported_scheme", 400),
        (b"GET http://user:pw@peer-1/ HTTP/1.1\r\nHost: peer-1\r\n\r\n", "userinfo_in_authority", 400),
        (b"GET http:///x HTTP/1.1\r\nHost: peer-1\r\n\r\n", "bad_authority", 400),
        (b"GET http://peer-1:0/ HTTP/1.1\r\nHost: peer-1\r\n\r\n", "bad_authority", 400),
        (b"GET http://peer-1:99999/ HTTP/1.1\r\nHost: peer-1\r\n\r\n", "bad_authority", 400),
        (b"GET http://fd7a::1/ HTTP/1.1\r\nHost: peer-1\r\n\r\n", "bad_authority", 400),
        (b"GET http://pe%00er/ HTTP/1.1\r\nHost: peer-1\r\n\r\n", "bad_authority", 400),
        (b"GET http://peer-1/ HTTP/1.1\r\n\r\n", "bad_request", 400),  # HTTP/1.1 without Host
        (b"CONNECT peer-1 HTTP/1.1\r\nHost: peer-1\r\n\r\n", "bad_authority", 400),  # no port
        (b"CONNECT peer-1:22 HTTP/1.1\r\nHost: peer-1\r\nContent-Length: 3\r\n\r\nabc", "connect_with_body", 400),
        (b"POST http://peer-1/ HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: gzip\r\n\r\n",
         "unsupported_transfer_encoding", 501),
        (b"GET http://peer-1/\xff HTTP/1.1\r\nHost: p\r\n\r\n", "bad_request", 400),
    ],
)
def test_malformed_requests_get_an_error_reply(wire, reason, status):
    proxy, events, out, _ = run([wire])
    assert [(type(e), e.reason, e.status) for e in events] == [(ProtocolError, reason, status)]
    assert out.startswith(b"HTTP/1.1 %d " % status) and out.endswith(b"\n")
    assert b"Connection: close\r\n" in out
    assert proxy.state is State.CLOSED
    assert proxy.receive_data(b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n") == []


def test_a_head_growing_past_the_bound_is_431():
    wire = b"GET http://peer-1/ HTTP/1.1\r\nHost: p\r\nX: " + b"a" * 20000 + b"\r\n\r\n"
    proxy, events, out, _ = run([wire[i : i + 1024] for i in range(0, len(wire), 1024)])
    assert [(e.reason, e.status) for e in events] == [("head_too_large", 431)]
    assert out.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert len(proxy._conn.trailing_data[0]) <= 16 * 1024 + 1024  # never more than the bound + one read


def test_bad_chunk_after_the_request_went_out_closes_without_reply():
    wire = b"POST http://peer-1/ HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n"
    _, events, out, body = run([wire])
    assert [type(e) for e in events] == [ForwardRequest, ProtocolError]
    assert (events[1].reason, events[1].status) == ("bad_body", None)
    assert out == b"" and body == b"3\r\nabc\r\n"


def test_eof_mid_body_and_mid_head():
    _, events, _, _ = run([POST_CL[:-2], b""])
    assert [type(e) for e in events] == [ForwardRequest, ProtocolError] and events[1].reason == "eof_in_body"
    _, events, out, _ = run([CURL_GET[:20], b""])
    assert events == [ProtocolError("eof_in_request", events[0].detail, None)] and out == b""
    _, events, out, _ = run([b""])
    assert events == [ProtocolError("eof_before_request")] and out == b""


def test_api_misuse_is_our_bug():
    proxy = HttpProxyServer()
    for call in (lambda: proxy.reply_connect(True), proxy.reply_error, proxy.leftover):
        with pytest.raises(RuntimeError):
            call()
    proxy.receive_data(CURL_CONNECT)
    with pytest.raises(ValueError):
        proxy.reply_error(200)
