"""Memory given back to the system after a fall in connections (src/control/memory.c): thousands of idle h2c
connections grow the gateway's resident memory; once they have closed, the control thread's periodic check
(every 2 s) calls malloc_trim and says so in the log, and the resident size falls back toward where it was.
Checked against a gateway without the check: the log line never comes, and the resident size stays at its peak."""

import json
import os
import re
import socket
import time
import urllib.request

from conftest import free_port, rss_kib
from h2raw import PREFACE, SETTINGS, frame

CONNECTIONS = 2500


def open_idle_h2c(port, n):
    """n h2c connections, each past its SETTINGS exchange (the gateway has made its HTTP/2 session)."""
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(PREFACE + frame(SETTINGS, 0, 0))
        socks.append(s)
    for s in socks:
        got = b""
        while len(got) < 9:  # the gateway's SETTINGS frame header at least
            chunk = s.recv(4096)
            assert chunk, "the gateway closed an idle connection during its SETTINGS exchange"
            got += chunk
    return socks


def wait_log(gw, pattern, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = re.search(pattern, gw.log_text())
        if m:
            return m
        time.sleep(0.1)
    return None


def admin_get(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
        return resp.read().decode()


def wait_no_connections(admin):
    """Until the gateway's connections gauge says every connection has closed (it counts what it unregistered)."""
    deadline = time.monotonic() + 10
    while True:
        m = re.search(r"^portico_connections_active (\d+)", admin_get(admin, "/metrics"), re.M)
        if m and int(m.group(1)) == 0:
            return
        assert time.monotonic() < deadline, f"connections still open: {m and m.group(0)}"
        time.sleep(0.05)


def test_memory_given_back_after_connections_close(portico):
    admin = free_port()
    gw = portico(config="workers: 2\nlog_level: info\nlisteners: ['127.0.0.1:{listen_port}']\n"
                        f"admin: {{address: '127.0.0.1:{admin}'}}\n"
                        "upstreams: [{name: echo, endpoints: ['127.0.0.1:{upstream_port}']}]\n")
    for s in open_idle_h2c(gw.port, 200):  # the arenas and caches of a gateway that has served
        s.close()
    wait_no_connections(admin)
    base = rss_kib(gw.pid)
    socks = open_idle_h2c(gw.port, CONNECTIONS)
    peak = rss_kib(gw.pid)
    assert peak - base > 8 * 1024, f"{CONNECTIONS} idle h2c connections grew the gateway by only {peak - base} KiB"
    assert not re.search(r"memory: \d+ of \d+ connections closed", gw.log_text()), "trimmed with the connections open"
    for s in socks:
        s.close()
    m = wait_log(gw, r"memory: (\d+) of (\d+) connections closed since the peak; ([\d.]+) MiB given back", 10)
    assert m, gw.log_text()[-2000:]
    closed, of = int(m.group(1)), int(m.group(2))
    assert closed >= CONNECTIONS - 10 and of >= CONNECTIONS, m.group(0)
    assert json.loads(admin_get(admin, "/status"))["memory"] == {"trims": 1}
    if os.environ.get("PTC_SANITIZED"):
        return  # the sanitizer's allocator is not glibc's: malloc_trim has nothing of its own to give back there
    # without the trim nothing comes back (2,500 connections: 8 MiB before, 42 with them, 42 after); with it about
    # half here (25 after), three quarters after 10,000 (148 → 38): pages that still hold a live allocation stay
    after = rss_kib(gw.pid)
    assert after - base < 0.75 * (peak - base), f"resident KiB: {base} before, {peak} with the connections, {after} after"
