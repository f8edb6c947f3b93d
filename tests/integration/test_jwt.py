"""JWT checks in front of the upstream: tokens made by PyJWT (Debian python3-jwt) with keys made by the
openssl CLI, providers with a local JWKS file and with a remote JWKS served over HTTPS by a server the
test starts (rotation, the server going down), refusals readable by a browser (CORS headers, grpc-status
16 or 7 and a message), claims turned into upstream headers, and the verified-token cache.
"""

import base64
import http.server
import json
import os
import ssl
import subprocess
import threading
import time
import urllib.parse

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

import grpcweb
from certs import TestPKI
from conftest import free_port
from echo_pb import EchoRequest, EchoResponse

UNARY = "/portico.test.Echo/Unary"
STREAM = "/portico.test.Echo/ServerStream"
ISS, AUD = "https://issuer.test/", "api://portico"
ORIGIN = "https://app.example"


def openssl_key(path, kind):
    args = {"rsa": ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
            "ec": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
            "ed25519": ["-algorithm", "ED25519"]}[kind]
    subprocess.run(["openssl", "genpkey", *args, "-out", str(path)], check=True, capture_output=True)
    with open(path, "rb") as f:
        return serialization.load_pem_private_key(f.read(), password=None)


class Keys:
    """Signing keys made with the openssl CLI, their public JWKs, and a token factory."""

    def __init__(self, d):
        self.priv = {"rsa1": openssl_key(d / "rsa1.pem", "rsa"), "rsa2": openssl_key(d / "rsa2.pem", "rsa"),
                     "ec1": openssl_key(d / "ec1.pem", "ec"), "ed1": openssl_key(d / "ed1.pem", "ed25519")}
        self.alg = {"rsa1": "RS256", "rsa2": "RS256", "ec1": "ES256", "ed1": "EdDSA"}
        self.hmac = os.urandom(32)

    def jwk(self, kid):
        pub = self.priv[kid].public_key()
        algo = {"RS256": RSAAlgorithm, "ES256": ECAlgorithm, "EdDSA": OKPAlgorithm}[self.alg[kid]]
        j = json.loads(algo.to_jwk(pub))
        j.update(kid=kid, use="sig")
        return j

    def jwks(self, *kids):
        return json.dumps({"keys": [self.jwk(k) for k in kids]})

    def token(self, kid="rsa1", alg=None, **claims):
        now = int(time.time())
        body = {"iss": ISS, "aud": AUD, "sub": "user-42", "iat": now, "exp": now + 300, **claims}
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode(body, self.priv[kid], algorithm=alg or self.alg[kid], headers={"kid": kid})


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return Keys(tmp_path_factory.mktemp("jwtkeys"))


def provider_yaml(name="main", source="jwks_file: keys.json", extra=""):
    return (f"    - name: {name}\n      issuer: {ISS}\n      audiences: [{AUD}]\n      {source}\n"
            "      claims_to_headers: [{claim: sub, header: x-auth-user-id}, {claim: tenant.id, header: x-auth-tenant}]\n"
            + extra)


def gateway_config(providers, routes_extra=""):
    return ("workers: 2\nlog_level: debug\nlisteners: ['127.0.0.1:{listen_port}']\n"
            "upstreams: [{name: echo, endpoints: ['127.0.0.1:{upstream_port}']}]\n"
            f"cors: {{allow_origins: ['{ORIGIN}']}}\n"
            "jwt:\n  providers:\n" + providers +
            "routes:\n"
            "  - {path: /portico.test.Echo/Unary, upstream: echo, jwt: {providers: [main]}}\n"
            "  - {path: /portico.test.Echo/ServerStream, upstream: echo, jwt: {providers: [main], optional: true}}\n"
            "  - {path: /portico.test.Echo/Bidi, upstream: echo, jwt: {providers: [main], require_claims: {scope: admin}}}\n"
            "  - {prefix: /, upstream: echo, jwt: disabled}\n" + routes_extra)


@pytest.fixture
def gw(portico, keys, tmp_path):
    (tmp_path / "keys.json").write_text(keys.jwks("rsa1", "ec1", "ed1"))
    return portico(config=gateway_config(provider_yaml(extra="      strip_token: true\n")))


def call(gw, token=None, path=UNARY, headers=None, request=None):
    h = {"Origin": ORIGIN, **(headers or {})}
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    return grpcweb.call(gw.port, path, request or EchoRequest(message="hi"), headers=h)


def refused(ans, code):
    status, head, msgs, trailers = ans
    assert status == 200 and msgs == [] and trailers is None, ans
    assert head["grpc-status"] == str(code), head
    # a browser can read it: CORS headers on the answer, grpc-status and grpc-message exposed
    assert head["access-control-allow-origin"] == ORIGIN
    exposed = {h.strip() for h in head["access-control-expose-headers"].split(",")}
    assert {"grpc-status", "grpc-message"} <= exposed
    return urllib.parse.unquote(head["grpc-message"])


def test_valid_tokens_of_every_algorithm(gw, keys):
    for kid in ("rsa1", "ec1", "ed1"):
        status, head, msgs, trailers = call(gw, keys.token(kid, tenant={"id": "t-9"}),
                                            headers={"x-auth-user-id": "forged", "x-auth-tenant": "forged"})
        assert trailers["grpc-status"] == "0", (kid, head, trailers)
        seen = EchoResponse.FromString(msgs[0]).headers
        assert seen["x-auth-user-id"] == "user-42"    # from the claim, never what the client sent
        assert seen["x-auth-tenant"] == "t-9"          # a nested claim by path
        assert "authorization" not in seen             # strip_token


def test_missing_token(gw):
    msg = refused(call(gw), 16)
    assert "missing credentials" in msg and "authorization" in msg


@pytest.mark.parametrize("case", ["expired", "not_yet", "issuer", "audience", "signature", "kid", "alg_none", "hs_confusion",
                                  "malformed", "huge"])
def test_refused_tokens(gw, keys, case):
    now = int(time.time())
    if case == "expired":
        tok = keys.token(exp=now - 3600, iat=now - 7200)
    elif case == "not_yet":
        tok = keys.token(nbf=now + 3600)
    elif case == "issuer":
        tok = keys.token(iss="https://evil.test/")
    elif case == "audience":
        tok = keys.token(aud="api://other")
    elif case == "signature":
        h, p, s = keys.token().split(".")
        tok = ".".join([h, p, ("A" if s[0] != "A" else "B") + s[1:]])
    elif case == "kid":
        tok = jwt.encode({"iss": ISS, "aud": AUD, "exp": now + 60}, keys.priv["rsa2"], algorithm="RS256", headers={"kid": "rsa2"})
    elif case == "alg_none":
        seg = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()
        tok = seg({"alg": "none", "kid": "rsa1"}) + "." + seg({"iss": ISS, "aud": AUD, "exp": now + 60}) + "."
    elif case == "hs_confusion":
        # the RSA public key (PEM) used as an HMAC secret: must never verify against the RSA JWK
        pem = keys.priv["rsa1"].public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        import hashlib
        import hmac
        seg = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
        signing = seg(json.dumps({"alg": "HS256", "kid": "rsa1"}).encode()) + "." + seg(json.dumps({"iss": ISS, "aud": AUD, "exp": now + 60}).encode())
        tok = signing + "." + seg(hmac.new(pem, signing.encode(), hashlib.sha256).digest())
    elif case == "malformed":
        tok = "not.a.jwt!"
    else:
        tok = keys.token(blob="x" * 9000)
    msg = refused(call(gw, tok), 16)
    assert msg.startswith("invalid token: "), msg
    assert tok not in msg and tok[:40] not in msg  # the token is never echoed
    assert gw.wait_log(r"request /portico\.test\.Echo/Unary from .*: grpc-status 16: invalid token")


def test_required_claims(gw, keys):
    path = "/portico.test.Echo/Bidi"
    # a valid token without scope admin: PERMISSION_DENIED (checked before the call reaches the upstream)
    msg = refused(grpcweb.call(gw.port, path, [], headers={"Origin": ORIGIN, "Authorization": f"Bearer {keys.token(scope='read')}"}), 7)
    assert "scope" in msg
    status, head, msgs, trailers = grpcweb.call(gw.port, path, [EchoRequest(message="b")],
                                                headers={"Origin": ORIGIN, "Authorization": f"Bearer {keys.token(scope='read admin')}"})
    assert trailers is not None and trailers["grpc-status"] != "7" and head.get("grpc-status") != "7"


def test_optional_route(gw, keys):
    status, head, msgs, trailers = call(gw, path=STREAM, request=EchoRequest(message="s", count=2))
    assert trailers["grpc-status"] == "0" and len(msgs) == 2
    refused(call(gw, "garbage.token.here", path=STREAM, request=EchoRequest(count=1)), 16)
    status, head, msgs, trailers = call(gw, keys.token("ec1"), path=STREAM, request=EchoRequest(message="s", count=1))
    assert trailers["grpc-status"] == "0" and len(msgs) == 1


def test_disabled_route_and_preflight(gw, keys):
    status, head, msgs, trailers = call(gw, path="/portico.test.Echo/ClientStream", request=[EchoRequest(message="c")])
    assert trailers["grpc-status"] == "0"
    conn = gw.connect()
    conn.request("OPTIONS", UNARY, [("Origin", ORIGIN), ("Access-Control-Request-Method", "POST"),
                                    ("Access-Control-Request-Headers", "authorization,content-type,x-grpc-web")])
    head, _ = conn.response()
    assert head.status == 204 and head.get("access-control-allow-origin") == ORIGIN
    conn.close()


def status_of(gw_admin_port):
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{gw_admin_port}/status", timeout=10) as r:
        return json.loads(r.read())


def test_verified_token_cache(portico, keys, tmp_path):
    (tmp_path / "keys.json").write_text(keys.jwks("rsa1"))
    admin = free_port()
    g = portico(config=gateway_config(provider_yaml()) + f"admin: {{address: '127.0.0.1:{admin}'}}\n")
    tok = keys.token()
    before = status_of(admin)["jwt_signature_checks"]
    conns = [g.connect() for _ in range(4)]
    for i in range(1000):
        status, head, msgs, trailers = grpcweb.call(g.port, UNARY, EchoRequest(message="c"), conn=conns[i % 4],
                                                    headers={"Authorization": f"Bearer {tok}"})
        assert trailers["grpc-status"] == "0"
    st = status_of(admin)
    # one verification per worker (2), the rest from each worker's cache
    assert st["jwt_signature_checks"] - before <= 2, st
    assert st["filters"]["jwt_ok"] == 1000 and st["filters"]["jwt_cached"] >= 998
    for c in conns:
        c.close()
    print(f"\n1000 calls with one token: {st['jwt_signature_checks'] - before} signature checks")


# --------------------------------------------------------------------------- remote JWKS over HTTPS


class JwksServer:
    """An HTTPS server (certificate from the test CA) serving a JWKS with a Cache-Control max-age."""

    def __init__(self, pki, port, max_age=2):
        self.doc, self.max_age, self.hits, self.port = "{}", max_age, 0, port
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.hits += 1
                body = outer.doc.encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Cache-Control", f"max-age={outer.max_age}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(pki.server.cert, pki.server.key)
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), H)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def pki(tmp_path):
    p = TestPKI(tmp_path / "pki")
    p.server = p.issue("server", "localhost", dns=["localhost"], ips=["127.0.0.1"])
    return p


def test_remote_jwks_rotation_and_outage(portico, keys, pki, tmp_path):
    """Keys fetched over HTTPS (the test CA; Cache-Control max-age 6 s): used, refreshed at 80% of their
    life (a new kid appears), kept while the server is down until they expire, then refused with
    UNAVAILABLE (the client is not at fault)."""
    port = free_port()
    srv = JwksServer(pki, port, max_age=6)
    srv.doc = keys.jwks("rsa1")
    try:
        source = f"jwks_url: https://localhost:{port}/jwks.json\n      jwks_ca: {pki.ca.cert}\n      jwks_cache: 30s"
        g = portico(config=gateway_config(provider_yaml(source=source)))
        assert g.wait_log(r"jwt provider main: keys from https://localhost:\d+/jwks\.json", 10)
        deadline = time.monotonic() + 10
        while True:  # the first fetch runs in the background
            status, head, msgs, trailers = call(g, keys.token("rsa1"))
            if trailers is not None:
                break
            assert head["grpc-status"] == "14" and time.monotonic() < deadline, head
            time.sleep(0.1)
        assert trailers["grpc-status"] == "0"
        # rotation: a new kid appears in the served set; the gateway refreshes at 80% of max-age
        refused(call(g, keys.token("rsa2")), 16)
        srv.doc = keys.jwks("rsa1", "rsa2")
        deadline = time.monotonic() + 15
        while call(g, keys.token("rsa2"))[3] is None:
            assert time.monotonic() < deadline, "rotated key not picked up"
            time.sleep(0.2)
        # the server goes down: the keys fetched last keep working until they expire
        srv.stop()
        srv = None
        assert call(g, keys.token("rsa2"))[3]["grpc-status"] == "0"
        assert g.wait_log(r"fetch https://localhost:\d+/jwks\.json failed: connect: Connection refused", 10)
        assert call(g, keys.token("rsa2"))[3]["grpc-status"] == "0"
        assert g.wait_log(r"jwt provider main: the keys from https://localhost:\d+/jwks\.json expired", 10)
        msg = refused(call(g, keys.token("rsa2")), 14)
        assert "not available" in msg
    finally:
        if srv is not None:
            srv.stop()


@pytest.mark.parametrize("where", ["cookie", "query"])
def test_token_from_cookie_or_query_and_forwarded_payload(portico, keys, tmp_path, where):
    (tmp_path / "keys.json").write_text(keys.jwks("rsa1"))
    source = "jwks_file: keys.json\n      from: {%s: tok}\n      forward_payload: x-jwt-payload\n      strip_token: true" % where
    g = portico(config=gateway_config(provider_yaml(source=source)))
    tok = keys.token(role="reader")
    if where == "cookie":
        ans = grpcweb.call(g.port, UNARY, EchoRequest(message="c"), headers={"Cookie": f"a=1; tok={tok}; b=2"})
    else:
        ans = grpcweb.call(g.port, UNARY + "?x=1&tok=" + tok, EchoRequest(message="q"))
    status, head, msgs, trailers = ans
    assert trailers["grpc-status"] == "0", head
    seen = EchoResponse.FromString(msgs[0]).headers
    assert seen["x-auth-user-id"] == "user-42"
    payload = json.loads(base64.urlsafe_b64decode(seen["x-jwt-payload"] + "=" * (-len(seen["x-jwt-payload"]) % 4)))
    assert payload["role"] == "reader" and payload["sub"] == "user-42"
    if where == "cookie":
        assert seen["cookie"] == "a=1; b=2"  # the token's cookie stripped, the others kept
    # the same source without a token: refused, naming where it was expected
    if where == "cookie":
        ans = grpcweb.call(g.port, UNARY, EchoRequest(), headers={"Cookie": "a=1", "Authorization": f"Bearer {tok}"})
    else:
        ans = grpcweb.call(g.port, UNARY + "?x=1", EchoRequest(), headers={"Authorization": f"Bearer {tok}"})
    status, head, msgs, trailers = ans
    assert head["grpc-status"] == "16" and f"tok {where}" in urllib.parse.unquote(head["grpc-message"]).replace(" query parameter", " query")


def test_jwt_over_websocket(gw, keys):
    """The WebSocket transport: the token in the header block (improbable's metadata) or in the upgrade
    request (a cookie-less Authorization a non-browser client sets); checked exactly as for HTTP calls."""
    from wsclient import GrpcWs

    def ws_call(path, block=None, upgrade=()):
        c = GrpcWs(gw.port, path, block or {}, origin=ORIGIN, headers=upgrade).open()
        c.send(EchoRequest(message="ws"))
        c.end()
        return c.finish()

    c = ws_call(UNARY, {"authorization": f"Bearer {keys.token()}"})
    assert c.status == 0, c.trailers
    seen = EchoResponse.FromString(c.messages[0]).headers
    assert seen["x-auth-user-id"] == "user-42" and "authorization" not in seen
    c = ws_call(UNARY, upgrade=[("Authorization", f"Bearer {keys.token(kid='ec1')}")])
    assert c.status == 0, c.trailers
    c = ws_call(UNARY)
    assert c.status == 16 and c.messages == [] and c.closed[0] == 1000
    c = ws_call(UNARY, {"authorization": f"Bearer {keys.token(exp=int(time.time()) - 3600)}"})
    assert c.status == 16 and "expired" in c.trailers["grpc-message"]
    c = ws_call("/portico.test.Echo/Bidi", {"authorization": f"Bearer {keys.token()}"})
    assert c.status == 7, c.trailers  # valid, but without the required scope claim
