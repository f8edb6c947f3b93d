"""Fixtures for the integration tests: the Python echo upstream and the portico gateway.

All processes listen on 127.0.0.1 only and are stopped by PID.
"""

import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
UPSTREAM_DIR = REPO_ROOT / "tests" / "upstream"
sys.path.insert(0, str(UPSTREAM_DIR))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import echo_pb  # noqa: E402
import grpcweb  # noqa: E402

PYTHON = "/usr/bin/python3"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 15.0
SANITIZER_RE = re.compile(r"AddressSanitizer|LeakSanitizer|ThreadSanitizer|runtime error:")
LOG_TAIL_LINES = 300


def rss_kib(pid):
    """Resident set size of a process, from /proc (KiB)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class RssSampler:
    """Samples a process's VmRSS every 10 ms in a thread; `.stop()` returns the peak (KiB)."""

    def __init__(self, pid):
        self.pid, self.peak = pid, rss_kib(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(0.01):
            try:
                self.peak = max(self.peak, rss_kib(self.pid))
            except (OSError, RuntimeError):
                return

    def stop(self):
        self._stop.set()
        self._thread.join(2)
        return self.peak


_handed_out = set()


def free_port():
    """An ephemeral loopback port that was free a moment ago, and not handed out before in this run: two ports
    picked before either is bound (a listener and its admin address, two gateways) must differ, and Portico's
    listeners use SO_REUSEPORT, so two gateways given one port would both bind it and share its connections."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("free_port: no new ephemeral port in 100 tries")


def wait_port(port, proc, timeout, log_text):
    """Wait until 127.0.0.1:port accepts TCP; fail early if `proc` exits."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            pytest.fail(f"process exited with {proc.returncode} before listening on {port}\n"
                        f"--- log ---\n{log_text()}", pytrace=False)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"port {port} not accepting after {timeout}s\n--- log ---\n{log_text()}",
                        pytrace=False)
        time.sleep(0.05)


def _tail(text, lines=LOG_TAIL_LINES):
    parts = text.splitlines()
    if len(parts) <= lines:
        return text
    return f"[... {len(parts) - lines} lines omitted ...]\n" + "\n".join(parts[-lines:])


class EchoServer:
    """A running tests/upstream/echo_server.py."""

    def __init__(self, log_path, extra_args=()):
        self.log_path = Path(log_path)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [PYTHON, str(UPSTREAM_DIR / "echo_server.py"), "--host", "127.0.0.1",
                 "--port", "0", *map(str, extra_args)],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log)
        self.pid = self.proc.pid
        self.port = self._read_port()
        self.address = f"127.0.0.1:{self.port}"
        self._channel = None

    def _read_port(self):
        ready, _, _ = select.select([self.proc.stdout], [], [], START_TIMEOUT)
        line = self.proc.stdout.readline().decode() if ready else ""
        m = re.fullmatch(r"PORT (\d+)\n", line)
        if not m:
            self.kill()
            pytest.fail(f"echo server did not report its port (got {line!r})\n"
                        f"--- log ---\n{self.log_text()}", pytrace=False)
        return int(m.group(1))

    def log_text(self):
        return self.log_path.read_text(errors="replace")

    @property
    def channel(self):
        """A grpcio channel to the server (created on first use)."""
        if self._channel is None:
            self._channel = grpc.insecure_channel(self.address, options=[
                ("grpc.max_receive_message_length", 64 * 1024 * 1024),
                ("grpc.max_send_message_length", 64 * 1024 * 1024),
            ])
        return self._channel

    def method(self, name):
        """grpcio multi-callable for an Echo method, e.g. method("Unary")(EchoRequest(...))."""
        req_cls, res_cls, cstream, sstream = echo_pb.method_types(name)
        factory = {(False, False): self.channel.unary_unary,
                   (False, True): self.channel.unary_stream,
                   (True, False): self.channel.stream_unary,
                   (True, True): self.channel.stream_stream}[(cstream, sstream)]
        return factory(echo_pb.method_path(name), request_serializer=req_cls.SerializeToString,
                       response_deserializer=res_cls.FromString)

    def cancel_status(self, call_id):
        """CancelInfo{cancelled, finished, seen} recorded for requests with this id."""
        return self.method("CancelStatus")(echo_pb.CancelQuery(id=call_id), timeout=5)

    def wait_cancel_status(self, call_id, field="cancelled", timeout=5.0):
        """Poll CancelStatus until `field` is true; returns the last CancelInfo."""
        deadline = time.monotonic() + timeout
        while True:
            info = self.cancel_status(call_id)
            if getattr(info, field) or time.monotonic() > deadline:
                return info
            time.sleep(0.05)

    def running(self):
        return self.proc.poll() is None

    def _close(self):
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        if self.proc.stdout:
            self.proc.stdout.close()

    def kill(self):
        """SIGKILL the server and reap it."""
        if self.running():
            os.kill(self.pid, signal.SIGKILL)
        self.proc.wait()
        self._close()
        return self.proc.returncode

    def stop(self, timeout=10.0):
        """SIGTERM the server; SIGKILL if it does not exit in time. Returns the exit code."""
        if self.running():
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait()
        self._close()
        return self.proc.returncode


class Portico:
    """A running gateway process; stderr/stdout go to `log_path`."""

    def __init__(self, binary, args, port, log_path, env=None):
        self.port = port
        self.args = args
        self.log_path = Path(log_path)
        self.expect_clean_exit = True   # tests that kill the gateway on purpose set False
        self.exit_code = None
        full_env = dict(os.environ)
        full_env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
        full_env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
        full_env.update(env or {})
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([str(binary)] + args, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT, env=full_env)
        self.pid = self.proc.pid
        try:
            wait_port(port, self.proc, START_TIMEOUT, self.log_text)
        except BaseException:
            if self.running():
                os.kill(self.pid, signal.SIGKILL)
            self.proc.wait()
            raise

    def log_text(self):
        return self.log_path.read_text(errors="replace")

    def wait_log(self, pattern, timeout=5.0):
        """Wait until the log matches regex `pattern`; returns the match or None."""
        deadline = time.monotonic() + timeout
        while True:
            m = re.search(pattern, self.log_text(), re.MULTILINE)
            if m or time.monotonic() > deadline:
                return m
            time.sleep(0.05)

    def sanitizer_lines(self):
        return [l for l in self.log_text().splitlines() if SANITIZER_RE.search(l)]

    def connect(self, timeout=grpcweb.DEFAULT_TIMEOUT):
        """A new raw HTTP/1.1 connection to the gateway."""
        return grpcweb.HttpConnection(self.port, timeout=timeout)

    def call(self, path, request, **kwargs):
        """grpcweb.call() against this gateway."""
        return grpcweb.call(self.port, path, request, **kwargs)

    def running(self):
        return self.proc.poll() is None

    def signal(self, sig):
        os.kill(self.pid, sig)

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM and wait; returns the exit code, or None if it did not exit in time
        (the process is then SIGKILLed)."""
        if self.running():
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.exit_code = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait()
                self.exit_code = None
        elif self.exit_code is None:
            self.exit_code = self.proc.returncode
        return self.exit_code


def _portico_binary():
    path = Path(os.environ.get("PORTICO_BIN", "build/portico"))
    if not path.is_absolute():
        path = REPO_ROOT / path
    return path


def _attach_log(node, name, proc):
    """Register a process whose log is appended to the test report if the test fails."""
    logs = node.__dict__.setdefault("_ptc_logs", [])
    if all(p is not proc for _, p in logs):
        logs.append((name, proc))


@pytest.fixture(scope="module")
def echo_server(tmp_path_factory):
    """Echo upstream shared by the tests of a module. Do not kill it; use fresh_echo_server."""
    server = EchoServer(tmp_path_factory.mktemp("echo") / "echo_server.log")
    yield server
    server.stop()


@pytest.fixture
def fresh_echo_server(tmp_path, request):
    """Echo upstream private to one test (may be killed/stopped by the test)."""
    server = EchoServer(tmp_path / "echo_server.log")
    _attach_log(request.node, "echo server", server)
    yield server
    server.stop()


@pytest.fixture
def named_echo(tmp_path, request):
    """Factory of private echo upstreams that tag their answers with `x-served-by: NAME`
    (`extra_args`: more echo_server.py flags, e.g. ["--health-file", path])."""
    servers = []

    def start(name, extra_args=()):
        s = EchoServer(tmp_path / f"echo-{name}.log", extra_args=["--name", name, *extra_args])
        servers.append(s)
        _attach_log(request.node, f"echo {name}", s)
        return s

    yield start
    for s in servers:
        s.stop()


@pytest.fixture
def portico(request, tmp_path):
    """Factory starting gateway processes:

        gw = portico("--max-streams", "10")            # CLI mode
        gw = portico(config=YAML)                       # --config mode
        gw = portico(upstream=fresh_echo_server)        # other upstream (EchoServer or port)
        gw = portico(config=YAML, wrap=["unshare", …])  # run through a command (argv prefix)

    CLI mode passes `--listen 127.0.0.1:<free> --upstream 127.0.0.1:<echo> --workers 1
    --log-level debug` followed by the extra args. In config mode `{listen_port}` and
    `{upstream_port}` in the YAML are substituted and only `--config <file>` plus the extra
    args are passed. At teardown every instance gets SIGTERM and must exit 0 within 15 s
    (unless `expect_clean_exit` was set False), and no sanitizer report may be in its log.
    """
    binary = _portico_binary()
    instances = []

    def start(*extra_args, config=None, upstream=None, listen_port=None, env=None, wrap=()):
        if not binary.exists():
            pytest.fail(f"portico binary not found at {binary} (set PORTICO_BIN or build it)",
                        pytrace=False)
        if upstream is None:
            upstream = request.getfixturevalue("echo_server")
        upstream_port = upstream if isinstance(upstream, int) else upstream.port
        port = listen_port or free_port()
        n = len(instances)
        if config is None:
            args = ["--listen", f"127.0.0.1:{port}", "--upstream", f"127.0.0.1:{upstream_port}",
                    "--workers", "1", "--log-level", "debug"]
        else:
            cfg = tmp_path / f"portico-{n}.yaml"
            cfg.write_text(config.replace("{upstream_port}", str(upstream_port))
                           .replace("{listen_port}", str(port)))
            args = ["--config", str(cfg)]
        args += [str(a) for a in extra_args]
        if wrap:  # the wrapper execs the gateway: the process (pid, signals, exit code) stays the same
            gw = Portico(wrap[0], [*map(str, wrap[1:]), str(binary), *args], port, tmp_path / f"portico-{n}.log", env=env)
        else:
            gw = Portico(binary, args, port, tmp_path / f"portico-{n}.log", env=env)
        instances.append(gw)
        _attach_log(request.node, f"portico-{n}", gw)
        if isinstance(upstream, EchoServer):
            _attach_log(request.node, "echo server", upstream)
        return gw

    yield start

    problems = []
    for i, gw in enumerate(instances):
        mine = []
        code = gw.stop()
        if gw.expect_clean_exit and code != 0:
            why = f"did not exit within {STOP_TIMEOUT}s" if code is None else f"exited {code}"
            mine.append(f"portico-{i} (pid {gw.pid}) {why} after SIGTERM")
        bad = gw.sanitizer_lines()
        if bad:
            mine.append(f"portico-{i} sanitizer report:\n  " + "\n  ".join(bad[:20]))
        problems += mine
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach gateway / private upstream logs to failed test reports."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for name, proc in getattr(item, "_ptc_logs", []):
            try:
                report.sections.append((f"{name} log", _tail(proc.log_text())))
            except OSError:
                pass
