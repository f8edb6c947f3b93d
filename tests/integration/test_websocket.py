"""The grpc-websockets transport (improbable-eng/grpc-web's WebsocketTransport; PROTOCOL.md §3.3) end to end
against the real grpcio upstream: raw RFC 6455 sockets (wsclient.py) so that every byte, close code and
refusal can be checked.
"""

import socket
import time

import pytest

import echo_pb
import grpcweb
from conftest import rss_kib
from echo_pb import EchoRequest, EchoResponse
from wsclient import TEXT, GrpcWs, H2Tunnel, H2WebSocket, HandshakeRefused, WebSocket, header_block

SVC = "/portico.test.Echo/"
ORIGIN = "http://app.example"

CONFIG = """
listeners:
  - address: 127.0.0.1:{listen_port}
upstreams:
  - name: echo
    endpoints: ["127.0.0.1:{upstream_port}"]
routes:
  - prefix: /
    upstream: echo
cors:
  allow_origins: [http://app.example, "https://*.example.org"]
workers: 1
log_level: debug
"""


def gw_with(portico, extra=""):
    return portico(config=CONFIG + extra)


def resp(payload):
    return EchoResponse.FromString(payload)


# --------------------------------------------------------------------------- calls


def test_unary_over_websocket(portico):
    gw = gw_with(portico)
    c = GrpcWs(gw.port, SVC + "Unary", {"x-echo-hello": "world"}, origin=ORIGIN).open()
    assert c.ws.headers["sec-websocket-protocol"] == "grpc-websockets"
    c.send(EchoRequest(message="hi"))
    c.end()
    c.finish()
    assert c.headers["x-echo-initial"] == "yes"
    assert c.headers["x-echoed-hello"] == "world"
    assert c.headers["content-type"].startswith("application/grpc-web")
    assert [resp(m).message for m in c.messages] == ["hi"]
    assert c.status == 0, c.trailers
    assert all(k == k.lower() for k in c.trailers)
    assert c.closed[0] == 1000
    # the upgrade's own fields reach the upstream too (Origin here), the block's metadata as well
    h = resp(c.messages[0]).headers
    assert h["origin"] == ORIGIN and h["x-echo-hello"] == "world"
    assert "sec-websocket-key" not in h and "upgrade" not in h


def test_client_stream(portico):
    gw = gw_with(portico)
    c = GrpcWs(gw.port, SVC + "ClientStream", origin=ORIGIN).open()
    for i in range(50):
        c.send(EchoRequest(message=str(i), payload=b"p" * i), fragments=1 + i % 3)
    c.end()
    c.finish()
    assert c.status == 0, c.trailers
    (m,) = c.messages
    r = resp(m)
    assert r.index == 50 and r.message == "|".join(str(i) for i in range(50))
    assert r.payload == b"".join(b"p" * i for i in range(50))


def test_bidi_ping_pong_1000_round_trips(portico):
    gw = gw_with(portico)
    c = GrpcWs(gw.port, SVC + "Bidi", origin=ORIGIN).open()
    for i in range(1000):
        c.send(EchoRequest(message=f"m{i}"))
        assert c.read_until(lambda c, n=i + 1: len(c.messages) >= n)
        assert resp(c.messages[i]).message == f"m{i}"
    c.end()
    c.finish()
    assert c.status == 0 and len(c.messages) == 1000 and c.closed[0] == 1000


def test_half_close_then_server_stream(portico):
    gw = gw_with(portico)
    c = GrpcWs(gw.port, SVC + "ServerStream", origin=ORIGIN).open()
    c.send(EchoRequest(message="s", count=5, interval_ms=20))
    c.end()
    c.finish()
    assert [resp(m).index for m in c.messages] == [0, 1, 2, 3, 4]
    assert c.status == 0


def test_large_message_in_many_frames(portico):
    gw = gw_with(portico)
    c = GrpcWs(gw.port, SVC + "Unary", origin=ORIGIN).open()
    big = bytes(range(256)) * 8192  # 2 MiB: far above grpcwebproxy's 32 KiB default
    c.send(EchoRequest(payload=big), fragments=37)
    c.end()
    c.finish(timeout=30)
    assert c.status == 0 and resp(c.messages[0]).payload == big


def test_upstream_error_trailers_only_and_after_messages(portico):
    gw = gw_with(portico)
    c = GrpcWs(gw.port, SVC + "Unary", origin=ORIGIN).open()
    c.send(EchoRequest(status_code=5, status_message="no such thing"))
    c.end()
    c.finish()
    assert c.status == 5 and c.trailers["grpc-message"] == "no such thing"
    assert c.headers is not None and c.messages == [] and c.closed[0] == 1000

    c = GrpcWs(gw.port, SVC + "ServerStream", origin=ORIGIN).open()
    c.send(EchoRequest(count=2, status_code=9, status_message="late", fail_after_messages=True))
    c.end()
    c.finish()
    assert len(c.messages) == 2 and c.status == 9 and c.trailers["grpc-message"] == "late"


def test_deadline_from_the_header_block(portico):
    gw = gw_with(portico)
    c = GrpcWs(gw.port, SVC + "Unary", {"grpc-timeout": "200m"}, origin=ORIGIN).open()
    c.send(EchoRequest(delay_ms=3000, id="ws-deadline"))
    c.end()
    t0 = time.monotonic()
    c.finish()
    assert c.status == 4, c.trailers
    assert time.monotonic() - t0 < 2.5


def test_close_cancels_the_upstream_call(portico, fresh_echo_server):
    gw = portico(config=CONFIG, upstream=fresh_echo_server)
    for half_close in (False, True):
        cid = f"ws-cancel-{half_close}"
        c = GrpcWs(gw.port, SVC + "ServerStream", origin=ORIGIN).open()
        c.send(EchoRequest(id=cid, count=1000, interval_ms=50))
        if half_close:
            c.end()  # a close after the half-close must still cancel
        assert c.read_until(lambda c: len(c.messages) >= 2)
        c.ws.send_close(1000)
        info = fresh_echo_server.wait_cancel_status(cid)
        assert info.cancelled, info
        c.close()
    assert gw.wait_log(r"websocket .*closed by the client")


def test_connection_drop_cancels_the_upstream_call(portico, fresh_echo_server):
    gw = portico(config=CONFIG, upstream=fresh_echo_server)
    c = GrpcWs(gw.port, SVC + "Bidi", origin=ORIGIN).open()
    c.send(EchoRequest(id="ws-drop", message="a", delay_ms=5000))
    assert fresh_echo_server.wait_cancel_status("ws-drop", field="seen").seen
    c.ws.sock.shutdown(socket.SHUT_RDWR)
    c.close()
    assert fresh_echo_server.wait_cancel_status("ws-drop").cancelled


def test_upstream_killed_mid_call(portico, fresh_echo_server):
    gw = portico(config=CONFIG, upstream=fresh_echo_server)
    c = GrpcWs(gw.port, SVC + "ServerStream", origin=ORIGIN).open()
    c.send(EchoRequest(count=1000, interval_ms=50))
    c.end()
    assert c.read_until(lambda c: len(c.messages) >= 1)
    fresh_echo_server.kill()
    c.finish()
    assert c.status == 14, c.trailers  # UNAVAILABLE, in a trailer frame, then a normal close
    assert c.closed[0] == 1000


# --------------------------------------------------------------------------- the handshake


@pytest.mark.parametrize("origin", ["http://app.example", "https://a.example.org", None])
def test_allowed_origins(portico, origin):
    gw = gw_with(portico)
    c = GrpcWs(gw.port, SVC + "Unary", origin=origin).open()
    c.send(EchoRequest(message="o"))
    c.end()
    assert c.finish().status == 0


@pytest.mark.parametrize("origin", ["http://evil.example", "https://example.org", "null", "http://app.example.evil"])
def test_disallowed_origin_gets_403_and_a_log_line(portico, origin):
    gw = gw_with(portico)
    with pytest.raises(HandshakeRefused) as e:
        WebSocket(gw.port, SVC + "Unary", origin=origin)
    assert e.value.status == 403
    assert "origin not allowed" in e.value.body
    assert "access-control-allow-origin" not in e.value.headers
    assert gw.wait_log(rf"websocket /portico\.test\.Echo/Unary from 127\.0\.0\.1:\d+ refused: origin '{origin}' is not allowed")


def test_same_origin_allowed_without_a_cors_policy(portico):
    gw = portico(config=CONFIG.replace("cors:\n  allow_origins: [http://app.example, \"https://*.example.org\"]\n", ""))
    c = GrpcWs(gw.port, SVC + "Unary", origin=f"http://127.0.0.1:{gw.port}").open()
    c.send(EchoRequest(message="same"))
    c.end()
    assert c.finish().status == 0
    with pytest.raises(HandshakeRefused) as e:
        WebSocket(gw.port, SVC + "Unary", origin=ORIGIN)
    assert e.value.status == 403


def test_per_route_origin_policy(portico):
    cfg = CONFIG.replace("""  - prefix: /
    upstream: echo
""", """  - path: /portico.test.Echo/Bidi
    upstream: echo
    cors: {allow_origins: ["https://chat.example"]}
  - prefix: /
    upstream: echo
""")
    gw = portico(config=cfg)
    with pytest.raises(HandshakeRefused) as e:
        WebSocket(gw.port, SVC + "Bidi", origin=ORIGIN)  # allowed globally, not on this route
    assert e.value.status == 403
    c = GrpcWs(gw.port, SVC + "Bidi", origin="https://chat.example").open()
    c.send(EchoRequest(message="r"))
    c.end()
    assert c.finish().status == 0
    with pytest.raises(HandshakeRefused):
        WebSocket(gw.port, SVC + "Unary", origin="https://chat.example")


@pytest.mark.parametrize("kw,status,text", [
    ({"protocols": None}, 400, "does not offer grpc-websockets"),
    ({"protocols": "chat, superchat"}, 400, "does not offer grpc-websockets"),
    ({"version": "8"}, 426, "Sec-WebSocket-Version must be 13"),
    ({"version": None}, 426, "Sec-WebSocket-Version must be 13"),
    ({"key": "c2hvcnQ="}, 400, "Sec-WebSocket-Key"),
])
def test_malformed_handshakes(portico, kw, status, text):
    gw = gw_with(portico)
    with pytest.raises(HandshakeRefused) as e:
        WebSocket(gw.port, SVC + "Unary", origin=ORIGIN, **kw)
    assert e.value.status == status and text in e.value.body
    if status == 426:
        assert e.value.headers["sec-websocket-version"] == "13"


def test_subprotocol_list_is_case_insensitive(portico):
    gw = gw_with(portico)
    c = GrpcWs(gw.port, SVC + "Unary", origin=ORIGIN, protocols="chat, GRPC-WebSockets").open()
    c.send(EchoRequest(message="x"))
    c.end()
    assert c.finish().status == 0


def test_unrouted_path_and_disabled_transport(portico):
    gw = portico(config=CONFIG.replace("prefix: /", "prefix: /portico.test.Echo/"))
    with pytest.raises(HandshakeRefused) as e:
        WebSocket(gw.port, "/other.Svc/M", origin=ORIGIN)
    assert e.value.status == 404 and "no route" in e.value.body
    gw2 = gw_with(portico, "websocket:\n  enabled: false\n")
    with pytest.raises(HandshakeRefused) as e:
        WebSocket(gw2.port, SVC + "Unary", origin=ORIGIN)
    assert e.value.status == 403 and "websocket.enabled" in e.value.body


# --------------------------------------------------------------------------- malformed input after the upgrade


def expect_close(c, code, text, upstream=None, cid=None):
    c.finish()
    assert c.closed is not None and c.closed[0] == code, c.closed
    assert text in c.closed[1]
    assert c.trailers is None


def test_text_message_is_refused(portico):
    gw = gw_with(portico)
    c = GrpcWs(gw.port, SVC + "Unary", origin=ORIGIN)
    c.ws.send_frame(TEXT, header_block(c.metadata))
    expect_close(c, 1003, "text messages")
    assert gw.wait_log(r"websocket 127\.0\.0\.1:\d+ /portico\.test\.Echo/Unary: closing \(1003\)")


def test_malformed_header_block(portico):
    gw = gw_with(portico)
    c = GrpcWs(gw.port, SVC + "Unary", origin=ORIGIN)
    c.ws.send_binary(b"content-type application/grpc-web\r\n")
    expect_close(c, 1002, "malformed header block")


def test_second_header_block_and_bad_control_byte(portico, fresh_echo_server):
    gw = portico(config=CONFIG, upstream=fresh_echo_server)
    c = GrpcWs(gw.port, SVC + "Bidi", origin=ORIGIN).open()
    c.send(EchoRequest(id="ws-second-block", delay_ms=5000))
    assert fresh_echo_server.wait_cancel_status("ws-second-block", field="seen").seen
    c.ws.send_binary(header_block(c.metadata))
    expect_close(c, 1002, "neither data")
    # nothing more reached the upstream: the call it had started was cancelled, not finished
    info = fresh_echo_server.wait_cancel_status("ws-second-block")
    assert info.cancelled and not info.finished


def test_data_after_half_close(portico):
    gw = gw_with(portico)
    c = GrpcWs(gw.port, SVC + "Bidi", origin=ORIGIN).open()
    c.end()
    c.send(EchoRequest(message="late"))
    expect_close(c, 1002, "after the end of the request")


def test_end_message_with_data(portico):
    gw = gw_with(portico)
    c = GrpcWs(gw.port, SVC + "Bidi", origin=ORIGIN).open()
    c.ws.send_binary(b"\x01\x00")
    expect_close(c, 1002, "carries data")


def test_oversized_header_block(portico):
    gw = gw_with(portico, "limits:\n  max_header_size: 2KiB\n")
    c = GrpcWs(gw.port, SVC + "Unary", origin=ORIGIN)
    c.ws.send_binary(header_block({"x-big": "v" * 3000}))
    expect_close(c, 1009, "max_header_size")


def test_oversized_message(portico):
    gw = gw_with(portico, "limits:\n  max_message_size: 64KiB\n")
    c = GrpcWs(gw.port, SVC + "Unary", origin=ORIGIN).open()
    c.send(EchoRequest(payload=b"x" * (100 * 1024)))
    c.finish()
    assert c.closed is not None and c.closed[0] == 1009, c.closed


def test_no_header_block_times_out(portico):
    gw = gw_with(portico, "timeouts:\n  header_read: 300ms\n")
    c = GrpcWs(gw.port, SVC + "Unary", origin=ORIGIN)
    t0 = time.monotonic()
    expect_close(c, 1008, "no header block within 300 ms")
    assert time.monotonic() - t0 < 3


def test_server_pings_and_a_silent_peer_is_dropped(portico, fresh_echo_server):
    gw = portico(config=CONFIG + "websocket:\n  ping_interval: 200ms\n", upstream=fresh_echo_server)
    c = GrpcWs(gw.port, SVC + "Bidi", origin=ORIGIN).open()
    c.send(EchoRequest(id="ws-ping-live", message="a"))
    # a live peer answers pings (wsclient does it in recv): the call survives many intervals
    with pytest.raises(TimeoutError):
        c.read_until(lambda c: False, timeout=1.5)
    assert c.ws.pings_seen >= 4
    c.end()
    c.finish()
    assert c.status == 0
    # a peer that stops answering is gone after two intervals: its call is cancelled
    c = GrpcWs(gw.port, SVC + "Bidi", origin=ORIGIN).open()
    c.send(EchoRequest(id="ws-ping-dead", message="a"))
    assert fresh_echo_server.wait_cancel_status("ws-ping-dead", timeout=5).cancelled
    c.close()


# --------------------------------------------------------------------------- load and memory


def test_200_concurrent_websocket_calls(portico):
    gw = gw_with(portico)
    calls = [GrpcWs(gw.port, SVC + "Bidi", origin=ORIGIN).open() for _ in range(200)]
    for i, c in enumerate(calls):
        c.send(EchoRequest(message=f"c{i}"))
    for i, c in enumerate(calls):
        assert c.read_until(lambda c: len(c.messages) >= 1)
        assert resp(c.messages[0]).message == f"c{i}"
        c.end()
    for c in calls:
        assert c.finish().status == 0
        c.close()


def test_slow_reader_keeps_memory_bounded(portico):
    gw = gw_with(portico)
    c = GrpcWs(gw.port, SVC + "ServerStream", origin=ORIGIN).open()
    c.send(EchoRequest(count=400, size=256 * 1024))  # 100 MiB the browser does not read
    c.end()
    time.sleep(3)
    rss = rss_kib(gw.pid)
    assert rss < 96 * 1024, f"gateway RSS {rss} KiB while a WebSocket reader stalls"
    c.finish(timeout=60)
    assert c.status == 0 and len(c.messages) == 400


def test_counters_in_status(portico):
    import json
    import urllib.request
    from conftest import free_port
    admin = free_port()
    gw = gw_with(portico, f"admin: {{address: '127.0.0.1:{admin}'}}\n")
    for _ in range(3):
        c = GrpcWs(gw.port, SVC + "Unary", origin=ORIGIN).open()
        c.send(EchoRequest(message="n"))
        c.end()
        assert c.finish().status == 0
    with pytest.raises(HandshakeRefused):
        WebSocket(gw.port, SVC + "Unary", origin="http://evil.example")
    c = GrpcWs(gw.port, SVC + "Unary", origin=ORIGIN)
    c.ws.send_frame(TEXT, b"hello")
    c.finish()
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/status", timeout=10) as r:
        f = json.loads(r.read())["filters"]
    assert (f["websocket_upgrades"], f["websocket_refused"], f["websocket_protocol_errors"]) == (4, 1, 1), f


# --------------------------------------------------------------------------- over HTTP/2 (RFC 8441 extended CONNECT)


def test_h2_extended_connect_calls(portico):
    gw = gw_with(portico)
    tunnel = H2Tunnel(gw.port)  # waits for SETTINGS_ENABLE_CONNECT_PROTOCOL = 1
    assert tunnel.conn.remote_settings[8] == 1
    try:
        c = GrpcWs(gw.port, SVC + "Unary", {"x-echo-k": "v"}, origin=ORIGIN, transport=H2WebSocket, tunnel=tunnel).open()
        assert c.ws.status == 200 and c.ws.headers["sec-websocket-protocol"] == "grpc-websockets"
        c.send(EchoRequest(message="over h2"))
        c.end()
        c.finish()
        assert c.status == 0 and resp(c.messages[0]).message == "over h2" and c.headers["x-echoed-k"] == "v"
        assert c.ws.wait_stream_end() == "ended"  # the close handshake, then END_STREAM: no reset

        c = GrpcWs(gw.port, SVC + "Bidi", origin=ORIGIN, transport=H2WebSocket, tunnel=tunnel).open()
        for i in range(200):
            c.send(EchoRequest(message=f"b{i}"))
            assert c.read_until(lambda c, n=i + 1: len(c.messages) >= n)
        c.end()
        assert c.finish().status == 0 and [resp(m).message for m in c.messages] == [f"b{i}" for i in range(200)]

        c = GrpcWs(gw.port, SVC + "ClientStream", origin=ORIGIN, transport=H2WebSocket, tunnel=tunnel).open()
        big = b"z" * (1024 * 1024)  # more than the stream window: flow control end to end
        for i in range(3):
            c.send(EchoRequest(message=str(i), payload=big))
        c.end()
        c.finish(timeout=30)
        assert c.status == 0 and resp(c.messages[0]).payload == big * 3
    finally:
        tunnel.close()


def test_h2_many_websockets_and_calls_share_one_connection(portico):
    gw = gw_with(portico)
    tunnel = H2Tunnel(gw.port)
    try:
        calls = [GrpcWs(gw.port, SVC + "Bidi", origin=ORIGIN, transport=H2WebSocket, tunnel=tunnel).open() for _ in range(40)]
        for i, c in enumerate(calls):
            c.send(EchoRequest(message=f"s{i}"))
        for i, c in enumerate(calls):
            assert c.read_until(lambda c: len(c.messages) >= 1)
            assert resp(c.messages[0]).message == f"s{i}"
            c.end()
        for c in calls:
            assert c.finish().status == 0
        assert len({c.ws.sid for c in calls}) == 40
    finally:
        tunnel.close()


@pytest.mark.parametrize("kw,status,text", [
    ({"origin": "http://evil.example"}, 403, "origin not allowed"),
    ({"protocols": None}, 400, "does not offer grpc-websockets"),
    ({"version": "12"}, 426, "Sec-WebSocket-Version must be 13"),
    ({"protocol": "webtransport"}, 501, "only websocket is served"),
])
def test_h2_refusals(portico, kw, status, text):
    gw = gw_with(portico)
    kw = {"origin": ORIGIN, **kw}
    with pytest.raises(HandshakeRefused) as e:
        H2WebSocket(gw.port, SVC + "Unary", **kw)
    assert e.value.status == status and text in e.value.body, (e.value.status, e.value.body)


def test_h2_cancel_by_close_reset_and_end_stream(portico, fresh_echo_server):
    gw = portico(config=CONFIG, upstream=fresh_echo_server)
    tunnel = H2Tunnel(gw.port)
    try:
        for how in ("close", "reset", "end_stream"):
            cid = f"h2ws-{how}"
            c = GrpcWs(gw.port, SVC + "Bidi", origin=ORIGIN, transport=H2WebSocket, tunnel=tunnel).open()
            c.send(EchoRequest(id=cid, message="x", delay_ms=5000))
            assert fresh_echo_server.wait_cancel_status(cid, field="seen").seen
            if how == "close":
                c.ws.send_close(1000)
            elif how == "reset":
                tunnel.conn.reset_stream(c.ws.sid)
                tunnel.flush()
            else:
                c.ws.end_stream()
            assert fresh_echo_server.wait_cancel_status(cid).cancelled, how
        # the connection is still fine for more
        c = GrpcWs(gw.port, SVC + "Unary", origin=ORIGIN, transport=H2WebSocket, tunnel=tunnel).open()
        c.send(EchoRequest(message="after"))
        c.end()
        assert c.finish().status == 0
    finally:
        tunnel.close()


def test_h2_protocol_error_closes_only_its_stream(portico):
    gw = gw_with(portico)
    tunnel = H2Tunnel(gw.port)
    try:
        bad = GrpcWs(gw.port, SVC + "Unary", origin=ORIGIN, transport=H2WebSocket, tunnel=tunnel)
        good = GrpcWs(gw.port, SVC + "Bidi", origin=ORIGIN, transport=H2WebSocket, tunnel=tunnel).open()
        bad.ws.send_frame(TEXT, b"not binary")
        bad.finish()
        assert bad.closed[0] == 1003
        good.send(EchoRequest(message="still here"))
        good.end()
        assert good.finish().status == 0
    finally:
        tunnel.close()
