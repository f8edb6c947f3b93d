"""Call and process lifecycle: deadlines, cancellation, upstream failures and timeouts, several
endpoints and connections, SIGTERM drain, memory bounds with slow readers, and the command line.

Every test checks the exact answer and, where the gateway keeps running, that it still serves a
normal call afterwards.
"""

import re
import signal
import socket
import subprocess
import threading
import time
import urllib.parse

import os

import pytest

import grpcweb

# Under ASan the allocator's quarantine and shadow memory dominate RSS: memory bounds are measured
# only in the plain build (the behaviour itself is still exercised).
SANITIZED = os.environ.get("PTC_SANITIZED") == "1"
from conftest import PYTHON, UPSTREAM_DIR, EchoServer, RssSampler, free_port, rss_kib
from echo_pb import EchoRequest, EchoResponse

UNARY = "/portico.test.Echo/Unary"
SERVER_STREAM = "/portico.test.Echo/ServerStream"
RESP_CT = "application/grpc-web+proto"


# --------------------------------------------------------------------------- helpers


def base_config(upstreams, routes=None, extra=""):
    """YAML for one worker on {listen_port}; `upstreams` is [(name, [port, ...], extra_yaml)],
    `routes` [(kind, value, upstream name)] with kind "path" or "prefix"."""
    out = ["workers: 1", "log_level: debug", "listeners: ['127.0.0.1:{listen_port}']", "upstreams:"]
    for name, ports, up_extra in upstreams:
        eps = ", ".join(f"'127.0.0.1:{p}'" for p in ports)
        out += [f"  - name: {name}", f"    endpoints: [{eps}]"]
        out += [f"    {line}" for line in up_extra.splitlines() if line.strip()]
    if routes:
        out.append("routes:")
        for kind, value, up in routes:
            out += [f"  - {kind}: {value}", f"    upstream: {up}"]
    return "\n".join(out) + "\n" + extra


def split_config(special_port, special_path, good_port, special_extra=""):
    """`special_path` goes to an upstream at special_port, everything else to good_port."""
    return base_config([("special", [special_port], special_extra), ("echo", [good_port], "")],
                       [("path", special_path, "special"), ("prefix", "/", "echo")])


def status_of(hdrs, trailers):
    code, msg = grpcweb.grpc_status(hdrs, trailers)
    return code, urllib.parse.unquote(msg)


def assert_serves(gw, message="still-serving"):
    status, hdrs, msgs, trailers = gw.call(UNARY, EchoRequest(message=message), timeout=10)
    assert status == 200, hdrs
    assert hdrs.get("content-type") == RESP_CT
    assert len(msgs) == 1 and EchoResponse.FromString(msgs[0]).message == message
    assert trailers is not None and trailers.get("grpc-status") == "0", trailers


def timed_call(gw, path, req, headers=(), timeout=15):
    t0 = time.monotonic()
    status, hdrs, msgs, trailers = gw.call(path, req, headers=headers, timeout=timeout)
    return time.monotonic() - t0, status, hdrs, msgs, trailers


class EchoServerWith(EchoServer):
    """An echo upstream with a fixed port and/or extra command-line flags."""

    def __init__(self, log_path, port=0, extra_args=()):
        self.log_path = log_path
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [PYTHON, str(UPSTREAM_DIR / "echo_server.py"), "--host", "127.0.0.1",
                 "--port", str(port)] + list(extra_args),
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log)
        self.pid = self.proc.pid
        self.port = self._read_port()
        self.address = f"127.0.0.1:{self.port}"
        self._channel = None


@pytest.fixture
def extra_servers(tmp_path):
    """Factory for additional private echo servers, stopped at teardown."""
    servers = []

    def start(port=0, extra_args=()):
        s = EchoServerWith(tmp_path / f"echo-extra-{len(servers)}.log", port, extra_args)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()


class BlackHole:
    """A TCP listener that accepts connections and never says a word."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.accepted = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                c, _ = self.sock.accept()
                self.accepted.append(c)
            except (socket.timeout, TimeoutError):
                continue
            except OSError:
                return

    def close(self):
        self._stop.set()
        self._thread.join(2)
        for c in self.accepted:
            c.close()
        self.sock.close()


@pytest.fixture
def black_hole():
    bh = BlackHole()
    yield bh
    bh.close()


# --------------------------------------------------------------------------- deadlines


def test_deadline_exceeded_cancels_upstream(portico, echo_server):
    gw = portico()
    elapsed, status, hdrs, msgs, trailers = timed_call(
        gw, UNARY, EchoRequest(message="late", delay_ms=5000, id="deadline-1"),
        headers=[("grpc-timeout", "200m")])
    assert status == 200 and hdrs.get("content-type") == RESP_CT
    code, message = status_of(hdrs, trailers)
    assert code == 4, (hdrs, trailers)
    assert "deadline" in message.lower(), message
    assert msgs == []
    assert 0.19 <= elapsed <= 2.0, elapsed
    info = echo_server.wait_cancel_status("deadline-1")
    assert info.seen and info.cancelled and not info.finished, info
    assert_serves(gw)


def test_deadline_forwarded_and_met(portico):
    """A deadline that is not hit changes nothing."""
    gw = portico()
    elapsed, status, hdrs, msgs, trailers = timed_call(
        gw, UNARY, EchoRequest(message="in-time", delay_ms=100), headers=[("grpc-timeout", "5S")])
    assert status_of(hdrs, trailers) == (0, "")
    assert EchoResponse.FromString(msgs[0]).message == "in-time"


@pytest.mark.parametrize("value", ["abc", "10", "m", "-5m", "1.5S", "10x", "1 0m"])
def test_malformed_grpc_timeout(portico, echo_server, value):
    gw = portico()
    call_id = f"bad-timeout-{value}"
    status, hdrs, msgs, trailers = gw.call(UNARY, EchoRequest(message="x", id=call_id),
                                           headers=[("grpc-timeout", value)])
    assert status == 200 and hdrs.get("content-type") == RESP_CT
    assert trailers is None, "expected a trailers-only answer"
    code, message = status_of(hdrs, trailers)
    assert code == 3, hdrs
    assert "grpc-timeout" in message and value in message, message
    assert not echo_server.cancel_status(call_id).seen, "the call reached the upstream"
    assert_serves(gw)


@pytest.mark.parametrize("value", ["123456789012m", "99999999999999999999999S", "999999999H"])
def test_long_grpc_timeout_accepted(portico, value):
    gw = portico()
    status, hdrs, msgs, trailers = gw.call(UNARY, EchoRequest(message="long-deadline"),
                                           headers=[("grpc-timeout", value)])
    assert status_of(hdrs, trailers) == (0, ""), (hdrs, trailers)
    assert EchoResponse.FromString(msgs[0]).message == "long-deadline"
    assert_serves(gw)


def test_max_grpc_timeout_clamps(portico, echo_server):
    gw = portico(config=base_config([("echo", ["{upstream_port}"], "")],
                                    extra="timeouts: {max_grpc_timeout: 300ms}\n"))
    elapsed, status, hdrs, msgs, trailers = timed_call(
        gw, UNARY, EchoRequest(message="clamped", delay_ms=3000, id="clamp-1"),
        headers=[("grpc-timeout", "100S")])
    code, message = status_of(hdrs, trailers)
    assert code == 4, (hdrs, trailers)
    assert 0.29 <= elapsed <= 1.5, elapsed
    assert echo_server.wait_cancel_status("clamp-1").cancelled
    assert_serves(gw)


def test_default_grpc_timeout_applies(portico, echo_server):
    gw = portico(config=base_config([("echo", ["{upstream_port}"], "")],
                                    extra="timeouts: {default_grpc_timeout: 300ms}\n"))
    elapsed, status, hdrs, msgs, trailers = timed_call(
        gw, UNARY, EchoRequest(message="defaulted", delay_ms=3000, id="default-1"))
    assert status_of(hdrs, trailers)[0] == 4, (hdrs, trailers)
    assert 0.29 <= elapsed <= 1.5, elapsed
    assert echo_server.wait_cancel_status("default-1").cancelled
    # an explicit shorter deadline still wins
    elapsed, status, hdrs, msgs, trailers = timed_call(
        gw, UNARY, EchoRequest(delay_ms=3000), headers=[("grpc-timeout", "100m")])
    assert status_of(hdrs, trailers)[0] == 4 and elapsed < 0.29 + 0.5, elapsed
    assert_serves(gw)


def test_deadline_on_server_stream_after_messages(portico, echo_server):
    """A deadline that fires mid-stream ends the body with a trailer frame (status 4)."""
    gw = portico()
    with gw.connect() as conn:
        conn.request("POST", SERVER_STREAM, grpcweb.request_headers(extra=[("grpc-timeout", "500m")]),
                     grpcweb.frame(EchoRequest(count=100, interval_ms=50, id="stream-deadline")))
        head = conn.read_head()
        assert head.status == 200
        frames = list(grpcweb.FrameReader(conn))
        assert conn._body["done"], "chunked body not terminated"
        data = [p for f, p in frames if not f & 0x80]
        assert 3 <= len(data) < 100, len(data)
        assert frames[-1][0] == 0x80
        trailers = grpcweb.parse_trailer_block(frames[-1][1])
        assert trailers["grpc-status"] == "4", trailers
        # keep-alive survives
        status, _, msgs, tr = grpcweb.call(gw.port, UNARY, EchoRequest(message="ka"), conn=conn)
        assert tr["grpc-status"] == "0"
    assert echo_server.wait_cancel_status("stream-deadline").cancelled
    assert_serves(gw)


# --------------------------------------------------------------------------- cancellation


def test_client_close_cancels_upstream(portico, echo_server):
    gw = portico()
    conn = gw.connect()
    try:
        conn.request("POST", SERVER_STREAM, grpcweb.request_headers(),
                     grpcweb.frame(EchoRequest(message="m", count=1000, interval_ms=50,
                                               id="cancel-1")))
        head = conn.read_head()
        assert head.status == 200 and head.get("content-type") == RESP_CT
        flags, payload = grpcweb.FrameReader(conn).next_frame()
        assert flags == 0 and EchoResponse.FromString(payload).index == 0
    finally:
        conn.close()
    t0 = time.monotonic()
    info = echo_server.wait_cancel_status("cancel-1", timeout=5)
    assert info.seen and info.cancelled and not info.finished, info
    assert time.monotonic() - t0 < 5
    assert gw.wait_log(r"call /portico\.test\.Echo/ServerStream from .*: client went away"), \
        "no 'client went away' log line"
    assert_serves(gw)


def test_client_close_before_response_cancels_upstream(portico, echo_server):
    """Closing while a unary call waits for its (delayed) answer also cancels upstream."""
    gw = portico()
    conn = gw.connect()
    conn.request("POST", UNARY, grpcweb.request_headers(),
                 grpcweb.frame(EchoRequest(delay_ms=5000, id="cancel-2")))
    assert echo_server.wait_cancel_status("cancel-2", field="seen").seen
    conn.close()
    info = echo_server.wait_cancel_status("cancel-2", timeout=5)
    assert info.cancelled and not info.finished, info
    assert gw.wait_log(r"client went away")
    assert_serves(gw)


# --------------------------------------------------------------------------- upstream failures


def test_upstream_down_then_up(portico, extra_servers, tmp_path):
    port = free_port()
    gw = portico(upstream=port)
    elapsed, status, hdrs, msgs, trailers = timed_call(gw, UNARY, EchoRequest(message="x"))
    assert status == 200 and hdrs.get("content-type") == RESP_CT
    assert trailers is None and msgs == []
    code, message = status_of(hdrs, trailers)
    assert code == 14, hdrs
    assert "connection refused" in message.lower(), message
    assert f"127.0.0.1:{port}" in message, message
    assert elapsed < 2.0, elapsed
    # a second call while backing off is answered at once too
    elapsed, status, hdrs, msgs, trailers = timed_call(gw, UNARY, EchoRequest(message="x"))
    assert status_of(hdrs, trailers)[0] == 14 and elapsed < 2.0
    # the upstream appears: calls succeed again once the backoff allows a new attempt
    extra_servers(port=port)
    deadline = time.monotonic() + 10
    while True:
        status, hdrs, msgs, trailers = gw.call(UNARY, EchoRequest(message="back"))
        code, message = status_of(hdrs, trailers)
        if code == 0:
            break
        assert code == 14, (hdrs, trailers)
        assert time.monotonic() < deadline, f"still failing after 10 s: {message}"
        time.sleep(0.1)
    assert EchoResponse.FromString(msgs[0]).message == "back"
    assert_serves(gw)


def test_upstream_killed_mid_stream(portico, fresh_echo_server, echo_server):
    cfg = split_config(fresh_echo_server.port, SERVER_STREAM, "{upstream_port}")
    gw = portico(config=cfg, upstream=echo_server)
    with gw.connect() as conn:
        conn.request("POST", SERVER_STREAM, grpcweb.request_headers(),
                     grpcweb.frame(EchoRequest(message="s", count=100, interval_ms=50)))
        head = conn.read_head()
        assert head.status == 200 and head.get("transfer-encoding") == "chunked"
        reader = grpcweb.FrameReader(conn)
        for i in range(2):
            flags, payload = reader.next_frame()
            assert flags == 0 and EchoResponse.FromString(payload).index == i
        fresh_echo_server.kill()
        rest = []
        while True:
            f = reader.next_frame(timeout=5)        # ValueError if the body ends inside a frame
            if f is None:
                break
            rest.append(f)
        assert conn._body["done"], "the chunked body was not terminated with 0\\r\\n\\r\\n"
        assert rest and rest[-1][0] == 0x80, "no trailer frame at the end"
        assert all(f == 0 for f, _ in rest[:-1])
        trailers = grpcweb.parse_trailer_block(rest[-1][1])
        assert trailers["grpc-status"] == "14", trailers
        assert "upstream" in urllib.parse.unquote(trailers.get("grpc-message", "")), trailers
        # the downstream connection is still usable
        status, _, msgs, tr = grpcweb.call(gw.port, UNARY, EchoRequest(message="ka"), conn=conn)
        assert tr["grpc-status"] == "0" and EchoResponse.FromString(msgs[0]).message == "ka"
    assert_serves(gw)


def test_connect_timeout(portico, black_hole, echo_server):
    cfg = split_config(black_hole.port, UNARY, "{upstream_port}",
                       special_extra="connect_timeout: 500ms")
    gw = portico(config=cfg, upstream=echo_server)
    elapsed, status, hdrs, msgs, trailers = timed_call(gw, UNARY, EchoRequest(message="x"))
    assert status == 200 and trailers is None
    code, message = status_of(hdrs, trailers)
    assert code == 14, hdrs
    assert "connect_timeout" in message and "500 ms" in message, message
    assert 0.45 <= elapsed <= 2.0, elapsed
    assert black_hole.accepted, "the gateway never connected"
    # other routes are unaffected
    status, hdrs, msgs, trailers = gw.call(SERVER_STREAM, EchoRequest(message="ok", count=2))
    assert status_of(hdrs, trailers) == (0, "") and len(msgs) == 2


def _who_saw(servers, call_id):
    return [i for i, s in enumerate(servers) if s.cancel_status(call_id).seen]


def test_two_endpoints_spread(portico, echo_server, fresh_echo_server):
    servers = [echo_server, fresh_echo_server]
    gw = portico(config=base_config([("echo", [s.port for s in servers], "")]))
    seen = []
    for i in range(10):
        cid = f"spread-{i}"
        status, hdrs, msgs, trailers = gw.call(UNARY, EchoRequest(message=cid, id=cid))
        assert status_of(hdrs, trailers) == (0, "")
        who = _who_saw(servers, cid)
        assert len(who) == 1, who
        seen += who
    assert set(seen) == {0, 1}, f"all 10 calls went to endpoint(s) {sorted(set(seen))}"
    assert_serves(gw)


def test_two_endpoints_spread_concurrent(portico, echo_server, fresh_echo_server):
    servers = [echo_server, fresh_echo_server]
    gw = portico(config=base_config([("echo", [s.port for s in servers], "")]))
    results = {}
    # The first call opens a connection to every endpoint; calls go to the ready ones (as gRPC's
    # round_robin does), so once both are up, concurrent calls spread over both.
    status, hdrs, msgs, trailers = gw.call(UNARY, EchoRequest(id="spread-c-warmup"))
    assert status_of(hdrs, trailers) == (0, "")
    for s in servers:
        assert gw.wait_log(rf"connected to 127\.0\.0\.1:{s.port}")

    def one(i):
        cid = f"spread-c-{i}"
        status, hdrs, msgs, trailers = gw.call(UNARY, EchoRequest(id=cid, delay_ms=300))
        results[cid] = status_of(hdrs, trailers)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    assert all(v == (0, "") for v in results.values()) and len(results) == 8, results
    seen = {i for cid in results for i in _who_saw(servers, cid)}
    assert seen == {0, 1}, f"all 8 concurrent calls went to endpoint(s) {sorted(seen)}"


def test_two_endpoints_capped_streams_use_both(portico, extra_servers):
    """With one stream per connection, the second concurrent call opens a connection to the
    next endpoint (round robin over endpoints when connections are opened)."""
    servers = [extra_servers(extra_args=["--max-concurrent-streams", "1"]) for _ in range(2)]
    gw = portico(config=base_config([("echo", [s.port for s in servers], "max_connections: 2")]))
    results = {}

    def one(i):
        cid = f"capped-{i}"
        status, hdrs, msgs, trailers = gw.call(UNARY, EchoRequest(id=cid, delay_ms=300))
        results[cid] = status_of(hdrs, trailers)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    assert results == {"capped-0": (0, ""), "capped-1": (0, "")}, results
    assert sorted(i for cid in results for i in _who_saw(servers, cid)) == [0, 1]
    assert_serves(gw)


@pytest.mark.parametrize("dead_first", [True, False])
def test_one_endpoint_down(portico, echo_server, dead_first):
    dead = free_port()
    ports = [dead, echo_server.port] if dead_first else [echo_server.port, dead]
    gw = portico(config=base_config([("echo", ports, "")]))
    for i in range(6):
        cid = f"one-down-{dead_first}-{i}"
        elapsed, status, hdrs, msgs, trailers = timed_call(gw, UNARY, EchoRequest(message=cid, id=cid))
        assert status_of(hdrs, trailers) == (0, ""), (hdrs, trailers)
        assert EchoResponse.FromString(msgs[0]).message == cid
        assert elapsed < 2.0
        assert echo_server.cancel_status(cid).seen


def test_max_concurrent_streams_uses_more_connections(portico, extra_servers):
    server = extra_servers(extra_args=["--max-concurrent-streams", "1"])
    gw = portico(config=base_config([("echo", [server.port], "max_connections: 4")]))
    assert_serves(gw, "warm-up")        # one connection is up; the others are opened on demand
    results = {}

    def one(i):
        status, hdrs, msgs, trailers = gw.call(UNARY, EchoRequest(message=f"c{i}", delay_ms=500))
        results[i] = (status_of(hdrs, trailers), EchoResponse.FromString(msgs[0]).message
                      if msgs else None)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    elapsed = time.monotonic() - t0
    assert results == {i: ((0, ""), f"c{i}") for i in range(4)}, results
    assert elapsed < 1.4, f"4 calls of 500 ms took {elapsed:.2f} s: not spread over connections"
    connects = re.findall(r"upstream echo: connected to", gw.log_text())
    assert len(connects) == 4, gw.log_text()


def test_max_concurrent_streams_queues_beyond_max_connections(portico, extra_servers):
    """With max_connections 2 and 1 stream each, 4 calls of 300 ms take two rounds, all succeed."""
    server = extra_servers(extra_args=["--max-concurrent-streams", "1"])
    gw = portico(config=base_config([("echo", [server.port], "max_connections: 2")]))
    results = {}

    def one(i):
        status, hdrs, msgs, trailers = gw.call(UNARY, EchoRequest(message=f"q{i}", delay_ms=300))
        results[i] = status_of(hdrs, trailers)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    elapsed = time.monotonic() - t0
    assert results == {i: (0, "") for i in range(4)}, results
    assert 0.55 <= elapsed < 2.0, elapsed
    assert_serves(gw)


# --------------------------------------------------------------------------- SIGTERM drain


def _refuses_connections(port, timeout=3.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        except ConnectionRefusedError:
            return True
        except OSError:
            pass
        time.sleep(0.02)
    return False


def test_sigterm_drains_call_in_flight(portico, echo_server):
    gw = portico()
    with gw.connect() as conn:
        conn.request("POST", UNARY, grpcweb.request_headers(),
                     grpcweb.frame(EchoRequest(message="drain", delay_ms=1000, id="drain-1")))
        assert echo_server.wait_cancel_status("drain-1", field="seen").seen
        t0 = time.monotonic()
        gw.signal(signal.SIGTERM)
        assert _refuses_connections(gw.port), "new connections still accepted after SIGTERM"
        head, body = conn.response(timeout=5)
        assert head.status == 200
        frames, trailers = grpcweb.parse_body(body)
        assert trailers is not None and trailers["grpc-status"] == "0", trailers
        assert EchoResponse.FromString(grpcweb.messages_of(frames)[0]).message == "drain"
        assert conn.wait_closed(5), "connection not closed after the drained call"
    assert gw.proc.wait(10) == 0
    assert time.monotonic() - t0 < 5
    assert echo_server.cancel_status("drain-1").finished
    assert re.search(r"SIGTERM: draining", gw.log_text())


def test_sigterm_closes_idle_connections_at_once(portico):
    gw = portico()
    conn = gw.connect()
    status, _, _, trailers = grpcweb.call(gw.port, UNARY, EchoRequest(message="x"), conn=conn)
    assert trailers["grpc-status"] == "0"
    t0 = time.monotonic()
    gw.signal(signal.SIGTERM)
    assert conn.wait_closed(3), "idle keep-alive connection kept open while draining"
    conn.close()
    assert gw.proc.wait(5) == 0
    assert time.monotonic() - t0 < 2


def test_sigterm_drain_timeout_cuts_long_call(portico, echo_server):
    gw = portico(config=base_config([("echo", ["{upstream_port}"], "")],
                                    extra="timeouts: {drain: 500ms}\n"))
    with gw.connect() as conn:
        conn.request("POST", UNARY, grpcweb.request_headers(),
                     grpcweb.frame(EchoRequest(message="cut", delay_ms=5000, id="drain-cut")))
        assert echo_server.wait_cancel_status("drain-cut", field="seen").seen
        t0 = time.monotonic()
        gw.signal(signal.SIGTERM)
        assert gw.proc.wait(5) == 0
        elapsed = time.monotonic() - t0
        assert 0.45 <= elapsed <= 2.0, elapsed
        # the call did not complete normally
        head = conn.read_head(timeout=5)
        assert head.status == 200
        try:
            body = conn.read_body(timeout=5)
        except grpcweb.ConnectionClosed:
            body = None
        if body is not None:
            frames, trailers = grpcweb.parse_body(body)
            assert trailers is None or trailers.get("grpc-status") != "0", trailers
    assert echo_server.wait_cancel_status("drain-cut").cancelled
    assert re.search(r"drain timeout", gw.log_text())


def test_sigterm_drain_timeout_ends_call_with_status(portico, echo_server):
    """A call cut by the drain timeout still gets a well-formed gRPC-Web end: a trailer frame with
    a non-zero grpc-status and a terminated chunked body (never a truncated body)."""
    gw = portico(config=base_config([("echo", ["{upstream_port}"], "")],
                                    extra="timeouts: {drain: 500ms}\n"))
    with gw.connect() as conn:
        conn.request("POST", SERVER_STREAM, grpcweb.request_headers(),
                     grpcweb.frame(EchoRequest(message="s", count=1000, interval_ms=50)))
        assert conn.read_head().status == 200
        reader = grpcweb.FrameReader(conn)
        assert reader.next_frame()[0] == 0
        gw.signal(signal.SIGTERM)
        frames = []
        while True:
            f = reader.next_frame(timeout=5)
            if f is None:
                break
            frames.append(f)
        assert conn._body["done"], "chunked body not terminated"
        assert frames and frames[-1][0] == 0x80, "no trailer frame"
        trailers = grpcweb.parse_trailer_block(frames[-1][1])
        assert trailers["grpc-status"] not in ("0", None), trailers
    assert gw.proc.wait(5) == 0


# --------------------------------------------------------------------------- memory bounds


def _small_rcvbuf_connection(port, rcvbuf=4096):
    conn = grpcweb.HttpConnection.__new__(grpcweb.HttpConnection)
    conn.host, conn.port, conn.timeout = "127.0.0.1", port, 30
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.connect(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn.sock, conn.buf, conn._body, conn._method = s, bytearray(), None, None
    return conn


def test_slow_reader_memory_bound(portico, echo_server):
    gw = portico()
    assert_serves(gw, "warm-up")
    baseline = rss_kib(gw.pid)
    conn = _small_rcvbuf_connection(gw.port)
    try:
        conn.request("POST", SERVER_STREAM, grpcweb.request_headers(),
                     grpcweb.frame(EchoRequest(count=400, size=65536, id="slow-reader")))
        sampler = RssSampler(gw.pid)
        time.sleep(3.0)                        # the point of the test: read nothing for 3 s
        peak_stalled = sampler.stop()
        growth_mib = (peak_stalled - baseline) / 1024
        print(f"slow reader: baseline {baseline} KiB, peak while stalled {peak_stalled} KiB")
        assert SANITIZED or growth_mib < 10, f"RSS grew by {growth_mib:.1f} MiB while the client did not read"
        assert not echo_server.cancel_status("slow-reader").finished, \
            "upstream finished 26 MB although the client read nothing"
        head = conn.read_head()
        assert head.status == 200
        frames = list(grpcweb.FrameReader(conn))
        data = [EchoResponse.FromString(p) for f, p in frames if not f & 0x80]
        assert [m.index for m in data] == list(range(400))
        assert all(len(m.payload) == 65536 for m in data)
        assert frames[-1][0] == 0x80
        assert grpcweb.parse_trailer_block(frames[-1][1])["grpc-status"] == "0"
    finally:
        conn.close()
    assert_serves(gw)


def test_concurrent_large_unary_memory(portico):
    gw = portico()
    assert_serves(gw, "warm-up")
    baseline = rss_kib(gw.pid)
    payload = bytes(range(256)) * (14 * 1024)          # 3.5 MiB
    results = {}

    def one(i):
        try:
            status, hdrs, msgs, trailers = gw.call(UNARY, EchoRequest(id=f"big-{i}", payload=payload),
                                                   timeout=60)
            ok = status_of(hdrs, trailers) == (0, "") and len(msgs) == 1 and \
                EchoResponse.FromString(msgs[0]).payload == payload
            results[i] = ok or status_of(hdrs, trailers)
        except Exception as exc:     # noqa: BLE001 - reported below
            results[i] = repr(exc)

    sampler = RssSampler(gw.pid)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    peak = sampler.stop()
    assert results == {i: True for i in range(20)}, results
    growth_mib = (peak - baseline) / 1024
    print(f"20 large calls: baseline {baseline} KiB, peak {peak} KiB")
    assert SANITIZED or growth_mib < 60, f"RSS grew by {growth_mib:.1f} MiB for 20 x 3.5 MiB calls"
    assert_serves(gw)


# --------------------------------------------------------------------------- command line


def _run(binary, *args, timeout=10):
    return subprocess.run([str(binary)] + [str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture
def binary():
    from conftest import _portico_binary
    path = _portico_binary()
    if not path.exists():
        pytest.fail(f"portico binary not found at {path}", pytrace=False)
    return path


def test_cli_version(binary):
    r = _run(binary, "--version")
    assert r.returncode == 0
    assert re.fullmatch(r"portico \d+\.\d+\.\d+\n", r.stdout), r.stdout
    assert r.stderr == ""


def test_cli_help(binary):
    r = _run(binary, "--help")
    assert r.returncode == 0
    assert r.stdout.startswith("usage: portico")
    for flag in ["--config", "--check-config", "--listen", "--upstream", "--workers",
                 "--log-level", "--version", "--help"]:
        assert flag in r.stdout
    assert r.stderr == ""


@pytest.mark.parametrize("args, message", [
    (["--bogus"], "portico: unknown option '--bogus'"),
    (["--workers"], "portico: option '--workers' needs a value"),
    (["--workers", "abc"], "portico: --workers 'abc': expected a number"),
    (["--listen", "nope"], "portico: --listen 'nope': expected HOST:PORT"),
    (["--upstream", "1.2.3.4:0"], "portico: --upstream '1.2.3.4:0': expected HOST:PORT"),
    (["stray"], "portico: unexpected argument 'stray'"),
])
def test_cli_bad_flags(binary, args, message):
    r = _run(binary, *args)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert r.stderr.startswith(message), r.stderr
    assert r.stdout == ""


def test_cli_bad_log_level(binary):
    r = _run(binary, "--log-level", "loud", "--check-config")
    assert r.returncode != 0
    assert "--log-level 'loud'" in r.stderr


def test_cli_check_config_good(binary, tmp_path):
    cfg = tmp_path / "good.yaml"
    cfg.write_text(base_config([("echo", [50051], "connect_timeout: 500ms\nbackoff: {initial: 50ms, max: 1s}")],
                               extra="limits: {max_header_size: 8KiB}\ntimeouts: {idle: 30s}\n")
                   .replace("{listen_port}", "18080"))
    r = _run(binary, "--check-config", "--config", cfg)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"portico: configuration {cfg} is valid\n"


@pytest.mark.parametrize("text, line, key, what", [
    ("workers: 1\nlimits:\n  bogus: 3\n", 3, "limits.bogus", "unknown key"),
    ("workers: 1\ntimeouts:\n  idle: 5 parsecs\n", 3, "timeouts.idle", "invalid duration"),
    ("timeouts: {header_read: 1.5ms}\n", 1, "timeouts.header_read", "invalid duration"),
    ("limits:\n  max_header_size: lots\n", 2, "limits.max_header_size", ""),
    ("upstreams:\n  - name: a\n    endpoints: ['127.0.0.1:0']\n", 3, "upstreams[0].endpoints[0]",
     "invalid address"),
    ("workers: 1\nworkers: 2\n", 2, "workers", ""),
])
def test_cli_bad_config(binary, tmp_path, text, line, key, what):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    for extra in (["--check-config"], ["--listen", f"127.0.0.1:{free_port()}"]):
        r = _run(binary, "--config", cfg, *extra)
        assert r.returncode == 1, (r.returncode, r.stderr)
        assert r.stderr.startswith(f"portico: {cfg}:{line}: {key}: {what}"), r.stderr
        assert r.stderr.count("\n") == 1, r.stderr


def test_cli_missing_config_file(binary, tmp_path):
    r = _run(binary, "--check-config", "--config", tmp_path / "absent.yaml")
    assert r.returncode == 1
    assert r.stderr == f"portico: {tmp_path / 'absent.yaml'}: cannot open: No such file or directory\n"


def test_cli_flags_without_config(portico):
    """The fixture's plain CLI path: --listen/--upstream/--workers/--log-level, no config file."""
    gw = portico()
    assert "--config" not in gw.args
    assert gw.wait_log(r"listening on 127\.0\.0\.1:%d \(1 workers\)" % gw.port)
    assert_serves(gw)
