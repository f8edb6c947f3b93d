"""CORS as a browser sees it, through the real gateway binary (PROTOCOL.md §1.4, §1.12, §2.3).

Every test talks raw HTTP/1.1 to a fresh `portico` process (in front of the grpcio echo upstream,
or of a port where nothing listens when a request must provably stay in the gateway), checks the
exact CORS fields of the answer, and that the gateway still serves afterwards. The `portico`
fixture also checks that every gateway exits 0 on SIGTERM and logged no sanitizer report.

Policy under test (include/portico/cors.h, src/filter/cors.c, src/http1/server.c):
  - preflights are answered by the gateway (204, or 403 without CORS fields), never forwarded;
  - Allow-Origin echoes the origin, never `*`; Vary: Origin whenever a policy exists;
  - Expose-Headers = grpc-status, grpc-message, grpc-status-details-bin + the non-safelisted
    fields that went out + the configured extras, on every answer, gateway-made errors included;
  - a disallowed origin gets 403 (no CORS fields) and nothing reaches the upstream;
  - `$httpHeaders` (grpc-web suppressCorsPreflight) overrides the request's headers, refusing
    anything that decides routing, security or framing.
"""

import re
import socket
import urllib.parse
import uuid

import pytest

import echo_pb
import grpcweb
from echo_pb import EchoRequest
from test_protocol import (CT_BIN, CT_TEXT, TIMEOUT, assert_serves, assert_well_formed,
                           exchange, frames_of, rpc, text_headers, web_headers)

UNARY = echo_pb.method_path("Unary")
SERVER_STREAM = echo_pb.method_path("ServerStream")

OK, INVALID_ARGUMENT, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED = 0, 3, 4, 8
UNIMPLEMENTED, UNAVAILABLE = 12, 14

APP = "https://app.example.com"           # exact
SUB = "https://a.example.com"             # matches https://*.example.com
LOCAL = "http://127.0.0.1:5173"           # matches ~^http://127\.0\.0\.1:\d+$
OTHER = "https://other.example.org"       # allowed only on the overriding route

ALWAYS_EXPOSED = {"grpc-status", "grpc-message", "grpc-status-details-bin"}
ESSENTIAL_REQUEST_HEADERS = {"content-type", "x-grpc-web", "x-user-agent", "grpc-timeout", "connect-protocol-version",
                             "connect-timeout-ms"}
# What a grpc-web client asks for (mixed case on purpose: the answer must be lower-case)
REQUESTED_HEADERS = "content-type,X-Grpc-Web,x-user-agent,grpc-timeout,X-Custom-Meta"
REQUESTED_SET = {"content-type", "x-grpc-web", "x-user-agent", "grpc-timeout", "x-custom-meta"}
PREFLIGHT_VARY = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"
# Never listed in Expose-Headers: CORS-safelisted response fields and framing fields
NOT_EXPOSED = {"cache-control", "content-language", "content-length", "content-type", "expires",
               "last-modified", "pragma", "vary", "connection", "transfer-encoding"}

BASE = """\
workers: 1
log_level: debug
listeners: [127.0.0.1:{listen_port}]
upstreams:
  - name: echo
    endpoints: [127.0.0.1:{upstream_port}]
routes:
  - prefix: /portico.test.Echo/
    upstream: echo
"""

# The main policy: all three kinds of pattern, a max age, configured extras (one of them a
# duplicate, in another case, of a field the upstream sends).
CORS_CONFIG = BASE + r"""
cors:
  allow_origins:
    - https://app.example.com
    - "https://*.example.com"
    - '~^http://127\.0\.0\.1:\d+$'
  max_age: 2m
  expose_headers: [x-extra-exposed, X-Echo-Initial]
"""

# Credentials, private network access and a fixed allow_headers list.
CREDENTIALS_CONFIG = BASE + """
cors:
  allow_origins: [https://app.example.com]
  allow_credentials: true
  allow_private_network: true
  allow_headers: [x-custom-meta, Authorization]
  allow_methods: [POST]
  max_age: 0
"""

# Route A (Unary) has its own policy allowing only OTHER; the global one allows APP.
ROUTE_CONFIG = """\
workers: 1
log_level: debug
listeners: [127.0.0.1:{listen_port}]
upstreams:
  - name: echo
    endpoints: [127.0.0.1:{upstream_port}]
routes:
  - path: /portico.test.Echo/Unary
    upstream: echo
    cors: {allow_origins: ["https://other.example.org"], max_age: 30s}
  - prefix: /portico.test.Echo/
    upstream: echo
cors:
  allow_origins: [https://app.example.com]
"""


# --------------------------------------------------------------------------- helpers

def dead_port():
    """A bound but not listening socket: connections to its port are refused. Keep it open."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    return s


def cors_fields(head):
    """Names (lower-case) of the access-control-* fields of a response head."""
    return [k.lower() for k, _ in head.headers if k.lower().startswith("access-control-")]


def names(head):
    return sorted(k.lower() for k, _ in head.headers)


def single(head, name):
    """The value of a field that must appear exactly once."""
    values = head.get_all(name)
    assert len(values) == 1, (name, head)
    return values[0]


def token_list(value):
    items = [t.strip() for t in value.split(",")]
    assert all(items), value
    return items


def preflight(gw, path, origin, method="POST", request_headers=REQUESTED_HEADERS,
              private_network=None, conn=None, extra=()):
    """An OPTIONS preflight as a browser sends it (no body, no Content-Length).
    Returns (head, body)."""
    headers = [("Origin", origin), ("Access-Control-Request-Method", method)]
    if request_headers is not None:
        headers.append(("Access-Control-Request-Headers", request_headers))
    if private_network is not None:
        headers.append(("Access-Control-Request-Private-Network", private_network))
    headers += list(extra)
    own = conn is None
    if own:
        conn = gw.connect(timeout=TIMEOUT)
    try:
        conn.request("OPTIONS", path, headers, content_length=False)
        return conn.response(TIMEOUT)
    finally:
        if own:
            conn.close()


def assert_preflight_ok(head, body, origin, max_age, allowed_headers, credentials=False,
                        private_network=False, methods="GET, POST, OPTIONS"):
    """A successful preflight answer, field by field, and nothing else."""
    assert head.status == 204, head
    assert body == b""
    assert single(head, "access-control-allow-origin") == origin      # echoed, never '*'
    assert single(head, "access-control-allow-methods") == methods
    allow = token_list(single(head, "access-control-allow-headers"))
    assert all(h == h.lower() for h in allow), allow
    assert len(allow) == len(set(allow)), allow
    assert set(allow) == set(allowed_headers), allow
    assert single(head, "vary") == PREFLIGHT_VARY
    expected = ["access-control-allow-headers", "access-control-allow-methods",
                "access-control-allow-origin", "vary"]
    if max_age is not None:
        assert single(head, "access-control-max-age") == str(max_age)
        expected.append("access-control-max-age")
    if credentials:
        assert single(head, "access-control-allow-credentials") == "true"
        expected.append("access-control-allow-credentials")
    if private_network:
        assert single(head, "access-control-allow-private-network") == "true"
        expected.append("access-control-allow-private-network")
    # exact head: no body framing (204), no expose list, nothing else
    assert names(head) == sorted(expected), head


def assert_preflight_refused(gw, head, body, origin):
    assert head.status == 403, head
    assert cors_fields(head) == [], head
    assert (head.get("content-type") or "").startswith("text/plain"), head
    assert body, head
    assert int(head.get("content-length")) == len(body), head
    assert gw.wait_log(r"CORS preflight refused for origin '" + re.escape(origin) + "'"), \
        f"the log does not name the refused origin {origin!r}"


def expose_list(head):
    """Access-Control-Expose-Headers parsed and checked for form (one field, lower-case tokens,
    no duplicates)."""
    items = token_list(single(head, "access-control-expose-headers"))
    assert all(i == i.lower() for i in items), items
    assert len(items) == len(set(items)), items
    return set(items)


def assert_allowed_answer(head, origin, extras=(), credentials=False):
    """CORS fields of an actual answer to an allowed origin: Allow-Origin echo, Vary: Origin and an
    Expose-Headers list of exactly the always-exposed names, the non-safelisted fields that went
    out in this head, and the configured extras."""
    assert single(head, "access-control-allow-origin") == origin, head
    assert single(head, "vary") == "Origin", head
    if credentials:
        assert single(head, "access-control-allow-credentials") == "true", head
    else:
        assert head.get_all("access-control-allow-credentials") == [], head
    sent = {k.lower() for k, _ in head.headers} - NOT_EXPOSED
    sent = {n for n in sent if not n.startswith("access-control-")}
    exposed = expose_list(head)
    assert exposed == ALWAYS_EXPOSED | sent | {e.lower() for e in extras}, head
    assert not exposed & NOT_EXPOSED, exposed
    assert not any(n.startswith("access-control-") for n in exposed), exposed
    # no other CORS field on an actual response
    assert set(cors_fields(head)) <= {"access-control-allow-origin",
                                      "access-control-allow-credentials",
                                      "access-control-expose-headers"}, head
    return exposed


def origin_headers(origin, text=False, extra=()):
    extra = [("Origin", origin)] + list(extra)
    return text_headers(extra) if text else web_headers(extra=extra)


def call_with_origin(gw, origin, path=UNARY, request=None, text=False, extra=(), conn=None):
    request = request if request is not None else EchoRequest(message="cors")
    return rpc(gw, path, request, text=text, headers=origin_headers(origin, text, extra),
               conn=conn)


def assert_serves_cors(gw, origin, conn=None, extras=("x-extra-exposed",)):
    """A unary call from `origin` still works and carries the CORS fields."""
    ans = call_with_origin(gw, origin, request=EchoRequest(message="still serving"), conn=conn)
    assert_well_formed(ans, text=False)
    assert ans.grpc_status == OK, ans
    assert [m.message for m in ans.messages] == ["still serving"]
    assert_allowed_answer(ans.head, origin, extras=extras)


def post(gw, path, headers, request, conn=None, text=False):
    """A POST whose answer is read as plain HTTP (for refusals that are not gRPC-Web).
    Returns (head, body)."""
    body = frames_of(request)
    if text:
        body = grpcweb.encode_text(body)
    own = conn is None
    if own:
        conn = gw.connect(timeout=TIMEOUT)
    try:
        conn.request("POST", path, headers, body)
        return conn.response(TIMEOUT)
    finally:
        if own:
            conn.close()


def assert_refused(head, body):
    """The answer to an actual request from a disallowed origin: 403 plain text, no CORS."""
    assert head.status == 403, head
    assert cors_fields(head) == [], head
    assert (head.get("content-type") or "").startswith("text/plain"), head
    assert body and int(head.get("content-length")) == len(body), (head, body)
    assert "grpc-status" not in head.dict(), head


def assert_not_forwarded_by_log(gw):
    """Nothing in the gateway log shows a call or an upstream connection attempt."""
    log = gw.log_text()
    assert not re.search(r"^.*\bcall /", log, re.M), log
    assert not re.search(r"upstream \S+: connect", log), log


# --------------------------------------------------------------------------- 1. preflight, allowed

@pytest.mark.parametrize("origin", [APP, SUB, "https://deep.sub.example.com", LOCAL,
                                    "http://127.0.0.1:1"],
                         ids=["exact", "wildcard", "wildcard-deep", "regex", "regex-port-1"])
def test_preflight_allowed_origin(portico, echo_server, origin):
    gw = portico(config=CORS_CONFIG)
    with gw.connect() as conn:
        head, body = preflight(gw, UNARY, origin, conn=conn)
        assert_preflight_ok(head, body, origin, max_age=120,
                            allowed_headers=REQUESTED_SET | ESSENTIAL_REQUEST_HEADERS)
        # the preflight answer has no body: the next request on the connection parses cleanly
        assert_serves_cors(gw, origin, conn=conn)


def test_preflight_without_request_headers(portico):
    """No Access-Control-Request-Headers: the grpc-web essentials are still allowed."""
    gw = portico(config=CORS_CONFIG)
    head, body = preflight(gw, UNARY, APP, request_headers=None)
    assert_preflight_ok(head, body, APP, max_age=120, allowed_headers=ESSENTIAL_REQUEST_HEADERS)
    assert_serves_cors(gw, APP)


def test_preflight_empty_request_headers(portico):
    """`Access-Control-Request-Headers:` with an empty value (a valid, empty field value,
    RFC 9110 §5.5) is the same as no header: essentials only."""
    gw = portico(config=CORS_CONFIG)
    head, body = preflight(gw, UNARY, APP, request_headers="")
    assert_preflight_ok(head, body, APP, max_age=120, allowed_headers=ESSENTIAL_REQUEST_HEADERS)
    assert_serves_cors(gw, APP)


def test_preflight_is_local_on_any_path(portico):
    """Preflights are answered by the gateway itself: with nothing listening upstream they still
    get 204 (a real call gets UNAVAILABLE), on routed paths, unknown routes, '/', the health path
    and with a query string; no call is started and no upstream connection is attempted."""
    with dead_port() as dead:
        gw = portico("--allow-origin", APP, upstream=dead.getsockname()[1])
        with gw.connect() as conn:
            for path in (UNARY, "/other.Service/Method", "/", "/healthz", "/x?$httpHeaders=bad%zz",
                         UNARY + "?a=1"):
                head, body = preflight(gw, path, APP, conn=conn)
                # CLI policy: default max_age 600 s, no credentials
                assert_preflight_ok(head, body, APP, max_age=600,
                                    allowed_headers=REQUESTED_SET | ESSENTIAL_REQUEST_HEADERS)
        assert_not_forwarded_by_log(gw)
        # while a real call fails, with the CORS fields
        ans = call_with_origin(gw, APP)
        assert_well_formed(ans, text=False)
        assert ans.grpc_status == UNAVAILABLE, ans
        assert_allowed_answer(ans.head, APP)
        # and it keeps answering preflights
        head, body = preflight(gw, "/any/thing", APP)
        assert head.status == 204, head


def test_preflight_with_body_is_discarded(portico):
    """A preflight carrying a body (no browser does, but a client may): answered, the body is
    skipped, and the next request on the connection is parsed from the right place."""
    gw = portico(config=CORS_CONFIG)
    with gw.connect() as conn:
        junk = b"POST /x HTTP/1.1\r\n\r\n"      # would be a request if it were not skipped
        conn.request("OPTIONS", UNARY, [("Origin", APP), ("Access-Control-Request-Method", "POST"),
                                        ("Content-Length", str(len(junk)))], junk)
        head, body = conn.response(TIMEOUT)
        assert_preflight_ok(head, body, APP, max_age=120, allowed_headers=ESSENTIAL_REQUEST_HEADERS)
        assert_serves_cors(gw, APP, conn=conn)


def test_any_origin_pattern_echoes(portico):
    """`--allow-origin '*'`: every real origin is allowed and echoed (never a literal '*');
    "null" and malformed origins are not."""
    gw = portico("--allow-origin", "*")
    with gw.connect() as conn:
        for origin in ("https://whatever.test", "http://localhost:3000", "http://[::1]:8080"):
            head, body = preflight(gw, UNARY, origin, conn=conn)
            assert_preflight_ok(head, body, origin, max_age=600,
                                allowed_headers=REQUESTED_SET | ESSENTIAL_REQUEST_HEADERS)
            assert_serves_cors(gw, origin, conn=conn, extras=())
        for origin in ("null", "https://a.test/path", "not an origin"):
            head, body = preflight(gw, UNARY, origin, conn=conn)
            assert_preflight_refused(gw, head, body, origin)
        assert_serves_cors(gw, "https://last.test", conn=conn, extras=())


def test_preflight_private_network_and_credentials(portico):
    gw = portico(config=CREDENTIALS_CONFIG)
    allowed = {"x-custom-meta", "authorization"} | ESSENTIAL_REQUEST_HEADERS
    with gw.connect() as conn:
        # PNA requested and configured; max_age 0 = omitted; the fixed list, not the request's
        head, body = preflight(gw, UNARY, APP, private_network="true", conn=conn)
        assert_preflight_ok(head, body, APP, max_age=None, allowed_headers=allowed,
                            credentials=True, private_network=True, methods="POST")
        # configured but not requested: no allow-private-network
        head, body = preflight(gw, UNARY, APP, conn=conn)
        assert_preflight_ok(head, body, APP, max_age=None, allowed_headers=allowed,
                            credentials=True, private_network=False, methods="POST")
        head, body = preflight(gw, UNARY, APP, private_network="false", conn=conn)
        assert_preflight_ok(head, body, APP, max_age=None, allowed_headers=allowed,
                            credentials=True, private_network=False, methods="POST")
        # a method outside allow_methods is refused
        head, body = preflight(gw, UNARY, APP, method="OPTIONS", conn=conn)
        assert head.status == 403 and cors_fields(head) == [], head
        # actual request with credentials allowed
        ans = call_with_origin(gw, APP, conn=conn)
        assert_well_formed(ans, text=False)
        assert ans.grpc_status == OK, ans
        assert_allowed_answer(ans.head, APP, credentials=True)


def test_preflight_private_network_not_configured(portico):
    """Requested but not configured: no allow-private-network (the browser then blocks)."""
    gw = portico(config=CORS_CONFIG)
    head, body = preflight(gw, UNARY, APP, private_network="true")
    assert_preflight_ok(head, body, APP, max_age=120,
                        allowed_headers=REQUESTED_SET | ESSENTIAL_REQUEST_HEADERS,
                        private_network=False)
    assert_serves_cors(gw, APP)


# --------------------------------------------------------------------------- 2. preflight, refused

@pytest.mark.parametrize("origin", [
    "https://evil.com",
    "https://evil-example.com",          # not a subdomain of example.com
    "https://example.com",               # the wildcard's own host is not a subdomain of it
    "https://a.example.com.evil.com",
    "http://a.example.com",              # scheme differs from the wildcard's
    "https://a.example.com:8443",        # port differs from the wildcard's
    "http://127.0.0.1",                  # the regex wants a port
    "http://127.0.0.1:80/path",
    "http://127.0.0.10:80",
    "null",
])
def test_preflight_disallowed_origin(portico, origin):
    gw = portico(config=CORS_CONFIG)
    with gw.connect() as conn:
        head, body = preflight(gw, UNARY, origin, conn=conn)
        assert_preflight_refused(gw, head, body, origin)
        assert_serves_cors(gw, APP, conn=conn)
    assert_serves(gw)


def test_preflight_without_any_policy(portico):
    """No cors section and no --allow-origin: no origin is allowed."""
    gw = portico()
    head, body = preflight(gw, UNARY, APP)
    assert_preflight_refused(gw, head, body, APP)
    assert gw.wait_log(r"no CORS policy is configured")
    assert_serves(gw)


def test_preflight_disallowed_method(portico):
    gw = portico(config=CORS_CONFIG)
    head, body = preflight(gw, UNARY, APP, method="PUT")
    assert_preflight_refused(gw, head, body, APP)
    assert_serves_cors(gw, APP)


# --------------------------------------------------------------------------- 3. plain OPTIONS

@pytest.mark.parametrize("headers", [
    [],
    [("Origin", APP)],                                  # no Access-Control-Request-Method
    [("Access-Control-Request-Method", "POST")],        # no Origin
], ids=["bare", "origin-only", "method-only"])
def test_options_without_preflight_headers(portico, headers):
    with dead_port() as dead:
        gw = portico(config=CORS_CONFIG, upstream=dead.getsockname()[1])
        with gw.connect() as conn:
            conn.request("OPTIONS", UNARY, headers, content_length=False)
            head, body = conn.response(TIMEOUT)
            assert head.status == 204, head
            assert body == b""
            assert single(head, "allow") == "POST, OPTIONS"
            assert cors_fields(head) == [], head
            # the connection stays usable
            head, body = preflight(gw, UNARY, APP, conn=conn)
            assert head.status == 204, head
        assert_not_forwarded_by_log(gw)


# --------------------------------------------------------------------------- 4. actual requests

@pytest.mark.parametrize("text", [False, True], ids=["binary", "text"])
@pytest.mark.parametrize("origin", [APP, SUB, LOCAL], ids=["exact", "wildcard", "regex"])
def test_actual_request_allowed(portico, origin, text):
    gw = portico(config=CORS_CONFIG)
    with gw.connect() as conn:
        ans = call_with_origin(gw, origin, text=text, extra=[("X-Echo-Foo", "bar")], conn=conn)
        assert_well_formed(ans, text=text)
        assert ans.grpc_status == OK, ans
        assert [m.message for m in ans.messages] == ["cors"]
        assert ans.headers["x-echoed-foo"] == "bar" and ans.headers["x-echo-initial"] == "yes"
        exposed = assert_allowed_answer(ans.head, origin,
                                        extras=("x-extra-exposed", "x-echo-initial"))
        assert {"x-echo-initial", "x-echoed-foo", "x-extra-exposed"} <= exposed, exposed
        assert not exposed & {"content-type", "content-length", "transfer-encoding"}, exposed
        assert_serves_cors(gw, origin, conn=conn)


@pytest.mark.parametrize("text", [False, True], ids=["binary", "text"])
def test_actual_request_trailers_only_error(portico, text):
    gw = portico(config=CORS_CONFIG)
    with gw.connect() as conn:
        ans = call_with_origin(gw, APP, text=text, conn=conn,
                               request=EchoRequest(status_code=9, status_message="nope"))
        assert_well_formed(ans, text=text)
        assert ans.trailers is None                     # status in the head
        assert ans.grpc_status == 9, ans
        assert "x-echo-initial" not in ans.headers       # trailers-only: no initial metadata
        exposed = assert_allowed_answer(ans.head, APP, extras=("x-extra-exposed", "x-echo-initial"))
        assert {"grpc-status", "grpc-message", "x-trailer-custom", "x-trailer-bin"} <= exposed
        assert_serves_cors(gw, APP, conn=conn)


def test_actual_request_server_stream_trailers_only_ok(portico):
    gw = portico(config=CORS_CONFIG)
    ans = call_with_origin(gw, SUB, path=SERVER_STREAM, request=EchoRequest(count=0))
    assert_well_formed(ans, text=False)
    assert ans.trailers is None and ans.grpc_status == OK, ans
    exposed = assert_allowed_answer(ans.head, SUB, extras=("x-extra-exposed", "x-echo-initial"))
    assert "x-trailer-ok" in exposed


def assert_gateway_error(ans, origin, status, text=False):
    assert_well_formed(ans)
    assert ans.content_type == (CT_TEXT if text else CT_BIN), ans
    assert ans.grpc_status == status, ans
    assert ans.grpc_message, ans
    exposed = assert_allowed_answer(ans.head, origin, extras=("x-extra-exposed", "x-echo-initial"))
    assert {"grpc-status", "grpc-message"} <= exposed


def test_gateway_error_upstream_down(portico):
    with dead_port() as dead:
        gw = portico(config=CORS_CONFIG, upstream=dead.getsockname()[1])
        for text in (False, True):
            ans = call_with_origin(gw, LOCAL, text=text)
            assert_gateway_error(ans, LOCAL, UNAVAILABLE, text=text)
        head, _ = preflight(gw, UNARY, LOCAL)
        assert head.status == 204, head


def test_gateway_error_deadline(portico, echo_server):
    """grpc-timeout 200m, upstream answers (trailers-only) after 5 s: DEADLINE_EXCEEDED."""
    gw = portico(config=CORS_CONFIG)
    call_id = f"cors-deadline-{uuid.uuid4()}"
    with gw.connect() as conn:
        ans = call_with_origin(gw, APP, conn=conn, extra=[("grpc-timeout", "200m")],
                               request=EchoRequest(id=call_id, status_code=5, delay_ms=5000))
        assert_gateway_error(ans, APP, DEADLINE_EXCEEDED)
        assert_serves_cors(gw, APP, conn=conn)


@pytest.mark.parametrize("text", [False, True], ids=["binary", "text"])
def test_gateway_error_unknown_route(portico, text):
    gw = portico(config=CORS_CONFIG)
    with gw.connect() as conn:
        ans = call_with_origin(gw, SUB, path="/other.Service/Method", text=text, conn=conn)
        assert_gateway_error(ans, SUB, UNIMPLEMENTED, text=text)
        assert "/other.Service/Method" in ans.grpc_message_decoded
        assert_serves_cors(gw, SUB, conn=conn)


def test_gateway_error_request_too_large(portico):
    gw = portico(config=CORS_CONFIG + "limits: {max_message_size: 1KiB}\n")
    with gw.connect() as conn:
        ans = call_with_origin(gw, APP, conn=conn, request=EchoRequest(payload=b"z" * 2048))
        assert_gateway_error(ans, APP, RESOURCE_EXHAUSTED)
        if "connection" not in ans.headers:
            assert_serves_cors(gw, APP, conn=conn)
    assert_serves_cors(gw, APP)


def test_gateway_error_bad_base64(portico):
    gw = portico(config=CORS_CONFIG)
    good = grpcweb.encode_text(grpcweb.frame(EchoRequest(message="x" * 10)))
    with gw.connect() as conn:
        ans = exchange(gw, UNARY, good[:8] + b"!*" + good[8:], origin_headers(APP, text=True),
                       conn=conn)
        assert_gateway_error(ans, APP, INVALID_ARGUMENT, text=True)
        assert "base64" in ans.grpc_message_decoded.lower(), ans
        if "connection" not in ans.headers:
            assert_serves_cors(gw, APP, conn=conn)
    assert_serves_cors(gw, APP)


def assert_plain_answer_cors(head, origin):
    """A plain-HTTP gateway answer to an allowed origin: readable by the page."""
    assert single(head, "access-control-allow-origin") == origin, head
    assert single(head, "vary") == "Origin", head
    exposed = expose_list(head)
    assert ALWAYS_EXPOSED <= exposed, exposed
    assert not exposed & NOT_EXPOSED, exposed


def test_gateway_error_wrong_method(portico):
    gw = portico(config=CORS_CONFIG)
    with gw.connect() as conn:
        for method in ("GET", "PUT", "DELETE"):
            conn.request(method, UNARY, [("Origin", APP)])
            head, body = conn.response(TIMEOUT)
            assert head.status == 405, head
            assert single(head, "allow") == "POST, OPTIONS"
            assert method.encode() in body
            assert_plain_answer_cors(head, APP)
        assert_serves_cors(gw, APP, conn=conn)


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded",
                                   "application/grpc"])
def test_gateway_error_wrong_content_type(portico, ctype):
    gw = portico(config=CORS_CONFIG)
    with gw.connect() as conn:
        ans_headers = [("Origin", SUB), ("Content-Type", ctype)]
        conn.request("POST", UNARY, ans_headers, frames_of(EchoRequest(message="x")))
        head, body = conn.response(TIMEOUT)
        assert head.status == 415, head
        assert ctype.encode() in body
        assert_plain_answer_cors(head, SUB)
        if (head.get("connection") or "").lower() != "close":
            assert_serves_cors(gw, SUB, conn=conn)
    assert_serves_cors(gw, SUB)


def test_health_answer_carries_cors(portico):
    gw = portico(config=CORS_CONFIG)
    with gw.connect() as conn:
        conn.request("GET", "/healthz", [("Origin", APP)])
        head, body = conn.response(TIMEOUT)
        assert head.status == 200 and body == b"ok\n"
        assert_plain_answer_cors(head, APP)
        assert_serves_cors(gw, APP, conn=conn)


def test_expose_list_has_no_duplicates(portico):
    """Repeated response fields (x-echoed-foo twice) and a configured extra that the upstream also
    sends (X-Echo-Initial) are listed once."""
    gw = portico(config=CORS_CONFIG)
    ans = call_with_origin(gw, APP, extra=[("X-Echo-Foo", "one"), ("X-Echo-Foo", "two")])
    assert_well_formed(ans, text=False)
    assert ans.grpc_status == OK, ans
    assert len(ans.head.get_all("x-echoed-foo")) == 2 or ans.headers["x-echoed-foo"] == "one,two"
    exposed = assert_allowed_answer(ans.head, APP, extras=("x-extra-exposed", "x-echo-initial"))
    assert "x-echoed-foo" in exposed


def test_decision_is_per_request_on_keep_alive(portico, echo_server):
    """One connection, alternating origins: no decision leaks into the next exchange."""
    gw = portico(config=CORS_CONFIG)
    with gw.connect() as conn:
        assert_serves_cors(gw, APP, conn=conn)
        head, body = preflight(gw, UNARY, "https://evil.com", conn=conn)
        assert_preflight_refused(gw, head, body, "https://evil.com")
        ans = rpc(gw, UNARY, EchoRequest(message="no origin"), conn=conn)
        assert ans.grpc_status == OK, ans
        assert cors_fields(ans.head) == [] and single(ans.head, "vary") == "Origin", ans.head
        call_id = f"cors-keepalive-{uuid.uuid4()}"
        head, body = post(gw, UNARY, origin_headers("https://evil.com"), EchoRequest(id=call_id),
                          conn=conn)
        assert_refused(head, body)
        head, body = preflight(gw, UNARY, LOCAL, conn=conn)
        assert_preflight_ok(head, body, LOCAL, max_age=120,
                            allowed_headers=REQUESTED_SET | ESSENTIAL_REQUEST_HEADERS)
        assert_serves_cors(gw, SUB, conn=conn)
        conn.request("OPTIONS", UNARY, [], content_length=False)
        head, body = conn.response(TIMEOUT)
        assert head.status == 204 and cors_fields(head) == [], head
        assert_serves_cors(gw, LOCAL, conn=conn)
    assert not echo_server.cancel_status(call_id).seen


# --------------------------------------------------------------------------- 5. disallowed origin

@pytest.mark.parametrize("origin", ["https://evil.com", "https://evil-example.com", "null",
                                    "http://app.example.com"])
def test_actual_request_disallowed_origin(portico, echo_server, origin):
    gw = portico(config=CORS_CONFIG)
    call_id = f"cors-denied-{uuid.uuid4()}"
    with gw.connect() as conn:
        head, body = post(gw, UNARY, origin_headers(origin, extra=[("X-Echo-Foo", "bar")]),
                          EchoRequest(id=call_id, message="must not arrive"), conn=conn)
        assert_refused(head, body)
        assert gw.wait_log(r"origin '" + re.escape(origin) + r"' is not allowed")
        # the connection keeps working, for an allowed origin and without Origin
        assert_serves_cors(gw, APP, conn=conn)
        assert_serves(gw, conn)
    info = echo_server.cancel_status(call_id)
    assert not info.seen, f"request from disallowed origin {origin!r} reached the upstream"


def test_no_policy_same_origin_style_call_works(portico):
    """No cors section and no --allow-origin: a call without Origin (curl, a server) works and gets
    no CORS fields at all (not even Vary: there is no policy to vary on)."""
    gw = portico()
    ans = rpc(gw, UNARY, EchoRequest(message="curl"))
    assert_well_formed(ans, text=False)
    assert ans.grpc_status == OK
    assert cors_fields(ans.head) == [] and "vary" not in ans.headers, ans.head
    assert_serves(gw)


def test_actual_request_without_any_policy(portico, echo_server):
    """No policy at all: "without this section no cross-origin request is allowed"
    (src/config/config.c), the same as `cors: {}`: a request carrying an Origin is refused with
    403 and not forwarded (otherwise any site could make the upstream act through a CORS simple
    request, e.g. the $httpHeaders form, even though it cannot read the answer)."""
    gw = portico()
    call_id = f"cors-nopolicy-{uuid.uuid4()}"
    head, body = post(gw, UNARY, origin_headers(APP), EchoRequest(id=call_id))
    assert_refused(head, body)
    assert not echo_server.cancel_status(call_id).seen
    assert_serves(gw)


def test_empty_policy_refuses_every_origin(portico, echo_server):
    """`cors: {}` enables a policy that allows no origin: preflights and actual requests get 403;
    calls without Origin still work, with Vary: Origin."""
    gw = portico(config=BASE + "cors: {}\n")
    head, body = preflight(gw, UNARY, APP)
    assert_preflight_refused(gw, head, body, APP)
    call_id = f"cors-empty-{uuid.uuid4()}"
    head, body = post(gw, UNARY, origin_headers(APP), EchoRequest(id=call_id))
    assert_refused(head, body)
    assert not echo_server.cancel_status(call_id).seen
    ans = rpc(gw, UNARY, EchoRequest(message="curl"))
    assert_well_formed(ans, text=False)
    assert ans.grpc_status == OK and single(ans.head, "vary") == "Origin", ans
    assert cors_fields(ans.head) == [], ans.head


# --------------------------------------------------------------------------- 6. no Origin

def test_no_origin_with_policy(portico):
    gw = portico(config=CORS_CONFIG)
    with gw.connect() as conn:
        ans = rpc(gw, UNARY, EchoRequest(message="curl"), conn=conn)
        assert_well_formed(ans, text=False)
        assert ans.grpc_status == OK, ans
        assert [m.message for m in ans.messages] == ["curl"]
        assert single(ans.head, "vary") == "Origin"
        assert cors_fields(ans.head) == [], ans.head
        # gateway-made error without Origin: Vary too, no CORS fields
        ans = rpc(gw, "/other.Service/Method", EchoRequest(), conn=conn)
        assert ans.grpc_status == UNIMPLEMENTED, ans
        assert single(ans.head, "vary") == "Origin"
        assert cors_fields(ans.head) == [], ans.head
        assert_serves_cors(gw, APP, conn=conn)


# --------------------------------------------------------------------------- 7. per-route policy

def test_route_policy_overrides_global(portico, echo_server):
    gw = portico(config=ROUTE_CONFIG)
    with gw.connect() as conn:
        # global origin on route A: refused, preflight and actual, and not forwarded
        head, body = preflight(gw, UNARY, APP, conn=conn)
        assert_preflight_refused(gw, head, body, APP)
        call_id = f"cors-route-{uuid.uuid4()}"
        head, body = post(gw, UNARY, origin_headers(APP), EchoRequest(id=call_id), conn=conn)
        assert_refused(head, body)
        assert not echo_server.cancel_status(call_id).seen
        # route A's own origin: allowed, with route A's max_age
        head, body = preflight(gw, UNARY, OTHER, conn=conn)
        assert_preflight_ok(head, body, OTHER, max_age=30,
                            allowed_headers=REQUESTED_SET | ESSENTIAL_REQUEST_HEADERS)
        ans = call_with_origin(gw, OTHER, conn=conn)
        assert_well_formed(ans, text=False)
        assert ans.grpc_status == OK, ans
        assert_allowed_answer(ans.head, OTHER)
        # other routes follow the global policy: APP yes, OTHER no
        head, body = preflight(gw, SERVER_STREAM, APP, conn=conn)
        assert_preflight_ok(head, body, APP, max_age=600,
                            allowed_headers=REQUESTED_SET | ESSENTIAL_REQUEST_HEADERS)
        ans = call_with_origin(gw, APP, path=SERVER_STREAM, conn=conn,
                               request=EchoRequest(message="s", count=1))
        assert_well_formed(ans, text=False)
        assert ans.grpc_status == OK, ans
        assert_allowed_answer(ans.head, APP)
        head, body = preflight(gw, SERVER_STREAM, OTHER, conn=conn)
        assert_preflight_refused(gw, head, body, OTHER)
        head, body = post(gw, SERVER_STREAM, origin_headers(OTHER), EchoRequest(), conn=conn)
        assert_refused(head, body)
        # unknown routes follow the global policy as well
        head, body = preflight(gw, "/other.Service/Method", APP, conn=conn)
        assert head.status == 204, head
        ans = call_with_origin(gw, APP, path="/other.Service/Method", conn=conn)
        assert ans.grpc_status == UNIMPLEMENTED, ans
        assert_allowed_answer(ans.head, APP)
        assert_serves_cors(gw, OTHER, conn=conn, extras=())


# --------------------------------------------------------------------------- 8. $httpHeaders

GOOGLE_HTTP_HEADERS = ("Content-Type:application/grpc-web-text\r\n"
                       "Accept:application/grpc-web-text\r\n"
                       "X-Grpc-Web:1\r\nx-echo-foo:bar\r\ngrpc-timeout:5S\r\n")
FORM_CTYPE = "application/x-www-form-urlencoded;charset=utf-8"


def http_headers_url(raw, param="%24httpHeaders", prefix="", encoded=None):
    value = encoded if encoded is not None else urllib.parse.quote(raw, safe="")
    return f"{UNARY}?{prefix}{param}={value}"


def simple_request(gw, url, request, origin=APP, conn=None):
    """A CORS simple request as the Google client sends it with suppressCorsPreflight: the real
    headers are in the URL, the request's own Content-Type is a form type, the body is base64."""
    body = grpcweb.encode_text(frames_of(request))
    return exchange(gw, url, body, [("Origin", origin), ("Content-Type", FORM_CTYPE)], conn=conn)


@pytest.mark.parametrize("param,prefix", [("%24httpHeaders", ""), ("$httpHeaders", ""),
                                          ("%24httpHeaders", "other=1&")],
                         ids=["percent-encoded", "literal-dollar", "second-parameter"])
def test_http_headers_param(portico, param, prefix):
    gw = portico(config=CORS_CONFIG)
    with gw.connect() as conn:
        url = http_headers_url(GOOGLE_HTTP_HEADERS, param=param, prefix=prefix)
        ans = simple_request(gw, url, EchoRequest(message="no preflight"), conn=conn)
        assert_well_formed(ans, text=True)                     # text answer, as Accept asked
        assert ans.grpc_status == OK, ans
        (msg,) = ans.messages
        assert msg.message == "no preflight"       # the echo server matched :path: query stripped
        assert ans.headers["x-echoed-foo"] == "bar"
        seen = dict(msg.headers)
        assert seen.get("x-echo-foo") == "bar", seen
        assert seen.get("x-grpc-web") == "1", seen
        assert not any("httpheaders" in k or "httpheaders" in v.lower() for k, v in seen.items())
        exposed = assert_allowed_answer(ans.head, APP, extras=("x-extra-exposed", "x-echo-initial"))
        assert "x-echoed-foo" in exposed
        assert_serves_cors(gw, APP, conn=conn)


def test_http_headers_param_overrides_request_headers(portico):
    """$httpHeaders fields replace same-named request headers (case-insensitively)."""
    gw = portico(config=CORS_CONFIG)
    url = http_headers_url(GOOGLE_HTTP_HEADERS)
    body = grpcweb.encode_text(frames_of(EchoRequest(message="override")))
    ans = exchange(gw, url, body, [("Origin", APP), ("Content-Type", FORM_CTYPE),
                                   ("X-ECHO-FOO", "from-the-header"), ("X-Kept", "yes")])
    assert_well_formed(ans, text=True)
    assert ans.grpc_status == OK, ans
    seen = dict(ans.messages[0].headers)
    assert seen.get("x-echo-foo") == "bar", seen
    assert seen.get("x-kept") == "yes", seen
    assert ans.headers["x-echoed-foo"] == "bar"
    assert_serves_cors(gw, APP)


def test_http_headers_param_timeout_applies(portico):
    """grpc-timeout given only in $httpHeaders is the call's deadline."""
    gw = portico(config=CORS_CONFIG)
    url = http_headers_url("Content-Type:application/grpc-web-text\r\nX-Grpc-Web:1\r\n"
                           "grpc-timeout:200m\r\n")
    ans = simple_request(gw, url, EchoRequest(status_code=5, delay_ms=5000))
    assert_well_formed(ans, text=True)
    assert ans.grpc_status == DEADLINE_EXCEEDED, ans
    assert_allowed_answer(ans.head, APP, extras=("x-extra-exposed", "x-echo-initial"))
    assert_serves_cors(gw, APP)


HOSTILE = {
    "host": ("host:evil\r\n", None, "host"),
    "pseudo-path": (":path:/x\r\n", None, "pseudo"),
    "origin": ("origin:x\r\n", None, "origin"),
    "cookie": ("cookie:a=b\r\n", None, "cookie"),
    "x-forwarded-for": ("x-forwarded-for:1.2.3.4\r\n", None, "forwarding"),
    "access-control": ("access-control-allow-origin:*\r\n", None, "CORS"),
    "transfer-encoding": ("transfer-encoding:chunked\r\n", None, "hop-by-hop"),
    "lone-lf": ("x-a:b\nx-c:d\r\n", None, "LF"),
    "lone-cr": ("x-a:b\rx-c:d\r\n", None, "CR"),
    "nul": ("x-a:b\0c\r\n", None, "NUL"),
    "bad-percent": (None, "x-a%3Ab%zz", "percent-encoding"),
    "truncated-percent": (None, "x-a%3Ab%4", "percent-encoding"),
    "bad-name": ("x a:b\r\n", None, "header name"),
    "no-colon": ("novalue\r\n", None, "name:"),
    "too-large": ("x-big:" + "a" * 8200 + "\r\n", None, "8192"),
    "too-many": ("".join(f"x-f{i}:v\r\n" for i in range(65)), None, "64"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_http_headers_param_hostile(portico, echo_server, case):
    raw, encoded, keyword = HOSTILE[case]
    gw = portico(config=CORS_CONFIG)
    call_id = f"cors-hparam-{case}-{uuid.uuid4()}"
    with gw.connect() as conn:
        prefix = "Content-Type:application/grpc-web-text\r\nX-Grpc-Web:1\r\n"
        url = http_headers_url(prefix + raw if raw is not None else None,
                               encoded=(urllib.parse.quote(prefix, safe="") + encoded
                                        if encoded is not None else None))
        ans = simple_request(gw, url, EchoRequest(id=call_id), conn=conn)
        assert ans.status == 200, ans
        assert ans.content_type.startswith("application/grpc-web"), ans
        assert_well_formed(ans)
        assert ans.trailers is None
        assert ans.grpc_status == INVALID_ARGUMENT, ans
        msg = ans.grpc_message_decoded
        assert "$httpHeaders" in msg and keyword.lower() in msg.lower(), msg
        # a gateway-made error like any other: readable by the page
        assert_allowed_answer(ans.head, APP, extras=("x-extra-exposed", "x-echo-initial"))
        assert_serves_cors(gw, APP, conn=conn)
    assert not echo_server.cancel_status(call_id).seen, "refused request reached the upstream"
    assert_serves_cors(gw, APP)


def test_http_headers_param_cannot_change_cors_decision(portico, echo_server):
    """The CORS decision is made on the request's real Origin: a disallowed origin is refused
    even with a well-formed $httpHeaders."""
    gw = portico(config=CORS_CONFIG)
    call_id = f"cors-hparam-denied-{uuid.uuid4()}"
    url = http_headers_url(GOOGLE_HTTP_HEADERS)
    head, body = post(gw, url, [("Origin", "https://evil.com"), ("Content-Type", FORM_CTYPE)],
                      EchoRequest(id=call_id), text=True)
    assert_refused(head, body)
    assert not echo_server.cancel_status(call_id).seen
    assert_serves_cors(gw, APP)
