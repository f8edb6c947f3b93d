"""HTTP/2 abuse from the browser side, each case over h2c and TLS with hand-built frames (h2raw.py): rapid
reset (CVE-2023-44487), SETTINGS / PING / WINDOW_UPDATE / PRIORITY / RST_STREAM / empty DATA floods
(CVE-2019-9512/9515/9518), CONTINUATION floods (CVE-2024-27316 class), a header block left open, streams over
limits.max_concurrent_streams. Each refusal is a GOAWAY (or RST_STREAM) with its code and a debug text saying
why, a log line, and a counter in /status "limits"; well-behaved clients doing the same things in moderation
are not refused. The numbers are in src/h2/server.c (top comment) and README "Limits and abuse".

The gateways of this module send their calls to CountingUpstream, which counts the streams opened upstream:
the rapid-reset case checks that the upstream sees a bounded number of calls.
"""

import socket
import struct
import time

import pytest

from h2gw import (UNARY, CountingUpstream, Gateways, assert_serves, connection_error, gateways_fixture, settled,
                  target_fixture, unary_body)
from h2raw import (CONTINUATION, DATA, END_HEADERS, END_STREAM, ENHANCE_YOUR_CALM, GOAWAY, HEADERS, MAX_CONCURRENT_STREAMS,
                   PING, PRIORITY, PROTOCOL_ERROR, REFUSED_STREAM, RST_STREAM, SETTINGS, WINDOW_UPDATE, frame,
                   request_headers, settings_payload)

STREAMS = 8          # limits.max_concurrent_streams of the module's gateways
RESET_BURST = 2 * STREAMS
CONTROL_BURST = 1000
HEADER_READ_S = 1


@pytest.fixture(scope="module")
def upstream():
    u = CountingUpstream()
    yield u
    u.stop()


gateways = gateways_fixture(lambda tmp, request: Gateways(
    tmp.mktemp("h2limits"), request.getfixturevalue("upstream").port,
    f"limits: {{max_concurrent_streams: {STREAMS}}}\ntimeouts: {{header_read: {HEADER_READ_S}s}}\n"))
t = target_fixture("gateways")


def calm(t, send, reason, counter, **kw):
    """send(c) ends the connection with GOAWAY ENHANCE_YOUR_CALM whose debug text has `reason`, counted."""
    return connection_error(t, ENHANCE_YOUR_CALM, send, reason, counter=counter, **kw)


def served_after(t):
    """The gateway still serves, on a new connection."""
    with settled(t) as c:
        assert_serves(c, 1, echo=False)


# --------------------------------------------------------------------------- rapid reset


def test_rapid_reset(t, upstream):
    """CVE-2023-44487: streams opened and reset in a loop, each reset once its call reached the upstream. After
    2 × max_concurrent_streams streams reset before their response ended, GOAWAY ENHANCE_YOUR_CALM: the
    upstream saw about that many calls, of the 800 the client tried."""
    before = upstream.requests
    rounds = 200

    def send(c):
        sid = 1
        for _ in range(rounds):
            first, seen = sid, upstream.requests
            for _ in range(STREAMS // 2):     # a message, no END_STREAM: the upstream holds the call open
                c.send(frame(HEADERS, END_HEADERS, sid, c.block(request_headers(c.port, UNARY))) +
                       frame(DATA, 0, sid, unary_body("reset me")))
                sid += 2
            deadline = time.monotonic() + 10
            while upstream.requests < seen + STREAMS // 2 and not c.find(GOAWAY) and time.monotonic() < deadline:
                c.pump(0.01)
            if c.find(GOAWAY):
                return
            # each round's calls reach the upstream before the client resets them; rounds that wait on a stuck
            # upstream would refill the reset bucket (1.6 a second) faster than they empty it, and never end
            assert upstream.requests >= seen + STREAMS // 2, (
                f"the upstream saw {upstream.requests - seen} of the round's {STREAMS // 2} calls in 10 s; "
                f"{upstream.describe()}; gateway /upstreams: {t.upstreams()}; its upstream log lines:\n"
                f"{t.upstream_lines()}\n{c.summary()}")
            c.send(b"".join(frame(RST_STREAM, 0, s, struct.pack(">I", 8)) for s in range(first, sid, 2)))

    debug = calm(t, send, "rapid reset", "h2_rapid_resets")
    assert f"more than {RESET_BURST} streams reset" in debug, debug
    seen = upstream.requests - before
    assert RESET_BURST <= seen <= RESET_BURST + STREAMS // 2 + 2, f"the upstream saw {seen} calls"
    t.check_counter("h2_connection_errors", 0)
    served_after(t)


def test_cancelling_many_calls_is_not_a_rapid_reset(t, upstream):
    """A browser cancelling its calls in moderation (fewer than the burst, spread over two rounds) is served."""
    with settled(t) as c:
        sid = 1
        for _ in range(2):
            for _ in range(RESET_BURST // 2 - 1):
                c.headers(sid, request_headers(c.port, UNARY), end_stream=False)
                c.rst(sid)
                sid += 2
            assert_serves(c, sid, echo=False)
            sid += 2
        assert not c.find(GOAWAY), c.summary()
    t.check_counter("h2_rapid_resets", 0)


def test_made_you_reset(t):
    """The client makes the gateway reset its streams (here: WINDOW_UPDATE overflowing each stream's window, a
    stream error FLOW_CONTROL_ERROR): counted as premature resets too, so it ends the same way."""
    def send(c):
        sid = 1
        for _ in range(50):                  # in rounds within max_concurrent_streams: each waits for its RSTs
            first = sid
            for _ in range(STREAMS // 2):
                c.send(frame(HEADERS, END_HEADERS, sid, c.block(request_headers(c.port, UNARY))) +
                       frame(WINDOW_UPDATE, 0, sid, struct.pack(">I", (1 << 31) - 1)))
                sid += 2
            if not c.wait(lambda: c.find(GOAWAY) or all(c.find(RST_STREAM, s) for s in range(first, sid, 2))):
                return
            if c.find(GOAWAY):
                return
    calm(t, send, "rapid reset", "h2_rapid_resets")


# --------------------------------------------------------------------------- floods

FLOODS = [
    ("PING", lambda c: c.send(frame(PING, 0, 0, b"12345678") * 3000), "PING flood"),
    ("WINDOW_UPDATE", lambda c: c.send(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1)) * 3000), "WINDOW_UPDATE flood"),
    ("PRIORITY", lambda c: c.send(b"".join(frame(PRIORITY, 0, 1 + 2 * (i % 50), struct.pack(">IB", 0, 16))
                                           for i in range(3000))), "PRIORITY flood"),
    ("empty-DATA", lambda c: (c.headers(1, request_headers(c.port, UNARY), end_stream=False),
                              c.send(frame(DATA, 0, 1, b"") * 3000)), "empty DATA frame flood"),
    ("RST_STREAM-of-closed-streams", lambda c: (assert_serves(c, 1, echo=False),
                                                c.send(frame(RST_STREAM, 0, 1, struct.pack(">I", 8)) * 3000)),
     "RST_STREAM flood"),
    ("PING-ACK", lambda c: c.send(frame(PING, 1, 0, b"12345678") * 3000), "PING ACK flood"),
]


@pytest.mark.parametrize("name,send,reason", FLOODS, ids=[f[0] for f in FLOODS])
def test_control_frame_flood(t, name, send, reason):
    """CVE-2019-9512/9518 and kin: 3000 frames that carry no request, read by a client that reads its ACKs →
    GOAWAY ENHANCE_YOUR_CALM once the control bucket (1000) is empty."""
    calm(t, send, reason, "h2_floods")
    served_after(t)


def test_settings_flood(t):
    """CVE-2019-9515: 3000 SETTINGS frames; nghttp2's queue of unsent ACKs (1000) or the control bucket ends it."""
    calm(t, lambda c: c.send(frame(SETTINGS, 0, 0) * 3000), "flood", "h2_floods")
    served_after(t)


def test_unread_acks(t):
    """A client that sends PINGs and does not read its ACKs: the connection ends with ENHANCE_YOUR_CALM (the
    control bucket, or nghttp2's queue of 1000 unsent ACKs, whichever comes first), so the ACKs the gateway
    holds are bounded; the GOAWAY comes after the ACKs already queued."""
    with settled(t) as c:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        for _ in range(40):                      # 40 × 100 PINGs, in small writes: the gateway answers each batch
            c.send(frame(PING, 0, 0, b"12345678") * 100)
        code, _, debug = c.goaway(timeout=10)
        assert code == ENHANCE_YOUR_CALM and "flood" in debug, (code, debug)
    t.check_counter("h2_floods")


def test_too_many_settings_entries(t):
    """nghttp2's max_settings (32 entries in one SETTINGS frame) → ENHANCE_YOUR_CALM, counted as a flood."""
    entries = [(0x100 + i, 1) for i in range(40)]
    calm(t, lambda c: c.send(frame(SETTINGS, 0, 0, settings_payload(entries))), "too many", "h2_floods")


def test_clients_control_frames_in_moderation(t):
    """A few hundred PINGs, WINDOW_UPDATEs and PRIORITY frames, as a live client sends over time: served."""
    with settled(t) as c:
        for i in range(300):
            c.ping(struct.pack(">Q", i))
            c.window_update(0, 1)
            c.priority(1001 + 2 * (i % 10), 0)
        assert_serves(c, 1, echo=False)
        c.wait(lambda: len(c.find(PING)) == 300, what="300 PING ACKs")
        assert not c.find(GOAWAY), c.summary()
    t.check_counter("h2_floods", 0)


# --------------------------------------------------------------------------- CONTINUATION


def test_continuation_flood(t):
    """CVE-2024-27316 class: a header block spread over ever more CONTINUATION frames → after 8 (nghttp2's
    max_continuations for a 16 KiB max_header_size), GOAWAY ENHANCE_YOUR_CALM."""
    def send(c):
        c.send(frame(HEADERS, 0, 1, c.block(request_headers(c.port, UNARY))))
        c.send(b"".join(frame(CONTINUATION, 0, 1, c.block([("x-c%d" % i, "v" * 10)])) for i in range(1000)))
    calm(t, send, "CONTINUATION flood: a header block in more than 8 CONTINUATION frames", "h2_continuation_floods")
    served_after(t)


def test_huge_header_block_within_the_frame_budget(t):
    """A 120 KiB header block in 8 CONTINUATION frames: over max_header_size, so 431 for that stream, while the
    gateway keeps only max_header_size of it; the connection serves on."""
    with settled(t) as c:
        block = c.block(request_headers(c.port, UNARY) + [("x-big%d" % i, "%05d" % i * 3000) for i in range(8)])
        chunks = [block[i:i + 16000] for i in range(0, len(block), 16000)]
        assert 1 < len(chunks) <= 9, len(chunks)
        c.send(frame(HEADERS, END_STREAM, 1, chunks[0]))
        for i, chunk in enumerate(chunks[1:]):
            c.send(frame(CONTINUATION, END_HEADERS if i == len(chunks) - 2 else 0, 1, chunk))
        status, _, body, _ = c.response(1)
        assert (status, body) == (431, b"request header fields too large\n")
        assert_serves(c, 3, echo=False)
    t.check_counter("headers_too_large")
    t.check_counter("h2_continuation_floods", 0)


def test_header_block_left_open(t):
    """A HEADERS frame without END_HEADERS and then nothing: after timeouts.header_read, GOAWAY
    ENHANCE_YOUR_CALM (the connection is not held forever)."""
    def send(c):
        c.send(frame(HEADERS, 0, 1, c.block(request_headers(c.port, UNARY))))
        time.sleep(HEADER_READ_S + 0.5)
    calm(t, send, "header block not completed within 1000 ms (timeouts.header_read)", "h2_header_timeouts")


def test_refused_stream_split_header_block_is_not_a_timeout(t):
    """A header block in two frames for a stream nghttp2 refuses (over the limit before the SETTINGS ACK): the
    block is consumed unseen, and the quiet connection afterwards is not taken for a block left open."""
    with settled(t, ack_settings=False) as c:
        for i in range(STREAMS):
            slow_request(c, 1 + 2 * i)
        sid = 1 + 2 * STREAMS
        block = c.block(request_headers(c.port, UNARY))
        c.send(frame(HEADERS, END_STREAM, sid, block[:4]) + frame(CONTINUATION, END_HEADERS, sid, block[4:]))
        assert c.rst_code(sid) == REFUSED_STREAM
        time.sleep(HEADER_READ_S + 0.7)
        c.data(1, unary_body("after"), end_stream=True)
        status, _, _, _ = c.response(1)
        assert status == 200 and not c.find(GOAWAY), c.summary()
    t.check_counter("h2_header_timeouts", 0)


# --------------------------------------------------------------------------- concurrency


def slow_request(c, sid):
    c.headers(sid, request_headers(c.port, UNARY), end_stream=False)   # the body never comes: the stream stays open


def test_streams_over_the_limit_before_settings_ack(t):
    """Before the client acknowledged SETTINGS_MAX_CONCURRENT_STREAMS, streams over it are refused with
    RST_STREAM REFUSED_STREAM (safe to retry); those within it are served."""
    with settled(t, ack_settings=False) as c:
        assert c.server_settings[MAX_CONCURRENT_STREAMS] == STREAMS
        for i in range(STREAMS + 2):
            slow_request(c, 1 + 2 * i)
        for sid in (1 + 2 * STREAMS, 3 + 2 * STREAMS):
            assert c.rst_code(sid) == REFUSED_STREAM, c.summary()
        c.data(1, unary_body("first"), end_stream=True)
        c.response(1)
        assert not c.find(GOAWAY), c.summary()
    t.check_counter("h2_streams_refused", 2)


def test_streams_over_the_acknowledged_limit(t):
    """Once the client acknowledged the limit, opening more is a connection error PROTOCOL_ERROR (RFC 9113
    §5.1.2 allows a stream error PROTOCOL_ERROR or REFUSED_STREAM; nghttp2 ends the connection, §5.4)."""
    def send(c):                     # settled() acknowledged the gateway's SETTINGS already
        for i in range(STREAMS + 1):
            slow_request(c, 1 + 2 * i)
    connection_error(t, PROTOCOL_ERROR, send, "max concurrent streams exceeded")
