#!/usr/bin/python3
"""Reliability soak: a mixed load against one gateway for a while, RSS sampled every second.

    /usr/bin/python3 tests/soak/soak.py [--seconds 600] [--binary build-asan/portico] [--workers 2]

The load, from several threads at once, each counting what it saw:
  unary          HTTP/1.1 keep-alive calls, binary and text, some with large messages
  stream         server streams read to the end
  h2             native gRPC (grpcio client) unary and bidi calls over HTTP/2
  websocket      client streams and bidi over WebSockets
  cancel         server streams abandoned after the first message (the connection is closed)
  deadline       calls whose grpc-timeout expires at the gateway (DEADLINE_EXCEEDED expected)
  error          calls the upstream fails (NOT_FOUND expected, trailers-only and after messages)
  slow           a server stream read slowly, a few KB at a time
  churn          new connections for every call, some closed half-way through a request
  reload         the config file rewritten every few seconds (an origin added and removed): hot reload

At the end the gateway gets SIGTERM. The run fails when any call ended other than as its kind expects,
the gateway did not exit 0, a sanitizer or leak report is in its log, or RSS grew after warm-up (the slope
of a least-squares line over the second half of the samples, in KiB per minute, against --max-slope).
Prints a summary line per kind and the RSS figures; exit status 0 or 1.
"""

import argparse
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO / "tests" / "integration"))
sys.path.insert(0, str(REPO / "tests" / "upstream"))

import grpc  # noqa: E402

import echo_pb  # noqa: E402
import grpcweb  # noqa: E402
from echo_pb import EchoRequest, EchoResponse  # noqa: E402
from wsclient import GrpcWs  # noqa: E402

SVC = "/portico.test.Echo/"
ORIGIN = "http://soak.example"
SANITIZER_RE = re.compile(r"ERROR: (AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer)|runtime error:")

CONFIG = """listeners: ['127.0.0.1:{port}']
upstreams: [{{name: echo, endpoints: ['127.0.0.1:{upstream}']}}]
routes: [{{prefix: /, upstream: echo}}]
cors: {{allow_origins: ['{origin}'{extra}]}}
workers: {workers}
log_level: info
limits: {{max_message_size: 1MiB, call_buffer_size: 64KiB}}
"""


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, proc, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited {proc.returncode} before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.ok = {}
        self.bad = {}
        self.examples = {}

    def good(self, kind):
        with self.lock:
            self.ok[kind] = self.ok.get(kind, 0) + 1

    def fail(self, kind, what):
        with self.lock:
            self.bad[kind] = self.bad.get(kind, 0) + 1
            self.examples.setdefault(kind, []).append(what)


class Soak:
    def __init__(self, args):
        self.args = args
        self.stop = threading.Event()
        self.stats = Stats()
        self.tmp = Path(tempfile.mkdtemp(prefix="portico-soak-"))
        self.port = free_port()

    # -- processes
    def start(self):
        self.echo_log = open(self.tmp / "echo.log", "wb")
        self.echo = subprocess.Popen([sys.executable, str(REPO / "tests/upstream/echo_server.py"), "--host", "127.0.0.1", "--port", "0"],
                                     stdout=subprocess.PIPE, stderr=self.echo_log)
        line = self.echo.stdout.readline().decode()
        m = re.fullmatch(r"PORT (\d+)\n", line)
        if not m:
            raise RuntimeError(f"echo server: {line!r}")
        self.upstream = int(m.group(1))
        self.config = self.tmp / "portico.yaml"
        self.write_config(False)
        self.gw_log_path = self.tmp / "portico.log"
        # ASan's quarantine (freed memory held back to catch use-after-free; 256 MiB by default) fills at about
        # 30 MiB/s here: whether it is full before the second half of a 20 s run began decided the slope. 16 MiB
        # fills within the first seconds, so that the slope measures Portico.
        env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:quarantine_size_mb=16", UBSAN_OPTIONS="print_stacktrace=1")
        self.gw = subprocess.Popen([str(self.args.binary), "--config", str(self.config)], stdout=open(self.gw_log_path, "wb"),
                                   stderr=subprocess.STDOUT, env=env)
        wait_port(self.port, self.gw)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")

    def write_config(self, extra_origin):
        text = CONFIG.format(port=self.port, upstream=self.upstream, origin=ORIGIN, workers=self.args.workers,
                             extra=", 'http://extra.example'" if extra_origin else "")
        tmp = self.config.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.config)

    def stop_all(self):
        self.channel.close()
        self.gw.send_signal(signal.SIGTERM)
        try:
            code = self.gw.wait(60)
        except subprocess.TimeoutExpired:
            self.gw.kill()
            code = None
        self.echo.send_signal(signal.SIGTERM)
        try:
            self.echo.wait(10)
        except subprocess.TimeoutExpired:
            self.echo.kill()
        return code

    # -- the load
    def loop(self, kind, fn):
        rnd = random.Random(hash(kind))
        while not self.stop.is_set():
            try:
                fn(rnd)
                self.stats.good(kind)
            except Exception as exc:  # every unexpected outcome is counted, with an example
                if not self.stop.is_set():
                    self.stats.fail(kind, f"{type(exc).__name__}: {exc}"[:300])

    def unary(self, rnd):
        conn = grpcweb.HttpConnection(self.port)
        try:
            for _ in range(20):
                text = rnd.random() < 0.3
                size = rnd.choice([0, 10, 1000, 100_000])
                st, head, msgs, tr = grpcweb.call(self.port, SVC + "Unary", EchoRequest(message="u", size=size), conn=conn, text=text,
                                                  headers={"Origin": ORIGIN})
                assert st == 200 and tr and tr.get("grpc-status") == "0", (st, tr)
                assert len(EchoResponse.FromString(msgs[0]).payload) == size
        finally:
            conn.close()

    def stream(self, rnd):
        n = rnd.randint(1, 50)
        st, head, msgs, tr = grpcweb.call(self.port, SVC + "ServerStream", EchoRequest(message="s", count=n, size=512))
        assert st == 200 and tr and tr.get("grpc-status") == "0" and len(msgs) == n, (st, tr, len(msgs))

    def h2(self, rnd):
        unary = self.channel.unary_unary(echo_pb.method_path("Unary"), request_serializer=EchoRequest.SerializeToString,
                                         response_deserializer=EchoResponse.FromString)
        bidi = self.channel.stream_stream(echo_pb.method_path("Bidi"), request_serializer=EchoRequest.SerializeToString,
                                          response_deserializer=EchoResponse.FromString)
        r = unary(EchoRequest(message="h2"), timeout=10)
        assert r.message == "h2"
        n = rnd.randint(1, 20)
        got = list(bidi(iter([EchoRequest(message=str(i)) for i in range(n)]), timeout=10))
        assert [g.message for g in got] == [str(i) for i in range(n)]

    def websocket(self, rnd):
        c = GrpcWs(self.port, SVC + rnd.choice(["ClientStream", "Bidi"]), origin=ORIGIN).open()
        try:
            n = rnd.randint(1, 30)
            for i in range(n):
                c.send(EchoRequest(message=str(i)))
            c.end()
            c.finish()
            assert c.status == 0 and c.closed and c.closed[0] == 1000, (c.status, c.closed)
        finally:
            c.close()

    def cancel(self, rnd):
        conn = grpcweb.HttpConnection(self.port)
        conn.request("POST", SVC + "ServerStream", grpcweb.request_headers(), grpcweb.frame(EchoRequest(count=1000, interval_ms=20)))
        head = conn.read_head()
        assert head.status == 200
        conn.read_chunk()
        conn.close()

    def deadline(self, rnd):
        st, head, msgs, tr = grpcweb.call(self.port, SVC + "Unary", EchoRequest(delay_ms=2000), headers={"grpc-timeout": "50m"})
        got = tr.get("grpc-status") if tr else head.get("grpc-status")  # trailers-only when no header came yet
        assert got == "4", (head, tr)

    def error(self, rnd):
        if rnd.random() < 0.5:
            st, head, msgs, tr = grpcweb.call(self.port, SVC + "Unary", EchoRequest(status_code=5, status_message="nope"))
            got = tr.get("grpc-status") if tr else head.get("grpc-status")
            assert got == "5", (head, tr)
        else:
            st, head, msgs, tr = grpcweb.call(self.port, SVC + "ServerStream",
                                              EchoRequest(count=3, status_code=5, status_message="late", fail_after_messages=True))
            assert tr and tr.get("grpc-status") == "5" and len(msgs) == 3, (tr, len(msgs))

    def slow(self, rnd):
        conn = grpcweb.HttpConnection(self.port, timeout=30)
        try:
            conn.request("POST", SVC + "ServerStream", grpcweb.request_headers(),
                         grpcweb.frame(EchoRequest(count=40, size=32 * 1024)))
            head = conn.read_head()
            assert head.status == 200
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            while True:
                time.sleep(0.01)
                if not conn.read_chunk():
                    break
        finally:
            conn.close()

    def churn(self, rnd):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        body = grpcweb.frame(EchoRequest(message="c", size=100))
        head = (f"POST {SVC}Unary HTTP/1.1\r\nHost: x\r\nContent-Type: application/grpc-web+proto\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        if rnd.random() < 0.3:
            s.sendall(head + body[: len(body) // 2])  # gone half-way through the request
        else:
            s.sendall(head + body)
            data = b""
            while b"grpc-status:0" not in data:
                chunk = s.recv(65536)
                assert chunk, "closed before the trailers"
                data += chunk
        s.close()

    def reload(self, rnd):
        time.sleep(2)
        self.write_config(rnd.random() < 0.5)

    def run(self):
        kinds = ["unary", "unary", "stream", "h2", "websocket", "cancel", "deadline", "error", "slow", "churn", "reload"]
        threads = [threading.Thread(target=self.loop, args=(k, getattr(self, k)), daemon=True) for k in kinds]
        samples = []
        t0 = time.monotonic()
        for t in threads:
            t.start()
        while time.monotonic() - t0 < self.args.seconds:
            time.sleep(1)
            if self.gw.poll() is not None:
                break
            samples.append((time.monotonic() - t0, rss_kib(self.gw.pid)))
        self.stop.set()
        for t in threads:
            t.join(30)
        return samples


def slope_kib_per_min(samples):
    half = samples[len(samples) // 2:]
    if len(half) < 3:
        return 0.0
    n = len(half)
    mx = sum(x for x, _ in half) / n
    my = sum(y for _, y in half) / n
    var = sum((x - mx) ** 2 for x, _ in half)
    return 0.0 if var == 0 else sum((x - mx) * (y - my) for x, y in half) / var * 60


def main():
    ap = argparse.ArgumentParser(description="Portico reliability soak")
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--binary", default=os.environ.get("PORTICO_BIN", str(REPO / "build-asan/portico")))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--max-slope", type=float, default=None,
                    help="KiB/min of RSS growth allowed over the second half (default: 1%% of the peak per minute)")
    args = ap.parse_args()
    soak = Soak(args)
    soak.start()
    try:
        samples = soak.run()
    finally:
        code = soak.stop_all()
    log = soak.gw_log_path.read_text(errors="replace")
    problems = []
    total_ok = sum(soak.stats.ok.values())
    for kind in sorted(set(soak.stats.ok) | set(soak.stats.bad)):
        ok, bad = soak.stats.ok.get(kind, 0), soak.stats.bad.get(kind, 0)
        print(f"soak: {kind:10s} {ok:7d} ok {bad:5d} unexpected")
        if bad:
            problems.append(f"{kind}: {bad} unexpected, e.g. {soak.stats.examples[kind][:3]}")
    for kind in ["unary", "stream", "h2", "websocket", "cancel", "deadline", "error", "slow", "churn"]:
        if soak.stats.ok.get(kind, 0) == 0:
            problems.append(f"{kind}: no call completed")
    rss = [r for _, r in samples]
    slope = slope_kib_per_min(samples)
    peak = max(rss) if rss else 0
    limit = args.max_slope if args.max_slope is not None else max(peak * 0.01, 64)
    print(f"soak: {len(samples)} s, {total_ok} operations, RSS start {rss[0] if rss else 0} KiB, peak {peak} KiB, "
          f"end {rss[-1] if rss else 0} KiB, slope over the second half {slope:+.1f} KiB/min (limit {limit:.0f})")
    if slope > limit:
        problems.append(f"RSS grows {slope:.1f} KiB/min after warm-up")
    if code != 0:
        problems.append(f"gateway exit status {code} after SIGTERM")
    bad_lines = [l for l in log.splitlines() if SANITIZER_RE.search(l)]
    if bad_lines:
        problems.append("sanitizer report: " + " | ".join(bad_lines[:5]))
    if problems:
        print("soak: FAILED\n  " + "\n  ".join(problems) + f"\n  logs in {soak.tmp}")
        return 1
    print("soak: passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
