"""The admin API (live configuration): GET/PUT /config, origin, route and endpoint edits, versions and
If-Match, bearer tokens, write-back to the configuration file (edits survive a restart), and
`portico -s reload|stop` through the pid file.
"""

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

import grpcweb
from conftest import SANITIZER_RE, Portico, _portico_binary, free_port
from echo_pb import EchoRequest

UNARY = "/portico.test.Echo/Unary"


def config(port, admin_port, upstreams, routes, extra=""):
    out = ["workers: 2", "log_level: debug", f"listeners: ['127.0.0.1:{port}']",
           f"admin: {{address: '127.0.0.1:{admin_port}'}}", "upstreams:"]
    for name, ports in upstreams.items():
        out += [f"  - name: {name}", "    endpoints: [" + ", ".join(f"'127.0.0.1:{p}'" for p in ports) + "]"]
    out.append("routes:")
    for prefix, up in routes:
        out += [f"  - prefix: {prefix}", f"    upstream: {up}"]
    return "\n".join(out) + "\n" + extra


class Admin:
    def __init__(self, port, token=None):
        self.port, self.token = port, token

    def request(self, method, path, body=None, headers=None, token=None):
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method,
                                     data=body.encode() if isinstance(body, str) else body)
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        tok = token if token is not None else self.token
        if tok:
            req.add_header("Authorization", f"Bearer {tok}")
        try:
            with urllib.request.urlopen(req, timeout=15) as resp:
                return resp.status, dict(resp.headers), resp.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read().decode()

    def json(self, method, path, body=None, **kw):
        status, headers, text = self.request(method, path, body, **kw)
        return status, headers, json.loads(text) if text.strip() else None


def origin_status(gw, origin):
    return grpcweb.call(gw.port, UNARY, EchoRequest(message="o"), headers={"Origin": origin})[0]


def served_by(gw):
    status, headers, _, trailers = grpcweb.call(gw.port, UNARY, EchoRequest(message="who"))
    assert status == 200 and trailers["grpc-status"] == "0", (status, trailers)
    return headers.get("x-served-by")


@pytest.fixture
def setup(portico, named_echo):
    """A gateway with an admin API, two named upstreams a and b, the catch-all route on a."""
    a, b = named_echo("a"), named_echo("b")
    port, admin_port = free_port(), free_port()

    def start(extra="", *args):
        gw = portico(*args, config=config(port, admin_port, {"a": [a.port], "b": [b.port]}, [("/", "a")], extra),
                     listen_port=port, upstream=a)
        assert gw.wait_log(r"admin API listening on 127\.0\.0\.1:%d" % admin_port)
        return gw, Admin(admin_port)
    start.a, start.b = a, b
    return start


def config_path(gw):
    return gw.args[gw.args.index("--config") + 1]


def test_get_config_yaml_and_json(setup):
    gw, admin = setup("cors: {allow_origins: ['https://a.example', '~^https://[a-z]+\\.example\\.org$']}\n")
    status, headers, text = admin.request("GET", "/config")
    assert status == 200 and headers["Content-Type"] == "application/yaml"
    assert headers["ETag"] == '"1"'
    assert "upstreams:" in text and "name: b" in text and "https://a.example" in text
    status, headers, doc = admin.json("GET", "/config?format=json")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert [u["name"] for u in doc["upstreams"]] == ["a", "b"]
    assert doc["cors"]["allow_origins"] == ["https://a.example", "~^https://[a-z]+\\.example\\.org$"]
    assert doc["workers"] == 2
    status, _, doc2 = admin.json("GET", "/config", headers={"Accept": "application/json"})
    assert doc2 == doc


def test_admin_is_not_the_gateway(setup):
    gw, admin = setup()
    status, _, body = admin.json("GET", "/portico.test.Echo/Unary")
    assert status == 404 and "no such resource" in body["error"]
    status, _, body = admin.json("DELETE", "/config")
    assert status == 405
    # and the gateway port does not serve the admin API
    conn = gw.connect()
    conn.request("GET", "/config", [("Host", "x")])
    head, _ = conn.response()
    assert head.status == 405
    conn.close()


def test_add_and_remove_origin(setup):
    gw, admin = setup("cors: {allow_origins: ['https://a.example']}\n")
    assert origin_status(gw, "https://b.example") == 403
    status, headers, res = admin.json("POST", "/config/cors/origins", "https://b.example")
    assert status == 200 and res == {"version": 2, "changed": True, "persisted": True}
    assert headers["ETag"] == '"2"'
    # in service on every worker when the answer arrives: no waiting here
    for _ in range(8):
        assert origin_status(gw, "https://b.example") == 200
    assert gw.wait_log(r"configuration version 2 applied \(admin API: add origin\): cors: \+origin https://b\.example")
    # JSON body, and adding what is there already changes nothing
    status, _, res = admin.json("POST", "/config/cors/origins", '{"origin": "https://b.example"}')
    assert status == 200 and res["changed"] is False and res["version"] == 2
    status, _, res = admin.json("POST", "/config/cors/origins", "https://b.example/path")
    assert status == 400 and "cors.allow_origins" in res["error"]
    status, _, res = admin.json("DELETE", "/config/cors/origins/" + urllib.parse.quote("https://b.example", safe=""))
    assert status == 200 and res["version"] == 3
    assert origin_status(gw, "https://b.example") == 403
    status, _, res = admin.json("DELETE", "/config/cors/origins?origin=https%3A%2F%2Fnope.example")
    assert status == 404 and "https://nope.example" in res["error"]
    assert origin_status(gw, "https://a.example") == 200


def test_route_and_endpoint_edits(setup, named_echo):
    gw, admin = setup()
    assert served_by(gw) == "a"
    status, _, res = admin.json("PUT", "/config/routes/0/upstream", "b")
    assert status == 200 and res["version"] == 2
    assert served_by(gw) == "b"
    status, _, res = admin.json("PUT", "/config/routes/upstream?prefix=/", '{"upstream": "a"}')
    assert status == 200 and res["version"] == 3
    assert served_by(gw) == "a"
    status, _, res = admin.json("PUT", "/config/routes/0/upstream", "zzz")
    assert status == 400 and "zzz" in res["error"]
    status, _, res = admin.json("PUT", "/config/routes/7/upstream", "a")
    assert status == 404
    status, _, res = admin.json("PUT", "/config/routes/upstream?prefix=/nope/", "a")
    assert status == 404

    c = named_echo("c")
    status, _, res = admin.json("PUT", "/config/upstreams/a/endpoints", f'["127.0.0.1:{c.port}"]')
    assert status == 200 and res["version"] == 4
    assert served_by(gw) == "c"
    status, _, res = admin.json("PUT", "/config/upstreams/a/endpoints", "[127.0.0.1:0]")
    assert status == 400 and "endpoints[0]" in res["error"]
    status, _, res = admin.json("PUT", "/config/upstreams/a/endpoints", "[]")
    assert status == 400
    status, _, res = admin.json("PUT", "/config/upstreams/nope/endpoints", "['127.0.0.1:1']")
    assert status == 404
    assert served_by(gw) == "c"
    _, _, doc = admin.json("GET", "/config?format=json")
    assert doc["upstreams"][0]["endpoints"] == [f"127.0.0.1:{c.port}"]


def test_put_config_whole(setup):
    gw, admin = setup()
    _, _, doc = admin.json("GET", "/config?format=json")
    doc["routes"][0]["upstream"] = "b"
    doc["cors"] = {"allow_origins": ["https://put.example"]}
    status, _, res = admin.json("PUT", "/config", json.dumps(doc))
    assert status == 200 and res["version"] == 2, res
    assert served_by(gw) == "b"
    assert origin_status(gw, "https://put.example") == 200
    # an invalid body: the error names the line and the key; nothing changes
    bad = "workers: 2\nlimits:\n  max_headerz: 1\n"
    status, _, res = admin.json("PUT", "/config", bad)
    assert status == 400 and res["error"] == "PUT /config:3: limits.max_headerz: unknown key"
    status, _, res = admin.json("PUT", "/config", "routes: [{prefix: /, upstream: missing}]\n")
    assert status == 400 and "missing" in res["error"]
    assert served_by(gw) == "b"
    _, headers, _ = admin.request("GET", "/config")
    assert headers["ETag"] == '"2"'
    status, _, st = admin.json("GET", "/status")
    assert status == 200
    assert st["version"] == 2 and st["workers"] == [2, 2]
    assert st["reloads"] == {"ok": 1, "failed": 2}
    assert st["last_error"].startswith("admin API: PUT /config: ") and "missing" in st["last_error"]


def test_if_match(setup):
    gw, admin = setup()
    status, _, res = admin.json("POST", "/config/cors/origins", "https://x.example", headers={"If-Match": '"1"'})
    assert status == 200 and res["version"] == 2
    status, _, res = admin.json("POST", "/config/cors/origins", "https://y.example", headers={"If-Match": '"1"'})
    assert status == 412 and "version 2 is in service" in res["error"]
    assert origin_status(gw, "https://y.example") == 403
    status, _, res = admin.json("POST", "/config/cors/origins", "https://y.example", headers={"If-Match": "*"})
    assert status == 200


def test_bearer_token(portico, named_echo, tmp_path):
    a = named_echo("a")
    port, admin_port = free_port(), free_port()
    (tmp_path / "admin.token").write_text("s3cret-t0ken\n")
    extra = f"admin: {{address: '127.0.0.1:{admin_port}', token_file: admin.token}}\n"
    cfg = config(port, admin_port, {"a": [a.port]}, [("/", "a")]).replace(
        f"admin: {{address: '127.0.0.1:{admin_port}'}}\n", "") + extra
    gw = portico(config=cfg, listen_port=port, upstream=a)
    assert gw.wait_log(r"admin API listening on .* \(bearer token required\)")
    admin = Admin(admin_port)
    status, headers, res = admin.json("GET", "/config")
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    assert admin.json("GET", "/config", token="wrong")[0] == 401
    assert admin.json("POST", "/config/cors/origins", "https://evil.example", token="s3cret-t0ke")[0] == 401
    assert origin_status(gw, "https://evil.example") == 403
    status, _, text = admin.request("GET", "/config", token="s3cret-t0ken")
    assert status == 200 and "s3cret" not in text and "token_file: admin.token" in text
    assert "s3cret" not in gw.log_text()


def test_edits_are_written_back_and_survive_a_restart(portico, named_echo):
    a, b = named_echo("a"), named_echo("b")
    port, admin_port = free_port(), free_port()
    text = config(port, admin_port, {"a": [a.port], "b": [b.port]}, [("/", "a")],
                  "cors: {allow_origins: ['https://one.example']}\n")
    gw = portico(config=text, listen_port=port, upstream=a)
    admin = Admin(admin_port)
    assert admin.json("POST", "/config/cors/origins", "https://two.example")[0] == 200
    assert admin.json("PUT", "/config/routes/0/upstream", "b")[0] == 200
    path = config_path(gw)
    on_disk = open(path).read()
    assert "https://two.example" in on_disk and "upstream: b" in on_disk
    # the watcher sees our own write and does not reload it
    time.sleep(0.5)
    assert not re.search(r"configuration version 4", gw.log_text())
    assert gw.stop() == 0
    gw2 = Portico(_portico_binary(), ["--config", path], port, os.path.dirname(path) + "/restart.log")
    try:
        assert served_by(gw2) == "b"
        assert origin_status(gw2, "https://two.example") == 200
        assert origin_status(gw2, "https://one.example") == 200
    finally:
        assert gw2.stop() == 0
        assert not gw2.sanitizer_lines()


def test_command_line_overrides_are_not_edited(portico, named_echo, tmp_path):
    a, b = named_echo("a"), named_echo("b")
    port, admin_port = free_port(), free_port()
    gw = portico("--upstream", f"127.0.0.1:{b.port}", "--allow-origin", "https://flag.example", "--admin", f"127.0.0.1:{admin_port}",
                 config=config(port, free_port(), {"a": [a.port]}, [("/", "a")]), listen_port=port, upstream=a)
    assert gw.wait_log(r"admin API listening on 127\.0\.0\.1:%d" % admin_port)  # --admin replaced admin.address
    admin = Admin(admin_port)
    assert served_by(gw) == "b"
    status, _, res = admin.json("PUT", "/config/upstreams/a/endpoints", f"['127.0.0.1:{a.port}']")
    assert status == 409 and "--upstream" in res["error"]
    status, _, res = admin.json("DELETE", "/config/cors/origins/https%3A%2F%2Fflag.example")
    assert status == 409 and "--allow-origin" in res["error"]
    # the file keeps what the operator wrote, not the flags
    assert admin.json("POST", "/config/cors/origins", "https://api.example")[0] == 200
    on_disk = open(config_path(gw)).read()
    assert "flag.example" not in on_disk and str(b.port) not in on_disk and "https://api.example" in on_disk


def test_signal_through_pid_file(portico, named_echo, tmp_path):
    a = named_echo("a")
    port = free_port()
    pid_file = tmp_path / "portico.pid"
    cfg = f"workers: 1\nlisteners: ['127.0.0.1:{port}']\npid_file: {pid_file}\nupstreams: [{{name: a, endpoints: ['127.0.0.1:{a.port}']}}]\n"
    gw = portico(config=cfg, listen_port=port, upstream=a)
    assert int(pid_file.read_text()) == gw.pid
    binary = str(_portico_binary())
    out = subprocess.run([binary, "-s", "reload", "--config", config_path(gw)], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"portico: sent SIGHUP (reload) to process {gw.pid}\n"
    assert gw.wait_log(r"configuration version 2 applied \(SIGHUP\)")
    out = subprocess.run([binary, "-s", "stop", "--pid-file", str(pid_file)], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    assert gw.proc.wait(10) == 0
    assert not pid_file.exists()  # removed at exit
    out = subprocess.run([binary, "-s", "reload", "--pid-file", str(pid_file)], capture_output=True, text=True, timeout=10)
    assert out.returncode == 1 and "cannot read" in out.stderr and "is portico running?" in out.stderr
    out = subprocess.run([binary, "-s", "restart"], capture_output=True, text=True, timeout=10)
    assert out.returncode == 2 and "expected reload or stop" in out.stderr


def test_admin_api_bound_before_the_listeners(tmp_path):
    """The kernel accepts connections on a listening socket before any worker runs: whoever waits for the data
    port to accept (a probe, a deployment script, these tests' fixture) and then asks the admin API must find it
    bound. The order of the gateway's bind() calls, as strace sees them: the admin address first."""
    port, admin_port = free_port(), free_port()
    pid_file, trace, log = tmp_path / "portico.pid", tmp_path / "strace.out", tmp_path / "portico.log"
    cfg = tmp_path / "portico.yaml"
    cfg.write_text(config(port, admin_port, {"a": [1]}, [("/", "a")], f"pid_file: {pid_file}\n"))
    # LeakSanitizer cannot run under ptrace (it would fail the exit): leaks are looked for everywhere else
    asan = ":".join(o for o in [os.environ.get("ASAN_OPTIONS", ""), "detect_leaks=0"] if o)
    with open(log, "w") as err:
        # a session of its own: killing strace alone would detach the gateway and leave it running
        proc = subprocess.Popen(["strace", "-f", "-qq", "-e", "trace=bind", "-o", str(trace), str(_portico_binary()),
                                 "--config", str(cfg)], stdout=subprocess.DEVNULL, stderr=err,
                                env={**os.environ, "ASAN_OPTIONS": asan}, start_new_session=True)
    try:
        pid, deadline = None, time.monotonic() + 20
        while pid is None and proc.poll() is None and time.monotonic() < deadline:
            text = pid_file.read_text().strip() if pid_file.exists() else ""
            pid = int(text) if text.isdigit() else None  # created, then written
            time.sleep(0.02)
        assert pid is not None, f"no pid file (strace exited {proc.poll()}); log:\n{log.read_text()[-2000:]}"
        os.kill(pid, signal.SIGTERM)
        assert proc.wait(20) == 0, log.read_text()[-2000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    binds = [ln for ln in trace.read_text().splitlines() if "bind(" in ln and "127.0.0.1" in ln]
    ports = [int(m.group(1)) for ln in binds for m in [re.search(r"sin_port=htons\((\d+)\)", ln)] if m]
    assert admin_port in ports and port in ports, binds
    assert ports.index(admin_port) < ports.index(port), binds


def test_listener_address_in_use_at_start(tmp_path):
    """A listener address taken by another process: exit 1 with the address and the reason. The admin API, bound
    first, was listening, and goes with the rest (no sanitizer report on that way out)."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port, admin_port = taken.getsockname()[1], free_port()
    cfg = tmp_path / "portico.yaml"
    cfg.write_text(config(port, admin_port, {"a": [1]}, [("/", "a")]))
    try:
        out = subprocess.run([str(_portico_binary()), "--config", str(cfg)], capture_output=True, text=True, timeout=20)
    finally:
        taken.close()
    assert out.returncode == 1, (out.returncode, out.stderr)
    assert f"admin API listening on 127.0.0.1:{admin_port}" in out.stderr, out.stderr
    assert f"listeners[0].address: cannot listen on 127.0.0.1:{port}: bind: Address already in use" in out.stderr, out.stderr
    assert not SANITIZER_RE.search(out.stderr), out.stderr
