"""TLS: listeners (certificates, ALPN, SNI, client certificates, versions, reload on SIGHUP, the
handshake timeout), upstreams over TLS (verification, server name, client certificates, insecure mode,
ALPN h2 required), and an sslscan audit of the listener.

A test PKI is made with the openssl CLI in a temporary directory (certs.py). gRPC-Web calls go over
HTTP/1.1 on Python ssl sockets; HTTP/2 over TLS is only checked as far as ALPN selecting "h2".
"""

import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
import warnings

import pytest

import echo_pb
import grpcweb
from certs import TestPKI
from conftest import EchoServer, free_port

SANITIZED = os.environ.get("PTC_SANITIZED") == "1"
SLOW = 3 if SANITIZED else 1
UNARY = "/portico.test.Echo/Unary"
STREAM = "/portico.test.Echo/ServerStream"

# What the listener may negotiate (src/net/tls.c): TLS 1.2 suites are ECDHE + AEAD only.
TLS12_ALLOWED = {
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
}
TLS13_ALLOWED = {"TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256", "TLS_AES_128_GCM_SHA256"}


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    p = TestPKI(tmp_path_factory.mktemp("pki"))
    p.server = p.issue("server", "localhost", dns=["localhost"], ips=["127.0.0.1"], kind="rsa")
    p.server_ec = p.issue("server-ec", "localhost", dns=["localhost"], ips=["127.0.0.1"])
    p.other = p.issue("other", "other.test", dns=["other.test"])
    p.wild = p.issue("wild", "wild.test", dns=["*.wild.test"])
    p.reloaded = p.issue("reloaded", "reloaded.localhost", dns=["localhost"], ips=["127.0.0.1"])
    p.client = p.issue("client", "browser-client", client=True)
    p.rogue_client = p.issue("rogue-client", "rogue-client", client=True, ca=p.other_ca)
    p.echo = p.issue("echo", "echo.test", dns=["echo.test"], ips=["127.0.0.1"])
    p.gateway_client = p.issue("gateway-client", "portico-gateway", client=True)
    return p


@pytest.fixture(scope="module")
def tls_echo(pki, tmp_path_factory):
    """grpcio echo upstream serving TLS (certificate echo.test / 127.0.0.1)."""
    server = EchoServer(tmp_path_factory.mktemp("tls-echo") / "echo_server.log",
                        extra_args=["--tls-cert", pki.echo.cert, "--tls-key", pki.echo.key])
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mtls_echo(pki, tmp_path_factory):
    """grpcio echo upstream serving TLS and requiring a client certificate from the test CA."""
    server = EchoServer(tmp_path_factory.mktemp("mtls-echo") / "echo_server.log",
                        extra_args=["--tls-cert", pki.echo.cert, "--tls-key", pki.echo.key,
                                    "--tls-client-ca", pki.ca.cert])
    yield server
    server.stop()


# --------------------------------------------------------------------------- helpers

def client_context(pki, alpn=("http/1.1",), cert=None, verify=True, check_hostname=True,
                   min_version=None, max_version=None, ciphers=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if verify:
        ctx.load_verify_locations(pki.ca.cert)
        ctx.check_hostname = check_hostname
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    if cert is not None:
        ctx.load_cert_chain(cert.cert, cert.key)
    if ciphers is not None:
        ctx.set_ciphers(ciphers)
    with warnings.catch_warnings():  # TLS 1.0 / 1.1 are deprecated: that is the point of offering them
        warnings.simplefilter("ignore", DeprecationWarning)
        if min_version is not None:
            ctx.minimum_version = min_version
        if max_version is not None:
            ctx.maximum_version = max_version
    return ctx


class TlsConnection(grpcweb.HttpConnection):
    """grpcweb.HttpConnection over TLS (handshake done in the constructor)."""

    def __init__(self, port, context, server_hostname="localhost", timeout=grpcweb.DEFAULT_TIMEOUT,
                 suppress_ragged_eofs=True):
        super().__init__(port, timeout=timeout)
        self.sock = context.wrap_socket(self.sock, server_hostname=server_hostname,
                                        suppress_ragged_eofs=suppress_ragged_eofs)

    def peer_cn(self):
        subject = dict(x[0] for x in self.sock.getpeercert()["subject"])
        return subject["commonName"]


def tls_call(port, ctx, request, path=UNARY, server_hostname="localhost", text=False):
    with TlsConnection(port, ctx, server_hostname) as conn:
        return grpcweb.call(port, path, request, conn=conn, text=text)


def assert_echo_ok(result, message):
    status, headers, messages, trailers = result
    assert status == 200, result
    assert grpcweb.grpc_status(headers, trailers)[0] == 0, result
    assert echo_pb.EchoResponse.FromString(messages[0]).message == message


def grpc_error(result):
    status, headers, _, trailers = result
    assert status == 200, result
    code, message = grpcweb.grpc_status(headers, trailers)
    return code, urllib.parse.unquote(message)


def handshake_fails(port, ctx, server_hostname="localhost", request=True):
    """True when the connection fails during the handshake or, for TLS 1.3 client certificates, on the
    first exchange (the client's handshake ends before the server has checked its certificate)."""
    try:
        with TlsConnection(port, ctx, server_hostname, timeout=5 * SLOW) as conn:
            if not request:
                return False
            grpcweb.call(port, UNARY, echo_pb.EchoRequest(message="x"), conn=conn)
    except (ssl.SSLError, ConnectionError, grpcweb.ConnectionClosed):
        return True
    return False


def tls_config(pki, cert=None, extra="", listen="127.0.0.1:{listen_port}"):
    cert = cert or pki.server
    return f"""
listeners:
  - address: {listen}
    tls:
      cert: {cert.cert}
      key: {cert.key}
{extra}upstreams:
  - name: echo
    endpoints: ["127.0.0.1:{{upstream_port}}"]
workers: 1
log_level: debug
"""


# --------------------------------------------------------------------------- listeners

def test_grpcweb_calls_over_tls(portico, pki):
    gw = portico("--tls-cert", pki.server.cert, "--tls-key", pki.server.key)
    assert gw.wait_log(r"listening on 127\.0\.0\.1:%d \(1 workers\), TLS" % gw.port)
    ctx = client_context(pki)
    with TlsConnection(gw.port, ctx) as conn:
        assert conn.sock.selected_alpn_protocol() == "http/1.1"
        assert conn.sock.version() == "TLSv1.3"
        assert conn.peer_cn() == "localhost"
        # keep-alive: binary then text on one connection
        assert_echo_ok(grpcweb.call(gw.port, UNARY, echo_pb.EchoRequest(message="tls"), conn=conn), "tls")
        assert_echo_ok(grpcweb.call(gw.port, UNARY, echo_pb.EchoRequest(message="text"), conn=conn,
                                    text=True), "text")
    # verified by IP address too (SAN IP:127.0.0.1)
    assert_echo_ok(tls_call(gw.port, ctx, echo_pb.EchoRequest(message="ip"), server_hostname="127.0.0.1"), "ip")
    # a cleartext request on the TLS port is not served
    with grpcweb.HttpConnection(gw.port, timeout=5) as plain:
        plain.request("GET", "/healthz")
        assert plain.wait_closed(5 * SLOW)
    assert gw.wait_log(r"tls 127\.0\.0\.1:\d+: handshake failed: (http request|wrong version number)")


def test_alpn(portico, pki):
    gw = portico("--tls-cert", pki.server.cert, "--tls-key", pki.server.key)
    # no ALPN at all: HTTP/1.1
    ctx = client_context(pki, alpn=None)
    with TlsConnection(gw.port, ctx) as conn:
        assert conn.sock.selected_alpn_protocol() is None
        assert_echo_ok(grpcweb.call(gw.port, UNARY, echo_pb.EchoRequest(message="none"), conn=conn), "none")
    # only protocols the gateway does not speak: no ALPN, HTTP/1.1
    ctx = client_context(pki, alpn=("spdy/3", "http/1.0"))
    with TlsConnection(gw.port, ctx) as conn:
        assert conn.sock.selected_alpn_protocol() is None
        assert_echo_ok(grpcweb.call(gw.port, UNARY, echo_pb.EchoRequest(message="other"), conn=conn), "other")
    # h2 is preferred whatever the client's order (HTTP/2 itself is not exercised here)
    for offer in (("h2", "http/1.1"), ("http/1.1", "h2"), ("h2",)):
        with TlsConnection(gw.port, client_context(pki, alpn=offer)) as conn:
            assert conn.sock.selected_alpn_protocol() == "h2", offer
    assert gw.wait_log(r"ALPN h2, SNI localhost")


def test_sni_selects_the_certificate(portico, pki):
    extra = (f"      certificates:\n"
             f"        - {{cert: {pki.other.cert}, key: {pki.other.key}}}\n"
             f"        - cert: {pki.wild.cert}\n"
             f"          key: {pki.wild.key}\n"
             f"  - address: 127.0.0.1:{{plain_port}}\n")
    plain_port = free_port()
    gw = portico(config=tls_config(pki, extra=extra).replace("{plain_port}", str(plain_port)))
    ctx = client_context(pki)
    for name, cn in (("localhost", "localhost"), ("other.test", "other.test"), ("a.wild.test", "wild.test")):
        with TlsConnection(gw.port, ctx, server_hostname=name) as conn:
            assert conn.peer_cn() == cn, name
            assert_echo_ok(grpcweb.call(gw.port, UNARY, echo_pb.EchoRequest(message=name), conn=conn), name)
    # no match (and no SNI at all): the default certificate
    loose = client_context(pki, check_hostname=False)
    for name in ("nomatch.test", "b.a.wild.test", None):
        with TlsConnection(gw.port, loose, server_hostname=name) as conn:
            assert conn.peer_cn() == "localhost", name
    # the cleartext listener of the same configuration still serves
    assert grpcweb.call(plain_port, UNARY, echo_pb.EchoRequest(message="plain"))[0] == 200


def test_versions_and_ciphers(portico, pki):
    gw = portico("--tls-cert", pki.server.cert, "--tls-key", pki.server.key)
    for version, name in ((ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")):
        ctx = client_context(pki, min_version=version, max_version=version)
        with TlsConnection(gw.port, ctx) as conn:
            assert conn.sock.version() == name
            cipher = conn.sock.cipher()[0]
            assert cipher in (TLS12_ALLOWED if name == "TLSv1.2" else TLS13_ALLOWED), cipher
            assert_echo_ok(grpcweb.call(gw.port, UNARY, echo_pb.EchoRequest(message=name), conn=conn), name)
    # TLS 1.0 and 1.1 are refused by the server (the client is allowed to offer them: security level 0)
    for version in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
        ctx = client_context(pki, min_version=version, max_version=version, ciphers="ALL:@SECLEVEL=0")
        assert handshake_fails(gw.port, ctx, request=False), version
    assert gw.wait_log(r"handshake failed: unsupported protocol")
    # TLS 1.2 with CBC or non-ECDHE suites only: refused
    for ciphers in ("ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES256-SHA384", "AES128-GCM-SHA256", "DHE-RSA-AES128-GCM-SHA256"):
        ctx = client_context(pki, max_version=ssl.TLSVersion.TLSv1_2, ciphers=ciphers + ":@SECLEVEL=0")
        assert handshake_fails(gw.port, ctx, request=False), ciphers
    assert gw.wait_log(r"handshake failed: no shared cipher")
    # ECDSA certificates get the ECDSA suites
    gw2 = portico("--tls-cert", pki.server_ec.cert, "--tls-key", pki.server_ec.key)
    ctx = client_context(pki, max_version=ssl.TLSVersion.TLSv1_2)
    with TlsConnection(gw2.port, ctx) as conn:
        assert conn.sock.cipher()[0].startswith("ECDHE-ECDSA-")


def test_min_version_1_3(portico, pki):
    gw = portico(config=tls_config(pki, extra='      min_version: "1.3"\n'))
    ctx = client_context(pki, max_version=ssl.TLSVersion.TLSv1_2)
    assert handshake_fails(gw.port, ctx, request=False)
    with TlsConnection(gw.port, client_context(pki)) as conn:
        assert conn.sock.version() == "TLSv1.3"


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_client_certificate_required(portico, pki, version):
    extra = f"      client_auth: required\n      client_ca: {pki.ca.cert}\n"
    gw = portico(config=tls_config(pki, extra=extra))
    # without a certificate, or with one from another CA: refused
    assert handshake_fails(gw.port, client_context(pki, max_version=version))
    assert handshake_fails(gw.port, client_context(pki, max_version=version, cert=pki.rogue_client))
    assert gw.wait_log(r"handshake failed: peer did not return a certificate")
    assert gw.wait_log(r"handshake failed: certificate verify failed: unable to get local issuer certificate")
    # with one from the configured CA: served
    ctx = client_context(pki, max_version=version, cert=pki.client)
    assert_echo_ok(tls_call(gw.port, ctx, echo_pb.EchoRequest(message="mtls")), "mtls")


def test_client_certificate_optional(portico, pki):
    extra = f"      client_auth: optional\n      client_ca: {pki.ca.cert}\n"
    gw = portico(config=tls_config(pki, extra=extra))
    assert_echo_ok(tls_call(gw.port, client_context(pki), echo_pb.EchoRequest(message="anon")), "anon")
    ctx = client_context(pki, cert=pki.client)
    assert_echo_ok(tls_call(gw.port, ctx, echo_pb.EchoRequest(message="cert")), "cert")
    # a certificate that is presented must still verify
    assert handshake_fails(gw.port, client_context(pki, cert=pki.rogue_client))


def test_handshake_timeout(portico, pki):
    extra = "timeouts:\n  header_read: 500ms\n"
    gw = portico(config=tls_config(pki) + extra)
    with grpcweb.HttpConnection(gw.port, timeout=10) as conn:  # TCP only: no ClientHello
        started = time.monotonic()
        assert conn.wait_closed(5 * SLOW)
        assert time.monotonic() - started < 4 * SLOW
    assert gw.wait_log(r"handshake failed: not complete within 500 ms \(timeouts\.header_read\)")
    # a drain does not wait for connections still in their handshake
    conn = grpcweb.HttpConnection(gw.port, timeout=10)
    time.sleep(0.2)
    started = time.monotonic()
    assert gw.stop() == 0
    assert time.monotonic() - started < 5 * SLOW
    conn.close()


def test_sighup_reloads_certificates(portico, pki, tmp_path):
    cert, key = tmp_path / "live.pem", tmp_path / "live.key"
    shutil.copy(pki.server.cert, cert)
    shutil.copy(pki.server.key, key)
    # relative paths: resolved against the configuration file's directory (tmp_path)
    config = tls_config(pki).replace(pki.server.cert, "live.pem").replace(pki.server.key, "live.key")
    gw = portico(config=config)
    ctx = client_context(pki)

    # a server stream in progress on the old certificate
    old = TlsConnection(gw.port, ctx)
    assert old.peer_cn() == "localhost"
    old.request("POST", STREAM, grpcweb.request_headers(),
                grpcweb.frame(echo_pb.EchoRequest(message="s", count=8, interval_ms=250)))
    head = old.read_head(timeout=10)
    assert head.status == 200
    reader = grpcweb.FrameReader(old)
    assert reader.next_frame(timeout=10)[0] == 0

    shutil.copy(pki.reloaded.cert, cert)
    shutil.copy(pki.reloaded.key, key)
    gw.signal(signal.SIGHUP)
    assert gw.wait_log(r"configuration version 2 applied \(SIGHUP\)")
    deadline = time.monotonic() + 5
    while True:  # the worker switches as soon as it sees the handoff
        with TlsConnection(gw.port, ctx) as conn:
            if conn.peer_cn() == "reloaded.localhost":
                assert_echo_ok(grpcweb.call(gw.port, UNARY, echo_pb.EchoRequest(message="new"), conn=conn), "new")
                break
        assert time.monotonic() < deadline, "new connections still get the old certificate"
        time.sleep(0.05)

    # the open connection kept its certificate and finishes its stream
    frames = 1
    while True:
        f = reader.next_frame(timeout=10)
        if f is None:
            break
        if f[0] & grpcweb.TRAILER_FLAG:
            assert grpcweb.parse_trailer_block(f[1])["grpc-status"] == "0"
        else:
            frames += 1
    assert frames == 8
    assert old.peer_cn() == "localhost"
    old.close()

    # a broken file: the reload is refused and the current certificate stays in service
    cert.write_text("not a certificate\n")
    gw.signal(signal.SIGHUP)
    assert gw.wait_log(r"configuration reload \(SIGHUP\) failed; version 2 stays in service: "
                       r".*listeners\[0\]\.tls\.cert: cannot load certificate chain \".*live\.pem\": no start line")
    with TlsConnection(gw.port, ctx) as conn:
        assert conn.peer_cn() == "reloaded.localhost"


def test_sighup_without_tls(portico):
    gw = portico()
    gw.signal(signal.SIGHUP)
    assert gw.wait_log(r"configuration version 2 applied \(SIGHUP\)")
    assert grpcweb.call(gw.port, UNARY, echo_pb.EchoRequest(message="still"))[0] == 200


def test_bad_certificate_files_at_start_up(portico, pki, tmp_path):
    binary = os.environ.get("PORTICO_BIN", "build/portico")
    r = subprocess.run([binary, "--tls-cert", pki.server.cert, "--tls-key", pki.other.key, "--check-config"],
                       capture_output=True, text=True)
    assert r.returncode == 1
    assert re.search(r"listeners\[0\]\.tls\.key: private key \".*other\.key\" does not match the certificate",
                     r.stderr), r.stderr
    r = subprocess.run([binary, "--tls-cert", pki.server.cert], capture_output=True, text=True)
    assert r.returncode == 2 and "--tls-cert and --tls-key go together" in r.stderr
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("listeners:\n  - address: 127.0.0.1:1\n    tls:\n      cert: missing.pem\n      key: x.key\n")
    r = subprocess.run([binary, "--config", str(cfg), "--check-config"], capture_output=True, text=True)
    assert r.returncode == 1
    assert f'{cfg}:4: listeners[0].tls.cert: cannot load certificate chain "{tmp_path}/missing.pem": ' \
           "No such file or directory" in r.stderr, r.stderr


# --------------------------------------------------------------------------- upstreams

def upstream_config(tls_yaml, extra=""):
    return f"""
listeners: ["127.0.0.1:{{listen_port}}"]
upstreams:
  - name: secure
    endpoints: ["127.0.0.1:{{upstream_port}}"]
    backoff: {{initial: 50ms, max: 200ms}}
{extra}    tls:
{tls_yaml}workers: 1
log_level: debug
"""


def test_upstream_tls(portico, pki, tls_echo):
    gw = portico(config=upstream_config(f"      ca: {pki.ca.cert}\n      server_name: echo.test\n"),
                 upstream=tls_echo)
    assert_echo_ok(gw.call(UNARY, echo_pb.EchoRequest(message="up")), "up")
    # a server stream over the same TLS connection
    status, headers, messages, trailers = gw.call(STREAM, echo_pb.EchoRequest(message="s", count=3))
    assert grpcweb.grpc_status(headers, trailers)[0] == 0 and len(messages) == 3
    assert gw.wait_log(r"upstream secure: connected to 127\.0\.0\.1:%d" % tls_echo.port)


def test_upstream_default_names(portico, pki, tls_echo):
    # no server_name: the endpoint's IP address is verified (SAN IP:127.0.0.1)
    gw = portico(config=upstream_config(f"      ca: {pki.ca.cert}\n"), upstream=tls_echo)
    assert_echo_ok(gw.call(UNARY, echo_pb.EchoRequest(message="ip")), "ip")
    # the authority (without its port) is the name when set
    gw = portico(config=upstream_config(f"      ca: {pki.ca.cert}\n", extra="    authority: echo.test:443\n"),
                 upstream=tls_echo)
    assert_echo_ok(gw.call(UNARY, echo_pb.EchoRequest(message="authority")), "authority")


@pytest.mark.parametrize("tls_yaml,expected", [
    ("      ca: {other_ca}\n      server_name: echo.test\n",
     "TLS: certificate verify failed: unable to get local issuer certificate"),
    ("      ca: {ca}\n      server_name: wrong.test\n", "TLS: certificate verify failed: hostname mismatch"),
    ("      server_name: echo.test\n",  # the system store does not know the test CA
     "TLS: certificate verify failed: unable to get local issuer certificate"),
])
def test_upstream_verification_failures(portico, pki, tls_echo, tls_yaml, expected):
    yaml = tls_yaml.format(ca=pki.ca.cert, other_ca=pki.other_ca.cert)
    gw = portico(config=upstream_config(yaml), upstream=tls_echo)
    code, message = grpc_error(gw.call(UNARY, echo_pb.EchoRequest(message="x")))
    assert code == 14
    assert expected in message, message
    assert gw.wait_log(r"upstream secure: connection to .* failed: " + re.escape(expected))


def test_upstream_mtls(portico, pki, mtls_echo):
    with_cert = (f"      ca: {pki.ca.cert}\n      server_name: echo.test\n"
                 f"      cert: {pki.gateway_client.cert}\n      key: {pki.gateway_client.key}\n")
    gw = portico(config=upstream_config(with_cert), upstream=mtls_echo)
    assert_echo_ok(gw.call(UNARY, echo_pb.EchoRequest(message="mtls")), "mtls")
    gw2 = portico(config=upstream_config(f"      ca: {pki.ca.cert}\n      server_name: echo.test\n"),
                  upstream=mtls_echo)
    code, message = grpc_error(gw2.call(UNARY, echo_pb.EchoRequest(message="x")))
    assert code == 14, message
    assert "asked for a client certificate and tls.cert is not configured" in message, message


def test_upstream_insecure(portico, tls_echo):
    gw = portico(config=upstream_config("      insecure_skip_verify: true\n      server_name: any.name\n"),
                 upstream=tls_echo)
    assert gw.wait_log(r"warn \[main\] upstream secure: tls\.insecure_skip_verify is set: the server's certificate "
                       r"and name are NOT verified")
    assert_echo_ok(gw.call(UNARY, echo_pb.EchoRequest(message="insecure")), "insecure")


class NoH2Server(threading.Thread):
    """A TLS server that only speaks http/1.1 (ALPN): handshakes and then waits."""

    def __init__(self, cert):
        super().__init__(daemon=True)
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert.cert, cert.key)
        self.ctx.set_alpn_protocols(["http/1.1"])
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stopping = False
        self.conns = []

    def run(self):
        while not self.stopping:
            try:
                raw, _ = self.sock.accept()
            except (socket.timeout, TimeoutError):
                continue
            try:
                raw.settimeout(5)
                self.conns.append(self.ctx.wrap_socket(raw, server_side=True))
            except (ssl.SSLError, OSError):
                raw.close()

    def stop(self):
        self.stopping = True
        self.join(5)
        for c in self.conns:
            c.close()
        self.sock.close()


def test_upstream_must_select_h2(portico, pki):
    server = NoH2Server(pki.echo)
    server.start()
    try:
        gw = portico(config=upstream_config(f"      ca: {pki.ca.cert}\n      server_name: echo.test\n"),
                     upstream=server.port)
        code, message = grpc_error(gw.call(UNARY, echo_pb.EchoRequest(message="x")))
        assert code == 14
        assert "the server did not select HTTP/2 with ALPN" in message, message
    finally:
        server.stop()


def test_upstream_tls_connection_refused(portico, pki):
    gw = portico(config=upstream_config(f"      ca: {pki.ca.cert}\n"), upstream=free_port())
    code, message = grpc_error(gw.call(UNARY, echo_pb.EchoRequest(message="x")))
    assert code == 14
    assert "Connection refused" in message, message


def test_h2c_upstream_against_tls_server(portico, tls_echo):
    """Forgetting `tls:` for a TLS upstream fails clearly instead of hanging."""
    gw = portico(config=upstream_config("").replace("    tls:\n", ""), upstream=tls_echo)
    code, _ = grpc_error(gw.call(UNARY, echo_pb.EchoRequest(message="x")))
    assert code == 14


# --------------------------------------------------------------------------- audit

def sslscan(port):
    out = subprocess.run(["sslscan", "--no-colour", f"127.0.0.1:{port}"], capture_output=True, text=True,
                         timeout=120).stdout
    protocols = dict(re.findall(r"^(SSLv2|SSLv3|TLSv1\.[0-3])\s+(enabled|disabled)\s*$", out, re.MULTILINE))
    ciphers = re.findall(r"^(?:Preferred|Accepted)\s+(\S+)\s+\d+ bits\s+(\S+)", out, re.MULTILINE)
    return out, protocols, ciphers


@pytest.mark.skipif(shutil.which("sslscan") is None, reason="sslscan not installed (scripts/install-deps)")
def test_sslscan_finds_no_weak_protocol_or_cipher(portico, pki, tmp_path):
    # the scanner itself can see weak settings: a deliberately weak openssl s_server as a control
    control_port = free_port()
    control = subprocess.Popen(["openssl", "s_server", "-accept", f"127.0.0.1:{control_port}", "-cert", pki.server.cert,
                                "-key", pki.server.key, "-cipher", "ALL:@SECLEVEL=0", "-quiet", "-www"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while True:
            try:
                socket.create_connection(("127.0.0.1", control_port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "openssl s_server did not start"
                time.sleep(0.05)
        _, protocols, ciphers = sslscan(control_port)
        assert protocols.get("TLSv1.0") == "enabled", protocols
        assert any("-SHA" in c and c.endswith("SHA") for _, c in ciphers), ciphers
    finally:
        control.kill()
        control.wait()

    for cert in (pki.server, pki.server_ec):  # RSA and ECDSA certificates offer different suites
        gw = portico("--tls-cert", cert.cert, "--tls-key", cert.key)
        out, protocols, ciphers = sslscan(gw.port)
        assert protocols == {"SSLv2": "disabled", "SSLv3": "disabled", "TLSv1.0": "disabled",
                             "TLSv1.1": "disabled", "TLSv1.2": "enabled", "TLSv1.3": "enabled"}, out
        assert ciphers, out
        for proto, cipher in ciphers:
            assert proto in ("TLSv1.2", "TLSv1.3"), (proto, cipher)
            assert not re.search(r"NULL|RC4|DES|EXP|MD5|ADH|AECDH|anon|CBC|IDEA|SEED|CAMELLIA|ARIA|PSK|SRP",
                                 cipher), cipher
            assert cipher in (TLS12_ALLOWED if proto == "TLSv1.2" else TLS13_ALLOWED), cipher
        assert not any(c.endswith("-SHA") for _, c in ciphers), ciphers  # no CBC-SHA1
        assert "Session renegotiation not supported" in out, out
        assert "not vulnerable to heartbleed" in out
        groups = re.findall(r"^TLSv1\.[23]\s+\d+ bits\s+(.+?)\s*$", out, re.MULTILINE)
        assert groups and all(re.match(r"(x25519|secp256r1|secp384r1)\b", g) for g in groups), groups
        gw.stop()


def test_websockets_over_tls(portico, pki):
    """wss://: the upgrade on an HTTP/1.1 TLS connection, and extended CONNECT on an h2 one (ALPN h2)."""
    from wsclient import GrpcWs, H2Tunnel, H2WebSocket
    from echo_pb import EchoRequest, EchoResponse
    gw = portico(config=tls_config(pki))
    c = GrpcWs(gw.port, "/portico.test.Echo/ClientStream", tls_context=client_context(pki)).open()
    for m in ("a", "b", "c"):
        c.send(EchoRequest(message=m))
    c.end()
    assert c.finish().status == 0 and EchoResponse.FromString(c.messages[0]).message == "a|b|c"
    tunnel = H2Tunnel(gw.port, tls_context=client_context(pki, alpn=("h2",)))
    try:
        assert tunnel.sock.selected_alpn_protocol() == "h2"
        c = GrpcWs(gw.port, "/portico.test.Echo/Bidi", transport=H2WebSocket, tunnel=tunnel).open()
        for i in range(20):
            c.send(EchoRequest(message=f"t{i}"))
            assert c.read_until(lambda c, n=i + 1: len(c.messages) >= n)
        c.end()
        assert c.finish().status == 0 and len(c.messages) == 20
        assert c.ws.wait_stream_end() == "ended"
    finally:
        tunnel.close()


# --------------------------------------------------------------------------- idle connections

# An idle HTTP/1.1 connection over TLS gives back its bufferevent_openssl after a second (src/http1/server.c
# conn_release_idle): the SSL stays, without a BIO, and the socket is watched until the client sends something.
RELEASED = "idle: buffers released"
WOKEN = "idle connection woke up"


def released(gw, count=1, timeout=4.0 * SLOW):
    """Waits until `count` connections have logged that they gave back their buffers while idle."""
    deadline = time.monotonic() + timeout
    while gw.log_text().count(RELEASED) < count:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def unary_request(message):
    body = grpcweb.frame(echo_pb.EchoRequest(message=message))
    head = (f"POST {UNARY} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len(body)}\r\n" +
            "".join(f"{k}: {v}\r\n" for k, v in grpcweb.request_headers()) + "\r\n")
    return head.encode("latin-1") + body


def strict_connection(gw, pki):
    """A TLS connection on which a close without close_notify is an error (SSLEOFError), not an end of file."""
    ctx = client_context(pki)
    ctx.options &= ~ssl.OP_IGNORE_UNEXPECTED_EOF  # Python sets it by default
    return TlsConnection(gw.port, ctx, suppress_ragged_eofs=False)


def notified_close(conn, timeout):
    """The gateway ends the strict_connection() within `timeout` with a close_notify (a TCP close without one
    raises)."""
    conn.sock.settimeout(timeout)
    data = conn.sock.recv(100)  # suppress_ragged_eofs=False: SSLEOFError for a close without close_notify
    return data == b""


def assert_unary_answer(conn, message):
    conn._method = "POST"
    head, body = conn.response()
    assert head.status == 200, head
    frames, trailers = grpcweb.parse_body(body)
    assert [echo_pb.EchoResponse.FromString(m).message for m in grpcweb.messages_of(frames)] == [message]
    assert trailers is not None and trailers.get("grpc-status") == "0", trailers


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2], ids=["tls1.3", "tls1.2"])
def test_idle_tls_connection_releases_and_serves_calls_after(portico, pki, version):
    """Released after a second idle, then woken by the next requests (one, then two pipelined at once, then one
    more): each is read through a bufferevent_openssl made again around the same TLS session."""
    gw = portico(config=tls_config(pki))
    with TlsConnection(gw.port, client_context(pki, max_version=version)) as conn:
        conn.send(unary_request("before"))
        assert_unary_answer(conn, "before")
        assert released(gw), "the idle TLS connection kept its buffers"
        conn.send(unary_request("after"))
        assert_unary_answer(conn, "after")
        assert gw.log_text().count(WOKEN) == 1
        assert released(gw, 2), "not released a second time"
        conn.send(unary_request("pipelined-1") + unary_request("pipelined-2"))
        assert_unary_answer(conn, "pipelined-1")
        assert_unary_answer(conn, "pipelined-2")
        assert released(gw, 3), "not released a third time"
        # a request sent in two pieces (two TLS records), the first of them waking the connection
        wire = unary_request("split")
        conn.send(wire[:20])
        time.sleep(0.2)
        conn.send(wire[20:])
        assert_unary_answer(conn, "split")
        assert gw.log_text().count(WOKEN) == 3
    assert gw.wait_log(r"connection closed: client closed the connection", 3)
    with TlsConnection(gw.port, client_context(pki, max_version=version)) as conn:  # fresh: released before its first call
        assert released(gw, 4)
        conn.send(unary_request("fresh"))
        assert_unary_answer(conn, "fresh")


def test_released_tls_connection_sees_the_clients_close_notify(portico, pki):
    """A close_notify (the TCP connection left open) wakes the released connection, which closes."""
    gw = portico(config=tls_config(pki))
    with TlsConnection(gw.port, client_context(pki)) as conn:
        conn.send(unary_request("x"))
        assert_unary_answer(conn, "x")
        assert released(gw)
        conn.sock.settimeout(5 * SLOW)
        try:
            conn.sock = conn.sock.unwrap()  # sends close_notify, then waits for the gateway's answer or close
        except (ssl.SSLError, OSError):
            pass
        assert gw.wait_log(r"connection closed: client closed the connection", 3 * SLOW), gw.log_text()[-2000:]
        assert gw.log_text().count(WOKEN) == 1


@pytest.mark.parametrize("idle", [2.5, 0.5], ids=["released", "before-release"])
def test_tls_idle_timeout_sends_close_notify(portico, pki, idle):
    """The idle timeout closes a TLS connection, released or not yet, with a close_notify."""
    gw = portico(config=tls_config(pki, extra=f"timeouts: {{idle: {int(idle * 1000)}ms}}\n"))
    with strict_connection(gw, pki) as conn:
        conn.send(unary_request("x"))
        assert_unary_answer(conn, "x")
        t0 = time.monotonic()
        if idle > 1:
            assert released(gw)
        assert notified_close(conn, 5 * SLOW), "the idle TLS connection was not closed by the idle timeout"
        assert idle - 0.5 <= time.monotonic() - t0 <= idle + SLOW
    assert gw.wait_log(r"connection closed: idle timeout", 3)
    assert gw.log_text().count(RELEASED) == (1 if idle > 1 else 0)
    assert gw.log_text().count(WOKEN) == 0


def test_sigterm_drain_reaches_released_tls_connections(portico, pki):
    """Draining closes a released TLS connection that served a call at once, and one that never sent a request
    after its grace, each with a close_notify; the gateway then exits cleanly (nothing leaked: the ASan build
    checks)."""
    gw = portico(config=tls_config(pki))
    used = strict_connection(gw, pki)
    used.send(unary_request("x"))
    assert_unary_answer(used, "x")
    fresh = strict_connection(gw, pki)
    try:
        assert released(gw, 2)
        t0 = time.monotonic()
        gw.signal(signal.SIGTERM)
        assert notified_close(used, 3 * SLOW), "the released connection was not closed by the drain"
        assert notified_close(fresh, 3 * SLOW), "the released fresh connection was not closed by the drain"
        assert time.monotonic() - t0 <= 2.5 * SLOW
        assert gw.proc.wait(5) == 0
    finally:
        used.close()
        fresh.close()
    assert gw.log_text().count("connection closed: gateway draining") == 1


def test_drain_timeout_closes_released_tls_connection(portico, pki):
    """The drain timeout (which fails the calls in flight) closes a released TLS connection (with a close_notify)
    without waking it, while a call on another connection is cut."""
    gw = portico(config=tls_config(pki, extra="timeouts: {drain: 300ms}\n"))
    idle = strict_connection(gw, pki)  # no request: 1 s grace, cut
    busy = TlsConnection(gw.port, client_context(pki))
    try:
        assert released(gw, 2)
        busy.request("POST", STREAM, grpcweb.request_headers(),
                     grpcweb.frame(echo_pb.EchoRequest(message="s", count=1000, interval_ms=50)))
        assert busy.read_head().status == 200
        gw.signal(signal.SIGTERM)
        assert notified_close(idle, 3 * SLOW)
        assert gw.proc.wait(5) == 0
    finally:
        idle.close()
        busy.close()
    assert "connection closed: gateway shutting down (drain timeout)" in gw.log_text()
    assert gw.log_text().count(WOKEN) == 1  # the busy one (its request), not the idle one
