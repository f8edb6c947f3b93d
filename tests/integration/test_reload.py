"""Live configuration: reloads by SIGHUP and by file changes (rename over, in-place write, Kubernetes
ConfigMap symlink swap), what a reload may change (origins, routes, upstreams and their endpoints,
listeners, limits), what it keeps (calls in flight, upstream connections, listening sockets), invalid
files, and 50 reloads under continuous HTTP/1.1 and HTTP/2 load with zero failed calls.
"""

import os
import re
import shutil
import signal
import socket
import threading
import time

import grpc
import pytest

import echo_pb
import grpcweb
from conftest import Portico, _portico_binary, free_port
from echo_pb import EchoRequest

UNARY = "/portico.test.Echo/Unary"
STREAM = "/portico.test.Echo/ServerStream"
SANITIZED = os.environ.get("PTC_SANITIZED") == "1"


def config(listen_ports, upstreams, routes, extra="", workers=1):
    """YAML: `listen_ports` [port], `upstreams` {name: [port]}, `routes` [(prefix, upstream)]."""
    out = [f"workers: {workers}", "log_level: debug",
           "listeners: [" + ", ".join(f"'127.0.0.1:{p}'" for p in listen_ports) + "]", "upstreams:"]
    for name, ports in upstreams.items():
        out += [f"  - name: {name}", "    endpoints: [" + ", ".join(f"'127.0.0.1:{p}'" for p in ports) + "]"]
    out.append("routes:")
    for prefix, up in routes:
        out += [f"  - prefix: {prefix}", f"    upstream: {up}"]
    return "\n".join(out) + "\n" + extra


def config_path(gw):
    return gw.args[gw.args.index("--config") + 1]


def write_atomic(path, text):
    """What editors and config tools do: write a temporary file, rename it over the path."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


def applied(gw, version, timeout=5.0):
    return gw.wait_log(rf"configuration version {version} applied", timeout)


def served_by(gw, port=None, conn=None, text=False):
    status, headers, msgs, trailers = grpcweb.call(port or gw.port, UNARY, EchoRequest(message="who"), conn=conn, text=text)
    assert status == 200 and trailers is not None and trailers.get("grpc-status") == "0", (status, headers, trailers)
    return headers.get("x-served-by")


def cors_status(gw, origin):
    status, headers, _, trailers = grpcweb.call(gw.port, UNARY, EchoRequest(message="o"), headers={"Origin": origin})
    return status, headers.get("access-control-allow-origin")


# --------------------------------------------------------------------------- triggers


def test_sighup_applies_a_new_origin(portico, named_echo):
    a = named_echo("a")
    port = free_port()
    base = config([port], {"a": [a.port]}, [("/", "a")])
    gw = portico(config=base + "cors: {allow_origins: ['https://one.example']}\n", listen_port=port, upstream=a)
    assert cors_status(gw, "https://two.example")[0] == 403
    with open(config_path(gw), "w") as f:
        f.write(base + "cors: {allow_origins: ['https://one.example', 'https://two.example']}\n")
    gw.signal(signal.SIGHUP)
    assert gw.wait_log(r"configuration version 2 applied \(SIGHUP\)")
    assert cors_status(gw, "https://two.example") == (200, "https://two.example")
    assert cors_status(gw, "https://one.example") == (200, "https://one.example")


@pytest.mark.parametrize("how", ["rename", "in_place"])
def test_file_change_is_picked_up(portico, named_echo, how):
    a = named_echo("a")
    port = free_port()
    base = config([port], {"a": [a.port]}, [("/", "a")])
    gw = portico(config=base, listen_port=port, upstream=a)
    assert cors_status(gw, "https://app.example")[0] == 403
    new = base + "cors: {allow_origins: ['https://app.example']}\n"
    if how == "rename":
        write_atomic(config_path(gw), new)
    else:
        with open(config_path(gw), "r+") as f:  # truncate and write in two steps, like many editors
            f.truncate(0)
            f.write(new[:20])
            f.flush()
            f.write(new[20:])
    assert gw.wait_log(r"configuration version 2 applied \(file changed\)")
    assert cors_status(gw, "https://app.example") == (200, "https://app.example")
    # our own identical rewrite does not reload again
    write_atomic(config_path(gw), new)
    time.sleep(0.5)
    assert not re.search(r"configuration version 3", gw.log_text())


def test_kubernetes_configmap_symlink_swap(named_echo, tmp_path):
    """kubelet's atomic writer: DIR/portico.yaml -> ..data/portico.yaml, ..data -> ..TIMESTAMP; an
    update makes a new timestamped directory, renames a new ..data symlink over the old one, and
    removes the old directory."""
    a = named_echo("a")
    port = free_port()
    base = config([port], {"a": [a.port]}, [("/", "a")])
    cm = tmp_path / "configmap"
    cm.mkdir()

    def publish(text, stamp):
        d = cm / f"..{stamp}"
        d.mkdir()
        (d / "portico.yaml").write_text(text)
        os.symlink(d.name, cm / "..data_tmp")
        os.rename(cm / "..data_tmp", cm / "..data")
        return d

    first = publish(base, "2026_12_03_10_00_00.1")
    os.symlink("..data/portico.yaml", cm / "portico.yaml")
    gw = Portico(_portico_binary(), ["--config", str(cm / "portico.yaml")], port, tmp_path / "cm.log")
    try:
        assert cors_status(gw, "https://k8s.example")[0] == 403
        second = publish(base + "cors: {allow_origins: ['https://k8s.example']}\n", "2026_12_03_10_05_00.2")
        shutil.rmtree(first)
        assert gw.wait_log(r"configuration version 2 applied \(file changed\)")
        assert cors_status(gw, "https://k8s.example") == (200, "https://k8s.example")
        publish(base + "cors: {allow_origins: ['https://k8s2.example']}\n", "2026_12_03_10_10_00.3")
        shutil.rmtree(second)
        assert gw.wait_log(r"configuration version 3 applied \(file changed\)")
        assert cors_status(gw, "https://k8s.example")[0] == 403
        assert cors_status(gw, "https://k8s2.example")[0] == 200
    finally:
        assert gw.stop() == 0
        assert not gw.sanitizer_lines()


def test_invalid_file_keeps_the_running_configuration(portico, named_echo):
    a = named_echo("a")
    port = free_port()
    base = config([port], {"a": [a.port]}, [("/", "a")])
    gw = portico(config=base + "cors: {allow_origins: ['https://keep.example']}\n", listen_port=port, upstream=a)
    path = config_path(gw)
    bad = base + "cors: {allow_origins: ['https://keep.example']}\nlimits:\n  max_mesage_size: 1MiB\n"
    write_atomic(path, bad)
    line = bad.splitlines().index("  max_mesage_size: 1MiB") + 1
    m = gw.wait_log(r"configuration reload \(file changed\) failed; version 1 stays in service: (.*)")
    assert m, gw.log_text()
    assert m.group(1) == f"{path}:{line}: limits.max_mesage_size: unknown key"
    assert cors_status(gw, "https://keep.example") == (200, "https://keep.example")
    # a file that parses but does not validate (a route to an unknown upstream), then a SIGHUP
    write_atomic(path, config([port], {"a": [a.port]}, [("/", "nope")]))
    assert gw.wait_log(r"failed; version 1 stays in service: .*routes\[0\]\.upstream: .*nope")
    gw.signal(signal.SIGHUP)
    assert gw.wait_log(r"configuration reload \(SIGHUP\) failed; version 1 stays in service")
    assert served_by(gw) == "a"
    # fixed: applied as version 2
    write_atomic(path, base)
    assert applied(gw, 2)
    assert cors_status(gw, "https://keep.example")[0] == 403


# --------------------------------------------------------------------------- what a reload changes


def test_route_moves_to_another_upstream_streams_finish_on_the_old_one(portico, named_echo):
    a, b = named_echo("a"), named_echo("b")
    port = free_port()
    gw = portico(config=config([port], {"a": [a.port], "b": [b.port]}, [("/", "a")]), listen_port=port, upstream=a)
    assert served_by(gw) == "a"
    conn = gw.connect()
    conn.request("POST", STREAM, grpcweb.request_headers(),
                 grpcweb.frame(EchoRequest(message="s", count=6, interval_ms=200)))
    head = conn.read_head(timeout=10)
    assert head.status == 200 and head.get("x-served-by") == "a"
    reader = grpcweb.FrameReader(conn)
    assert reader.next_frame(timeout=10)[0] == 0

    write_atomic(config_path(gw), config([port], {"a": [a.port], "b": [b.port]}, [("/", "b")]))
    assert applied(gw, 2)
    assert served_by(gw) == "b"
    msgs, trailers = 1, None
    for flags, payload in reader:
        if flags & grpcweb.TRAILER_FLAG:
            trailers = grpcweb.parse_trailer_block(payload)
        else:
            msgs += 1
    assert msgs == 6 and trailers["grpc-status"] == "0"
    conn.close()


def upstream_connects(gw, name):
    return len(re.findall(rf"upstream {name}: connected to", gw.log_text()))


def test_unchanged_upstream_keeps_its_connections(portico, named_echo):
    a = named_echo("a")
    port = free_port()
    base = config([port], {"a": [a.port]}, [("/", "a")])
    gw = portico(config=base, listen_port=port, upstream=a)
    assert served_by(gw) == "a"
    assert gw.wait_log(r"upstream a: connected to")
    before = upstream_connects(gw, "a")
    for v in range(2, 6):
        write_atomic(config_path(gw), base + f"cors: {{allow_origins: ['https://v{v}.example']}}\n")
        assert applied(gw, v)
        assert served_by(gw) == "a"
    assert upstream_connects(gw, "a") == before
    assert "closed" not in "".join(l for l in gw.log_text().splitlines() if "upstream a: connection" in l)


def test_endpoint_list_changes_open_and_close_only_what_changed(portico, named_echo):
    a, b = named_echo("a"), named_echo("b")
    port = free_port()
    one = config([port], {"echo": [a.port]}, [("/", "echo")])
    gw = portico(config=one, listen_port=port, upstream=a)
    conn = gw.connect()
    assert served_by(gw, conn=conn) == "a"
    # a long stream on the endpoint that is about to go away
    sconn = gw.connect()
    sconn.request("POST", STREAM, grpcweb.request_headers(),
                  grpcweb.frame(EchoRequest(message="s", count=5, interval_ms=200)))
    assert sconn.read_head(timeout=10).get("x-served-by") == "a"

    write_atomic(config_path(gw), config([port], {"echo": [a.port, b.port]}, [("/", "echo")]))
    assert applied(gw, 2)
    seen = {served_by(gw, conn=conn) for _ in range(20)}
    assert seen == {"a", "b"}, seen
    assert upstream_connects(gw, "echo") == 2

    write_atomic(config_path(gw), config([port], {"echo": [b.port]}, [("/", "echo")]))
    assert applied(gw, 3)
    assert {served_by(gw, conn=conn) for _ in range(10)} == {"b"}
    # the stream on the removed endpoint finishes, then its connection closes
    frames = list(grpcweb.FrameReader(sconn))
    assert len(frames) == 6 and grpcweb.parse_trailer_block(frames[-1][1])["grpc-status"] == "0"
    assert gw.wait_log(rf"upstream echo: connection to 127\.0\.0\.1:{a.port} closed: endpoint removed by a reload")
    assert upstream_connects(gw, "echo") == 2  # nothing reconnected
    conn.close()
    sconn.close()


def test_removed_upstream_finishes_its_streams(portico, named_echo):
    a, b = named_echo("a"), named_echo("b")
    port = free_port()
    gw = portico(config=config([port], {"a": [a.port], "b": [b.port]}, [("/", "a")]), listen_port=port, upstream=a)
    conn = gw.connect()
    conn.request("POST", STREAM, grpcweb.request_headers(),
                 grpcweb.frame(EchoRequest(message="s", count=4, interval_ms=250)))
    assert conn.read_head(timeout=10).get("x-served-by") == "a"
    write_atomic(config_path(gw), config([port], {"b": [b.port]}, [("/", "b")]))
    assert applied(gw, 2)
    assert served_by(gw) == "b"
    frames = list(grpcweb.FrameReader(conn))
    assert len(frames) == 5 and grpcweb.parse_trailer_block(frames[-1][1])["grpc-status"] == "0"
    assert gw.wait_log(r"upstream a: connection to .* closed: upstream removed or replaced by a reload")
    assert gw.wait_log(r"upstream a: retired pool freed")
    conn.close()


def test_listener_added_and_removed(portico, named_echo):
    a = named_echo("a")
    port, extra = free_port(), free_port()
    ups, routes = {"a": [a.port]}, [("/", "a")]
    gw = portico(config=config([port], ups, routes, workers=2), listen_port=port, upstream=a)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", extra), timeout=1).close()

    write_atomic(config_path(gw), config([port, extra], ups, routes, workers=2))
    assert applied(gw, 2)
    assert served_by(gw, port=extra) == "a"
    # a call in progress on the listener that goes away finishes; its connection then closes
    conn = grpcweb.HttpConnection(extra)
    conn.request("POST", STREAM, grpcweb.request_headers(),
                 grpcweb.frame(EchoRequest(message="s", count=4, interval_ms=250)))
    assert conn.read_head(timeout=10).status == 200
    write_atomic(config_path(gw), config([port], ups, routes, workers=2))
    assert applied(gw, 3)
    frames = list(grpcweb.FrameReader(conn))
    assert len(frames) == 5 and grpcweb.parse_trailer_block(frames[-1][1])["grpc-status"] == "0"
    assert conn.wait_closed(5)
    conn.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", extra), timeout=1).close()
    assert served_by(gw) == "a"  # the address that stayed kept serving


def test_listener_on_a_busy_address_fails_the_reload(portico, named_echo):
    a = named_echo("a")
    port = free_port()
    ups, routes = {"a": [a.port]}, [("/", "a")]
    gw = portico(config=config([port], ups, routes), listen_port=port, upstream=a)
    with socket.socket() as busy:  # bound without SO_REUSEPORT: nobody else may bind it
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        write_atomic(config_path(gw), config([port, taken], ups, routes) + "cors: {allow_origins: ['https://x.example']}\n")
        assert gw.wait_log(rf"failed; version 1 stays in service: listeners\[1\]\.address: cannot listen on "
                           rf"127\.0\.0\.1:{taken}: bind: Address already in use")
    assert cors_status(gw, "https://x.example")[0] == 403  # nothing of the new file was applied
    assert served_by(gw) == "a"


def test_raising_max_header_size_serves_large_headers(portico, named_echo):
    a = named_echo("a")
    port = free_port()
    base = config([port], {"a": [a.port]}, [("/", "a")])
    gw = portico(config=base + "limits: {max_header_size: 8KiB}\n", listen_port=port, upstream=a)
    big = {"x-big": "v" * 20000}
    conn = gw.connect()
    # an HTTP/1.1 keep-alive connection and an HTTP/2 one, both opened before the reload
    status, _, _, _ = grpcweb.call(gw.port, UNARY, EchoRequest(message="m"), headers=big)
    assert status == 431
    assert served_by(gw, conn=conn) == "a"
    write_atomic(config_path(gw), base + "limits: {max_header_size: 64KiB, max_headers: 200}\n")
    assert applied(gw, 2)
    status, _, msgs, trailers = grpcweb.call(gw.port, UNARY, EchoRequest(message="m"), headers=big, conn=conn)
    assert status == 200 and trailers["grpc-status"] == "0"
    resp = echo_pb.EchoResponse.FromString(msgs[0])
    assert resp.headers["x-big"] == "v" * 20000
    many = {f"x-h{i}": str(i) for i in range(150)}
    status, _, msgs, trailers = grpcweb.call(gw.port, UNARY, EchoRequest(message="m"), headers=many, conn=conn)
    assert status == 200 and trailers["grpc-status"] == "0"
    assert echo_pb.EchoResponse.FromString(msgs[0]).headers["x-h149"] == "149"
    with grpc.insecure_channel(f"127.0.0.1:{gw.port}") as ch:
        call = ch.unary_unary(echo_pb.method_path("Unary"), request_serializer=EchoRequest.SerializeToString,
                              response_deserializer=echo_pb.EchoResponse.FromString)
        resp = call(EchoRequest(message="h2"), metadata=[("x-big", "w" * 30000)], timeout=10)
        assert resp.headers["x-big"] == "w" * 30000
    conn.close()


def test_log_level_change(portico, named_echo):
    a = named_echo("a")
    port = free_port()
    base = config([port], {"a": [a.port]}, [("/", "a")])
    gw = portico(config=base, listen_port=port, upstream=a)
    served_by(gw)
    assert gw.wait_log(r"debug \[w0\] call /portico\.test\.Echo/Unary")
    write_atomic(config_path(gw), base.replace("log_level: debug", "log_level: warn"))
    # the summary line is written at info, before the level drops: wait for the effect instead
    deadline = time.monotonic() + 5
    while True:
        before = len(gw.log_text())
        served_by(gw)
        time.sleep(0.1)
        if "debug" not in gw.log_text()[before:]:
            break
        assert time.monotonic() < deadline, "log level still debug"


# --------------------------------------------------------------------------- under load


class Load:
    """Calls in threads until stopped; records every failure."""

    def __init__(self, gw):
        self.gw, self.stop_ev, self.failures, self.counts, self.threads = gw, threading.Event(), [], {}, []
        self.lock = threading.Lock()

    def spawn(self, name, fn):
        def run():
            n = 0
            try:
                while not self.stop_ev.is_set():
                    fn()
                    n += 1
            except Exception as exc:  # noqa: BLE001 - every failure is recorded and fails the test
                with self.lock:
                    self.failures.append(f"{name}: {type(exc).__name__}: {exc}")
            with self.lock:
                self.counts[name] = n
        t = threading.Thread(target=run, daemon=True)
        self.threads.append(t)
        t.start()

    def finish(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(60)
        return self.failures, self.counts


def test_fifty_reloads_under_load_zero_failed_calls(portico, named_echo):
    a, b = named_echo("a"), named_echo("b")
    port, extra = free_port(), free_port()

    def cfg(i):
        origins = "['https://stay.example', 'https://toggle.example']" if i % 2 else "['https://stay.example']"
        route = "a" if i % 3 else "b"
        eps = [a.port, b.port] if i % 4 < 2 else [b.port]
        listeners = [port, extra] if i % 5 < 2 else [port]
        return (config(listeners, {"a": [a.port], "b": [b.port], "both": eps},
                       [("/portico.test.Echo/Server", "both"), ("/", route)], workers=2)
                + f"cors: {{allow_origins: {origins}}}\n")

    gw = portico(config=cfg(0), listen_port=port, upstream=a)
    load = Load(gw)

    def http1_unary_worker(i):
        conn = gw.connect()

        def one():
            status, _, msgs, trailers = grpcweb.call(gw.port, UNARY, EchoRequest(message=f"u{i}"), conn=conn,
                                                      headers={"Origin": "https://stay.example"})
            assert status == 200 and trailers["grpc-status"] == "0", (status, trailers)
            assert echo_pb.EchoResponse.FromString(msgs[0]).message == f"u{i}"
        return one

    def http1_stream():
        status, _, msgs, trailers = grpcweb.call(gw.port, STREAM, EchoRequest(message="s", count=5, interval_ms=60))
        assert status == 200 and trailers["grpc-status"] == "0" and len(msgs) == 5, (status, trailers, len(msgs))

    def text_unary():
        status, _, msgs, trailers = grpcweb.call(gw.port, UNARY, EchoRequest(message="t"), text=True)
        assert status == 200 and trailers["grpc-status"] == "0"

    channel = grpc.insecure_channel(f"127.0.0.1:{gw.port}")
    unary = channel.unary_unary(echo_pb.method_path("Unary"), request_serializer=EchoRequest.SerializeToString,
                                response_deserializer=echo_pb.EchoResponse.FromString)
    stream = channel.unary_stream(echo_pb.method_path("ServerStream"), request_serializer=EchoRequest.SerializeToString,
                                  response_deserializer=echo_pb.EchoResponse.FromString)

    def h2_unary():
        assert unary(EchoRequest(message="h2"), timeout=30).message == "h2"

    def h2_stream():
        assert len(list(stream(EchoRequest(message="h2s", count=4, interval_ms=80), timeout=30))) == 4

    for i in range(3):
        load.spawn(f"http1-unary-{i}", http1_unary_worker(i))
    load.spawn("http1-stream", http1_stream)
    load.spawn("http1-text", text_unary)
    load.spawn("h2-unary", h2_unary)
    load.spawn("h2-stream", h2_stream)
    time.sleep(0.5)
    t0 = time.monotonic()
    for i in range(1, 51):
        write_atomic(config_path(gw), cfg(i))
        assert applied(gw, i + 1, timeout=10), f"reload {i} not applied"
    elapsed = time.monotonic() - t0
    time.sleep(0.5)
    failures, counts = load.finish()
    channel.close()
    print(f"\n50 reloads in {elapsed:.2f} s ({50 / elapsed:.1f}/s) under load; calls: {counts}")
    assert failures == [], failures[:10]
    assert all(n > 0 for n in counts.values()), counts
    assert "failed" not in "".join(re.findall(r"configuration reload.*", gw.log_text()))
    # the old snapshots are gone: the gateway still answers with the last configuration
    assert cors_status(gw, "https://toggle.example")[0] == (200 if 50 % 2 else 403)
