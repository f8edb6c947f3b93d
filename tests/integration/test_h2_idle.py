"""Idle HTTP/2 connections give back their buffers (src/h2/server.c conn_release_idle): after a second without
a stream, nghttp2's frame buffer pages go (h2c and TLS) and a cleartext connection parks its socket without a
bufferevent. Whatever comes next (requests, several streams at once, a PING, the idle timeout's GOAWAY, the
client's close) must find the connection exactly as before, and a stream open when the idle timer fires keeps
everything."""

import signal
import time

import grpcweb
from echo_pb import EchoResponse
from h2gw import UNARY, Gateways, assert_serves, gateways_fixture, settled, target_fixture, unary_body
from h2raw import ACK, PING, SETTINGS, RawH2, request_headers

gateways = gateways_fixture(lambda tmp, request: Gateways(
    tmp.mktemp("h2idle"), request.getfixturevalue("echo_server").port, extra="timeouts: {idle: 6s}\n"))
t = target_fixture("gateways")

RELEASED = {"h2c": "idle: buffers released", "tls": "idle: frame buffer released"}


def released(t, count, timeout=4.0):
    """Waits until `count` connections of this test have logged their release; True if so."""
    deadline = time.monotonic() + timeout
    while t.log().count(RELEASED[t.transport]) < count:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def released_connection(t):
    """A connection that served one call (stream 1) and then gave back its buffers."""
    c = settled(t)
    assert_serves(c, 1, "before")
    assert released(t, 1), "the idle connection kept its buffers: " + t.log()[-2000:]
    return c


def assert_echo(c, sid, message):
    """The response on stream `sid` (its request already sent) is the echo of `message`, grpc-status 0."""
    status, hdrs, body, _ = c.response(sid)
    assert status == 200, (status, hdrs)
    frames, trailers = grpcweb.parse_body(body)
    assert [EchoResponse.FromString(m).message for m in grpcweb.messages_of(frames)] == [message]
    assert (trailers or hdrs)["grpc-status"] == "0", (hdrs, trailers)


def woken(t):
    return t.log().count("idle connection woke up")


def test_released_connection_serves_calls_and_concurrent_streams(t):
    c = released_connection(t)
    # several calls one after the other, then three streams at once
    for i, sid in enumerate((3, 5, 7)):
        assert_serves(c, sid, "after-%d" % i)
    for sid in (9, 11, 13):
        c.headers(sid, request_headers(c.port, UNARY), end_stream=False)
    for sid in (13, 11, 9):
        c.data(sid, unary_body("concurrent-%d" % sid), end_stream=True)
    for sid in (9, 11, 13):
        assert_echo(c, sid, "concurrent-%d" % sid)
    assert woken(t) == (1 if t.transport == "h2c" else 0)
    # idle again: released again; the HPACK state survived (the same header blocks decode on both sides)
    assert released(t, 2), "not released a second time"
    assert_serves(c, 15, "again")
    assert woken(t) == (2 if t.transport == "h2c" else 0)
    c.close()


def test_stream_open_while_idle_timer_fires_keeps_the_buffers(t):
    c = settled(t)
    assert_serves(c, 1, "first")  # the connection is listed as idle now ...
    c.headers(3, request_headers(c.port, UNARY), end_stream=False)  # ... and a stream opens within the second
    time.sleep(1.6)  # the idle timer fires with the stream open
    assert t.log().count(RELEASED[t.transport]) == 0, "released with a stream open"
    c.data(3, unary_body("slow"), end_stream=True)
    assert_echo(c, 3, "slow")
    assert released(t, 1), "not released after the stream ended"
    assert_serves(c, 5, "after")
    c.close()


def test_released_connection_answers_ping_and_sees_close(t):
    c = released_connection(t)
    c.ping(b"idleping")
    assert c.wait(lambda: any(f.type == PING and f.flags & ACK and f.payload == b"idleping" for f in c.frames), 3,
                  "PING ACK"), c.summary()
    assert released(t, 2), "not released again after the PING"
    c.close()
    assert t.wait_log(r"connection closed: client closed the connection", 3), t.log()[-2000:]
    c2 = settled(t)
    assert_serves(c2, 1, "fresh")
    c2.close()


def test_released_connection_gets_the_idle_timeout_goaway(t):
    c = released_connection(t)
    t0 = time.monotonic()
    code, last, _ = c.goaway(timeout=9)
    assert code == 0 and last == 1, (code, last)
    assert 3.5 <= time.monotonic() - t0 <= 7.5
    assert c.wait_closed(5), "the gateway did not close after its GOAWAY"


def test_sigterm_drain_reaches_a_released_h2c_connection(portico):
    """Draining sends GOAWAY through a parked connection (its bufferevent made again to write it) and the
    gateway exits cleanly once the client closed."""
    gw = portico()
    c = RawH2(gw.port)
    c.wait(lambda: c.find(SETTINGS), 3, "SETTINGS")
    assert_serves(c, 1, "before")
    deadline = time.monotonic() + 4
    while "idle: buffers released" not in gw.log_text():
        assert time.monotonic() < deadline, "the idle h2c connection kept its buffers"
        time.sleep(0.05)
    gw.signal(signal.SIGTERM)
    code, last, _ = c.goaway(timeout=3)
    assert code == 0 and last == 1, (code, last)
    assert "idle connection woke up" in gw.log_text()
    assert c.wait_closed(3), "the drained connection was not closed"
    c.close()
    assert gw.proc.wait(5) == 0
