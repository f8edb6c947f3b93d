"""Limits that apply to every protocol: connections per worker and in all (closed at accept), accepting paused
rather than spun on EMFILE, header bytes and count (431), message size (grpc-status 8). Each refusal is a
clear answer, a log line and a counter in the admin API's /status "limits" (the HTTP/2 ones are in
test_h2_limits.py and test_h2_conformance.py).
"""

import json
import os
import re
import socket
import subprocess
import time
import urllib.request

import grpcweb
from conftest import free_port
from echo_pb import EchoRequest, EchoResponse

UNARY = "/portico.test.Echo/Unary"


def config(admin_port, extra="", workers=1):
    return (f"workers: {workers}\nlog_level: debug\nlisteners: ['127.0.0.1:{{listen_port}}']\n"
            f"admin: {{address: '127.0.0.1:{admin_port}'}}\n"
            "upstreams:\n  - name: echo\n    endpoints: ['127.0.0.1:{upstream_port}']\n" + extra)


class Gateway:
    def __init__(self, portico, extra="", workers=1):
        self.admin = free_port()
        self.gw = portico(config=config(self.admin, extra, workers))
        self.port = self.gw.port
        assert self.gw.wait_log(r"admin API listening on 127\.0\.0\.1:%d" % self.admin)
        self.before = self.limits(first=True)

    def limits(self, first=False):
        """/status "limits". The first read retries a refused connection for a few seconds: twice in CI's ASan
        run (after ~800 tests) the admin port refused the first connection although the gateway had logged
        it listening and later exited cleanly; the ss output below says who holds the port if it happens again."""
        deadline = time.monotonic() + (5 if first else 0)
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/status", timeout=10) as resp:
                    return json.loads(resp.read())["limits"]
            except urllib.error.URLError as e:
                if not isinstance(e.reason, ConnectionRefusedError) or time.monotonic() > deadline:
                    ss = subprocess.run(["ss", "-tanp"], capture_output=True, text=True).stdout
                    held = "\n".join(line for line in ss.splitlines() if f":{self.admin} " in line)
                    raise AssertionError(f"admin 127.0.0.1:{self.admin}: {e}; sockets on that port:\n{held}") from e
                time.sleep(0.1)

    def counted(self, name, at_least=None):
        """How much `name` went up (polled until it is not 0, or 2 s)."""
        deadline = time.monotonic() + 2
        while True:
            n = self.limits()[name] - self.before[name]
            if n != 0 or time.monotonic() > deadline:
                return n
            time.sleep(0.05)


def healthz(port, timeout=5):
    with grpcweb.HttpConnection(port, timeout=timeout) as conn:
        conn.request("GET", "/healthz")
        head, body = conn.response()
        return head.status, body


def refused(sock, timeout=3):
    """True when the gateway closes `sock` at once, before any request."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except (socket.timeout, TimeoutError):
        return False


def open_idle(port, n):
    """n idle connections, each known to be accepted and served (an HTTP/1.1 request answered)."""
    conns = []
    for _ in range(n):
        c = grpcweb.HttpConnection(port, timeout=5)
        c.request("GET", "/healthz")
        head, _ = c.response()
        assert head.status == 200
        conns.append(c)
    return conns


# --------------------------------------------------------------------------- connections


def test_max_connections_per_worker(portico):
    g = Gateway(portico, "limits: {max_connections: 3}\n")
    conns = open_idle(g.port, 3)
    extra = socket.create_connection(("127.0.0.1", g.port))
    assert refused(extra), "a 4th connection was served"
    extra.close()
    assert g.counted("connections_refused") == 1
    assert g.gw.wait_log(r"refusing connections: limits\.max_connections \(3 open in this worker, 3 in all\) reached; 1 refused")
    conns[0].close()
    time.sleep(0.3)
    assert healthz(g.port) == (200, b"ok\n")       # a slot is free again
    for c in conns[1:]:
        c.close()


def test_max_connections_total_over_workers(portico):
    """max_connections_total counts the connections of all workers together (here 2 workers, 3 in all)."""
    g = Gateway(portico, "limits: {max_connections: 100, max_connections_total: 3}\n", workers=2)
    conns = open_idle(g.port, 3)
    refusals = 0
    for _ in range(4):          # whichever worker the kernel picks, it refuses
        s = socket.create_connection(("127.0.0.1", g.port))
        refusals += refused(s)
        s.close()
    assert refusals == 4
    assert g.counted("connections_refused") == 4
    assert g.gw.wait_log(r"refusing connections: limits\.max_connections_total \(\d open in this worker, 3 in all\) reached")
    for c in conns:
        c.close()
    time.sleep(0.3)
    assert healthz(g.port) == (200, b"ok\n")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_accept_pauses_on_emfile(portico):
    """Out of descriptors, accepting pauses (100 ms at a time) instead of spinning on the listener: the process
    stays near idle while connections wait in the backlog, and serves them once descriptors are free again."""
    g = Gateway(portico)
    pid = g.gw.pid
    soft, hard = subprocess.run(["prlimit", f"--pid={pid}", "--nofile", "--raw", "--noheadings", "--output=SOFT,HARD"],
                                check=True, capture_output=True, text=True).stdout.split()
    top = max(int(fd) for fd in os.listdir(f"/proc/{pid}/fd"))
    subprocess.run(["prlimit", f"--pid={pid}", f"--nofile={top + 4}:{hard}"], check=True)   # room for 3 more
    try:
        conns = open_idle(g.port, 3)
        waiting = [socket.create_connection(("127.0.0.1", g.port)) for _ in range(5)]
        assert g.gw.wait_log(r"accept failed: Too many open files \(3 connections open\); accepting pauses for 100 ms")
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        time.sleep(1.5)
        busy = (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
        assert busy < 0.25, f"the gateway used {busy:.0%} of a CPU while out of descriptors"
    finally:
        subprocess.run(["prlimit", f"--pid={pid}", f"--nofile={soft}:{hard}"], check=True)
    paused = g.counted("accept_paused")
    assert 2 <= paused <= 1.5 / 0.1 + 10, paused       # once per 100 ms retry that still failed
    # the connections that waited are accepted and served
    for s in waiting:
        s.settimeout(5)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(1024).startswith(b"HTTP/1.1 200 "), "a waiting connection was not served"
        s.close()
    for c in conns:
        c.close()


# --------------------------------------------------------------------------- heads and messages


def test_header_limits_counted(portico):
    g = Gateway(portico, "limits: {max_header_size: 4KiB, max_headers: 20}\n")
    status, _, _, _ = grpcweb.call(g.port, UNARY, EchoRequest(message="x"), headers=[("x-big", "b" * 5000)])
    assert status == 431
    status, _, _, _ = grpcweb.call(g.port, UNARY, EchoRequest(message="x"), headers=[(f"x-h{i}", "1") for i in range(30)])
    assert status == 431
    assert g.counted("headers_too_large") == 2
    assert grpcweb.call(g.port, UNARY, EchoRequest(message="ok"))[3]["grpc-status"] == "0"


def test_message_limits_counted(portico):
    """A request message and a response message over limits.max_message_size: grpc-status 8 each, counted."""
    g = Gateway(portico, "limits: {max_message_size: 1KiB}\n")
    status, hdrs, msgs, trailers = grpcweb.call(g.port, UNARY, EchoRequest(message="m" * 2000))
    assert status == 200 and trailers is None and hdrs["grpc-status"] == "8", hdrs      # Trailers-Only
    assert hdrs["grpc-message"] == "request message of 2003 bytes exceeds the gateway limit of 1024 bytes (limits.max_message_size)"
    status, _, msgs, trailers = grpcweb.call(g.port, UNARY, EchoRequest(message="small", size=4000))
    assert status == 200 and trailers["grpc-status"] == "8", trailers
    assert re.fullmatch(r"response message of 4\d\d\d bytes exceeds the gateway limit of 1024 bytes \(limits\.max_message_size\)",
                        trailers["grpc-message"]), trailers
    assert g.counted("messages_too_large") == 2
    status, _, msgs, trailers = grpcweb.call(g.port, UNARY, EchoRequest(message="fits"))
    assert trailers["grpc-status"] == "0" and EchoResponse.FromString(msgs[0]).message == "fits"
