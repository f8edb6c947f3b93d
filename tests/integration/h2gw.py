"""Gateways and checks shared by test_h2_conformance.py and test_h2_limits.py.

Gateways: one gateway per transport (h2c: cleartext prior knowledge; tls: ALPN h2) for a whole module, each
with the admin API so that the refusal counters (/status "limits") can be read. Target: one transport of
them as a test sees it. CountingUpstream: an HTTP/2 upstream that counts the streams the gateway opens.
"""

import json
import re
import socket
import sys
import threading
import time
import urllib.request

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import pytest

import grpcweb
from certs import TestPKI
from conftest import Portico, _portico_binary, free_port
from echo_pb import EchoRequest, EchoResponse
from h2raw import CODE_NAMES, GOAWAY, RST_STREAM, RawH2, request_headers, tls_context

UNARY = "/portico.test.Echo/Unary"


class Gateways:
    """One gateway per transport, `extra` YAML appended to each configuration ({upstream_port} substituted)."""

    def __init__(self, tmp, upstream_port, extra="", workers=1):
        self.pki = TestPKI(tmp / "pki")
        cert = self.pki.issue("server", "localhost", dns=["localhost"], ips=["127.0.0.1"])
        self.gw, self.admin = {}, {}
        for transport in ("h2c", "tls"):
            port, admin = free_port(), free_port()
            tls = f"\n    tls: {{cert: {cert.cert}, key: {cert.key}}}" if transport == "tls" else ""
            cfg = tmp / f"portico-{transport}.yaml"
            cfg.write_text(f"workers: {workers}\nlog_level: debug\nlisteners:\n  - address: 127.0.0.1:{port}{tls}\n"
                           f"admin: {{address: '127.0.0.1:{admin}'}}\n"
                           f"upstreams:\n  - name: echo\n    endpoints: ['127.0.0.1:{upstream_port}']\n" + extra)
            self.gw[transport] = Portico(_portico_binary(), ["--config", str(cfg)], port, tmp / f"portico-{transport}.log")
            self.admin[transport] = admin

    def stop(self):
        problems = []
        for name, gw in self.gw.items():
            code = gw.stop()
            if code != 0:
                problems.append(f"{name} gateway exited {code}")
            bad = gw.sanitizer_lines()
            if bad:
                problems.append(f"{name} gateway sanitizer report:\n  " + "\n  ".join(bad[:20]))
        return problems


def gateways_fixture(make):
    """A module fixture from make(tmp_path_factory, request) → Gateways; failing at teardown on a bad exit."""
    @pytest.fixture(scope="module")
    def fixture(tmp_path_factory, request):
        g = make(tmp_path_factory, request)
        yield g
        problems = g.stop()
        if problems:
            pytest.fail("\n".join(problems), pytrace=False)
    return fixture


class Target:
    """One transport of a module's gateways: raw connections, the limit counters, the log since the test began."""

    def __init__(self, gateways, transport, request):
        self.transport, self.gw = transport, gateways.gw[transport]
        self.port, self.admin_port = self.gw.port, gateways.admin[transport]
        self.ctx = tls_context() if transport == "tls" else None
        self.log_start = len(self.gw.log_text())
        request.node.__dict__.setdefault("_ptc_logs", []).append((f"portico-{transport}", self.gw))
        self.before = self.limits()

    def connect(self, **kw):
        return RawH2(self.port, ctx=self.ctx, **kw)

    def admin_get(self, path):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}", timeout=10) as resp:
            return resp.read()

    def limits(self):
        return json.loads(self.admin_get("/status"))["limits"]

    def log(self):
        return self.gw.log_text()[self.log_start:]

    def upstreams(self):
        """The admin API's /upstreams, as text (for a failing test's message)."""
        try:
            return self.admin_get("/upstreams").decode()
        except Exception as e:  # noqa: BLE001 - a failing test's message must not be replaced by this one
            return f"GET /upstreams failed: {e!r}"

    def upstream_lines(self, n=20):
        """The gateway's last n log lines about its upstream connections (from the whole log, not only this test's)."""
        return "\n".join([ln for ln in self.gw.log_text().splitlines() if "] upstream " in ln][-n:])

    def wait_log(self, pattern, timeout=5.0):
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.log()):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def check_counter(self, name, n=1):
        """The counter `name` went up by exactly n since the test began (polled briefly)."""
        deadline = time.monotonic() + 2
        while True:
            now = self.limits()
            if now[name] - self.before[name] == n:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} went up by {now[name] - self.before[name]}, expected {n}: {now}")
            time.sleep(0.05)


def target_fixture(gateways_name):
    @pytest.fixture(params=["h2c", "tls"])
    def fixture(request):
        target = Target(request.getfixturevalue(gateways_name), request.param, request)
        yield target
        assert target.gw.running(), f"{target.transport} gateway died"
    return fixture


def unary_body(message, **kw):
    return grpcweb.frame(EchoRequest(message=message, **kw))


def assert_serves(c, sid, message="still-serving", echo=True):
    """A gRPC-Web call on stream `sid` of raw connection `c` succeeds (echo: the message comes back)."""
    c.headers(sid, request_headers(c.port, UNARY), end_stream=False)
    c.data(sid, unary_body(message), end_stream=True)
    status, hdrs, body, _ = c.response(sid)
    assert status == 200, (status, hdrs, body)
    frames, trailers = grpcweb.parse_body(body)
    if echo:
        msgs = grpcweb.messages_of(frames)
        assert [EchoResponse.FromString(m).message for m in msgs] == [message], msgs
    assert (trailers or hdrs)["grpc-status"] == "0", (hdrs, trailers)


def settled(t, **kw):
    """A connection that has the gateway's SETTINGS (and acknowledged them unless ack_settings=False)."""
    c = t.connect(**kw)
    c.wait(lambda: c.server_settings is not None, what="the gateway's SETTINGS")
    return c


def connection_error(t, code, send, reason=None, counter="h2_connection_errors", settle=True, **kw):
    """Runs send(c) on a new connection (kw: RawH2's): GOAWAY `code` (its debug text containing `reason`), then
    the close; the counter went up by one and the log names the code. Returns the debug text."""
    c = settled(t, **kw) if settle else t.connect(**kw)
    with c:
        send(c)
        got, _, debug = c.goaway()
        assert got == code, f"GOAWAY {CODE_NAMES.get(got, got)} ({debug!r}), expected {CODE_NAMES[code]}; {c.summary()}"
        if reason is not None:
            assert reason in debug, debug
        assert c.wait_closed(6), "connection not closed after the error GOAWAY"
    t.check_counter(counter)
    assert t.wait_log(r"GOAWAY %s" % CODE_NAMES[code]), t.log()[-2000:]
    return debug


def stream_error(t, sid, code, send, counter="h2_stream_errors", no_call=False):
    """Runs send(c): RST_STREAM `code` on `sid`, then a call on the same connection succeeds; counted and logged.
    no_call: the gateway started no call for that connection's refused stream."""
    with settled(t) as c:
        send(c)
        got = c.rst_code(sid)
        assert got == code, f"RST_STREAM {CODE_NAMES.get(got, got)}, expected {CODE_NAMES[code]}; {c.summary()}"
        peer = "127.0.0.1:%d" % c.sock.getsockname()[1]
        if no_call:
            assert not re.search(r"call \S+ from %s .*starting" % re.escape(peer), t.log()), "a call started"
        assert_serves(c, sid + 2)
        assert not c.find(GOAWAY), c.summary()
    t.check_counter(counter)
    assert t.wait_log(r"stream %d: RST_STREAM %s" % (sid, CODE_NAMES[code])), t.log()[-2000:]


def ignored(t, send):
    """Runs send(c): nothing is refused and the connection serves a call."""
    with settled(t) as c:
        send(c)
        assert_serves(c, 1)
        assert not c.find(GOAWAY) and not c.find(RST_STREAM), c.summary()
    t.check_counter("h2_connection_errors", 0)
    t.check_counter("h2_stream_errors", 0)


class CountingUpstream:
    """An HTTP/2 (h2c) upstream counting the streams opened on it; each request that ends gets an empty gRPC
    answer (Trailers-Only, grpc-status 0). `.requests` is the count; `.heads` has, per request, its header fields
    as hpack decoded them (NeverIndexedHeaderTuple for a literal never indexed) and the names in the connection's
    HPACK dynamic table once it was decoded."""

    def __init__(self):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.requests = 0
        self.heads = []
        self.lock = threading.Lock()
        self.stopping = False
        self.socks = []
        self.errors = []             # why it stopped accepting, or stopped serving a connection
        threading.Thread(target=self._accept, daemon=True).start()

    def _failed(self, what):
        """Said, not swallowed: a connection this upstream stopped serving leaves the gateway's calls unseen."""
        if not self.stopping:
            self.errors.append(what)
            print(f"CountingUpstream: {what}", file=sys.stderr, flush=True)

    def _accept(self):
        while not self.stopping:
            try:
                sock, _ = self.listener.accept()
            except OSError as e:
                self._failed(f"stopped accepting: {e!r}")
                return
            with self.lock:
                if self.stopping:  # accepted while stop() ran: not in the list it shut down
                    sock.close()
                    return
                self.socks.append(sock)
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def describe(self):
        """What a failing test says about this upstream."""
        return (f"CountingUpstream on port {self.port}: {len(self.socks)} connection(s) accepted, {self.requests} "
                f"request(s) seen, errors: {self.errors or 'none'}")

    def _serve(self, sock):
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.local_settings.max_concurrent_streams = 10000
        conn.initiate_connection()
        try:
            sock.sendall(conn.data_to_send())
            while True:
                data = sock.recv(65536)
                if not data:
                    return
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.RequestReceived):
                        with self.lock:
                            self.requests += 1
                            self.heads.append((list(ev.headers), [n for n, _ in conn.decoder.header_table.dynamic_entries]))
                    elif isinstance(ev, h2.events.StreamEnded):
                        try:
                            conn.send_headers(ev.stream_id, [(":status", "200"), ("content-type", "application/grpc"),
                                                             ("grpc-status", "0")], end_stream=True)
                        except h2.exceptions.StreamClosedError:
                            pass
                    elif isinstance(ev, h2.events.DataReceived):
                        try:
                            conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                        except h2.exceptions.StreamClosedError:
                            pass
                sock.sendall(conn.data_to_send())
        except (OSError, h2.exceptions.ProtocolError) as e:
            self._failed(f"stopped serving a connection: {e!r}")
            return

    def stop(self):
        """Shut down first: that wakes the threads blocked in accept() and recv(), which then end, so no thread is
        left holding a descriptor number that the next module's sockets may reuse."""
        with self.lock:
            self.stopping = True
            socks = [self.listener, *self.socks]
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
