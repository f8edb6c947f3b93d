"""The Connect protocol (connectrpc.com/docs/protocol) through the gateway to the real grpcio echo upstream.

Clients are real HTTP clients: http.client (HTTP/1.1, chunked uploads), raw sockets where a request must be
malformed, and python-h2 (h2c) for streams in both directions. JSON calls go to portico.test.EchoJson, the
echo service with the JSON codec (tests/upstream/echo_server.py), as application/grpc+json.

What is checked, per the protocol: unary bodies are bare messages, trailers come back as `trailer-<name>`
headers, errors as the HTTP status of the Connect table with a JSON body {"code", "message", "details"}
(grpc-status-details-bin decoded), GET requests carry the message in the query, streams use 5-byte envelopes
and end with a flag-0x02 envelope {"error", "metadata"}; and the gateway's own errors take the same shapes.
"""

import base64
import gzip
import http.client
import json
import os
import re
import socket
import struct
import time
import urllib.parse
import zlib

import pytest
from google.protobuf import wrappers_pb2

import grpcweb
from conftest import free_port
from echo_pb import CancelInfo, EchoRequest, EchoResponse  # noqa: F401
from test_h2 import H2Client

UNARY = "/portico.test.Echo/Unary"
JSON_UNARY = "/portico.test.EchoJson/Unary"
STREAM = "/portico.test.Echo/ServerStream"
JSON_STREAM = "/portico.test.EchoJson/ServerStream"
CLIENT_STREAM = "/portico.test.Echo/ClientStream"
BIDI = "/portico.test.Echo/Bidi"
TIMEOUT = 10.0
ORIGIN = "https://app.example"

# connectrpc.com/docs/protocol#error-codes: gRPC status -> (Connect code, HTTP status)
CODES = {
    1: ("canceled", 499), 2: ("unknown", 500), 3: ("invalid_argument", 400), 4: ("deadline_exceeded", 504),
    5: ("not_found", 404), 6: ("already_exists", 409), 7: ("permission_denied", 403),
    8: ("resource_exhausted", 429), 9: ("failed_precondition", 400), 10: ("aborted", 409),
    11: ("out_of_range", 400), 12: ("unimplemented", 501), 13: ("internal", 500), 14: ("unavailable", 503),
    15: ("data_loss", 500), 16: ("unauthenticated", 401),
}


def config(extra="", routes=None):
    return ("workers: 1\nlog_level: debug\nlisteners: ['127.0.0.1:{listen_port}']\n"
            "upstreams: [{name: echo, endpoints: ['127.0.0.1:{upstream_port}']}]\n"
            + (routes or "routes: [{prefix: /, upstream: echo}]\n") + extra)


# --------------------------------------------------------------------------- a Connect client

class Reply:
    """A complete HTTP response: status, headers (lower-case names; repeated ones joined by ', '), body."""

    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def header(self, name):
        return self.headers.get(name)

    def trailers(self):
        """The `trailer-` headers of a unary response, prefix removed."""
        return {k[8:]: v for k, v in self.headers.items() if k.startswith("trailer-")}

    def json(self):
        assert self.headers.get("content-type") == "application/json", self.headers
        return json.loads(self.body)

    def error(self):
        """The Connect error of a unary response: its JSON, after checking the status matches its code."""
        assert self.status != 200, (self.status, self.headers, self.body)
        err = self.json()
        assert CODES[code_number(err["code"])][1] == self.status, (self.status, err)
        return err

    def message(self, cls=EchoResponse):
        assert self.status == 200, (self.status, self.headers, self.body)
        assert self.headers["content-type"] == "application/proto", self.headers
        return cls.FromString(self.body)


def code_number(name):
    return next(n for n, (c, _) in CODES.items() if c == name)


class Connection(http.client.HTTPConnection):
    """http.client without its unasked `Accept-Encoding: identity`: what a request without the header gets matters."""

    def putrequest(self, method, url, skip_host=False, skip_accept_encoding=False):
        super().putrequest(method, url, skip_host=skip_host, skip_accept_encoding=True)


def http1(port, method, path, body=None, headers=None, timeout=TIMEOUT, conn=None):
    """One request with http.client; a body that is an iterable of bytes is sent chunked (no content-length)."""
    own = conn is None
    conn = conn or Connection("127.0.0.1", port, timeout=timeout)
    try:
        hdrs = dict(headers or {})
        chunked = body is not None and not isinstance(body, (bytes, bytearray))
        conn.request(method, path, body=body, headers=hdrs, encode_chunked=chunked)
        r = conn.getresponse()
        data = r.read()
        h = {}
        for k, v in r.getheaders():
            k = k.lower()
            h[k] = h[k] + ", " + v if k in h else v
        return Reply(r.status, h, data)
    finally:
        if own:
            conn.close()


def unary(port, path, body, ctype="application/proto", headers=None, **kw):
    h = {"Content-Type": ctype, "Connect-Protocol-Version": "1", **(headers or {})}
    if hasattr(body, "SerializeToString"):
        body = body.SerializeToString()
    return http1(port, "POST", path, body, h, **kw)


def json_unary(port, obj, path=JSON_UNARY, headers=None, **kw):
    return unary(port, path, json.dumps(obj).encode(), ctype="application/json", headers=headers, **kw)


def get_query(message, encoding="proto", b64=None, compression=None, connect=True):
    """The query of a Connect GET, in connect-es's order (connect, base64, compression, encoding, message)."""
    if hasattr(message, "SerializeToString"):
        message = message.SerializeToString()
    q = "connect=v1" if connect else ""
    if compression:
        message, b64 = gzip.compress(message), True
    if b64 is None:
        b64 = encoding != "json"
    if b64:
        q += "&base64=1"
    if compression:
        q += "&compression=" + compression
    q += "&encoding=" + encoding
    if b64:
        q += "&message=" + base64.urlsafe_b64encode(message).rstrip(b"=").decode()
    else:
        q += "&message=" + urllib.parse.quote(message.decode("utf-8"), safe="")
    return q.lstrip("&")


def envelope(payload, flags=0):
    if hasattr(payload, "SerializeToString"):
        payload = payload.SerializeToString()
    return struct.pack(">BI", flags, len(payload)) + payload


def envelopes(data):
    """Split a Connect stream body into [(flags, payload)]; every byte must belong to a whole envelope."""
    frames, rest = grpcweb.split_frames(data)
    assert rest == b"", f"{len(rest)} bytes after the last envelope"
    return frames


def stream_result(body, cls=EchoResponse):
    """(messages, end-of-stream JSON) of a Connect stream body; the end of stream must be last and once."""
    frames = envelopes(body)
    assert frames and frames[-1][0] == 0x02, frames
    assert all(f == 0 for f, _ in frames[:-1]), frames
    msgs = [cls.FromString(p) if cls else p for _, p in frames[:-1]]
    return msgs, json.loads(frames[-1][1])


# --------------------------------------------------------------------------- unary


def test_unary_proto(portico):
    gw = portico()
    r = unary(gw.port, UNARY, EchoRequest(message="hello", payload=b"\x00\xff"),
              headers={"X-Echo-Shard": "42", "Connect-Timeout-Ms": "5000"})
    resp = r.message()
    assert resp.message == "hello" and resp.payload == b"\x00\xff"
    # a bare message with its length, not chunked; the upstream's head and trailers in the head
    assert r.headers["content-length"] == str(len(r.body)), r.headers
    assert "transfer-encoding" not in r.headers
    assert r.headers["x-echo-initial"] == "yes"
    assert r.headers["x-echoed-shard"] == "42"
    assert r.trailers() == {"x-trailer-ok": "done"}
    assert not any(k.startswith("grpc-") and k != "grpc-accept-encoding" for k in r.headers), r.headers
    # what the upstream saw: metadata without the Connect protocol's own fields
    seen = dict(resp.headers)
    assert seen["x-echo-shard"] == "42"
    assert not any(k.startswith("connect-") for k in seen), seen


def test_unary_json(portico):
    gw = portico()
    r = json_unary(gw.port, {"message": "héllo", "payload": base64.b64encode(b"\x01\x02").decode()})
    assert r.status == 200, (r.status, r.body)
    assert r.headers["content-type"] == "application/json"
    doc = json.loads(r.body)
    assert doc["message"] == "héllo" and base64.b64decode(doc["payload"]) == b"\x01\x02", doc
    assert r.trailers() == {"x-trailer-ok": "done"}


def test_unary_json_charset_and_keep_alive(portico):
    """application/json; charset=utf-8 (connect-es accepts it); two calls on one connection."""
    gw = portico()
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=TIMEOUT)
    try:
        for i in range(2):
            r = unary(gw.port, JSON_UNARY, json.dumps({"message": f"m{i}"}).encode(),
                      ctype="application/json; charset=utf-8", conn=conn)
            assert r.status == 200 and json.loads(r.body)["message"] == f"m{i}", r.body
    finally:
        conn.close()


def test_unary_without_version_header(portico):
    """connect-protocol-version is optional (curl users follow the protocol's examples without it)."""
    gw = portico()
    r = http1(gw.port, "POST", JSON_UNARY, b'{"message":"plain"}', {"Content-Type": "application/json"})
    assert r.status == 200 and json.loads(r.body)["message"] == "plain"


def test_unary_chunked_body_without_content_length(portico):
    gw = portico()
    msg = EchoRequest(message="chunked", payload=b"p" * 3000).SerializeToString()
    pieces = [msg[i:i + 700] for i in range(0, len(msg), 700)]
    r = unary(gw.port, UNARY, iter(pieces))
    resp = r.message()
    assert resp.message == "chunked" and resp.payload == b"p" * 3000


def test_unary_empty_body(portico):
    """Content-Length: 0 is an empty message (all defaults), not a missing one."""
    gw = portico()
    r = unary(gw.port, UNARY, b"")
    assert r.message() == EchoResponse(headers=r.message().headers)


def test_unary_gzip_request_and_response(portico):
    """content-encoding: gzip goes upstream as a compressed gRPC message (grpc-encoding: gzip); the response is
    gzip when the client accepts it and compression is on."""
    gw = portico(config=config("compression: {gzip: true, min_size: 1KiB}\n"))
    body = gzip.compress(EchoRequest(message="zipped", size=2000).SerializeToString())
    r = unary(gw.port, UNARY, body, headers={"Content-Encoding": "gzip", "Accept-Encoding": "gzip"})
    assert r.status == 200, (r.status, r.body)
    assert r.headers["content-encoding"] == "gzip" and "Accept-Encoding" in r.headers["vary"], r.headers
    assert r.headers["content-length"] == str(len(r.body))
    resp = EchoResponse.FromString(gzip.decompress(r.body))
    assert resp.message == "zipped" and resp.payload == b"x" * 2000
    # small: not worth it, but the answer still varies with Accept-Encoding
    r = unary(gw.port, UNARY, EchoRequest(message="small"), headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in r.headers and r.message().message == "small"


def test_unary_over_h2(portico):
    gw = portico()
    with H2Client(gw.port) as c:
        hdrs = [(":method", "POST"), (":scheme", "http"), (":authority", f"127.0.0.1:{gw.port}"), (":path", UNARY),
                ("content-type", "application/proto"), ("connect-protocol-version", "1")]
        body = EchoRequest(message="over h2").SerializeToString()
        st = c.request(UNARY, body, headers=hdrs)
        c.wait(lambda: st.done, TIMEOUT)
        h = st.hdict()
        assert h[":status"] == "200" and h["content-type"] == "application/proto", h
        assert h["trailer-x-trailer-ok"] == "done" and st.trailers is None
        assert EchoResponse.FromString(bytes(st.data)).message == "over h2"
        assert h["content-length"] == str(len(st.data))


# --------------------------------------------------------------------------- unary errors


@pytest.mark.parametrize("status", sorted(CODES))
def test_every_error_status(portico, status):
    gw = portico()
    r = unary(gw.port, UNARY, EchoRequest(status_code=status, status_message=f"failed with {status} ✓"))
    code, http_status = CODES[status]
    assert r.status == http_status, (r.status, r.body)
    err = r.error()
    assert err == {"code": code, "message": f"failed with {status} ✓"}, err
    assert r.trailers() == {"x-trailer-custom": "custom-value", "x-trailer-bin": "AAH+/w"}


def test_error_after_leading_metadata_keeps_headers(portico):
    """An error after the upstream sent its head: the head's fields and the trailers are both there."""
    gw = portico()
    r = json_unary(gw.port, {"statusCode": 9, "statusMessage": "not now", "failAfterMessages": True})
    assert r.status == 400 and r.error() == {"code": "failed_precondition", "message": "not now"}
    assert r.headers["x-echo-initial"] == "yes"
    assert r.trailers()["x-trailer-custom"] == "custom-value"


def test_error_details(portico):
    gw = portico()
    r = unary(gw.port, UNARY, EchoRequest(status_code=14, status_message="overloaded", with_details=True))
    assert r.status == 503
    err = r.error()
    assert err["code"] == "unavailable" and err["message"] == "overloaded"
    types = [d["type"] for d in err["details"]]
    assert types == ["google.protobuf.StringValue", "google.protobuf.Int32Value"], err
    for d in err["details"]:
        assert "=" not in d["value"]  # unpadded
    raw = [base64.b64decode(d["value"] + "=" * (-len(d["value"]) % 4)) for d in err["details"]]
    assert wrappers_pb2.StringValue.FromString(raw[0]).value == "retry later"
    assert wrappers_pb2.Int32Value.FromString(raw[1]).value == 42
    # the details are in the body, not repeated as a header
    assert "trailer-grpc-status-details-bin" not in r.headers


def test_unary_response_without_message(portico):
    """A unary call answered with no message (a server stream of 0) is an error, not an empty success."""
    gw = portico()
    r = unary(gw.port, STREAM, EchoRequest(count=0))
    assert r.status == 500 and r.error()["code"] == "internal"
    assert "without a response message" in r.error()["message"]


def test_unary_response_with_two_messages(portico):
    gw = portico()
    r = unary(gw.port, STREAM, EchoRequest(count=2))
    assert r.status == 500
    assert "more than one message" in r.error()["message"]


def test_deadline(portico, echo_server):
    gw = portico()
    t0 = time.monotonic()
    r = unary(gw.port, UNARY, EchoRequest(delay_ms=3000, id="connect-deadline"), headers={"Connect-Timeout-Ms": "300"})
    elapsed = time.monotonic() - t0
    assert r.status == 504 and r.error()["code"] == "deadline_exceeded", (r.status, r.body)
    assert 0.25 < elapsed < 2.5, elapsed
    # the deadline reached the upstream (as grpc-timeout): its call ended there too
    assert echo_server.wait_cancel_status("connect-deadline").cancelled


def test_gateway_deadline_clamped(portico):
    """timeouts.max_grpc_timeout clamps connect-timeout-ms as it does grpc-timeout; the gateway's own timer
    answers (the message names the deadline)."""
    gw = portico(config=config("timeouts: {max_grpc_timeout: 200ms}\n"))
    r = unary(gw.port, UNARY, EchoRequest(delay_ms=3000), headers={"Connect-Timeout-Ms": "60000"})
    assert r.status == 504 and r.error()["code"] == "deadline_exceeded"


# --------------------------------------------------------------------------- errors the gateway makes


def test_upstream_down(portico):
    gw = portico(upstream=free_port())
    r = unary(gw.port, UNARY, EchoRequest(message="x"))
    assert r.status == 503, (r.status, r.body)
    err = r.error()
    assert err["code"] == "unavailable" and err["message"], err


def test_unknown_route(portico):
    gw = portico(config=config(routes="routes: [{prefix: /portico.test., upstream: echo}]\n"))
    r = unary(gw.port, "/other.Svc/Method", EchoRequest())
    assert r.status == 501
    assert r.error() == {"code": "unimplemented", "message": "no route for /other.Svc/Method"}
    assert r.headers["x-request-id"]  # gateway-made errors carry the request id too


def test_wrong_version_header(portico):
    gw = portico()
    r = unary(gw.port, UNARY, EchoRequest(), headers={"Connect-Protocol-Version": "2"})
    assert r.status == 400
    err = r.error()
    assert err["code"] == "invalid_argument" and "connect-protocol-version '2'" in err["message"], err
    assert not re.search(r"call /portico\.test\.Echo/Unary .*starting", gw.log_text())


@pytest.mark.parametrize("value", ["abc", "12345678901", "-5", "1.5"])
def test_bad_timeout(portico, value):
    gw = portico()
    r = unary(gw.port, UNARY, EchoRequest(), headers={"Connect-Timeout-Ms": value})
    assert r.status == 400
    assert r.error()["message"] == f"malformed connect-timeout-ms '{value}' (want 1 to 10 digits)"


def test_unsupported_encoding(portico):
    gw = portico()
    r = unary(gw.port, UNARY, b"xx", headers={"Content-Encoding": "br"})
    assert r.status == 501
    assert r.error()["message"] == "unsupported content-encoding 'br': Portico accepts gzip and identity"


def test_oversized_with_content_length(portico):
    gw = portico(config=config("limits: {max_message_size: 1KiB}\n"))
    r = unary(gw.port, UNARY, EchoRequest(payload=b"x" * 2000))
    assert r.status == 429
    err = r.error()
    assert err["code"] == "resource_exhausted" and "limits.max_message_size" in err["message"], err


def test_oversized_without_content_length(portico, echo_server):
    """A chunked body has no length to frame it with: it is held up to max_message_size, refused beyond."""
    gw = portico(config=config("limits: {max_message_size: 1KiB}\n"))
    body = EchoRequest(payload=b"x" * 3000, id="connect-oversized").SerializeToString()
    r = unary(gw.port, UNARY, iter([body[:500], body[500:1500], body[1500:]]))
    assert r.status == 429
    assert r.error()["message"] == ("request body without content-length exceeds the gateway limit of 1024 bytes "
                                    "(limits.max_message_size)")
    assert not echo_server.cancel_status("connect-oversized").seen  # nothing reached the upstream
    assert gw.wait_log(r"RESOURCE_EXHAUSTED \(8\) .*without content-length")
    # right at the limit is fine (a method with a small answer: the limit applies to responses too)
    from echo_pb import CancelQuery
    ok = CancelQuery(id="z" * 1021).SerializeToString()
    assert len(ok) == 1024
    r = unary(gw.port, "/portico.test.Echo/CancelStatus", iter([ok[:10], ok[10:]]))
    assert r.message(CancelInfo) == CancelInfo()


def test_origin_not_allowed(portico):
    gw = portico(config=config(f"cors: {{allow_origins: ['{ORIGIN}']}}\n"))
    r = unary(gw.port, UNARY, EchoRequest(), headers={"Origin": "https://evil.example"})
    assert r.status == 403
    assert r.error() == {"code": "permission_denied", "message": "origin not allowed by the CORS policy"}
    assert "access-control-allow-origin" not in r.headers


def test_unsupported_method(portico):
    gw = portico()
    r = http1(gw.port, "PUT", UNARY, b"{}", {"Content-Type": "application/json"})
    assert r.status == 405 and r.headers["allow"] == "POST, OPTIONS"
    assert r.json()["code"] == "unimplemented"


JWT_SECRET = b"0123456789abcdef0123456789abcdef"


def test_jwt(portico, tmp_path):
    jwt = pytest.importorskip("jwt")
    k = base64.urlsafe_b64encode(JWT_SECRET).rstrip(b"=").decode()
    (tmp_path / "keys.json").write_text(json.dumps({"keys": [{"kty": "oct", "kid": "k1", "alg": "HS256", "k": k}]}))
    gw = portico(config=config(
        "jwt:\n  providers:\n    - {name: main, jwks_file: " + str(tmp_path / "keys.json") + "}\n",
        routes="routes: [{prefix: /, upstream: echo, jwt: {providers: [main], require_claims: {scope: admin}}}]\n"))
    r = unary(gw.port, UNARY, EchoRequest())
    assert r.status == 401 and r.error()["code"] == "unauthenticated"
    assert "missing credentials" in r.error()["message"]
    r = unary(gw.port, UNARY, EchoRequest(), headers={"Authorization": "Bearer not.a.token"})
    assert r.status == 401 and r.error()["message"].startswith("invalid token")
    now = int(time.time())
    user = jwt.encode({"sub": "u", "exp": now + 60, "scope": "user"}, JWT_SECRET, algorithm="HS256", headers={"kid": "k1"})
    r = unary(gw.port, UNARY, EchoRequest(), headers={"Authorization": f"Bearer {user}"})
    assert r.status == 403 and r.error()["code"] == "permission_denied"
    admin = jwt.encode({"sub": "u", "exp": now + 60, "scope": "admin"}, JWT_SECRET, algorithm="HS256", headers={"kid": "k1"})
    r = unary(gw.port, UNARY, EchoRequest(message="in"), headers={"Authorization": f"Bearer {admin}"})
    assert r.message().message == "in"


def test_grpc_web_errors_keep_their_shape(portico):
    """The same gateway errors for a gRPC-Web caller: trailers-only 200 with grpc-status (the one place that
    decides the shape answers each protocol in its own)."""
    gw = portico(config=config(routes="routes: [{prefix: /portico.test., upstream: echo}]\n"))
    status, head, msgs, trailers = grpcweb.call(gw.port, "/other.Svc/Method", EchoRequest())
    assert status == 200 and msgs == [] and trailers is None
    assert head["grpc-status"] == "12" and head["grpc-message"] == "no route for /other.Svc/Method"
    assert head["content-type"] == "application/grpc-web+proto"


# --------------------------------------------------------------------------- GET


def get(port, path, query, headers=None, **kw):
    return http1(port, "GET", f"{path}?{query}", None, headers, **kw)


@pytest.mark.parametrize("b64", [True, False], ids=["base64", "percent-encoded"])
def test_get_json(portico, b64):
    gw = portico()
    q = get_query(json.dumps({"message": "a+b & c/d é"}).encode(), encoding="json", b64=b64)
    assert ("base64=1" in q) == b64
    r = get(gw.port, JSON_UNARY, q)
    assert r.status == 200, (r.status, r.body)
    assert r.headers["content-type"] == "application/json"
    assert json.loads(r.body)["message"] == "a+b & c/d é"
    assert r.trailers() == {"x-trailer-ok": "done"}
    assert "cache-control" not in r.headers  # the route says nothing


def test_get_proto(portico):
    gw = portico()
    r = get(gw.port, UNARY, get_query(EchoRequest(message="via get", payload=b"\xfb\xff\x00")))
    resp = r.message()
    assert resp.message == "via get" and resp.payload == b"\xfb\xff\x00"


def test_get_gzip_message(portico):
    gw = portico()
    q = get_query(EchoRequest(message="compressed " * 20), compression="gzip")
    assert "compression=gzip" in q and "base64=1" in q
    assert get(gw.port, UNARY, q).message().message == "compressed " * 20


def test_get_any_parameter_order_and_unknown_parameters(portico):
    gw = portico()
    msg = base64.urlsafe_b64encode(EchoRequest(message="order").SerializeToString()).decode()  # padded
    q = f"utm_source=x&message={urllib.parse.quote(msg)}&encoding=proto&base64=1&connect=v1&_=123"
    assert get(gw.port, UNARY, q).message().message == "order"


def test_get_cache_control(portico):
    gw = portico(config=config(routes=(
        "routes:\n"
        "  - {path: /portico.test.Echo/Unary, upstream: echo, get_cache_control: 'public, max-age=60'}\n"
        "  - {prefix: /, upstream: echo}\n")))
    r = get(gw.port, UNARY, get_query(EchoRequest(message="cached")))
    assert r.message().message == "cached"
    assert r.headers["cache-control"] == "public, max-age=60"
    # errors are not given the route's caching
    r = get(gw.port, UNARY, get_query(EchoRequest(status_code=5, status_message="gone")))
    assert r.status == 404 and "cache-control" not in r.headers
    # nor POSTs, nor other routes
    assert "cache-control" not in unary(gw.port, UNARY, EchoRequest()).headers
    assert "cache-control" not in get(gw.port, JSON_UNARY, get_query(b"{}", encoding="json")).headers


def test_get_cors_simple_request(portico):
    """A GET with no custom header is a CORS simple request: no preflight, the answer carries the CORS fields
    (and trailer-* names are exposed to the page)."""
    gw = portico(config=config(f"cors: {{allow_origins: ['{ORIGIN}']}}\n"))
    r = get(gw.port, UNARY, get_query(EchoRequest(message="simple")), headers={"Origin": ORIGIN})
    assert r.message().message == "simple"
    assert r.headers["access-control-allow-origin"] == ORIGIN
    exposed = {h.strip() for h in r.headers["access-control-expose-headers"].split(",")}
    assert "trailer-x-trailer-ok" in exposed, exposed
    assert "Origin" in r.headers["vary"]
    assert not re.search(r"OPTIONS", gw.log_text())
    # with a custom header the browser preflights a GET: GET is allowed, and so are Connect's headers
    c = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=TIMEOUT)
    c.request("OPTIONS", UNARY, headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET",
                                         "Access-Control-Request-Headers": "connect-timeout-ms"})
    p = c.getresponse()
    p.read()
    c.close()
    assert p.status == 204
    assert "GET" in [m.strip() for m in p.getheader("access-control-allow-methods").split(",")]
    assert "connect-timeout-ms" in p.getheader("access-control-allow-headers")
    # an error is readable by the page too
    r = get(gw.port, UNARY, get_query(EchoRequest(status_code=3, status_message="bad")), headers={"Origin": ORIGIN})
    assert r.status == 400 and r.headers["access-control-allow-origin"] == ORIGIN
    assert r.error()["message"] == "bad"


def test_get_deadline(portico):
    gw = portico()
    r = get(gw.port, UNARY, get_query(EchoRequest(delay_ms=3000)), headers={"Connect-Timeout-Ms": "200"})
    assert r.status == 504 and r.error()["code"] == "deadline_exceeded"


@pytest.mark.parametrize("query,status,why", [
    ("connect=v1&message=e30", 400, "bad Connect GET request: the 'encoding' parameter is missing"),
    ("connect=v1&encoding=json", 400, "bad Connect GET request: the 'message' parameter is missing"),
    ("connect=v2&encoding=json&message=e30", 400, "unsupported Connect protocol version"),
    ("encoding=json&message=%7B&message=%7D", 400, "the 'message' parameter is given twice"),
    ("encoding=proto&base64=1&message=A", 400, "the message is not valid base64"),
    ("encoding=proto&message=%FF", 400, "the message is not UTF-8 text: binary messages need base64=1"),
    ("encoding=json&message=%G1", 400, "bad percent-encoding in the query"),
    ("encoding=js%20on&message=e30", 400, "the 'encoding' parameter is not a codec name"),
    ("encoding=proto&base64=1&compression=br&message=AAAA", 501, "unsupported compression 'br': Portico accepts gzip and identity"),
], ids=["no-encoding", "no-message", "version", "twice", "base64", "binary", "percent", "codec", "compression"])
def test_get_bad_query(portico, echo_server, query, status, why):
    gw = portico()
    r = get(gw.port, UNARY, query)
    assert r.status == status, (r.status, r.body)
    assert why in r.error()["message"], r.body


def test_get_without_connect_parameters_is_not_connect(portico):
    """A GET without connect, encoding or message is not a Connect call: the gRPC-Web answer (405, plain)."""
    gw = portico()
    r = get(gw.port, UNARY, "foo=bar")
    assert r.status == 405 and r.headers["content-type"].startswith("text/plain")


def test_get_over_h2(portico):
    gw = portico()
    path = f"{UNARY}?{get_query(EchoRequest(message='h2 get'))}"
    hdrs = [(":method", "GET"), (":scheme", "http"), (":authority", f"127.0.0.1:{gw.port}"), (":path", path)]
    with H2Client(gw.port) as c:
        st = c.request(path, None, headers=hdrs)
        c.wait(lambda: st.done, TIMEOUT)
        assert st.hdict()[":status"] == "200"
        assert EchoResponse.FromString(bytes(st.data)).message == "h2 get"


def test_get_url_too_long(portico):
    """The query is bounded by limits.max_header_size like any request line: 414, before any call."""
    gw = portico(config=config("limits: {max_header_size: 4KiB}\n"))
    r = get(gw.port, UNARY, get_query(EchoRequest(payload=b"x" * 6000)))
    assert r.status == 414


# --------------------------------------------------------------------------- streams


STREAM_HEADERS = {"Content-Type": "application/connect+proto", "Connect-Protocol-Version": "1"}


def stream_http1(port, path, body, ctype="application/connect+proto", headers=None):
    return http1(port, "POST", path, body, {**STREAM_HEADERS, "Content-Type": ctype, **(headers or {})})


def h2_headers(port, path, ctype="application/connect+proto", extra=()):
    return [(":method", "POST"), (":scheme", "http"), (":authority", f"127.0.0.1:{port}"), (":path", path),
            ("content-type", ctype), ("connect-protocol-version", "1"), *extra]


def test_server_stream_proto(portico):
    gw = portico()
    r = stream_http1(gw.port, STREAM, envelope(EchoRequest(message="s", count=3, size=10)))
    assert r.status == 200 and r.headers["content-type"] == "application/connect+proto", r.headers
    assert r.headers["x-echo-initial"] == "yes"
    msgs, end = stream_result(r.body)
    assert [(m.message, m.index, m.payload) for m in msgs] == [("s", i, b"x" * 10) for i in range(3)]
    assert end == {"metadata": {"x-trailer-ok": ["done"]}}
    assert not any(k.startswith("trailer-") for k in r.headers)


def test_server_stream_json_error_with_details(portico):
    gw = portico()
    req = {"message": "j", "count": 2, "statusCode": 5, "statusMessage": "gone ✗", "withDetails": True}
    r = stream_http1(gw.port, JSON_STREAM, envelope(json.dumps(req).encode()), ctype="application/connect+json")
    assert r.status == 200 and r.headers["content-type"] == "application/connect+json"
    msgs, end = stream_result(r.body, cls=None)
    assert [json.loads(m) for m in msgs] == [{"message": "j"}, {"message": "j", "index": 1}]
    err = end["error"]
    assert err["code"] == "not_found" and err["message"] == "gone ✗"
    assert [d["type"] for d in err["details"]] == ["google.protobuf.StringValue", "google.protobuf.Int32Value"]
    assert end["metadata"] == {"x-trailer-custom": ["custom-value"], "x-trailer-bin": ["AAH+/w"]}


@pytest.mark.parametrize("status", [0, 7])
def test_server_stream_trailers_only(portico, status):
    """A trailers-only upstream answer still makes a Connect stream: a head and one end-of-stream envelope."""
    gw = portico()
    r = stream_http1(gw.port, STREAM, envelope(EchoRequest(count=0, status_code=status, status_message="no")))
    assert r.status == 200 and r.headers["content-type"] == "application/connect+proto"
    msgs, end = stream_result(r.body)
    assert msgs == []
    if status == 0:
        assert end == {"metadata": {"x-trailer-ok": ["done"]}}
    else:
        assert end["error"] == {"code": "permission_denied", "message": "no"}
        assert end["metadata"]["x-trailer-custom"] == ["custom-value"]


def test_server_stream_over_h2_arrives_as_sent(portico):
    gw = portico()
    with H2Client(gw.port) as c:
        path = STREAM
        st = c.request(path, envelope(EchoRequest(message="t", count=3, interval_ms=300)), headers=h2_headers(gw.port, path))
        c.wait(lambda: st.done, TIMEOUT)
        msgs, end = stream_result(bytes(st.data))
        assert [m.index for m in msgs] == [0, 1, 2] and end == {"metadata": {"x-trailer-ok": ["done"]}}
        # streamed, not buffered: the first message came well before the end
        assert st.end_time - st.data_times[0] > 0.45, (st.data_times, st.end_time)
        assert st.trailers is None  # the end of stream is in the body, never HTTP trailers


def test_client_stream_over_h2(portico):
    gw = portico()
    with H2Client(gw.port) as c:
        st = c.request(CLIENT_STREAM, None, headers=h2_headers(gw.port, CLIENT_STREAM), end=False)
        for word in ("a", "b", "c"):
            c.send(st.sid, envelope(EchoRequest(message=word, payload=word.encode())))
            time.sleep(0.05)
        c.end(st.sid)
        c.wait(lambda: st.done, TIMEOUT)
        msgs, end = stream_result(bytes(st.data))
        assert [(m.message, m.index, m.payload) for m in msgs] == [("a|b|c", 3, b"abc")]
        assert end == {"metadata": {"x-trailer-ok": ["done"]}}


def test_client_stream_over_http1(portico):
    """Client streaming works over HTTP/1.1 too (the whole body, then the answer)."""
    gw = portico()
    body = b"".join(envelope(EchoRequest(message=w)) for w in ("x", "y"))
    msgs, end = stream_result(stream_http1(gw.port, CLIENT_STREAM, iter([body[:3], body[3:]])).body)
    assert [m.message for m in msgs] == ["x|y"] and "error" not in end


def test_bidi_over_h2_full_duplex(portico):
    """Each answer arrives before the next request is sent."""
    gw = portico()
    with H2Client(gw.port) as c:
        st = c.request(BIDI, None, headers=h2_headers(gw.port, BIDI), end=False)
        for i, word in enumerate(("one", "two", "three")):
            c.send(st.sid, envelope(EchoRequest(message=word)))
            c.wait(lambda: len(envelopes_so_far(st)) == i + 1, TIMEOUT, f"answer {i}")
            assert EchoResponse.FromString(envelopes_so_far(st)[i][1]).message == word
        c.end(st.sid)
        c.wait(lambda: st.done, TIMEOUT)
        msgs, end = stream_result(bytes(st.data))
        assert [m.message for m in msgs] == ["one", "two", "three"] and end == {"metadata": {"x-trailer-ok": ["done"]}}


def envelopes_so_far(st):
    return grpcweb.split_frames(bytes(st.data))[0]


def test_bidi_cancel_reaches_upstream(portico, echo_server):
    gw = portico()
    with H2Client(gw.port) as c:
        st = c.request(BIDI, None, headers=h2_headers(gw.port, BIDI), end=False)
        c.send(st.sid, envelope(EchoRequest(message="first", id="connect-bidi-cancel")))
        c.wait(lambda: len(envelopes_so_far(st)) == 1, TIMEOUT)
        c.reset(st.sid)
    assert echo_server.wait_cancel_status("connect-bidi-cancel").cancelled


def test_stream_deadline(portico):
    gw = portico()
    r = stream_http1(gw.port, STREAM, envelope(EchoRequest(count=5, interval_ms=400)), headers={"Connect-Timeout-Ms": "600"})
    msgs, end = stream_result(r.body)
    assert 1 <= len(msgs) <= 2, msgs
    assert end["error"]["code"] == "deadline_exceeded", end


def test_stream_gzip_request(portico):
    """connect-content-encoding: gzip; compressed envelopes (flag 0x01) go up as compressed gRPC messages."""
    gw = portico()
    payload = gzip.compress(EchoRequest(message="zipped", count=1).SerializeToString())
    r = stream_http1(gw.port, STREAM, envelope(payload, flags=1), headers={"Connect-Content-Encoding": "gzip"})
    msgs, end = stream_result(r.body)
    assert [m.message for m in msgs] == ["zipped"] and "error" not in end


@pytest.mark.parametrize("body,why", [
    (envelope(EchoRequest(count=1), flags=0x02), "a request envelope has the end-of-stream flag (0x02)"),
    (envelope(EchoRequest(count=1), flags=0x80), "a request envelope has reserved flag bits set"),
    (envelope(EchoRequest(count=1, message="cut"))[:-2], "request body ended inside a Connect envelope"),
], ids=["end-stream-flag", "reserved-flag", "truncated"])
def test_stream_bad_envelopes(portico, body, why):
    """Errors in a stream are the stream's: 200 and an end-of-stream envelope with the code and the reason."""
    gw = portico()
    r = stream_http1(gw.port, STREAM, body)
    assert r.status == 200
    msgs, end = stream_result(r.body)
    assert msgs == [] and end["error"]["code"] == "invalid_argument"
    assert why in end["error"]["message"], end


def test_stream_gateway_errors(portico):
    gw = portico(upstream=free_port())
    msgs, end = stream_result(stream_http1(gw.port, STREAM, envelope(EchoRequest(count=1))).body)
    assert msgs == [] and end["error"]["code"] == "unavailable"
    gw2 = portico()
    r = stream_http1(gw2.port, STREAM, envelope(EchoRequest(count=1)), headers={"Connect-Content-Encoding": "br"})
    assert r.status == 200
    assert stream_result(r.body)[1]["error"] == {
        "code": "unimplemented", "message": "unsupported connect-content-encoding 'br': Portico accepts gzip and identity"}
    r = stream_http1(gw2.port, STREAM, envelope(EchoRequest(count=1)), headers={"Connect-Protocol-Version": "0"})
    assert stream_result(r.body)[1]["error"]["code"] == "invalid_argument"


def test_stream_response_message_too_large(portico):
    """A response message over limits.max_message_size after others went out: the stream ends with an error."""
    gw = portico(config=config("limits: {max_message_size: 1KiB}\n"))
    r = stream_http1(gw.port, "/portico.test.Echo/Bidi", b"".join(envelope(EchoRequest(size=s)) for s in (10, 5000)))
    msgs, end = stream_result(r.body)
    assert len(msgs) == 1 and end["error"]["code"] == "resource_exhausted"
    assert "limits.max_message_size" in end["error"]["message"]


def test_get_with_a_body(portico):
    gw = portico()
    r = http1(gw.port, "GET", f"{UNARY}?{get_query(EchoRequest(message='q'))}", b"surprise", {})
    assert r.status == 400
    assert r.error()["message"] == "a Connect GET request has no body: the message is in the query"


def test_custom_codec_with_version_header(portico):
    """application/CODEC is Connect only with connect-protocol-version; it goes up as application/grpc+CODEC (the
    echo server decodes by service, so protobuf bytes under another codec name still echo)."""
    gw = portico()
    body = EchoRequest(message="custom").SerializeToString()
    r = http1(gw.port, "POST", UNARY, body, {"Content-Type": "application/x-custom", "Connect-Protocol-Version": "1"})
    assert r.status == 200 and r.headers["content-type"] == "application/x-custom", (r.status, r.headers)
    assert EchoResponse.FromString(r.body).message == "custom"
    assert re.search(r"call /portico\.test\.Echo/Unary .*starting", gw.log_text())
    # without the header it is not Connect: a plain 415
    r = http1(gw.port, "POST", UNARY, body, {"Content-Type": "application/x-custom"})
    assert r.status == 415 and r.headers["content-type"].startswith("text/plain")


# --------------------------------------------------------------------------- response compression
#
# connectrpc.com/docs/protocol: a unary response may be gzip (content-encoding) when the client's accept-encoding
# accepts it, or, without that header, when its request was gzip; a stream's messages are compressed one by one
# (flag 0x01, connect-content-encoding: gzip in the head) under the same rules with connect-accept-encoding /
# connect-content-encoding. Errors and the end-of-stream envelope stay plain.

GZIP = config("compression: {gzip: true, min_size: 1KiB}\n")
BIG = 4000   # payload bytes of a message worth compressing (b"x" * BIG: it shrinks to a few dozen bytes)


def gunzip_member(data):
    """Exactly one whole gzip member: the Connect client decompresses each body / envelope on its own."""
    d = zlib.decompressobj(wbits=31)
    out = d.decompress(data) + d.flush()
    assert d.eof and d.unused_data == b"", "not one whole gzip member"
    return out


@pytest.mark.parametrize("accept,req_gzip,expect_gzip", [
    ("gzip", False, True),
    ("br, gzip;q=0.5", False, True),     # an unknown coding is skipped
    ("*", False, True),
    ("GZIP", False, True),
    ("gzip;q=0", False, False),          # refused
    ("gzip;q=0.000, *", False, False),   # refused by name: the wildcard does not bring it back
    ("identity", False, False),
    ("br, zstd", False, False),
    (None, False, False),                # no header, identity request: identity
    (None, True, True),                  # no header: the client reads what it sent (content-encoding: gzip)
    ("identity", True, False),           # the header decides, not the request's coding
])
def test_unary_response_gzip_negotiation(portico, accept, req_gzip, expect_gzip):
    gw = portico(config=GZIP)
    body = EchoRequest(message="neg", size=BIG).SerializeToString()
    headers = {"Accept-Encoding": accept} if accept is not None else {}
    if req_gzip:
        body, headers["Content-Encoding"] = gzip.compress(body), "gzip"
    r = unary(gw.port, UNARY, body, headers=headers)
    assert r.status == 200, (r.status, r.body)
    assert r.headers["content-length"] == str(len(r.body))
    if expect_gzip:
        assert r.headers["content-encoding"] == "gzip", r.headers
        assert len(r.body) < 200, len(r.body)
        resp = EchoResponse.FromString(gunzip_member(r.body))
    else:
        assert "content-encoding" not in r.headers, r.headers
        resp = r.message()
    assert resp.message == "neg" and resp.payload == b"x" * BIG
    assert r.trailers() == {"x-trailer-ok": "done"}


def test_unary_response_gzip_small_error_json_and_off(portico):
    gw = portico(config=GZIP)
    # under compression.min_size: plain, but the answer varies with Accept-Encoding all the same
    r = unary(gw.port, UNARY, EchoRequest(message="small", size=100), headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in r.headers and r.headers["vary"] == "Accept-Encoding", r.headers
    assert r.message().payload == b"x" * 100
    # JSON codec, large: gzip JSON
    r = json_unary(gw.port, {"message": "j", "size": BIG}, headers={"Accept-Encoding": "gzip"})
    assert r.status == 200 and r.headers["content-encoding"] == "gzip", r.headers
    doc = json.loads(gunzip_member(r.body))
    assert doc["message"] == "j" and base64.b64decode(doc["payload"]) == b"x" * BIG
    # errors are short JSON for humans and tools: never compressed (the protocol allows either)
    r = unary(gw.port, UNARY, EchoRequest(status_code=5, status_message="m" * 2000), headers={"Accept-Encoding": "gzip"})
    assert r.status == 404 and "content-encoding" not in r.headers
    assert r.error() == {"code": "not_found", "message": "m" * 2000}
    # compression.gzip off (the default): never
    off = portico(config=config())
    r = unary(off.port, UNARY, EchoRequest(size=BIG), headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in r.headers and r.message().payload == b"x" * BIG


def test_unary_response_gzip_over_h2(portico):
    gw = portico(config=GZIP)
    with H2Client(gw.port) as c:
        hdrs = [(":method", "POST"), (":scheme", "http"), (":authority", f"127.0.0.1:{gw.port}"), (":path", UNARY),
                ("content-type", "application/proto"), ("connect-protocol-version", "1"), ("accept-encoding", "gzip")]
        st = c.request(UNARY, EchoRequest(message="h2", size=BIG).SerializeToString(), headers=hdrs)
        c.wait(lambda: st.done, TIMEOUT)
        h = st.hdict()
        assert h[":status"] == "200" and h["content-encoding"] == "gzip", h
        assert h["content-length"] == str(len(st.data))
        resp = EchoResponse.FromString(gunzip_member(bytes(st.data)))
        assert resp.message == "h2" and resp.payload == b"x" * BIG


@pytest.mark.parametrize("accept,compression,expect_gzip", [
    ("gzip", None, True),
    (None, "gzip", True),       # without accept-encoding: the query's compression
    (None, None, False),
    ("identity", "gzip", False),
], ids=["accept", "query-compression", "none", "identity"])
def test_get_response_gzip(portico, accept, compression, expect_gzip):
    gw = portico(config=GZIP)
    q = get_query(EchoRequest(message="g", size=BIG), compression=compression)
    r = get(gw.port, UNARY, q, headers={"Accept-Encoding": accept} if accept else None)
    assert r.status == 200, (r.status, r.body)
    assert r.headers["vary"] == "Accept-Encoding", r.headers   # caches must keep the two apart
    if expect_gzip:
        assert r.headers["content-encoding"] == "gzip", r.headers
        resp = EchoResponse.FromString(gunzip_member(r.body))
    else:
        assert "content-encoding" not in r.headers, r.headers
        resp = r.message()
    assert resp.message == "g" and resp.payload == b"x" * BIG


def compressed_stream(body):
    """(flags of every envelope, messages decoded, end-of-stream JSON) of a Connect stream whose envelopes may be
    gzip (flag 0x01); the end of stream must be last, once, and plain."""
    frames = envelopes(body)
    assert frames and frames[-1][0] == 0x02, frames
    assert all(f in (0, 1) for f, _ in frames[:-1]), [f for f, _ in frames]
    msgs = [EchoResponse.FromString(gunzip_member(p) if f == 1 else p) for f, p in frames[:-1]]
    return [f for f, _ in frames], msgs, json.loads(frames[-1][1])


@pytest.mark.parametrize("headers,expect", [
    ({"Connect-Accept-Encoding": "gzip"}, True),
    ({"Connect-Accept-Encoding": "br, gzip"}, True),
    ({"Connect-Accept-Encoding": "gzip, identity", "Accept-Encoding": "gzip"}, True),  # one layer, not two
    ({"Connect-Accept-Encoding": "identity"}, False),
    ({"Connect-Accept-Encoding": "gzip;q=0"}, False),
    ({}, False),
], ids=["gzip", "list", "with-accept-encoding", "identity", "q0", "none"])
def test_server_stream_gzip_envelopes(portico, headers, expect):
    gw = portico(config=GZIP)
    r = stream_http1(gw.port, STREAM, envelope(EchoRequest(message="z", count=3, size=BIG)), headers=headers)
    assert r.status == 200 and "content-encoding" not in r.headers, r.headers
    flags, msgs, end = compressed_stream(r.body)
    assert [(m.message, m.index, m.payload) for m in msgs] == [("z", i, b"x" * BIG) for i in range(3)]
    assert end == {"metadata": {"x-trailer-ok": ["done"]}}
    if expect:
        assert r.headers["connect-content-encoding"] == "gzip", r.headers
        assert flags == [1, 1, 1, 2], flags
        assert len(r.body) < 600, len(r.body)
    else:
        assert "connect-content-encoding" not in r.headers, r.headers
        assert flags == [0, 0, 0, 2], flags


def test_server_stream_gzip_inferred_from_request(portico):
    """Without connect-accept-encoding the client reads what it sent: a gzip request stream gets gzip back."""
    gw = portico(config=GZIP)
    payload = gzip.compress(EchoRequest(message="in", count=2, size=BIG).SerializeToString())
    r = stream_http1(gw.port, STREAM, envelope(payload, flags=1), headers={"Connect-Content-Encoding": "gzip"})
    assert r.headers["connect-content-encoding"] == "gzip", r.headers
    flags, msgs, _ = compressed_stream(r.body)
    assert flags == [1, 1, 2] and [m.payload for m in msgs] == [b"x" * BIG] * 2


def test_stream_gzip_small_messages_plain_and_accept_encoding_alone(portico):
    gw = portico(config=GZIP)
    # messages under compression.min_size go plain; the head still names the coding of any that would not
    r = stream_http1(gw.port, BIDI, b"".join(envelope(EchoRequest(message=str(s), size=s)) for s in (10, BIG, 20)),
                     headers={"Connect-Accept-Encoding": "gzip"})
    assert r.headers["connect-content-encoding"] == "gzip", r.headers
    flags, msgs, _ = compressed_stream(r.body)
    assert flags == [0, 1, 0, 2] and [len(m.payload) for m in msgs] == [10, BIG, 20]
    # Accept-Encoding alone (a browser's): the whole body is gzip as before, the envelopes inside plain
    r = stream_http1(gw.port, STREAM, envelope(EchoRequest(count=2, size=BIG)), headers={"Accept-Encoding": "gzip"})
    assert r.headers["content-encoding"] == "gzip" and "connect-content-encoding" not in r.headers, r.headers
    flags, msgs, _ = compressed_stream(gunzip_member(r.body))
    assert flags == [0, 0, 2] and [m.payload for m in msgs] == [b"x" * BIG] * 2


def test_gzip_large_and_incompressible_messages(portico):
    """A message over limits.call_buffer_size (many DATA frames, many buffer chains) is compressed whole; one that
    gzip cannot shrink (random bytes) goes plain, flag 0."""
    gw = portico(config=GZIP)
    noise = os.urandom(5000)
    body = envelope(EchoRequest(message="l", size=600_000)) + envelope(EchoRequest(message="n", payload=noise))
    r = stream_http1(gw.port, BIDI, body, headers={"Connect-Accept-Encoding": "gzip"})
    flags, msgs, end = compressed_stream(r.body)
    assert flags == [1, 0, 2] and "error" not in end, (flags, end)
    assert msgs[0].payload == b"x" * 600_000 and msgs[1].payload == noise
    assert len(r.body) < 12_000, len(r.body)
    r = unary(gw.port, UNARY, EchoRequest(message="u", size=600_000), headers={"Accept-Encoding": "gzip"})
    assert r.headers["content-encoding"] == "gzip" and int(r.headers["content-length"]) < 5000, r.headers
    assert EchoResponse.FromString(gunzip_member(r.body)).payload == b"x" * 600_000


def test_stream_gzip_message_too_large(portico):
    """A message held whole for compressing is still bounded by limits.max_message_size."""
    gw = portico(config=config("compression: {gzip: true, min_size: 100}\nlimits: {max_message_size: 2KiB}\n"))
    r = stream_http1(gw.port, BIDI, b"".join(envelope(EchoRequest(size=s)) for s in (500, 5000)),
                     headers={"Connect-Accept-Encoding": "gzip"})
    flags, msgs, end = compressed_stream(r.body)
    assert flags == [1, 2] and msgs[0].payload == b"x" * 500
    assert end["error"]["code"] == "resource_exhausted" and "limits.max_message_size" in end["error"]["message"], end


def test_server_stream_gzip_over_h2(portico):
    gw = portico(config=GZIP)
    with H2Client(gw.port) as c:
        hdrs = h2_headers(gw.port, STREAM, extra=[("connect-accept-encoding", "gzip")])
        st = c.request(STREAM, envelope(EchoRequest(message="h", count=3, size=BIG, interval_ms=200)), headers=hdrs)
        c.wait(lambda: st.done, TIMEOUT)
        assert st.hdict()["connect-content-encoding"] == "gzip", st.hdict()
        flags, msgs, end = compressed_stream(bytes(st.data))
        assert flags == [1, 1, 1, 2] and [m.index for m in msgs] == [0, 1, 2] and "error" not in end
        # each message goes out when it comes, compressed on its own: not held to the end
        assert st.end_time - st.data_times[0] > 0.3, (st.data_times, st.end_time)


# The echo server compresses its messages when asked (x-echo-compress) and the caller's grpc-accept-encoding names
# gzip: the gateway inflates them for a Connect client (whose stream may compress them again, its own way).
UPSTREAM_GZIP = {"X-Echo-Compress": "gzip", "Grpc-Accept-Encoding": "gzip"}


def test_upstream_compression_reaches_native_grpc_compressed(portico):
    """The premise of the two tests below: with these headers the echo server does send compressed messages."""
    gw = portico()
    resp = grpcweb.h2_request(gw.port, [(":method", "POST"), (":scheme", "http"), (":path", UNARY),
                                        (":authority", f"127.0.0.1:{gw.port}"), ("content-type", "application/grpc"),
                                        ("te", "trailers"), ("x-echo-compress", "gzip"), ("grpc-accept-encoding", "gzip")],
                              grpcweb.frame(EchoRequest(message="n", size=BIG)))
    assert dict(resp.headers).get("grpc-encoding") == "gzip", resp.headers
    flag, length = struct.unpack(">BI", resp.data[:5])
    assert flag == 1 and EchoResponse.FromString(gunzip_member(resp.data[5:5 + length])).payload == b"x" * BIG


@pytest.mark.parametrize("accept", [None, "gzip"])
def test_upstream_compressed_unary(portico, accept):
    gw = portico(config=GZIP)
    r = unary(gw.port, UNARY, EchoRequest(message="u", size=BIG), headers={**UPSTREAM_GZIP, **({"Accept-Encoding": accept} if accept else {})})
    assert r.status == 200 and "grpc-encoding" not in r.headers, (r.status, r.headers, r.body[:100])
    if accept:
        assert r.headers["content-encoding"] == "gzip"
        resp = EchoResponse.FromString(gunzip_member(r.body))
    else:
        assert "content-encoding" not in r.headers
        resp = r.message()
    assert resp.message == "u" and resp.payload == b"x" * BIG


@pytest.mark.parametrize("accept", [None, "gzip"])
def test_upstream_compressed_stream(portico, accept):
    gw = portico(config=GZIP)
    headers = {**UPSTREAM_GZIP, **({"Connect-Accept-Encoding": accept} if accept else {})}
    r = stream_http1(gw.port, STREAM, envelope(EchoRequest(message="s", count=2, size=BIG)), headers=headers)
    assert "grpc-encoding" not in r.headers, r.headers
    flags, msgs, end = compressed_stream(r.body)
    assert flags == ([1, 1, 2] if accept else [0, 0, 2]), flags
    assert [m.payload for m in msgs] == [b"x" * BIG] * 2 and "error" not in end
