"""Upstream health and balancing, and the operational admin endpoints: active grpc.health.v1 checks
(NOT_SERVING and back, calls avoid unhealthy endpoints, all unhealthy fails fast), one checker for all
workers, passive outlier ejection (a killed endpoint, grpc-status 14), least_request balancing,
max_pending's message, live reload of these settings, /live, /ready (503 as soon as a drain starts, before
the listeners close), /upstreams and POST /drain.
"""

import json
import re
import signal
import socket
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from pathlib import Path

import pytest

import grpcweb
from conftest import free_port
from echo_pb import EchoRequest, EchoResponse

UNARY = "/portico.test.Echo/Unary"
SERVER_STREAM = "/portico.test.Echo/ServerStream"
FAST_CHECKS = "health_check: {interval: 200ms, timeout: 500ms, healthy_threshold: 1, unhealthy_threshold: 1}"


class Admin:
    def __init__(self, port, token=None):
        self.port, self.token = port, token

    def request(self, method, path, token=None, timeout=15):
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method,
                                     data=b"" if method == "POST" else None)
        tok = token if token is not None else self.token
        if tok:
            req.add_header("Authorization", f"Bearer {tok}")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def json(self, method, path, **kw):
        status, text = self.request(method, path, **kw)
        return status, json.loads(text)

    def endpoints(self, upstream="echo"):
        status, doc = self.json("GET", "/upstreams")
        assert status == 200, doc
        up = next(u for u in doc["upstreams"] if u["name"] == upstream)
        return {e["address"]: e for e in up["endpoints"]}, up


def wait_until(fn, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}", pytrace=False)
        time.sleep(0.05)


def status_of(hdrs, trailers):
    code, msg = grpcweb.grpc_status(hdrs, trailers)
    return code, urllib.parse.unquote(msg)


def served_by(gw, **req):
    status, hdrs, msgs, trailers = gw.call(UNARY, EchoRequest(message="who", **req), timeout=10)
    assert status == 200 and status_of(hdrs, trailers)[0] == 0, (hdrs, trailers)
    return hdrs.get("x-served-by")


def config(port, admin_port, endpoints, up_extra="", extra="", workers=2, admin_extra=""):
    eps = ", ".join(f"'{e}'" if isinstance(e, str) else f"'127.0.0.1:{e.port}'" for e in endpoints)
    lines = [f"workers: {workers}", "log_level: debug", f"listeners: ['127.0.0.1:{port}']",
             f"admin: {{address: '127.0.0.1:{admin_port}'{admin_extra}}}", "upstreams:", "  - name: echo",
             f"    endpoints: [{eps}]"]
    lines += [f"    {line}" for line in up_extra.splitlines() if line.strip()]
    return "\n".join(lines) + "\n" + extra


@pytest.fixture
def env(portico, named_echo, tmp_path):
    """start(names, up_extra, extra, workers, server_args, endpoints, admin_extra, wrap) -> (gw, admin, {name: server});
    each server answers health checks from its own file (server.health_file; absent = SERVING); gw.config_path
    is the gateway's configuration file."""

    def start(names=("a", "b"), up_extra=FAST_CHECKS, extra="", workers=2, server_args=None, endpoints=None,
              admin_extra="", wrap=()):
        servers = {}
        for name in names:
            hf = tmp_path / f"health-{name}"
            s = named_echo(name, ["--health-file", str(hf), *((server_args or {}).get(name, ()))])
            s.health_file = hf
            servers[name] = s
        port, admin_port = free_port(), free_port()
        eps = endpoints(servers) if endpoints else list(servers.values())
        gw = portico(config=config(port, admin_port, eps, up_extra, extra, workers, admin_extra), listen_port=port,
                     upstream=next(iter(servers.values())), wrap=wrap)
        assert gw.wait_log(r"admin API listening on 127\.0\.0\.1:%d" % admin_port)
        gw.config_path = Path(gw.args[gw.args.index("--config") + 1])
        return gw, Admin(admin_port), servers

    return start


def health_of(admin, server):
    return admin.endpoints()[0][server.address]["health"]


def endpoint_gauges(admin, server, upstream="echo"):
    """The portico_upstream_endpoint_* samples of one endpoint in GET /metrics: {"health": state whose
    sample is 1, "health_samples": {state: value}, "available": v, "ejected": v}."""
    status, text = admin.request("GET", "/metrics")
    assert status == 200, text
    out = {"health_samples": {}}
    want = f'upstream="{upstream}",endpoint="{server.address}"'
    for m in re.finditer(r'^portico_upstream_endpoint_(health|available|ejected)\{([^}]*)\} (\d+)$', text, re.M):
        kind, labels, value = m.group(1), m.group(2), int(m.group(3))
        if not labels.startswith(want):
            continue
        if kind == "health":
            state = re.search(r'state="(\w+)"', labels).group(1)
            out["health_samples"][state] = value
        else:
            out[kind] = value
    assert sorted(out["health_samples"]) == ["healthy", "unhealthy", "unknown"], text
    assert sum(out["health_samples"].values()) == 1, out
    out["health"] = next(k for k, v in out["health_samples"].items() if v == 1)
    return out


# --------------------------------------------------------------------------- active health checks


def test_not_serving_endpoint_avoided_and_back(env):
    gw, admin, s = env()
    a, b = s["a"], s["b"]
    wait_until(lambda: health_of(admin, a) == "healthy" and health_of(admin, b) == "healthy", what="both healthy")
    assert {served_by(gw) for _ in range(8)} == {"a", "b"}
    assert endpoint_gauges(admin, b) == {"health": "healthy", "available": 1, "ejected": 0,
                                         "health_samples": {"healthy": 1, "unhealthy": 0, "unknown": 0}}

    b.health_file.write_text("NOT_SERVING\n")
    wait_until(lambda: health_of(admin, b) == "unhealthy", what="b unhealthy")
    gb, ga = endpoint_gauges(admin, b), endpoint_gauges(admin, a)
    assert (gb["health"], gb["available"], gb["ejected"]) == ("unhealthy", 0, 0), gb
    assert (ga["health"], ga["available"]) == ("healthy", 1), ga
    eps, up = admin.endpoints()
    assert eps[b.address]["last_check"]["ok"] is False
    assert eps[b.address]["last_check"]["result"] == "NOT_SERVING"
    assert eps[b.address]["available"] is False and up["available_endpoints"] == 1
    assert gw.wait_log(rf"upstream echo: endpoint 127\.0\.0\.1:{b.port} is unhealthy: health check failed: NOT_SERVING")
    # every worker's calls avoid it (two workers, fresh connections for each call)
    assert {served_by(gw) for _ in range(12)} == {"a"}

    b.health_file.write_text("SERVING\n")
    wait_until(lambda: health_of(admin, b) == "healthy", what="b healthy again")
    assert gw.wait_log(rf"endpoint 127\.0\.0\.1:{b.port} is healthy")
    wait_until(lambda: "b" in {served_by(gw) for _ in range(6)}, what="calls on b again")


def test_thresholds(env):
    """healthy_threshold / unhealthy_threshold successes / failures in a row flip the health (after the first
    answer, which decides alone)."""
    gw, admin, s = env(names=("a",), up_extra="health_check: {interval: 150ms, timeout: 500ms, healthy_threshold: 3, "
                                              "unhealthy_threshold: 2}")
    a = s["a"]
    wait_until(lambda: health_of(admin, a) == "healthy", what="healthy")
    a.health_file.write_text("NOT_SERVING\n")
    wait_until(lambda: admin.endpoints()[0][a.address]["checks_in_a_row"]["failed"] >= 1, what="a failed check")
    eps = admin.endpoints()[0][a.address]
    assert eps["health"] == "healthy" or eps["checks_in_a_row"]["failed"] >= 2, eps
    wait_until(lambda: health_of(admin, a) == "unhealthy", what="unhealthy after 2 failures")
    assert admin.endpoints()[0][a.address]["checks_in_a_row"]["failed"] >= 2
    a.health_file.write_text("")
    wait_until(lambda: admin.endpoints()[0][a.address]["checks_in_a_row"]["ok"] >= 1, what="a passed check")
    ep = admin.endpoints()[0][a.address]
    assert ep["health"] == "unhealthy" or ep["checks_in_a_row"]["ok"] >= 3, ep
    wait_until(lambda: health_of(admin, a) == "healthy", what="healthy after 3 successes")


def test_all_unhealthy_fail_fast(env):
    gw, admin, s = env()
    for server in s.values():
        server.health_file.write_text("NOT_SERVING\n")
    wait_until(lambda: all(health_of(admin, x) == "unhealthy" for x in s.values()), what="all unhealthy")
    t0 = time.monotonic()
    status, hdrs, msgs, trailers = gw.call(UNARY, EchoRequest(message="x"), timeout=10)
    elapsed = time.monotonic() - t0
    code, message = status_of(hdrs, trailers)
    assert status == 200 and code == 14, (hdrs, trailers)
    assert elapsed < 1, elapsed  # at once: its connections are up, so waiting would last until the deadline (10 s)
    assert "upstream 'echo' unavailable: no healthy endpoint" in message, message
    for server in s.values():
        assert f"127.0.0.1:{server.port} unhealthy (health check: NOT_SERVING)" in message, message
    status, doc = admin.json("GET", "/ready")
    assert status == 503 and doc["ready"] is False
    assert any(r.startswith("upstream 'echo': no endpoint can take calls") for r in doc["reasons"]), doc
    # one comes back: calls and readiness follow
    s["a"].health_file.write_text("SERVING\n")
    wait_until(lambda: admin.json("GET", "/ready")[0] == 200, what="ready again")
    assert served_by(gw) == "a"


def test_check_failures_explained(env):
    """No health service (UNIMPLEMENTED), a slow answer (timeout), an error status, an unknown service."""
    gw, admin, s = env(names=("none", "slow", "err"), up_extra="health_check: {interval: 200ms, timeout: 300ms}",
                       server_args={"none": ["--no-health"]})
    s["slow"].health_file.write_text("delay_ms 2000\n")
    s["err"].health_file.write_text("error 8\n")
    wait_until(lambda: all(health_of(admin, x) == "unhealthy" for x in s.values()), what="all unhealthy")
    eps = admin.endpoints()[0]
    assert eps[s["none"].address]["last_check"]["result"].startswith("grpc-status 12 (the server has no health service)")
    # our deadline, or the server's (grpc-timeout: 300m goes with the check)
    assert eps[s["slow"].address]["last_check"]["result"] in ("timeout after 300 ms", "grpc-status 4: Deadline Exceeded")
    assert eps[s["err"].address]["last_check"]["result"].startswith("grpc-status 8: health check failed on purpose")


def test_service_name(env, tmp_path):
    """The configured service is what the check asks about (unknown services are NOT_FOUND upstream)."""
    gw, admin, s = env(names=("a",), up_extra="health_check: {service: portico.test.Echo, interval: 200ms}")
    a = s["a"]
    wait_until(lambda: health_of(admin, a) == "healthy", what="healthy")
    assert re.search(r"Check service='portico\.test\.Echo' -> SERVING", a.log_text())
    a.health_file.write_text("SERVING\nservice portico.test.Echo NOT_SERVING\n")
    wait_until(lambda: health_of(admin, a) == "unhealthy", what="unhealthy")


def test_one_checker_for_all_workers(env):
    """Four workers, one check per endpoint and interval: the monitoring worker's."""
    gw, admin, s = env(workers=4, up_extra="health_check: {interval: 200ms}")
    a = s["a"]
    wait_until(lambda: health_of(admin, a) == "healthy", what="healthy")
    before = a.log_text().count("Check service=")
    time.sleep(1.5)
    n = a.log_text().count("Check service=") - before
    assert 4 <= n <= 10, f"{n} checks of one endpoint in 1.5 s at a 200 ms interval"


# --------------------------------------------------------------------------- passive outlier ejection


def test_killed_endpoint_ejected(env):
    gw, admin, s = env(up_extra="outlier: {consecutive_failures: 2, ejection: 30s}\nbackoff: {initial: 50ms, max: 100ms}",
                       workers=1)
    a, b = s["a"], s["b"]
    assert {served_by(gw) for _ in range(6)} == {"a", "b"}
    b.kill()

    def ejected():
        try:
            served_by(gw)
        except AssertionError:
            pass  # the call in flight on b when it died
        return admin.endpoints()[0][b.address]["ejected"]

    wait_until(ejected, timeout=10, what="b ejected")
    ep = admin.endpoints()[0][b.address]
    assert ep["state"] == "ejected" and ep["ejections"] == 1 and ep["ejected_for_ms"] > 25000, ep
    assert "2 consecutive failures" in ep["eject_reason"], ep
    assert ep["last_error"], ep
    assert gw.wait_log(rf"upstream echo: endpoint 127\.0\.0\.1:{b.port} ejected for 30000 ms after 2 consecutive failures")
    gb = endpoint_gauges(admin, b)
    assert (gb["ejected"], gb["available"]) == (1, 0), gb
    assert endpoint_gauges(admin, a)["ejected"] == 0
    for _ in range(8):
        assert served_by(gw) == "a"


def test_grpc_status_14_ejects(env):
    """Answers with grpc-status 14 count as failures of the endpoint; once ejected, calls fail fast and say so."""
    gw, admin, s = env(names=("a",), up_extra="outlier: {consecutive_failures: 3, ejection: 1s}", workers=1)
    for i in range(3):
        status, hdrs, msgs, trailers = gw.call(UNARY, EchoRequest(status_code=14, status_message=f"down {i}"))
        assert status_of(hdrs, trailers) == (14, f"down {i}"), (hdrs, trailers)
    status, hdrs, msgs, trailers = gw.call(UNARY, EchoRequest(message="x"))
    code, message = status_of(hdrs, trailers)
    assert code == 14 and "no healthy endpoint" in message and "ejected for" in message, message
    assert "3 consecutive failures, the last: grpc-status 14" in message, message
    assert admin.json("GET", "/ready")[0] == 503
    # a success in between breaks the run; the ejection ends on its own
    wait_until(lambda: admin.json("GET", "/ready")[0] == 200, timeout=5, what="back after the ejection")
    assert served_by(gw) == "a"
    for i in range(2):
        gw.call(UNARY, EchoRequest(status_code=14))
    assert served_by(gw) == "a"
    gw.call(UNARY, EchoRequest(status_code=14))
    assert served_by(gw) == "a"


# --------------------------------------------------------------------------- balancing and limits


def _long_stream(gw, results, key, count=4):
    """A server stream of `count` messages 400 ms apart (1.6 s by default)."""
    status, hdrs, msgs, trailers = gw.call(SERVER_STREAM, EchoRequest(message="long", count=count, interval_ms=400),
                                           timeout=15)
    results[key] = (hdrs.get("x-served-by"), status_of(hdrs, trailers)[0])


@pytest.mark.parametrize("balancing", ["least_request", "round_robin"])
def test_least_request_spreads_by_load(env, balancing):
    gw, admin, s = env(up_extra=f"balancing: {balancing}", workers=1)
    # both connections up
    wait_until(lambda: {served_by(gw) for _ in range(4)} == {"a", "b"}, what="both endpoints in use")
    results = {}
    t = threading.Thread(target=_long_stream, args=(gw, results, "long", 6))
    t.start()
    busy = wait_until(lambda: next((a for a, e in admin.endpoints()[0].items() if e["active_streams"] > 0), None),
                      what="the long call open")
    busy_name = "a" if busy == s["a"].address else "b"
    seen = [served_by(gw) for _ in range(6)]
    assert "long" not in results, "the long call ended before the others were made: the machine is too slow"
    t.join(15)
    assert results["long"] == (busy_name, 0), results
    if balancing == "least_request":
        assert busy_name not in seen, f"least_request sent calls to the busy endpoint: {seen}"
    else:
        assert busy_name in seen, f"round_robin skipped an endpoint: {seen}"


def test_max_pending_says_which_limit(env):
    """One connection with one stream: a second call waits, a third one is refused at once with the limit named."""
    gw, admin, s = env(names=("a",), up_extra="max_connections: 1\nmax_pending: 1", workers=1,
                       server_args={"a": ["--max-concurrent-streams", "1"]})
    assert served_by(gw) == "a"
    results = {}
    t1 = threading.Thread(target=lambda: results.__setitem__(1, gw.call(UNARY, EchoRequest(message="1", delay_ms=3000))))
    t1.start()
    wait_until(lambda: admin.endpoints()[0][s["a"].address]["active_streams"] == 1, what="call 1 open")
    t2 = threading.Thread(target=lambda: results.__setitem__(2, gw.call(UNARY, EchoRequest(message="2"))))
    t2.start()
    wait_until(lambda: admin.endpoints()[1]["pending"] == 1, what="call 2 waiting")
    t0 = time.monotonic()
    status, hdrs, msgs, trailers = gw.call(UNARY, EchoRequest(message="3"))
    code, message = status_of(hdrs, trailers)
    assert code == 14 and time.monotonic() - t0 < 1, (hdrs, trailers)  # at once, not when call 1 ends
    assert "upstream 'echo' overloaded: 1 calls already waiting (max_pending 1)" in message, message
    assert "(max_connections 1)" in message and "SETTINGS_MAX_CONCURRENT_STREAMS" in message, message
    t1.join(10)
    t2.join(10)
    for i in (1, 2):
        _, hdrs, msgs, trailers = results[i]
        assert status_of(hdrs, trailers)[0] == 0 and EchoResponse.FromString(msgs[0]).message == str(i)


def test_checks_wait_for_a_stream_on_a_full_pool(env):
    """A check shares the pool's connections: with every stream busy at max_connections it waits for one (and
    goes first when one frees up) rather than open more connections."""
    gw, admin, s = env(names=("a",), workers=1, server_args={"a": ["--max-concurrent-streams", "1"]},
                       up_extra="max_connections: 1\nhealth_check: {interval: 100ms, timeout: 3s}")
    a = s["a"]
    wait_until(lambda: health_of(admin, a) == "healthy", what="healthy")
    results = {}
    t = threading.Thread(target=lambda: results.__setitem__(1, gw.call(UNARY, EchoRequest(message="1", delay_ms=1000))))
    t.start()
    wait_until(lambda: "Unary id=''" in a.log_text(), what="the call upstream")
    checks = a.log_text().count("Check service=")
    t.join(10)
    assert status_of(results[1][1], results[1][3])[0] == 0
    wait_until(lambda: a.log_text().count("Check service=") > checks + 1, what="checks again")
    assert gw.log_text().count("upstream echo: connected to") == 1
    assert health_of(admin, a) == "healthy"


# --------------------------------------------------------------------------- live reload


def test_reload_health_settings(env):
    """health_check, balancing and outlier change live; the pool and its connections stay."""
    gw, admin, s = env(up_extra="", workers=1, extra="watch: false\n")
    a, b = s["a"], s["b"]
    assert {served_by(gw) for _ in range(4)} == {"a", "b"}
    eps = admin.endpoints()[0]
    assert eps[a.address]["health"] == "unknown" and eps[a.address]["last_check"] is None
    connects = gw.log_text().count("upstream echo: connected to")
    b.health_file.write_text("NOT_SERVING\n")
    text = gw.config_path.read_text()
    gw.config_path.write_text(text.replace("endpoints: [", "balancing: least_request\n    " + FAST_CHECKS +
                                           "\n    endpoints: ["))
    gw.signal(signal.SIGHUP)
    assert gw.wait_log(r"configuration version 2 applied \(SIGHUP\): upstreams: echo balancing round_robin -> "
                       r"least_request, echo \+health_check")
    wait_until(lambda: health_of(admin, b) == "unhealthy", what="b unhealthy")
    assert admin.endpoints()[1]["balancing"] == "least_request"
    assert {served_by(gw) for _ in range(6)} == {"a"}
    # the checks go away again: what they said no longer holds
    gw.config_path.write_text(text)
    gw.signal(signal.SIGHUP)
    assert gw.wait_log(r"configuration version 3 applied")
    wait_until(lambda: health_of(admin, b) == "unknown", what="b unknown")
    wait_until(lambda: "b" in {served_by(gw) for _ in range(4)}, what="calls on b")
    assert "retired pool" not in gw.log_text()
    assert gw.log_text().count("upstream echo: connected to") == connects, "connections were not kept"


# --------------------------------------------------------------------------- DNS re-resolution


class DnsServer:
    """A tiny DNS server on 127.0.0.1 (UDP) for one name: A queries get `address`, AAAA queries no record;
    other names, and this one while `address` is None, NXDOMAIN. Counts the A queries it answered."""

    def __init__(self, name):
        self.name, self.address, self.a_queries = name.lower(), None, 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _answer(self, q):
        qid, flags = struct.unpack(">HH", q[:4])
        pos, labels = 12, []
        while q[pos]:
            labels.append(q[pos + 1:pos + 1 + q[pos]].decode().lower())
            pos += 1 + q[pos]
        qtype = struct.unpack(">H", q[pos + 1:pos + 3])[0]
        question = q[12:pos + 5]  # as sent (evdns may randomise the case)
        rcode, answers = 0, b""
        if ".".join(labels) != self.name or self.address is None:
            rcode = 3
        elif qtype == 1:
            self.a_queries += 1
            answers = struct.pack(">HHHIH", 0xC00C, 1, 1, 1, 4) + socket.inet_aton(self.address)
        head = struct.pack(">HHHHHH", qid, 0x8480 | (flags & 0x0100) | rcode, 1, 1 if answers else 0, 0, 0)
        return head + question + answers

    def _serve(self):
        while not self._stop.is_set():
            try:
                q, peer = self.sock.recvfrom(512)
            except socket.timeout:
                continue
            try:
                self.sock.sendto(self._answer(q), peer)
            except (IndexError, struct.error, UnicodeDecodeError):
                pass

    def stop(self):
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def resolver_namespace(tmp_path, dns):
    """An argv prefix running the gateway with /etc/resolv.conf naming only `dns` (a user and mount
    namespace; the network is the host's); skips the test where user namespaces are not allowed."""
    if subprocess.run(["unshare", "-Urm", "true"], capture_output=True).returncode != 0:
        pytest.skip("unshare -Urm (user namespaces) is not allowed here")
    conf = tmp_path / "resolv.conf"
    conf.write_text(f"nameserver 127.0.0.1:{dns.port}\noptions ndots:1 attempts:1 timeout:1\n")
    return ["unshare", "-Urm", "sh", "-c", 'mount --bind "$0" /etc/resolv.conf && exec "$@"', conf]


def test_dns_refresh_follows_a_moved_name(env, tmp_path, request):
    """An endpoint given by name is resolved again every dns_refresh (a real DNS server): when the name moves,
    the connection to the old address finishes its call and takes no new ones, new calls go to the new
    address; a failed lookup keeps what worked."""
    dns = DnsServer("backend.portico.test")
    request.addfinalizer(dns.stop)
    dns.address = "127.0.0.1"
    holder = {}

    def endpoints(servers):
        holder["name"] = f"backend.portico.test:{servers['a'].port}"
        return [holder["name"]]

    # b listens on the same port as a, on another loopback address; started after a, so a's port is known
    # one worker: which worker the kernel hands a call to is not ours to choose, and a worker that met the move
    # only after the name was gone would rightly fail its call (its connection is stale, a new one cannot resolve)
    gw, admin, s = env(names=("a",), endpoints=endpoints, up_extra="dns_refresh: 200ms", workers=1,
                       wrap=resolver_namespace(tmp_path, dns))
    name, a = holder["name"], s["a"]
    b = request.getfixturevalue("named_echo")("b", ["--host", "127.0.0.2", "--port", str(a.port)])
    wait_until(lambda: admin.endpoints()[0][name]["resolved"] == ["127.0.0.1"], what="resolved to a")
    assert {served_by(gw) for _ in range(6)} == {"a"}
    refreshes = dns.a_queries
    time.sleep(1)
    assert 3 <= dns.a_queries - refreshes <= 8, f"{dns.a_queries - refreshes} lookups in 1 s at dns_refresh 200ms"

    results = {}
    t = threading.Thread(target=_long_stream, args=(gw, results, "long"))
    t.start()
    wait_until(lambda: admin.endpoints()[0][name]["active_streams"] == 1, what="the long call open")
    dns.address = "127.0.0.2"
    assert gw.wait_log(rf"upstream echo: {re.escape(name)} resolves to 127\.0\.0\.2 \(was 127\.0\.0\.1\)")
    ep = admin.endpoints()[0][name]
    assert ep["resolved"] == ["127.0.0.2"] and ep["dns_error"] is None, ep
    # the connection to 127.0.0.1 takes no new call, the next one goes to 127.0.0.2
    assert {served_by(gw) for _ in range(8)} == {"b"}
    assert gw.wait_log(rf"upstream echo: {re.escape(name)} no longer resolves to 127\.0\.0\.1")
    t.join(15)
    assert results["long"] == ("a", 0), results  # the call in flight on the old address finished

    dns.address = None  # the name is gone (NXDOMAIN)
    assert gw.wait_log(rf"upstream echo: cannot resolve {re.escape(name)}: .*; the addresses known before stay")
    ep = admin.endpoints()[0][name]
    assert ep["resolved"] == ["127.0.0.2"] and ep["dns_error"], ep
    assert {served_by(gw) for _ in range(4)} == {"b"}  # the connections that work stay


# --------------------------------------------------------------------------- admin endpoints and drain


def test_upstreams_json(env):
    gw, admin, s = env(names=("a",), endpoints=lambda servers: [f"localhost:{servers['a'].port}", "127.0.0.1:1"],
                       up_extra=FAST_CHECKS + "\ndns_refresh: 200ms\noutlier: true")
    a = s["a"]
    wait_until(lambda: admin.endpoints()[0][f"localhost:{a.port}"]["health"] == "healthy", what="healthy")
    results = {}
    t = threading.Thread(target=_long_stream, args=(gw, results, "long"))
    t.start()
    eps, up = admin.endpoints()
    wait_until(lambda: admin.endpoints()[0][f"localhost:{a.port}"]["active_streams"] == 1, what="stream open")
    eps, up = admin.endpoints()
    assert up["name"] == "echo" and up["balancing"] == "round_robin" and up["pending"] == 0
    assert up["health_check"] == {"service": "", "interval_ms": 200, "timeout_ms": 500, "healthy_threshold": 1,
                                  "unhealthy_threshold": 1}
    assert up["outlier"] == {"consecutive_failures": 5, "ejection_ms": 30000} and up["dns_refresh_ms"] == 200
    assert up["available_endpoints"] == 1
    good, dead = eps[f"localhost:{a.port}"], eps["127.0.0.1:1"]
    assert "127.0.0.1" in good["resolved"] and good["resolved_at"] and good["dns_error"] is None
    assert good["state"] == "ready" and good["connections"]["ready"] >= 1
    assert good["health"] == "healthy" and good["available"] is True
    assert good["last_check"]["ok"] is True and good["last_check"]["result"] == "SERVING"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", good["last_check"]["time"])
    assert 0 <= good["last_check"]["age_ms"] < 5000
    assert good["ejected"] is False and good["active_streams"] == 1
    assert dead["resolved"] == ["127.0.0.1"] and dead["health"] == "unhealthy"
    assert dead["state"] in ("failed", "ejected", "connecting") and dead["available"] is False
    assert "refused" in dead["last_error"].lower() and "refused" in dead["last_check"]["result"].lower(), dead
    t.join(15)
    assert results["long"][1] == 0


def test_live_ready_tokens(env, tmp_path):
    """/live and /ready need no token (probes carry none); /upstreams and /drain do."""
    (tmp_path / "admin.token").write_text("s3cret\n")
    gw, admin, s = env(names=("a",), admin_extra=f", token_file: '{tmp_path}/admin.token'")
    assert gw.wait_log(r"admin API listening on .* \(bearer token required\)")
    status, doc = admin.json("GET", "/live")
    assert status == 200 and doc["live"] is True and doc["draining"] is False
    wait_until(lambda: admin.request("GET", "/ready")[0] == 200, what="ready")
    assert admin.request("GET", "/upstreams")[0] == 401
    assert admin.request("POST", "/drain")[0] == 401
    assert admin.request("GET", "/upstreams", token="s3cret")[0] == 200
    assert admin.request("DELETE", "/ready")[0] == 405


def test_ready_turns_503_before_listeners_close(env):
    """SIGTERM: /ready answers 503 at once while the listener still accepts (timeouts.drain_delay), then the
    listener closes, then the process exits 0."""
    gw, admin, s = env(names=("a",), extra="timeouts: {drain_delay: 1s}\n")
    wait_until(lambda: admin.request("GET", "/ready")[0] == 200, what="ready")
    timeline = []
    gw.signal(signal.SIGTERM)
    t0 = time.monotonic()
    first_503 = listener_closed = last_open = None
    while time.monotonic() - t0 < 5 and listener_closed is None:
        now = time.monotonic() - t0
        try:
            code = admin.request("GET", "/ready", timeout=2)[0]
        except OSError:
            code = None
        if code == 503 and first_503 is None:
            first_503 = now
        asked = time.monotonic() - t0  # the listener was open until at least here when this succeeds
        try:
            with socket.create_connection(("127.0.0.1", gw.port), timeout=1) as c:
                c.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                ok = c.recv(64).startswith(b"HTTP/1.1 200")
        except OSError:
            ok = False
        if ok:
            last_open = asked
        else:
            listener_closed = time.monotonic() - t0
        timeline.append((round(now, 3), code, ok))
        time.sleep(0.02)
    assert first_503 is not None and listener_closed is not None, timeline
    assert first_503 < 0.8 and first_503 < listener_closed, timeline
    # the listener served after /ready said 503, for the drain delay (1 s; without it, it closes at once)
    assert last_open is not None and last_open > first_503 and last_open >= 0.5, timeline
    assert gw.proc.wait(10) == 0
    assert gw.wait_log(r"SIGTERM: draining \(not ready; the listeners close in 1000 ms")


def test_ready_turns_503_without_delay(env):
    """With no drain_delay, /ready is 503 from the moment the drain starts and the process exits 0."""
    gw, admin, s = env(names=("a",))
    wait_until(lambda: admin.request("GET", "/ready")[0] == 200, what="ready")
    results = {}
    t = threading.Thread(target=_long_stream, args=(gw, results, "long"))
    t.start()
    wait_until(lambda: admin.endpoints()[0][s["a"].address]["active_streams"] == 1, what="stream open")
    gw.signal(signal.SIGTERM)
    wait_until(lambda: admin.request("GET", "/ready")[0] == 503, timeout=1, what="503")
    status, doc = admin.json("GET", "/ready")
    assert status == 503 and doc["reasons"] == ["draining"], doc
    assert admin.json("GET", "/live")[1]["draining"] is True
    t.join(15)
    assert results["long"] == ("a", 0), results  # the call in flight finished
    assert gw.proc.wait(10) == 0


def test_post_drain(env):
    gw, admin, s = env(names=("a",), extra="timeouts: {drain_delay: 3s}\n")
    wait_until(lambda: admin.request("GET", "/ready")[0] == 200, what="ready")
    t0 = time.monotonic()
    status, doc = admin.json("POST", "/drain")
    assert status == 202 and doc == {"draining": True, "drain_delay_ms": 3000, "drain_timeout_ms": 10000}, doc
    # a second drain changes nothing; configuration changes are refused meanwhile
    assert admin.request("POST", "/drain")[0] == 202
    assert admin.request("GET", "/ready")[0] == 503
    assert admin.json("GET", "/live")[0] == 200
    assert served_by(gw) == "a"  # the listener is open for the drain delay
    req = urllib.request.Request(f"http://127.0.0.1:{admin.port}/config/upstreams/echo/endpoints", method="PUT",
                                 data=b'["127.0.0.1:1"]')
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 503 and b"draining" in e.value.read()
    assert time.monotonic() - t0 < 3, "too slow to test the drain delay"
    assert gw.proc.wait(10) == 0
    log = gw.log_text()
    assert "admin API: POST /drain: draining (not ready" in log and "draining already" in log
    assert "drain complete" in log


def test_post_drain_wait(env):
    """POST /drain?wait=1 answers when the drain is done, just before the process exits (for preStop hooks)."""
    gw, admin, s = env(names=("a",))
    results = {}
    t = threading.Thread(target=_long_stream, args=(gw, results, "long"))
    t.start()
    wait_until(lambda: admin.endpoints()[0][s["a"].address]["active_streams"] == 1, what="stream open")
    t0 = time.monotonic()
    status, doc = admin.json("POST", "/drain?wait=1", timeout=20)
    elapsed = time.monotonic() - t0
    assert status == 200 and doc == {"drained": True}, doc
    t.join(15)
    assert results["long"] == ("a", 0), results
    assert elapsed >= 0.5, elapsed  # it waited for the call in flight
    assert gw.proc.wait(10) == 0
