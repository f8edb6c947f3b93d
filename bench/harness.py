#!/usr/bin/python3
"""Portico benchmark harness. Run it through bench/run, which installs what is missing, builds
Portico (Release) and the grpc-go upstream, then calls this with their paths. See bench/README.md
for what is measured and how.

Systems (all in front of the same grpc-go upstream, all started once and kept for the whole run):
  direct      h2load → upstream                                  native gRPC over h2c
  haproxy     h2load → HAProxy → upstream                        h2c → h2c (the issue's reference)
  haproxy-h1  h2load → HAProxy → upstream                        native gRPC over HTTP/1.1 → h2c
  portico-h1  h2load → Portico → upstream                        gRPC-Web over HTTP/1.1 → h2c
  portico-h2  (only if Portico answers HTTP/2 prior knowledge)    gRPC-Web over h2c → h2c

Progress goes to stderr; the Markdown summary to stdout and, with everything else (h2load logs,
JSON, callgrind output), to the run's directory under bench/.build/results/.
Exit status: 0 if every step ran and every check passed, 1 otherwise. Timings are never checked.
"""

import argparse
import datetime
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from grpcclient import CallError, H1Client, H2Client, frame  # noqa: E402

UNARY = "/portico.bench.Echo/Unary"
STREAM = "/portico.bench.Echo/Stream"
ACTIVE = "/portico.bench.Echo/Active"
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
MiB = 1 << 20

FAILURES = []
PASSED = [0]  # checks that passed (the closing "N passed, N failed" line)
SERVERS = []


def log(*a):
    print("[bench %s]" % time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


def passed():
    PASSED[0] += 1


def fail(msg):
    FAILURES.append(msg)
    log("FAIL:", msg)


# ----------------------------------------------------------------------------------------------
# processes


def child_setup():
    # a shell that started us in the background may have left SIGINT ignored: children get the
    # default actions, so that stop() works
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_DFL)
    raise_nofile()


def raise_nofile():
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (65536, 65536))
    except (ValueError, OSError):
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def free_port():
    s = socket.socket()
    s.bind((HOST, 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Server:
    def __init__(self, name, argv, port, outdir, timeout=20.0, more_ports=()):
        self.name, self.argv, self.port = name, argv, port
        self.calls = 0  # successful calls made through it (h2load and the Python client): what its logs must count
        self.logpath = os.path.join(outdir, "%s.log" % name)
        self.logf = open(self.logpath, "wb")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.logf,
                                     stderr=subprocess.STDOUT, preexec_fn=child_setup,
                                     start_new_session=True)
        SERVERS.append(self)
        deadline = time.monotonic() + timeout
        for p in (port,) + tuple(more_ports):
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError("%s exited with %s at start; see %s" %
                                       (name, self.proc.returncode, self.logpath))
                try:
                    socket.create_connection((HOST, p), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError("%s: port %d not accepting after %.0fs" % (name, p, timeout))
                    time.sleep(0.05)

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc.poll() is None

    def cpu_split(self):
        """(utime, stime) in seconds of the whole process (all threads, dead ones included)."""
        with open("/proc/%d/stat" % self.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK

    def cpu_seconds(self):
        return sum(self.cpu_split())

    def status_kib(self, key):
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        return 0

    def rss_kib(self):
        return self.status_kib("VmRSS")

    def peak_rss_kib(self):
        return self.status_kib("VmHWM")

    def reset_peak(self):
        try:
            with open("/proc/%d/clear_refs" % self.pid, "w") as f:
                f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        except OSError:
            pass

    def nfds(self):
        try:
            return len(os.listdir("/proc/%d/fd" % self.pid))
        except OSError:
            return -1

    def stop(self, sig=signal.SIGTERM, timeout=20.0):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.logf.close()
        if self in SERVERS:
            SERVERS.remove(self)


def stop_all():
    for s in list(SERVERS):
        try:
            s.stop(timeout=5)
        except Exception:
            pass


def haproxy_maxconn():
    """HAProxy reserves two file descriptors per connection: keep maxconn within what this
    process may open (the hard RLIMIT_NOFILE is 20000 in some sandboxes and cannot be raised)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    return max(1000, min(40000, (hard - 100) // 2))


# HAProxy writes "HTTP/1.1 200 " (empty reason phrase) for a response that came over HTTP/2; h2load's HTTP/1.1
# parser then records no status and counts the call as failed. Every frontend that serves HTTP/1.1 has this.
HAPROXY_H1_STATUS = "    http-response set-status 200 reason OK if { status 200 }\n"


def haproxy_config(path, threads, port_h2, port_h1, upstream_port, maxconn=None, global_extra="", frontends=None):
    """The bare configuration: one h2c and one HTTP/1.1 frontend. `frontends` (the production profile) replaces
    them: [(name, bind line, more lines)]."""
    maxconn = maxconn or haproxy_maxconn()
    if frontends is None:
        frontends = [("grpc_h2c", "%s:%d proto h2" % (HOST, port_h2), ""),
                     ("grpc_h1", "%s:%d" % (HOST, port_h1), HAPROXY_H1_STATUS)]
    text = """# written by bench/harness.py
global
    nbthread %d
    maxconn %d
%s
defaults
    mode http
    maxconn %d
    timeout connect 5s
    timeout client 600s
    timeout server 600s
    timeout http-request 600s
    timeout http-keep-alive 600s
""" % (threads, maxconn, global_extra, maxconn)
    for name, bind, more in frontends:
        text += """
frontend %s
    bind %s
%s    default_backend echo
""" % (name, bind, more)
    text += """
backend echo
    server echo1 %s:%d proto h2
""" % (HOST, upstream_port)
    with open(path, "w") as f:
        f.write(text)


def portico_config(path, extra=""):
    # Only what the CLI cannot say: room for the 10,000-connection scenario, and an idle timeout
    # longer than any scenario.
    with open(path, "w") as f:
        f.write("# written by bench/harness.py\nlimits:\n  max_connections: 40000\n"
                "timeouts:\n  idle: 600s\n" + extra)


_JWT = {}


def jwt_setup(outdir):
    """An ES256 key made with the openssl CLI, its JWKS, a token valid for an hour (PyJWT), and the
    configuration that requires it on every call; also the public key as PEM (for HAProxy's jwt_verify).
    Returns (configuration, header, public key path); made once per results directory."""
    if outdir in _JWT:
        return _JWT[outdir]
    import jwt
    from cryptography.hazmat.primitives import serialization
    from jwt.algorithms import ECAlgorithm
    key_path = os.path.join(outdir, "jwt-es256.pem")
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key_path],
                   check=True, capture_output=True)
    with open(key_path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    pub_path = os.path.join(outdir, "jwt-es256.pub.pem")
    with open(pub_path, "wb") as f:
        f.write(key.public_key().public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo))
    jwk = json.loads(ECAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="bench", use="sig")
    jwks = os.path.join(outdir, "jwks.json")
    with open(jwks, "w") as f:
        json.dump({"keys": [jwk]}, f)
    now = int(time.time())
    token = jwt.encode({"iss": "https://bench.test/", "aud": "bench", "sub": "bench-user", "exp": now + 3600}, key,
                       algorithm="ES256", headers={"kid": "bench"})
    cfg = ("jwt:\n  providers:\n    - {name: bench, issuer: 'https://bench.test/', audiences: [bench], jwks_file: %s,\n"
           "       claims_to_headers: [{claim: sub, header: x-auth-user-id}]}\n"
           "  default: {providers: [bench]}\n" % json.dumps(jwks))
    _JWT[outdir] = (cfg, "authorization: Bearer " + token, pub_path)
    return _JWT[outdir]


def tls_setup(outdir):
    """A self-signed P-256 certificate for 127.0.0.1 (openssl CLI): (cert, key, cert+key in one file for HAProxy)."""
    cert, key, both = (os.path.join(outdir, f) for f in ("tls-cert.pem", "tls-key.pem", "tls-both.pem"))
    if not os.path.exists(both):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
        with open(both, "w") as f:
            f.write(open(cert).read() + open(key).read())
    return cert, key, both


def start_portico(args, name, workers, upstream_port, outdir, wrap=(), extra_config="", tls=False):
    port = free_port()
    # a directory of its own: Portico watches its configuration file's directory (inotify), and the results
    # directory gets h2load's logs and the access logs while calls are measured (7,000 wake-ups of the control
    # thread in a 20,000-call callgrind run, ~300 instructions per call that no deployment pays)
    cfgdir = os.path.join(outdir, "config")
    os.makedirs(cfgdir, exist_ok=True)
    cfg = os.path.join(cfgdir, "%s.yaml" % name if extra_config else "portico.yaml")
    portico_config(cfg, extra_config)
    argv = list(wrap) + [args.portico, "--config", cfg, "--listen", "%s:%d" % (HOST, port),
                         "--upstream", "%s:%d" % (HOST, upstream_port), "--workers", str(workers),
                         "--log-level", "warn"]
    if tls:
        cert, key, _ = tls_setup(outdir)
        argv += ["--tls-cert", cert, "--tls-key", key]
    return Server(name, argv, port, outdir, timeout=120 if wrap else 20)


def start_haproxy(name, threads, upstream_port, outdir, wrap=(), tls=False):
    """The bare HAProxy; tls: its two frontends take TLS instead (ALPN h2 on port, http/1.1 on port_h1)."""
    p2, p1 = free_port(), free_port()
    cfg = os.path.join(outdir, "%s.cfg" % name)
    frontends = None
    if tls:
        both = tls_setup(outdir)[2]
        frontends = [("grpc_tls_h2", "%s:%d ssl crt %s alpn h2" % (HOST, p2, both), ""),
                     ("grpc_tls_h1", "%s:%d ssl crt %s alpn http/1.1" % (HOST, p1, both), HAPROXY_H1_STATUS)]
    # under valgrind, a smaller maxconn (smaller fd tables to set up) starts much faster
    haproxy_config(cfg, threads, p2, p1, upstream_port, 2000 if wrap else None, frontends=frontends)
    srv = Server(name, list(wrap) + ["haproxy", "-db", "-f", cfg], p2, outdir,
                 timeout=120 if wrap else 20, more_ports=(p1,))
    srv.port_h1 = p1
    return srv


# ----------------------------------------------------------------------------------------------
# profiles: what a proxy is configured to do, named in its system's name
#
#   portico-h1, portico-h2, haproxy (h2c), haproxy-h1       bare: routing only (Portico's defaults: request ids
#                                                            and trace context on)
#   portico-h1-min, portico-h2-min                           Portico routing only, as HAProxy's bare: request ids
#                                                            and trace context off (callgrind)
#   portico-h1-jwt, portico-h1-obs                           one feature (callgrind)
#   portico-prod[-jwt][-tls]-h1|-h2, haproxy-prod[-jwt][-tls][-h1]
#                                                            the production profile (bench/README.md)

# Every call of the production profile carries a trace context to continue (Portico makes a span of its own)
TRACEPARENT = "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
# Request ids (made: h2load sends none), W3C trace context, one header rule; the -obs parts come from obs_setup
PORTICO_PROD = """request_id: {header: x-request-id}
trace: {sampled: false}
headers:
  request:
    - {set: x-client-ip, value: "%CLIENT_IP%"}
"""
# -min: routing only, the same work as HAProxy's bare profile (Portico's defaults make a request id and a span)
PORTICO_MIN = "request_id: false\ntrace: false\n"
# HAProxy's equivalents, per frontend: a UUIDv4 request id sent upstream, the same header rule, a JSON access log
# line per request (to stdout, which is the process's log file: see haproxy_prod_check)
HAPROXY_PROD = """    option dontlognull
    unique-id-format %[uuid()]
    unique-id-header x-request-id
    http-request set-header x-client-ip %[src]
    log global
    log-format '{"request_id":"%ID","client":"%ci:%cp","frontend":"%f","method":"%HM","path":"%HPO","http_status":%ST,"bytes_in":%U,"bytes_out":%B,"ttfb_ms":%Tr,"duration_ms":%Ta,"server":"%s","time":"%tr"}'
"""
# ...and an ES256 check of the bearer token on every call (HAProxy has no cache of verified tokens): algorithm,
# signature, issuer, audience, expiry; the subject sent upstream as Portico's claims_to_headers does
HAPROXY_JWT = """    http-request set-var(txn.bearer) http_auth_bearer
    http-request set-var(txn.now) date()
    http-request deny status 401 unless { var(txn.bearer),jwt_header_query('$.alg') -m str ES256 }
    http-request deny status 401 unless { var(txn.bearer),jwt_verify("ES256","%s") -m int 1 }
    http-request deny status 401 unless { var(txn.bearer),jwt_payload_query('$.iss') -m str https://bench.test/ }
    http-request deny status 401 unless { var(txn.bearer),jwt_payload_query('$.aud') -m str bench }
    http-request deny status 401 if { var(txn.bearer),jwt_payload_query('$.exp','int'),sub(txn.now) -m int lt 0 }
    http-request set-header x-auth-user-id %%[var(txn.bearer),jwt_payload_query('$.sub')]
"""


def profile_spec(name):
    parts = name.split("-")
    return {"product": parts[0], "prod": "prod" in parts, "jwt": "jwt" in parts, "tls": "tls" in parts,
            "obs": "obs" in parts or "prod" in parts, "min": "min" in parts,
            "proto": "h1" if "h1" in parts else "h2"}


def start_haproxy_prod(ctx, name, upstream_port, wrap=()):
    """One HAProxy with the production profile on six frontends: {h2c, HTTP/1.1, TLS (ALPN h2 and http/1.1)} x
    {without, with the JWT check}, and a metrics frontend (its Prometheus exporter)."""
    _, _, pub = jwt_setup(ctx.outdir)
    _, _, both = tls_setup(ctx.outdir)
    ports, frontends = {}, []
    for jwt in (False, True):
        more = HAPROXY_PROD + (HAPROXY_JWT % pub if jwt else "")
        j = "_jwt" if jwt else ""
        p2, p1, pt = free_port(), free_port(), free_port()
        frontends += [("prod%s_h2c" % j, "%s:%d proto h2" % (HOST, p2), more),
                      ("prod%s_h1" % j, "%s:%d" % (HOST, p1), more + HAPROXY_H1_STATUS),
                      ("prod%s_tls" % j, "%s:%d ssl crt %s alpn h2,http/1.1" % (HOST, pt, both),
                       more + HAPROXY_H1_STATUS)]
        ports.update({(jwt, False, "h2"): p2, (jwt, False, "h1"): p1, (jwt, True, "h2"): pt, (jwt, True, "h1"): pt})
    mport = free_port()
    frontends.append(("metrics", "%s:%d" % (HOST, mport),
                      "    http-request use-service prometheus-exporter if { path /metrics }\n"))
    cfg = os.path.join(ctx.outdir, "%s.cfg" % name)
    haproxy_config(cfg, 1, 0, 0, upstream_port, 2000 if wrap else None,
                   "    log stdout format raw local0\n", frontends)
    srv = Server(name, list(wrap) + ["haproxy", "-db", "-f", cfg], ports[(False, False, "h2")], ctx.outdir,
                 timeout=120 if wrap else 20, more_ports=tuple(set(ports.values())) + (mport,))
    srv.ports, srv.metrics_port, srv.access_log = ports, mport, None
    return srv


def start_profile(ctx, profile, upstream, wrap=(), procname=None):
    """Starts the proxy that the system name `profile` describes (one worker / thread), for every system of the same
    product and configuration: srv.ports maps (jwt, tls, proto) to the port to call; srv.metrics_port is where to
    scrape (-obs and -prod), srv.access_log Portico's access-log file."""
    sp, procname = profile_spec(profile), procname or profile
    if sp["product"] == "haproxy":
        if sp["prod"]:
            return start_haproxy_prod(ctx, procname, upstream.port, wrap)
        srv = start_haproxy(procname, 1, upstream.port, ctx.outdir, wrap)
        srv.ports = {(False, False, "h2"): srv.port, (False, False, "h1"): srv.port_h1}
        srv.metrics_port = srv.access_log = None
        return srv
    cfg, obs = "", None
    if sp["jwt"]:
        # every call carries an ES256 token the gateway verifies (once per worker: the verified-token cache serves
        # the repeats), maps its subject to a header
        cfg += jwt_setup(ctx.outdir)[0]
    if sp["obs"]:
        obs = obs_setup(ctx.outdir, procname)
        cfg += obs[0]
    if sp["prod"]:
        cfg += PORTICO_PROD
    if sp["min"]:
        cfg += PORTICO_MIN
    srv = start_portico(ctx.args, procname, 1, upstream.port, ctx.outdir, wrap, cfg, sp["tls"])
    srv.ports = {(sp["jwt"], sp["tls"], proto): srv.port for proto in ("h1", "h2")}
    srv.metrics_port, srv.access_log = (obs[1], obs[2]) if obs else (None, None)
    return srv


def profile_system(ctx, name, srv, upstream):
    """The System `name` on a proxy that start_profile started."""
    sp = profile_spec(name)
    headers = ([TRACEPARENT] if sp["prod"] else []) + ([jwt_setup(ctx.outdir)[1]] if sp["jwt"] else [])
    return System(name, "", sp["proto"], "grpc-web" if sp["product"] == "portico" else "grpc",
                  srv.ports[(sp["jwt"], sp["tls"], sp["proto"])], srv, upstream, headers, sp["tls"])


def profile_check(label, srv, scraper):
    """A proxy with metrics and an access log counted every call made through it (srv.calls); returns the counts."""
    if srv.access_log:
        return obs_check(label, scraper, srv.access_log, srv.calls)
    return haproxy_prod_check(label, srv, scraper)


def haproxy_prod_check(label, srv, scraper):
    """HAProxy's access log (the JSON lines in its stdout) and its Prometheus exporter (2xx responses of the prod_
    frontends) both count srv.calls."""
    text = scraper.scrape()
    ok = sum(float(v) for v in re.findall(
        r'^haproxy_frontend_http_responses_total\{proxy="prod[^"]*",code="2xx"\} (\S+)$', text, re.M))
    srv.logf.flush()
    with open(srv.logpath, "rb") as f:
        lines = sum(1 for line in f if line.startswith(b'{"request_id"'))
    if ok != srv.calls or lines != srv.calls or scraper.errors:
        fail("%s: %d calls made; /metrics counted %d 2xx, the access log has %d lines (scrape errors: %s)" %
             (label, srv.calls, ok, lines, scraper.errors[:3]))
    else:
        passed()
    return {"scrapes": scraper.count, "handled_ok": ok, "access_log_lines": lines, "access_log_dropped": 0}


# ----------------------------------------------------------------------------------------------
# systems and load


class System:
    """One way of reaching the upstream: where h2load connects and how it speaks."""

    def __init__(self, name, desc, proto, mode, port, proxy, upstream, extra_headers=(), tls=False):
        self.name, self.desc = name, desc
        self.proto, self.mode = proto, mode  # proto: h2 | h1; mode: grpc | grpc-web
        self.port, self.proxy, self.upstream = port, proxy, upstream
        self.extra_headers = list(extra_headers)  # e.g. an Authorization header for the JWT-checked runs
        self.tls = tls  # https: ALPN h2 (proto h2) or HTTP/1.1 over TLS (proto h1)

    def shape(self, inflight, streaming=False):
        """(connections, streams per connection) for `inflight` calls in flight. HTTP/1.1 gets one
        call per connection (-m > 1 with --h1 would be pipelining); HTTP/2 multiplexes 16 per
        connection (or 1, for long streams)."""
        if self.proto == "h1" or streaming:
            return inflight, 1
        m = min(16, inflight)
        return max(1, inflight // m), m

    def headers(self):
        if self.mode == "grpc-web":
            return ["content-type: application/grpc-web+proto", "x-grpc-web: 1"] + self.extra_headers
        return ["content-type: application/grpc", "te: trailers"] + self.extra_headers

    def client(self, **kw):
        if self.proto == "h2":
            return H2Client(HOST, self.port, mode=self.mode, extra_headers=self.extra_headers, tls=self.tls)
        return H1Client(HOST, self.port, mode=self.mode, extra_headers=self.extra_headers, tls=self.tls, **kw)


_DUR = re.compile(r"finished in ([\d.]+)(us|ms|s),")


def parse_h2load(out):
    r = {}
    m = _DUR.search(out)
    if m:
        r["seconds"] = float(m.group(1)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0}[m.group(2)]
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout", out)
    if m:
        (r["total"], r["started"], r["done"], r["succeeded"], r["failed"], r["errored"],
         r["timeout"]) = map(int, m.groups())
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    if m:
        r["2xx"], r["3xx"], r["4xx"], r["5xx"] = map(int, m.groups())
    m = re.search(r"\((\d+)\) data", out)
    if m:
        r["data_bytes"] = int(m.group(1))
    return r


def percentile(sorted_vals, q):
    if not sorted_vals:
        return float("nan")
    return sorted_vals[min(len(sorted_vals) - 1, int(round(q * (len(sorted_vals) - 1))))]


def run_h2load(ctx, system, path, body_file, n, conns, streams, tag, expect_body=None):
    """One h2load run against `system`, with the proxy's and upstream's CPU time and peak RSS
    read from /proc around it. Checks that every call succeeded with HTTP 200 and, when
    `expect_body` (bytes per successful call, learnt by verify()) is given, that h2load counted
    exactly n * expect_body response body bytes."""
    logfile = os.path.join(ctx.outdir, "h2load.%s.%s.log" % (system.name, tag))
    cmd = ["h2load", "-n", str(n), "-c", str(conns), "-m", str(streams), "-t", "1",
           "-d", body_file, "--log-file", logfile]
    if system.proto == "h1":
        cmd.append("--h1")
    for h in system.headers():
        cmd += ["-H", h]
    cmd.append("%s://%s:%d%s" % ("https" if system.tls else "http", HOST, system.port, path))
    procs = [p for p in (system.proxy, system.upstream) if p is not None]
    for p in procs:
        p.reset_peak()
    cpu0 = {p.name: p.cpu_split() for p in procs}
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    try:
        cp = subprocess.run(cmd, capture_output=True, text=True, timeout=ctx.h2load_timeout)
        out = cp.stdout + cp.stderr
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        fail("%s %s: h2load timed out after %ss" % (system.name, tag, ctx.h2load_timeout))
    wall = time.monotonic() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = parse_h2load(out)
    r.update(system=system.name, tag=tag, n=n, conns=conns, streams=streams, wall=wall)
    ok = (r.get("succeeded") == n and r.get("2xx") == n)
    if not ok:
        fail("%s %s: h2load: %s of %s calls succeeded with 2xx (%s)" %
             (system.name, tag, r.get("2xx"), n, out.strip().splitlines()[-8:] if out else "no output"))
    if expect_body is not None and r.get("data_bytes") != n * expect_body:
        ok = False
        fail("%s %s: h2load counted %s response body bytes, expected %d calls x %d bytes" %
             (system.name, tag, r.get("data_bytes"), n, expect_body))
    r["verified"] = ok and expect_body is not None
    if ok:
        passed()
    calls = r.get("succeeded") or 0
    if system.proxy is not None:
        system.proxy.calls += calls
    secs = r.get("seconds") or wall
    r["calls_per_s"] = calls / secs if secs else 0.0
    r["mib_per_s"] = (r.get("data_bytes") or 0) / MiB / secs if secs else 0.0
    for p in procs:
        key = "proxy" if p is system.proxy else "upstream"
        u1, s1 = p.cpu_split()
        cpu = (u1 - cpu0[p.name][0]) + (s1 - cpu0[p.name][1])
        r[key + "_cpu_s"] = cpu
        r[key + "_sys_pct"] = 100.0 * (s1 - cpu0[p.name][1]) / cpu if cpu else float("nan")
        r[key + "_cpu_us_per_call"] = cpu * 1e6 / calls if calls else float("nan")
        r[key + "_peak_rss_mib"] = p.peak_rss_kib() / 1024
        if not p.alive():
            fail("%s died during %s %s" % (p.name, system.name, tag))
    client_cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    r["client_cpu_pct"] = 100.0 * client_cpu / wall if wall else 0.0
    lat = []
    try:
        with open(logfile) as f:
            for line in f:
                parts = line.split("\t")
                if len(parts) >= 3:
                    lat.append(int(parts[2]))
    except OSError:
        pass
    lat.sort()
    r["p50_ms"] = percentile(lat, 0.50) / 1000
    r["p99_ms"] = percentile(lat, 0.99) / 1000
    if not ctx.keep_logs:
        try:
            os.unlink(logfile)
        except OSError:
            pass
    return r


def verify(ctx, system, path, body, calls, check_messages, what):
    """Makes `calls` calls with the Python client (over 1-4 connections), checks HTTP 200,
    grpc-status 0 and the messages; returns the response body bytes one call produces (as h2load
    counts them), or None after a failure."""
    sizes = set()
    nconn = max(1, min(4, calls // 50))
    done = 0
    try:
        for c in range(nconn):
            cl = system.client()
            try:
                for _ in range(calls // nconn if c < nconn - 1 else calls - done):
                    r = cl.call(path, body)
                    done += 1
                    if r.http_status != 200 or r.grpc_status != 0:
                        fail("%s %s: HTTP %s grpc-status %s %r" % (system.name, what, r.http_status,
                                                                    r.grpc_status, r.grpc_message))
                        return None
                    if not check_messages(r.messages):
                        fail("%s %s: wrong messages (%d received)" % (system.name, what,
                                                                       len(r.messages)))
                        return None
                    sizes.add(r.body_bytes)
            finally:
                cl.close()
    except (OSError, CallError) as e:
        fail("%s %s: %s after %d calls" % (system.name, what, e, done))
        return None
    if len(sizes) != 1:
        fail("%s %s: response body size varies between calls: %s" % (system.name, what, sorted(sizes)))
        return None
    ctx.verified_calls[system.name] = ctx.verified_calls.get(system.name, 0) + done
    if system.proxy is not None:
        system.proxy.calls += done
    passed()
    return sizes.pop()


def median_run(runs):
    """Median of each numeric field over repetitions (peak RSS: the maximum)."""
    out = {}
    for k in runs[0]:
        vals = [r[k] for r in runs if isinstance(r.get(k), (int, float)) and not isinstance(r.get(k), bool)]
        if len(vals) == len(runs):
            out[k] = max(vals) if k.endswith("peak_rss_mib") else statistics.median(vals)
        else:
            out[k] = runs[0][k]
    out["verified"] = all(r.get("verified") for r in runs)
    out["reps"] = len(runs)
    out["calls_per_s_all"] = [round(r["calls_per_s"]) for r in runs]
    return out


def body_file(ctx, name, body):
    path = os.path.join(ctx.outdir, "body.%s.bin" % name)
    with open(path, "wb") as f:
        f.write(body)
    return path


def payload(size):
    return bytes((i * 7 + 3) & 0xFF for i in range(size))


# ----------------------------------------------------------------------------------------------
# scenarios


def scenario_unary(ctx, name, systems, size, n, reps, inflight):
    log("scenario %s: unary %d-byte messages, %d calls x %d reps, %d in flight" %
        (name, size, n, reps, inflight))
    msg = payload(size)
    body = frame(msg)
    bf = body_file(ctx, name, body)
    expect = {}
    for s in systems:
        expect[s.name] = verify(ctx, s, UNARY, body, ctx.verify_calls,
                                lambda msgs: msgs == [msg], name)
    runs = {s.name: [] for s in systems}
    for s in systems:  # warm-up, not recorded
        c, m = s.shape(inflight)
        run_h2load(ctx, s, UNARY, bf, max(n // 10, 100), c, m, name + ".warmup")
    for rep in range(reps):
        k = rep % len(systems)
        for s in systems[k:] + systems[:k]:
            c, m = s.shape(inflight)
            r = run_h2load(ctx, s, UNARY, bf, n, c, m, "%s.%d" % (name, rep), expect[s.name])
            log("  %-16s rep %d: %8.0f calls/s  p50 %6.2f ms  p99 %6.2f ms  proxy %6.1f µs/call" %
                (s.name, rep, r["calls_per_s"], r["p50_ms"], r["p99_ms"],
                 r.get("proxy_cpu_us_per_call", float("nan"))))
            runs[s.name].append(r)
    res = {"kind": "unary", "size": size, "n": n, "reps": reps, "inflight": inflight,
           "systems": {s.name: median_run(runs[s.name]) for s in systems},
           "expect_body_bytes": expect}
    ctx.results["scenarios"][name] = res
    return res


def scenario_stream(ctx, name, systems, count, size, n, reps, inflight):
    log("scenario %s: server streaming, %d calls x %d messages x %d bytes, %d reps" %
        (name, n, count, size, reps))
    body = frame(struct.pack(">II", count, size))
    bf = body_file(ctx, name, body)
    expect = {}
    for s in systems:
        expect[s.name] = verify(ctx, s, STREAM, body, 2,
                                lambda msgs: len(msgs) == count and all(len(x) == size for x in msgs),
                                name)
    runs = {s.name: [] for s in systems}
    for rep in range(reps):
        k = rep % len(systems)
        for s in systems[k:] + systems[:k]:
            c, m = s.shape(inflight, streaming=True)
            r = run_h2load(ctx, s, STREAM, bf, n, c, m, "%s.%d" % (name, rep), expect[s.name])
            mib = (r.get("data_bytes") or 0) / MiB
            for key in ("proxy", "upstream"):
                if key + "_cpu_s" in r:
                    r[key + "_cpu_ms_per_mib"] = r[key + "_cpu_s"] * 1e3 / mib if mib else float("nan")
            log("  %-16s rep %d: %8.1f MiB/s  proxy %s ms CPU/MiB" %
                (s.name, rep, r["mib_per_s"], "%.2f" % r["proxy_cpu_ms_per_mib"]
                 if "proxy_cpu_ms_per_mib" in r else "-"))
            runs[s.name].append(r)
    res = {"kind": "stream", "count": count, "size": size, "n": n, "reps": reps,
           "inflight": inflight, "systems": {s.name: median_run(runs[s.name]) for s in systems}}
    ctx.results["scenarios"][name] = res
    return res


def scenario_idle(ctx, name, targets, nconn):
    """Opens nconn keep-alive connections (HTTP/1.1, or HTTP/2 for h2 systems) to each target, makes one call on
    each (so every connection has served a request) and leaves them idle; RSS growth / nconn."""
    log("scenario %s: %d idle keep-alive connections" % (name, nconn))
    msg = payload(10)
    res = {"kind": "idle", "nconn": nconn, "proto": targets[0].proto, "tls": targets[0].tls, "systems": {}}
    for s in targets:
        srv = s.proxy
        want = nconn
        if s.name.startswith("haproxy"):
            want = min(nconn, haproxy_maxconn() - 500)
            if want < nconn:
                log("  %s: %d connections only (maxconn %d: file descriptor limit %d)" %
                    (s.name, want, haproxy_maxconn(), resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
        time.sleep(ctx.settle / 3)
        base_rss, base_fds = srv.rss_kib(), srv.nfds()
        nfail = len(FAILURES)
        conns, t0 = [], time.monotonic()
        try:
            for i in range(want):
                c = s.client(timeout=30)
                conns.append(c)
                r = c.call(UNARY, frame(msg))
                if r.http_status != 200 or r.grpc_status != 0 or r.messages != [msg]:
                    fail("%s %s: connection %d: HTTP %s grpc-status %s" %
                         (s.name, name, i, r.http_status, r.grpc_status))
                    break
            opened = time.monotonic() - t0
            time.sleep(ctx.settle)
            rss, fds = srv.rss_kib(), srv.nfds()
            # the connections are still usable after idling: one more call on a few of them
            for c in conns[:: max(1, len(conns) // 10)]:
                r = c.call(UNARY, frame(msg))
                if r.grpc_status != 0:
                    fail("%s %s: call on an idle connection: grpc-status %s" % (s.name, name, r.grpc_status))
                    break
        except (OSError, CallError) as e:
            fail("%s %s: %s after %d connections" % (s.name, name, e, len(conns)))
            rss, fds, opened = srv.rss_kib(), srv.nfds(), time.monotonic() - t0
        n_ok = len(conns)
        for c in conns:
            c.close()
        time.sleep(max(ctx.settle, 2.5))  # Portico gives memory back at its next 2 s check (src/control/memory.c)
        after = srv.rss_kib()
        per = (rss - base_rss) * 1024 / n_ok if n_ok else float("nan")
        if len(FAILURES) == nfail:
            passed()
        res["systems"][s.name] = {
            "connections": n_ok, "rss_before_mib": base_rss / 1024, "rss_idle_mib": rss / 1024,
            "rss_after_close_mib": after / 1024, "bytes_per_conn": per,
            "fds_before": base_fds, "fds_idle": fds, "open_seconds": opened}
        log("  %-16s %d conns: RSS %.1f → %.1f MiB (%.0f bytes/conn), after close %.1f MiB" %
            (s.name, n_ok, base_rss / 1024, rss / 1024, per, after / 1024))
    ctx.results["scenarios"][name] = res
    return res


def scenario_slow_reader(ctx, name, targets, count, size, rate, seconds, bound_mib):
    """One server-streaming call of count x size bytes read at `rate` bytes/s through a small
    socket receive buffer for `seconds`, then abandoned. Samples the proxy's RSS every 50 ms."""
    log("scenario %s: slow reader, %d x %d-byte stream read at %.1f MiB/s for %.0fs" %
        (name, count, size, rate / MiB, seconds))
    res = {"kind": "slow_reader", "count": count, "size": size, "rate": rate,
           "seconds": seconds, "bound_mib": bound_mib, "systems": {}}
    body = frame(struct.pack(">II", count, size))
    for s in targets:
        srv = s.proxy
        time.sleep(ctx.settle / 3)
        base = srv.rss_kib()
        peak, got, t_close = base, 0, time.monotonic()
        try:
            c = H1Client(HOST, s.port, mode=s.mode, timeout=30, rcvbuf=32768)
            c.send(STREAM, body)
            t0 = time.monotonic()
            next_sample = t0
            while True:
                now = time.monotonic()
                if now - t0 >= seconds:
                    break
                if now >= next_sample:
                    peak = max(peak, srv.rss_kib())
                    next_sample = now + 0.05
                allowed = rate * (now - t0) - got
                if allowed < 4096:
                    time.sleep(0.005)
                    continue
                d = c.sock.recv(int(min(allowed, 16384)))
                if not d:
                    fail("%s %s: stream ended early after %d bytes" % (s.name, name, got))
                    break
                got += len(d)
            peak = max(peak, srv.rss_kib())
            c.close()  # abandon the call: the proxy should cancel the upstream stream
            t_close = time.monotonic()
        except (OSError, CallError) as e:
            fail("%s %s: %s" % (s.name, name, e))
        # the upstream's count of Stream calls still running, asked directly; 0 once the proxy
        # has reset the abandoned stream (waits up to 10 s for it)
        active, deadline = None, time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                cl = H2Client(HOST, s.upstream.port)
                rr = cl.call(ACTIVE, frame(b""))
                cl.close()
                active = struct.unpack(">Q", rr.messages[0])[0]
            except (OSError, CallError, IndexError, struct.error) as e:
                fail("%s %s: asking the upstream for active streams: %s" % (s.name, name, e))
                break
            if active == 0:
                break
            time.sleep(0.1)
        cancel_s = time.monotonic() - t_close
        time.sleep(ctx.settle)
        after = srv.rss_kib()
        growth = (peak - base) / 1024
        stream_mib = count * size / MiB
        r = {"rss_before_mib": base / 1024, "rss_peak_mib": peak / 1024, "growth_mib": growth,
             "read_mib": got / MiB, "stream_mib": stream_mib, "rss_after_close_mib": after / 1024,
             "upstream_active_after_close": active, "cancel_seconds": cancel_s,
             "bounded": growth < bound_mib}
        res["systems"][s.name] = r
        log("  %-16s read %.1f of %.0f MiB; RSS %.1f MiB, peak +%.1f MiB, after close %.1f MiB" %
            (s.name, got / MiB, stream_mib, base / 1024, growth, after / 1024))
        if active != 0:
            fail("%s %s: the upstream still runs %s stream(s) %.1fs after the client went away" %
                 (s.name, name, active, cancel_s))
        else:
            passed()
        if ctx.judge_bounds and not r["bounded"]:
            fail("%s %s: RSS grew by %.1f MiB (bound %d MiB)" % (s.name, name, growth, bound_mib))
        elif ctx.judge_bounds:
            passed()
    ctx.results["scenarios"][name] = res
    return res


class Scraper:
    """GET /metrics every `interval` seconds in a thread (what Prometheus does, far more often than its usual
    15 s, so that the scrapes' cost shows), until stop() (or `limit` scrapes); keeps the last scrape."""

    def __init__(self, port, interval=1.0, limit=None):
        import threading
        self.port, self.interval, self.limit, self.count, self.last, self.errors = port, interval, limit, 0, "", []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def scrape(self):
        import urllib.request
        with urllib.request.urlopen("http://%s:%d/metrics" % (HOST, self.port), timeout=30) as r:
            return r.read().decode()

    def _one(self):
        try:
            self.last = self.scrape()
        except OSError as e:
            self.errors.append(str(e))
        self.count += 1

    def _run(self):
        while (self.limit is None or self.count < self.limit) and not self._stop.wait(self.interval):
            self._one()

    def stop(self):
        """Stops the thread; with a `limit`, first makes the scrapes still missing (so that there are exactly
        `limit`, however long the run took)."""
        self._stop.set()
        self._thread.join(60)
        while self.limit is not None and self.count < self.limit:
            self._one()


def obs_setup(outdir, name):
    """Metrics and the access log on: an admin listener to scrape, JSON lines to a file."""
    admin = free_port()
    path = os.path.join(outdir, "access-%s.log" % name)
    if os.path.exists(path):
        os.unlink(path)
    return "admin: {address: '%s:%d'}\naccess_log: {path: %s}\n" % (HOST, admin, json.dumps(path)), admin, path


def obs_check(name, scraper, log_path, calls):
    """The observed run counted every call: grpc_server_handled_total{grpc_code="OK"} of a scrape, and the access
    log's lines (queued ones written by the writer thread, which is asynchronous: waited for) plus the ones dropped
    because a worker's ring was full."""
    def value(text, name):
        m = re.search(r"^%s (\S+)$" % name, text, re.M)
        return int(float(m.group(1))) if m else 0

    deadline = time.monotonic() + 60
    while True:
        text = scraper.scrape()
        ok = sum(float(v) for v in re.findall(r'^grpc_server_handled_total\{grpc_code="OK",[^}]*\} (\S+)$', text, re.M))
        queued, dropped = value(text, "portico_access_log_lines_total"), value(text, "portico_access_log_dropped_total")
        with open(log_path) as f:
            lines = sum(1 for _ in f)
        if lines >= queued or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if ok != calls or queued + dropped != calls or lines != queued or scraper.errors:
        fail("%s: %d calls made; /metrics counted %d OK, %d access-log lines queued and %d dropped; the file has %d "
             "(scrape errors: %s)" % (name, calls, ok, queued, dropped, lines, scraper.errors[:3]))
    else:
        passed()
    return {"scrapes": scraper.count, "handled_ok": ok, "access_log_lines": lines, "access_log_dropped": dropped}


# Portico's functions (exported: -O3 keeps them out of line) whose inclusive cost is what metrics and the access log
# add, by where it is spent. The recording functions do not call one another.
OBS_COST = (
    ("metrics: recording in the worker", ("ptc_metrics_method", "ptc_metrics_call_started", "ptc_metrics_call_ended")),
    ("access log: the line, formatted and queued by the worker", ("ptc_access_log_wall_us", "ptc_access_log_write")),
    ("access log: the writer thread", ("writer_main",)),
    ("metrics: the scrapes, on the control thread", ("ptc__admin_metrics",)),
)


def inclusive_costs(dump, names):
    """Inclusive instructions of the named functions in a callgrind dump (GCC clone suffixes ignored)."""
    cp = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", dump],
                        capture_output=True, text=True, timeout=300)
    out = {}
    for line in cp.stdout.splitlines():
        m = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+\S*?:([A-Za-z_]\w*)(?:\.\w+\.\d+)*(?:\s|$)", line)
        if m and m.group(2) in names:
            out[m.group(2)] = max(out.get(m.group(2), 0), int(m.group(1).replace(",", "")))
    return out


# ...and what the rest of the production profile adds: the filters (called through pointers, so never inlined) and
# OpenSSL's record layer (libssl's exported functions)
PROD_COST = (
    ("request id: made, sent upstream and back", ("request_id_on_request", "request_id_on_response")),
    ("trace context: parsed, a span made", ("trace_on_request",)),
    ("header rule", ("headers_on_request", "headers_on_response", "headers_on_trailers")),
    ("JWT: the filter (token, verified-token cache, claims to headers)", ("auth_on_request",)),
    ("TLS: SSL_read + SSL_write (OpenSSL)", ("SSL_read", "SSL_write")),
)
COST_GROUPS = OBS_COST + PROD_COST


def obs_costs(dump, calls):
    """Instructions per call spent in each COST_GROUPS group."""
    names = {f for _, fs in COST_GROUPS for f in fs}
    costs = inclusive_costs(dump, names)
    return {label: sum(costs.get(f, 0) for f in fs) / calls for label, fs in COST_GROUPS} if calls else {}


def callgrind_totals(path):
    ir = None
    with open(path) as f:
        for line in f:
            if line.startswith("totals:") or line.startswith("summary:"):
                ir = int(line.split()[1])
    return ir


OBS_SCRAPES = 10  # /metrics scrapes during the measured calls of the callgrind scenario's -obs system


def scenario_callgrind(ctx, name, upstream, warm, n, inflight, plans):
    """Instructions per call under callgrind: warm up, zero the counters, N calls, dump, divide.
    User-space instructions of the proxy process only (all its threads), kernel work excluded.
    `plans`: the systems' names (see profile_spec), narrowed by --systems."""
    if ctx.args.systems:
        plans = [p for p in plans if p in ctx.args.systems.split(",")]
    log("scenario %s: callgrind, %d warm-up + %d measured calls" % (name, warm, n))
    res = {"kind": "callgrind", "n": n, "warmup": warm, "inflight": inflight, "systems": {}}
    msg = payload(10)
    body = frame(msg)
    bf = body_file(ctx, name, body)
    cgdir = os.path.join(ctx.outdir, "callgrind")
    os.makedirs(cgdir, exist_ok=True)
    started = {}
    for sysname in plans:
        # named by scenario too: callgrind and callgrind-prod measure some systems of the same name in one run
        prefix = "callgrind.%s.out" % sysname if name == "callgrind" else "callgrind.%s.%s.out" % (name, sysname)
        out = os.path.join(cgdir, prefix)
        wrap = ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out]
        try:
            # -obs and -prod: metrics scraped every second and the access log on (JSON lines to a file)
            srv = start_profile(ctx, sysname, upstream, wrap, "callgrind-" + sysname)
            s = profile_system(ctx, sysname, srv, upstream)
        except RuntimeError as e:
            fail("%s: %s" % (name, e))
            continue
        try:
            expect = verify(ctx, s, UNARY, body, 20, lambda msgs: msgs == [msg], name)
            c, m = s.shape(inflight)
            wr = run_h2load(ctx, s, UNARY, bf, warm, c, m, name + ".warmup")
            before = set(os.listdir(cgdir))
            subprocess.run(["callgrind_control", "-z", str(srv.pid)], capture_output=True, timeout=60)
            # -obs: OBS_SCRAPES scrapes spread over the measured calls (the interval estimated from the warm-up's
            # pace; the ones still missing when the calls end are made before the dump), to show what scrapes
            # cost without the figure depending on how slow callgrind is; -prod: once, after the dump (for the
            # checks), so that the figure is the calls'
            scraper = None
            if srv.metrics_port and "-obs" in sysname:
                pace = (wr.get("wall") or 1.0) / max(1, warm)
                scraper = Scraper(srv.metrics_port, pace * n / (OBS_SCRAPES + 1), OBS_SCRAPES)
            elif srv.metrics_port:
                scraper = Scraper(srv.metrics_port, 1e9)
            r = run_h2load(ctx, s, UNARY, bf, n, c, m, name, expect)
            if scraper:
                scraper.stop()
            cp = subprocess.run(["callgrind_control", "-d", str(srv.pid)], capture_output=True,
                                text=True, timeout=120)
            new = sorted(set(os.listdir(cgdir)) - before)
            dumps = [os.path.join(cgdir, f) for f in new if f.startswith(prefix)]
            if not dumps:
                fail("%s %s: no callgrind dump (%s)" % (name, sysname, cp.stdout + cp.stderr))
                continue
            dump = max(dumps, key=os.path.getmtime)
            ir = callgrind_totals(dump)
            calls = r.get("succeeded") or 0
            res["systems"][sysname] = {"instructions": ir, "calls": calls,
                                       "instructions_per_call": ir / calls if ir and calls else None,
                                       "dump": os.path.relpath(dump, ctx.outdir)}
            if scraper:
                # every call the proxy served since it started: the sample check's, the warm-up and the measured ones
                res["systems"][sysname]["observability"] = profile_check(name + " " + sysname, srv, scraper)
            if sysname.startswith("portico"):
                res["systems"][sysname]["obs_costs"] = obs_costs(dump, calls)
            started[sysname] = dump
            if ir:
                passed()
            log("  %-16s %s instructions / %d calls = %.0f per call" %
                (sysname, ir, calls, ir / calls if ir and calls else float("nan")))
        finally:
            srv.stop(timeout=60)
    # shorten "/abs/…/bench/.build/src-SHA/src/x.c", "[/abs/…/portico]", library paths
    strip = [re.compile(r"\S*\.build/src-[0-9a-f]+/"), re.escape(" [%s]" % os.path.abspath(ctx.args.portico)),
             re.escape(os.path.dirname(HERE) + "/"), "/usr/lib/x86_64-linux-gnu/", "/usr/share/llhttp/"]
    for sysname, key in (("portico-h1", "portico"), ("portico-h1-min", "portico-min")):
        if sysname not in started:
            continue
        for incl, label in (("yes", "inclusive"), ("no", "self")):
            cp = subprocess.run(["callgrind_annotate", "--inclusive=" + incl, "--threshold=100", started[sysname]],
                                capture_output=True, text=True)
            path = os.path.join(ctx.outdir, "callgrind-%s-%s.txt" % (key, label))
            with open(path, "w") as f:
                f.write(cp.stdout)
            res[key.replace("-", "_") + "_top_" + label] = top_functions(cp.stdout, 25, strip,
                                                                          skip_total=(incl == "no"))
    ctx.results["scenarios"][name] = res
    return res


def top_functions(annotate, k, strip=(), skip_total=False):
    """The first k function lines of callgrind_annotate's output, paths shortened. skip_total
    drops self-cost lines of ~100%: after `callgrind_control -z`, the frames that were on the
    stack (thread start, worker loop, event_base_loop) show the whole total as their own cost."""
    out, started = [], False
    for line in annotate.splitlines():
        if "file:function" in line:
            started = True
            continue
        if not started or line.startswith("---"):
            continue
        if not line.strip():
            if out:
                break
            continue
        if skip_total and re.search(r"\((100\.0|99\.\d+)%\)", line):
            continue
        for pat in strip:
            line = re.sub(pat, "", line)
        out.append(line.rstrip())
        if len(out) >= k:
            break
    return out


class fresh_proxies:
    """A new Portico (1 worker) and HAProxy (1 thread) for one scenario, as HTTP/1.1 systems (tls: over TLS)."""

    def __init__(self, ctx, upstream, tag, tls=False):
        self.ctx, self.upstream, self.tag, self.tls = ctx, upstream, tag, tls

    def __enter__(self):
        self.p = start_portico(self.ctx.args, "portico-" + self.tag, 1, self.upstream.port, self.ctx.outdir,
                               tls=self.tls)
        self.h = start_haproxy("haproxy-" + self.tag, 1, self.upstream.port, self.ctx.outdir, tls=self.tls)
        time.sleep(self.ctx.settle / 2)
        t = "-tls" if self.tls else ""
        return (System("portico%s-h1" % t, "", "h1", "grpc-web", self.p.port, self.p, self.upstream, tls=self.tls),
                System("haproxy%s-h1" % t, "", "h1", "grpc", self.h.port_h1, self.h, self.upstream, tls=self.tls))

    def __exit__(self, *exc):
        for srv in (self.p, self.h):
            if not srv.alive():
                fail("%s exited during the scenario (see %s)" % (srv.name, srv.logpath))
        self.p.stop()
        self.h.stop()
        return False


def scenario_production(ctx, name, upstream, bare, n, reps, inflight):
    """unary-10B through the bare systems and the production profile of both proxies (JWT off and on, TLS off and
    on), in one interleaved run; metrics scraped every second throughout; at the end every proxy's access log and
    metrics must count every call made through it."""
    procs, scrapers = [], []
    systems = list(bare)
    try:
        for profile in ("portico-prod", "portico-prod-jwt", "portico-prod-tls", "portico-prod-jwt-tls"):
            srv = start_profile(ctx, profile, upstream)
            procs.append(srv)
            systems += [profile_system(ctx, profile + "-h1", srv, upstream)]
            if ctx.results.get("portico_h2c"):
                systems += [profile_system(ctx, profile + "-h2", srv, upstream)]
        srv = start_profile(ctx, "haproxy-prod", upstream)
        procs.append(srv)
        for jwt in ("", "-jwt"):
            for tls in ("", "-tls"):
                systems += [profile_system(ctx, "haproxy-prod%s%s%s" % (jwt, tls, h), srv, upstream)
                            for h in ("", "-h1")]
        scrapers = [Scraper(p.metrics_port) for p in procs]
        res = scenario_unary(ctx, name, systems, 10, n, reps, inflight)
        for p, sc in zip(procs, scrapers):
            sc.stop()
            res.setdefault("observability", {})[p.name] = profile_check(name + " " + p.name, p, sc)
        return res
    finally:
        for sc in scrapers:
            sc.stop()
        for p in procs:
            if not p.alive():
                fail("%s exited during the scenario (see %s)" % (p.name, p.logpath))
            p.stop()


def strace_counts(path):
    """{syscall: (calls, errors)} from `strace -c` output."""
    out = {}
    with open(path) as f:
        for line in f:
            m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(\d+)?\s*([a-z_0-9]+)\s*$", line)
            if m and m.group(3) != "total":
                out[m.group(3)] = (int(m.group(1)), int(m.group(2) or 0))
    return out


def scenario_syscalls(ctx, name, upstream, warm, n, inflight):
    """System calls per call by name: a fresh proxy, warmed up, then `strace -c -f -p` attached (every thread) for n
    calls of the unary 10-byte load shape, detached with SIGINT."""
    log("scenario %s: strace -c over %d calls" % (name, n))
    res = {"kind": "syscalls", "n": n, "inflight": inflight, "systems": {}}
    msg = payload(10)
    body = frame(msg)
    bf = body_file(ctx, name, body)
    names = ["portico-h1", "haproxy", "haproxy-h1"] + (["portico-h2"] if ctx.results.get("portico_h2c") else [])
    for sysname in names:
        srv = start_profile(ctx, sysname, upstream, procname="strace-" + sysname)
        try:
            s = profile_system(ctx, sysname, srv, upstream)
            expect = verify(ctx, s, UNARY, body, 20, lambda msgs: msgs == [msg], name)
            c, m = s.shape(inflight)
            run_h2load(ctx, s, UNARY, bf, warm, c, m, name + ".warmup")
            out = os.path.join(ctx.outdir, "strace.%s.txt" % sysname)
            st = subprocess.Popen(["strace", "-c", "-f", "-o", out, "-p", str(srv.pid)], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
            # attached once strace says so ("Process N attached with K threads")
            nthreads, seen, deadline = len(os.listdir("/proc/%d/task" % srv.pid)), b"", time.monotonic() + 20
            os.set_blocking(st.stderr.fileno(), False)
            while b" attached" not in seen and st.poll() is None and time.monotonic() < deadline:
                seen += st.stderr.read() or b""
                time.sleep(0.05)
            if st.poll() is not None or b" attached" not in seen:
                # e.g. kernel.yama.ptrace_scope >= 1: strace may not attach to a process it did not start
                fail("%s %s: strace did not attach: %s" % (name, sysname, (seen + (st.stderr.read() or b"")).decode(
                    errors="replace").strip()[-300:]))
                if st.poll() is None:
                    st.kill()
                    st.wait()
                continue
            time.sleep(0.2)
            r = run_h2load(ctx, s, UNARY, bf, n, c, m, name, expect)
            st.send_signal(signal.SIGINT)
            st.wait(60)
            counts = strace_counts(out)
            calls = r.get("succeeded") or 0
            if not counts or not calls:
                fail("%s %s: no strace counts (%s)" % (name, sysname, out))
                continue
            passed()
            res["systems"][sysname] = {"calls": calls, "threads": nthreads,
                                       "per_call": {k: v[0] / calls for k, v in counts.items()},
                                       "errors_per_call": {k: v[1] / calls for k, v in counts.items() if v[1]},
                                       "total_per_call": sum(v[0] for v in counts.values()) / calls}
            log("  %-16s %.2f syscalls per call" % (sysname, res["systems"][sysname]["total_per_call"]))
        finally:
            srv.stop()
    ctx.results["scenarios"][name] = res
    return res


def scenario_workers(ctx, name, upstream, base_portico, base_haproxy, n, reps, inflight):
    log("scenario %s: Portico --workers 1 vs 2, HAProxy nbthread 1 vs 2" % name)
    p2 = start_portico(ctx.args, "portico-w2", 2, upstream.port, ctx.outdir)
    h2 = start_haproxy("haproxy-t2", 2, upstream.port, ctx.outdir)
    try:
        systems = [
            System("portico-h1 w1", "", "h1", "grpc-web", base_portico.port, base_portico, upstream),
            System("portico-h1 w2", "", "h1", "grpc-web", p2.port, p2, upstream),
            System("haproxy t1", "", "h2", "grpc", base_haproxy.port, base_haproxy, upstream),
            System("haproxy t2", "", "h2", "grpc", h2.port, h2, upstream),
        ]
        return scenario_unary(ctx, name, systems, 10, n, reps, inflight)
    finally:
        p2.stop()
        h2.stop()


# ----------------------------------------------------------------------------------------------
# report


def fmt(v, spec="%.1f"):
    if v is None or (isinstance(v, float) and v != v):
        return "–"
    return spec % v


def ratio(a, b):
    if not a or not b or a != a or b != b:
        return "–"
    return "%.2f×" % (a / b)


def report(ctx):
    res, L = ctx.results, []
    env = res["env"]
    L.append("Run %s on %s (%d cores, %s), %s. Portico %s. %s. Load average (1 min) at start %s, "
             "at end %s." %
             (res["started"], env["cpu"], env["cores"], env["memory"], env["os"], env["portico"],
              "SMOKE (tiny N, numbers meaningless)" if ctx.args.smoke else
              "%d repetitions interleaved, medians" % ctx.reps, res.get("loadavg_start"),
              res.get("loadavg_end")))
    L.append("")
    for name, sc in res["scenarios"].items():
        if sc["kind"] == "unary":
            L.append("### %s — unary, %d-byte message, %d calls/run, %d in flight" %
                     (name, sc["size"], sc["n"], sc["inflight"]))
            L.append("")
            L.append("| system | conns×streams | calls/s | p50 ms | p99 ms | proxy CPU µs/call | "
                     "(of it kernel) | upstream CPU µs/call | proxy peak RSS MiB | h2load CPU | all OK |")
            L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
            for sname, r in sc["systems"].items():
                L.append("| %s | %d×%d | %s | %s | %s | %s | %s | %s | %s | %s%% | %s |" % (
                    sname, r["conns"], r["streams"], fmt(r["calls_per_s"], "%.0f"),
                    fmt(r["p50_ms"], "%.2f"), fmt(r["p99_ms"], "%.2f"),
                    fmt(r.get("proxy_cpu_us_per_call")),
                    fmt(r.get("proxy_sys_pct"), "%.0f%%"), fmt(r.get("upstream_cpu_us_per_call")),
                    fmt(r.get("proxy_peak_rss_mib")), fmt(r["client_cpu_pct"], "%.0f"),
                    "yes" if r["verified"] else "**NO**"))
            L.extend(ratio_lines(sc))
            for pname, ob in sc.get("observability", {}).items():
                L.append("")
                L.append("%s: %d calls counted by /metrics, %d access-log lines (%d dropped), %d scrapes" % (
                    pname, ob["handled_ok"], ob["access_log_lines"], ob.get("access_log_dropped", 0), ob["scrapes"]))
            L.append("")
        elif sc["kind"] == "stream":
            L.append("### %s — server streaming, %d calls × %d messages × %d bytes, %d in flight" %
                     (name, sc["n"], sc["count"], sc["size"], sc["inflight"]))
            L.append("")
            L.append("| system | MiB/s | proxy CPU ms/MiB | upstream CPU ms/MiB | proxy peak RSS MiB | "
                     "h2load CPU | all OK |")
            L.append("|---|---:|---:|---:|---:|---:|---|")
            for sname, r in sc["systems"].items():
                L.append("| %s | %s | %s | %s | %s | %s%% | %s |" % (
                    sname, fmt(r["mib_per_s"]), fmt(r.get("proxy_cpu_ms_per_mib"), "%.2f"),
                    fmt(r.get("upstream_cpu_ms_per_mib"), "%.2f"), fmt(r.get("proxy_peak_rss_mib")),
                    fmt(r["client_cpu_pct"], "%.0f"), "yes" if r["verified"] else "**NO**"))
            d = sc["systems"].get("direct")
            if d:
                L.append("")
                L.append("Throughput relative to direct: " + ", ".join(
                    "%s %s" % (sname, ratio(r["mib_per_s"], d["mib_per_s"]))
                    for sname, r in sc["systems"].items() if sname != "direct"))
            L.append("")
        elif sc["kind"] == "idle":
            L.append("### %s — %d idle %s%s keep-alive connections (one call made on each)" %
                     (name, sc["nconn"], "HTTP/2" if sc.get("proto") == "h2" else "HTTP/1.1",
                      " over TLS" if sc.get("tls") else ""))
            L.append("")
            L.append("| system | connections | RSS before MiB | RSS idle MiB | bytes/connection | "
                     "RSS after close MiB |")
            L.append("|---|---:|---:|---:|---:|---:|")
            for sname, r in sc["systems"].items():
                L.append("| %s | %d | %s | %s | %s | %s |" % (
                    sname, r["connections"], fmt(r["rss_before_mib"]), fmt(r["rss_idle_mib"]),
                    fmt(r["bytes_per_conn"], "%.0f"), fmt(r["rss_after_close_mib"])))
            L.append("")
        elif sc["kind"] == "syscalls":
            names = list(sc["systems"])
            L.append("### %s — system calls per call (`strace -c -f` attached after warm-up, %d calls, 10-byte unary, "
                     "%d in flight)" % (name, sc["n"], sc["inflight"]))
            L.append("")
            L.append("| syscall | " + " | ".join(names) + " |")
            L.append("|---|" + "---:|" * len(names))
            L.append("| **all** | " + " | ".join("**%.2f**" % sc["systems"][n]["total_per_call"] for n in names) + " |")
            calls = {}
            for n in names:
                for k, v in sc["systems"][n]["per_call"].items():
                    calls[k] = max(calls.get(k, 0), v)
            for k in sorted(calls, key=lambda k: -calls[k]):
                if calls[k] < 0.005:
                    continue
                L.append("| %s | " % k + " | ".join(fmt(sc["systems"][n]["per_call"].get(k), "%.3f") for n in names)
                         + " |")
            errs = ["%s %s %.3f" % (n, k, v) for n in names for k, v in sc["systems"][n]["errors_per_call"].items()
                    if v >= 0.005]
            if errs:
                L.append("")
                L.append("Of them failed (per call; EAGAIN mostly): " + ", ".join(errs))
            L.append("")
        elif sc["kind"] == "slow_reader":
            L.append("### %s — slow reader: %d × %d-byte stream (%.0f MiB) read at %.1f MiB/s "
                     "for %.0f s, then abandoned" % (name, sc["count"], sc["size"],
                                                     sc["count"] * sc["size"] / MiB,
                                                     sc["rate"] / MiB, sc["seconds"]))
            L.append("")
            L.append("| system | read MiB | RSS before MiB | RSS peak growth MiB | RSS after close MiB "
                     "| upstream stream cancelled after close | bounded (< %d MiB) |" % sc["bound_mib"])
            L.append("|---|---:|---:|---:|---:|---|---|")
            for sname, r in sc["systems"].items():
                cancelled = ("yes, within %.1f s" % r["cancel_seconds"]
                             if r["upstream_active_after_close"] == 0 else "**no**")
                L.append("| %s | %s | %s | %s | %s | %s | %s |" % (
                    sname, fmt(r["read_mib"]), fmt(r["rss_before_mib"]), fmt(r["growth_mib"]),
                    fmt(r["rss_after_close_mib"]), cancelled, "yes" if r["bounded"] else "**no**"))
            L.append("")
        elif sc["kind"] == "callgrind":
            L.append("### %s — instructions per call (callgrind, %d calls after %d warm-up, "
                     "10-byte unary, %d in flight)" % (name, sc["n"], sc["warmup"], sc["inflight"]))
            L.append("")
            L.append("| system | instructions/call |")
            L.append("|---|---:|")
            for sname, r in sc["systems"].items():
                L.append("| %s | %s |" % (sname, fmt(r["instructions_per_call"], "%.0f")))
            for pn, hn in (("portico-h1", "haproxy"), ("portico-h1", "haproxy-h1"), ("portico-h2", "haproxy"),
                           ("portico-h1-min", "haproxy"), ("portico-h1-min", "haproxy-h1"),
                           ("portico-h2-min", "haproxy"), ("portico-h1-obs", "portico-h1")) + prod_pairs(sc["systems"]):
                p, h = sc["systems"].get(pn), sc["systems"].get(hn)
                if p and h:
                    L.append("")
                    L.append("%s/%s instructions per call: %s" %
                             (pn, hn, ratio(p["instructions_per_call"], h["instructions_per_call"])))
            o, b = sc["systems"].get("portico-h1-obs"), sc["systems"].get("portico-h1")
            if o and b and o.get("observability") and o["instructions_per_call"] and b["instructions_per_call"]:
                ob = o["observability"]
                L.append("")
                L.append("portico-h1-obs: the JSON access log on and /metrics scraped %d times during the measured calls "
                         "(%d access-log lines, %d dropped); %+.0f instructions per call (%+.1f%%) over portico-h1 "
                         "(which records metrics too: they cannot be turned off)" %
                         (ob["scrapes"], ob["access_log_lines"], ob.get("access_log_dropped", 0),
                          o["instructions_per_call"] - b["instructions_per_call"],
                          100.0 * (o["instructions_per_call"] / b["instructions_per_call"] - 1)))
            withc = [n for n, r in sc["systems"].items() if r.get("obs_costs")]
            if withc:
                L.append("")
                L.append("Where Portico spends it, by feature (inclusive instructions per call of `%s`):" %
                         "`, `".join(f for _, fs in COST_GROUPS for f in fs))
                L.append("")
                L.append("| | " + " | ".join(withc) + " |")
                L.append("|---|" + "---:|" * len(withc))
                for label, _ in COST_GROUPS:
                    if any(sc["systems"][n]["obs_costs"].get(label, 0) >= 1 for n in withc):
                        L.append("| %s | " % label + " | ".join(
                            fmt(sc["systems"][n]["obs_costs"].get(label), "%.0f") for n in withc) + " |")
            for sysname, key in (("portico-h1", "portico"), ("portico-h1-min", "portico_min")):
                for label, how in (("inclusive", "--inclusive=yes"), ("self", "--inclusive=no")):
                    if sc.get(key + "_top_" + label):
                        L.append("")
                        L.append("%s, top functions by %s cost (`callgrind_annotate %s`, all threads, %d calls):" %
                                 (sysname, label, how, sc["systems"][sysname]["calls"]))
                        L.append("")
                        L.append("```")
                        L.extend(sc[key + "_top_" + label])
                        L.append("```")
            L.append("")
    L.append("Checks: %s. Calls verified by the Python client (grpc-status 0 and payload): %s." % (
        "all passed" if not FAILURES else "%d FAILED" % len(FAILURES),
        ", ".join("%s %d" % kv for kv in sorted(ctx.verified_calls.items()))))
    return "\n".join(L) + "\n"


def prod_pairs(names):
    """(Portico, HAProxy) system names of the production profile that compare: same JWT and TLS, same downstream
    protocol (haproxy-prod… without -h1 is HTTP/2)."""
    return tuple((n, n.replace("portico-", "haproxy-").replace("-h2", "")) for n in names
                 if n.startswith("portico-prod"))


def ratio_lines(sc):
    s = sc["systems"]
    out = []
    for pn, ref in (("portico-h1", "haproxy"), ("portico-h1", "haproxy-h1"), ("portico-h2", "haproxy"),
                    ("portico-h1 w2", "portico-h1 w1"), ("haproxy t2", "haproxy t1")) + prod_pairs(s):
        p, h = s.get(pn), s.get(ref)
        if p and h:
            out.append("")
            out.append("%s/%s: calls/s %s, CPU µs/call %s, peak RSS %s, p99 %s" % (
                pn, ref, ratio(p["calls_per_s"], h["calls_per_s"]),
                ratio(p.get("proxy_cpu_us_per_call"), h.get("proxy_cpu_us_per_call")),
                ratio(p.get("proxy_peak_rss_mib"), h.get("proxy_peak_rss_mib")),
                ratio(p["p99_ms"], h["p99_ms"])))
    return out


# ----------------------------------------------------------------------------------------------


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=20).stdout.strip()
    except Exception:
        return ""


def environment(args):
    cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip() or platform.processor()
    mem = sh("awk '/MemTotal/ {printf \"%.0f GiB\", $2/1048576}' /proc/meminfo")
    osr = sh(". /etc/os-release && echo $PRETTY_NAME") + ", Linux " + platform.release()
    grpc = sh("grep -o '\"[0-9.]*\"' /usr/share/gocode/src/google.golang.org/grpc/version.go").strip('"')
    return {
        "cpu": cpu, "cores": os.cpu_count(), "memory": mem, "os": osr,
        "portico": args.portico_desc or args.portico,
        "haproxy": sh("haproxy -v | head -1"), "h2load": sh("h2load --version"),
        "go": sh("go version"), "grpc_go": grpc, "valgrind": sh("valgrind --version"),
    }


class Ctx:
    pass


def rereport(args):
    ctx = Ctx()
    ctx.args, ctx.reps = args, 1
    with open(os.path.join(args.report, "results.json")) as f:
        ctx.results = json.load(f)
    args.smoke, ctx.reps = ctx.results.get("smoke"), ctx.results.get("reps", 1)
    ctx.verified_calls = ctx.results.get("verified_calls", {})
    FAILURES.extend(ctx.results.get("failures", []))
    for sc in ctx.results["scenarios"].values():
        if sc["kind"] == "callgrind":
            for sname, r in sc["systems"].items():
                if sname.startswith("portico") and r.get("dump") and r.get("calls"):
                    r["obs_costs"] = obs_costs(os.path.join(args.report, r["dump"]), r["calls"])
    print(report(ctx))
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--portico", required=True, help="the Portico binary to measure")
    ap.add_argument("--portico-desc", help="how to describe it in the report (e.g. the git revision)")
    ap.add_argument("--upstream-bin", required=True, help="the benchecho binary (bench/upstream)")
    ap.add_argument("--smoke", action="store_true", help="tiny N, one repetition: checks the harness runs")
    ap.add_argument("--reps", type=int, help="repetitions of each timed scenario (default 5; smoke 1)")
    ap.add_argument("--only", help="comma-separated scenarios: unary,sizes,stream,idle,slow,workers,production,"
                                   "syscalls,callgrind,callgrind-prod (the smoke leaves callgrind-prod out)")
    ap.add_argument("--systems", help="comma-separated systems the callgrind scenarios measure (default: all of "
                                      "theirs; e.g. portico-h2 for a quick look at one)")
    ap.add_argument("--out", help="results directory (default bench/.build/results/DATE)")
    ap.add_argument("--keep-logs", action="store_true", help="keep h2load's per-request logs")
    ap.add_argument("--report", metavar="DIR", help="print the report of the run in DIR again (its results.json), "
                    "the callgrind dumps' costs by feature computed afresh; runs nothing")
    args = ap.parse_args()
    if args.report:
        return rereport(args)

    ctx = Ctx()
    ctx.args = args
    ctx.reps = args.reps or (1 if args.smoke else 5)
    ctx.keep_logs = args.keep_logs
    ctx.judge_bounds = not args.smoke
    ctx.settle = 0.2 if args.smoke else 1.0  # seconds to let RSS / CPU settle between steps
    ctx.verified_calls = {}
    ctx.h2load_timeout = 120 if args.smoke else 600
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    ctx.outdir = os.path.abspath(args.out or os.path.join(HERE, ".build", "results",
                                                          stamp + ("-smoke" if args.smoke else "")))
    os.makedirs(ctx.outdir, exist_ok=True)
    raise_nofile()
    ctx.results = {"started": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
                   "smoke": args.smoke, "reps": ctx.reps, "env": environment(args), "scenarios": {}}
    ctx.results["loadavg_start"] = round(os.getloadavg()[0], 2)
    if ctx.results["loadavg_start"] > 0.5 * (os.cpu_count() or 1) and not args.smoke:
        log("warning: load average %.1f before the run: other work on this machine will skew "
            "throughput and latency (CPU per call and instructions per call suffer less)" %
            ctx.results["loadavg_start"])
    only = set((args.only or ("unary,sizes,stream,idle,slow,workers,production,syscalls,callgrind" +
                              ("" if args.smoke else ",callgrind-prod"))).split(","))

    S = args.smoke
    inflight = 8 if S else 64
    t_start = time.monotonic()
    log("results in %s" % ctx.outdir)

    def on_signal(signum, _frame):
        stop_all()
        sys.exit(128 + signum)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    try:
        up_port = free_port()
        upstream = Server("upstream", [args.upstream_bin, "-listen", "%s:%d" % (HOST, up_port)],
                          up_port, ctx.outdir)
        haproxy = start_haproxy("haproxy", 1, up_port, ctx.outdir)
        portico = start_portico(args, "portico", 1, up_port, ctx.outdir)
        direct = System("direct", "h2load → upstream, gRPC over h2c", "h2", "grpc", up_port, None, upstream)
        hap = System("haproxy", "gRPC h2c → HAProxy → h2c", "h2", "grpc", haproxy.port, haproxy, upstream)
        hap1 = System("haproxy-h1", "gRPC over HTTP/1.1 → HAProxy → h2c", "h1", "grpc",
                      haproxy.port_h1, haproxy, upstream)
        por1 = System("portico-h1", "gRPC-Web over HTTP/1.1 → Portico → h2c", "h1", "grpc-web",
                      portico.port, portico, upstream)
        systems = [direct, hap, hap1, por1]

        # gRPC-Web over h2c, once Portico speaks it downstream.
        probe = subprocess.run(["h2load", "-n", "1", "-c", "1", "-H",
                                "content-type: application/grpc-web+proto", "-d",
                                body_file(ctx, "probe", frame(b"probe")),
                                "http://%s:%d%s" % (HOST, portico.port, UNARY)],
                               capture_output=True, text=True, timeout=30)
        pr = parse_h2load(probe.stdout)
        ctx.results["portico_h2c"] = pr.get("2xx") == 1
        if ctx.results["portico_h2c"]:
            systems.append(System("portico-h2", "gRPC-Web over h2c → Portico → h2c", "h2", "grpc-web",
                                  portico.port, portico, upstream))
            log("Portico answers HTTP/2 (h2c): measuring portico-h2 too")
        else:
            log("Portico does not answer HTTP/2 prior knowledge (h2c) yet: HTTP/1.1 only")
        ctx.verify_calls = 20 if S else 200

        if "unary" in only:
            scenario_unary(ctx, "unary-10B", systems, 10, 400 if S else 60000, ctx.reps, inflight)
        if "sizes" in only:
            reps = 1 if S else max(1, min(ctx.reps, 3))
            scenario_unary(ctx, "unary-1KiB", systems, 1024, 300 if S else 60000, reps, inflight)
            scenario_unary(ctx, "unary-64KiB", systems, 65536, 40 if S else 5000, reps, inflight)
        if "stream" in only:
            reps = 1 if S else max(1, min(ctx.reps, 3))
            scenario_stream(ctx, "stream-64KiB", [s for s in systems if s.name != "haproxy-h1"],
                            16 if S else 256, 65536, 2 if S else 16, reps, 2 if S else 4)
        # Memory scenarios get fresh proxies: after the load above, freed-but-kept heap would hide
        # (or inflate) what they measure.
        if "idle" in only:
            with fresh_proxies(ctx, upstream, "idle") as (p_, h_):
                scenario_idle(ctx, "idle-conns", [p_, h_], 100 if S else 10000)
            if ctx.results.get("portico_h2c"):
                with fresh_proxies(ctx, upstream, "idle-h2") as (p_, h_):
                    scenario_idle(ctx, "idle-conns-h2", [
                        System("portico-h2", "", "h2", "grpc-web", p_.port, p_.proxy, upstream),
                        System("haproxy", "", "h2", "grpc", h_.proxy.port, h_.proxy, upstream)],
                        100 if S else 10000)
            # over TLS (HTTP/1.1 and ALPN h2): what the connection's TLS state and bufferevent_openssl add
            with fresh_proxies(ctx, upstream, "idle-tls", tls=True) as (p_, h_):
                scenario_idle(ctx, "idle-conns-tls", [p_, h_], 100 if S else 2000)
            with fresh_proxies(ctx, upstream, "idle-tls-h2", tls=True) as (p_, h_):
                scenario_idle(ctx, "idle-conns-tls-h2", [
                    System("portico-tls-h2", "", "h2", "grpc-web", p_.port, p_.proxy, upstream, tls=True),
                    System("haproxy-tls", "", "h2", "grpc", h_.proxy.port, h_.proxy, upstream, tls=True)],
                    100 if S else 2000)
        if "slow" in only:
            with fresh_proxies(ctx, upstream, "slow") as (p_, h_):
                scenario_slow_reader(ctx, "slow-reader", [p_, h_], 64 if S else 4096, 65536,
                                     1 * MiB if S else 4 * MiB, 1.0 if S else 6.0, 32)
        if "workers" in only:
            scenario_workers(ctx, "workers", upstream, portico, haproxy, 300 if S else 60000,
                             1 if S else max(1, min(ctx.reps, 3)), inflight)
        if "production" in only:
            scenario_production(ctx, "production", upstream, [s for s in systems if s.name != "direct"],
                                200 if S else 30000, 1 if S else max(1, min(ctx.reps, 3)), inflight)
        if "syscalls" in only:
            if shutil.which("strace"):
                scenario_syscalls(ctx, "syscalls", upstream, 100 if S else 2000, 300 if S else 20000, inflight)
            else:
                fail("strace not installed")
        cg = shutil.which("valgrind") and shutil.which("callgrind_control")
        if ("callgrind" in only or "callgrind-prod" in only) and not cg:
            fail("valgrind/callgrind_control not installed")
        if "callgrind" in only and cg:
            plans = ["portico-h1", "portico-h1-min", "haproxy", "haproxy-h1", "portico-h1-jwt", "portico-h1-obs"]
            if ctx.results.get("portico_h2c"):
                plans += ["portico-h2", "portico-h2-min"]
            if S:  # seconds count: each valgrind start costs several
                plans = ["portico-h1", "portico-h1-min", "haproxy", "portico-h1-jwt", "portico-h1-obs"]
            scenario_callgrind(ctx, "callgrind", upstream, 100 if S else 2000,
                               200 if S else 20000, inflight, plans)
        if "callgrind-prod" in only and cg:
            plans = ["portico-h1", "portico-h2", "haproxy", "haproxy-h1",
                     "portico-prod-h1", "portico-prod-jwt-h1", "portico-prod-h2", "portico-prod-jwt-h2",
                     "portico-prod-tls-h1", "portico-prod-tls-h2",
                     "haproxy-prod", "haproxy-prod-h1", "haproxy-prod-jwt", "haproxy-prod-tls", "haproxy-prod-tls-h1"]
            scenario_callgrind(ctx, "callgrind-production", upstream, 100 if S else 1000, 200 if S else 10000,
                               inflight, plans)
        for s in (upstream, haproxy, portico):
            if not s.alive():
                fail("%s exited during the run (see %s)" % (s.name, s.logpath))
    except Exception as e:  # a harness error is a failure, reported like the others
        import traceback
        traceback.print_exc()
        fail("harness error: %s" % e)
    finally:
        stop_all()

    ctx.results["loadavg_end"] = round(os.getloadavg()[0], 2)
    ctx.results["failures"] = FAILURES
    ctx.results["verified_calls"] = ctx.verified_calls
    ctx.results["seconds"] = time.monotonic() - t_start
    with open(os.path.join(ctx.outdir, "results.json"), "w") as f:
        json.dump(ctx.results, f, indent=1, default=str)
    md = report(ctx)
    with open(os.path.join(ctx.outdir, "summary.md"), "w") as f:
        f.write(md)
    latest = os.path.join(HERE, ".build", "results", "latest" + ("-smoke" if args.smoke else ""))
    try:
        if os.path.islink(latest) or os.path.exists(latest):
            os.unlink(latest)
        os.symlink(ctx.outdir, latest)
    except OSError:
        pass
    print(md)
    log("done in %.0fs: %s" % (ctx.results["seconds"],
                               "all checks passed" if not FAILURES else "%d FAILURES" % len(FAILURES)))
    for f_ in FAILURES:
        log("  FAIL:", f_)
    # the closing line CI reads: checks, not timings
    print("bench%s: %d passed, %d failed" % (" smoke" if args.smoke else "", PASSED[0], len(FAILURES)),
          flush=True)
    return 0 if not FAILURES else 1


if __name__ == "__main__":
    sys.exit(main())
