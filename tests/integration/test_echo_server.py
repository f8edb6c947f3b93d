"""The echo upstream itself, exercised with grpcio and raw h2c (no gateway involved)."""

import socket
import threading
import time

import grpc
import h2.config
import h2.connection
import h2.errors
import pytest

import echo_pb
import grpcweb
from echo_pb import EchoRequest

ERROR_TRAILERS = [("x-trailer-custom", "custom-value"), ("x-trailer-bin", b"\x00\x01\xfe\xff")]


def md(metadata):
    return [(m.key, m.value) for m in metadata or ()]


def test_unary_echo(echo_server):
    resp, call = echo_server.method("Unary").with_call(EchoRequest(message="hello", size=5))
    assert resp.message == "hello"
    assert resp.payload == b"xxxxx"
    assert call.code() == grpc.StatusCode.OK
    assert md(call.trailing_metadata()) == [("x-trailer-ok", "done")]

    resp = echo_server.method("Unary")(EchoRequest(payload=b"\x00\xffraw", size=100))
    assert resp.payload == b"\x00\xffraw"


def test_unary_headers_echo(echo_server):
    resp, call = echo_server.method("Unary").with_call(
        EchoRequest(message="m"),
        metadata=[("x-echo-foo", "bar"), ("x-plain", "1"), ("x-plain", "2"),
                  ("x-data-bin", b"\x00\x01")])
    assert resp.headers["x-echo-foo"] == "bar"
    assert resp.headers["x-plain"] == "1,2"
    assert "x-data-bin" not in resp.headers
    assert "user-agent" in resp.headers
    assert md(call.initial_metadata()) == [("x-echo-initial", "yes"), ("x-echoed-foo", "bar")]


def test_server_stream(echo_server):
    t0 = time.monotonic()
    call = echo_server.method("ServerStream")(
        EchoRequest(message="s", count=5, size=1000, interval_ms=20))
    msgs = list(call)
    assert time.monotonic() - t0 >= 0.08
    assert [m.index for m in msgs] == [0, 1, 2, 3, 4]
    assert all(m.message == "s" and m.payload == b"x" * 1000 for m in msgs)
    assert call.code() == grpc.StatusCode.OK
    assert md(call.initial_metadata()) == [("x-echo-initial", "yes")]
    assert md(call.trailing_metadata()) == [("x-trailer-ok", "done")]


def test_unary_error_custom_trailers(echo_server):
    with pytest.raises(grpc.RpcError) as exc:
        echo_server.method("Unary")(EchoRequest(status_code=5, status_message="not here: 100% é"))
    err = exc.value
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert err.details() == "not here: 100% é"
    assert md(err.trailing_metadata()) == ERROR_TRAILERS
    # Trailers-Only: no initial metadata was sent.
    assert md(err.initial_metadata()) == []


def test_unary_error_after_headers(echo_server):
    with pytest.raises(grpc.RpcError) as exc:
        echo_server.method("Unary")(
            EchoRequest(status_code=9, status_message="late", fail_after_messages=True))
    err = exc.value
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert md(err.initial_metadata()) == [("x-echo-initial", "yes")]
    assert md(err.trailing_metadata()) == ERROR_TRAILERS


def test_server_stream_error_after_messages(echo_server):
    call = echo_server.method("ServerStream")(
        EchoRequest(count=3, status_code=8, status_message="quota", fail_after_messages=True))
    got = []
    with pytest.raises(grpc.RpcError):
        for m in call:
            got.append(m.index)
    assert got == [0, 1, 2]
    assert call.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert call.details() == "quota"
    assert md(call.trailing_metadata()) == ERROR_TRAILERS


def test_server_stream_trailers_only(echo_server):
    call = echo_server.method("ServerStream")(
        EchoRequest(count=0, status_code=7, status_message="denied"))
    with pytest.raises(grpc.RpcError):
        list(call)
    assert call.code() == grpc.StatusCode.PERMISSION_DENIED
    assert call.details() == "denied"
    assert md(call.initial_metadata()) == []
    assert md(call.trailing_metadata()) == ERROR_TRAILERS


def grpc_h2_headers(port, method):
    return [(":method", "POST"), (":scheme", "http"), (":path", echo_pb.method_path(method)),
            (":authority", f"127.0.0.1:{port}"), ("content-type", "application/grpc"),
            ("te", "trailers")]


@pytest.mark.parametrize("method", ["Unary", "ServerStream"])
def test_trailers_only_on_the_wire(echo_server, method):
    """Errors without messages arrive as one HEADERS frame with END_STREAM."""
    req = grpcweb.frame(EchoRequest(count=0, status_code=7, status_message="denied"))
    resp = grpcweb.h2_request(echo_server.port, grpc_h2_headers(echo_server.port, method), req)
    assert resp.ended and resp.reset_code is None
    assert resp.trailers is None and resp.data == b""
    headers = dict(resp.headers)
    assert headers[":status"] == "200"
    assert headers["content-type"] == "application/grpc"
    assert headers["grpc-status"] == "7"
    assert headers["grpc-message"] == "denied"
    assert headers["x-trailer-custom"] == "custom-value"
    assert headers["x-trailer-bin"] == "AAH+/w"      # unpadded base64
    assert "x-echo-initial" not in headers


def test_headers_then_trailers_on_the_wire(echo_server):
    req = grpcweb.frame(EchoRequest(count=2, size=3, status_code=13, status_message="boom 50%",
                                    fail_after_messages=True))
    port = echo_server.port
    resp = grpcweb.h2_request(port, grpc_h2_headers(port, "ServerStream"), req)
    headers, trailers = dict(resp.headers), dict(resp.trailers)
    assert headers[":status"] == "200" and headers["x-echo-initial"] == "yes"
    assert "grpc-status" not in headers
    frames, rest = grpcweb.split_frames(resp.data)
    assert rest == b"" and len(frames) == 2
    assert echo_pb.EchoResponse.FromString(frames[1][1]).index == 1
    assert trailers["grpc-status"] == "13"
    assert trailers["grpc-message"] == "boom 50%25"   # percent-encoded on the wire
    assert trailers["x-trailer-bin"] == "AAH+/w"


def test_client_stream(echo_server):
    reqs = [EchoRequest(message=m, payload=p) for m, p in [("a", b"1"), ("b", b""), ("c", b"23")]]
    resp, call = echo_server.method("ClientStream").with_call(iter(reqs))
    assert resp.message == "a|b|c"
    assert resp.index == 3
    assert resp.payload == b"123"
    assert md(call.trailing_metadata()) == [("x-trailer-ok", "done")]


def test_client_stream_empty(echo_server):
    resp = echo_server.method("ClientStream")(iter([]))
    assert resp.message == "" and resp.index == 0


def test_bidi(echo_server):
    reqs = [EchoRequest(message=str(i), payload=b"p%d" % i) for i in range(4)]
    call = echo_server.method("Bidi")(iter(reqs))
    resps = list(call)
    assert [(r.message, r.index, r.payload) for r in resps] == [
        (str(i), i, b"p%d" % i) for i in range(4)]
    assert call.code() == grpc.StatusCode.OK


def test_bidi_interleaved_and_error(echo_server):
    """Each request is answered before the next is sent; a status_code ends the call."""
    gate = threading.Semaphore(0)

    def requests():
        for i in range(3):
            yield EchoRequest(message=f"m{i}")
            assert gate.acquire(timeout=5)
        yield EchoRequest(status_code=10, status_message="stop")

    call = echo_server.method("Bidi")(requests())
    got = []
    with pytest.raises(grpc.RpcError):
        for r in call:
            got.append(r.message)
            gate.release()
    assert got == ["m0", "m1", "m2"]
    assert call.code() == grpc.StatusCode.ABORTED


def test_large_message(echo_server):
    size = 20 * 1024 * 1024
    resp = echo_server.method("Unary")(EchoRequest(size=size), timeout=30)
    assert len(resp.payload) == size
    resp = echo_server.method("Unary")(EchoRequest(payload=b"\x01" * size), timeout=30)
    assert resp.payload == b"\x01" * size


def test_cancel_status_unknown(echo_server):
    info = echo_server.cancel_status("never-used")
    assert (info.seen, info.finished, info.cancelled) == (False, False, False)


def test_finished_recorded(echo_server):
    echo_server.method("Unary")(EchoRequest(id="fin-unary"))
    list(echo_server.method("ServerStream")(EchoRequest(id="fin-stream", count=2)))
    with pytest.raises(grpc.RpcError):
        echo_server.method("Unary")(EchoRequest(id="fin-error", status_code=2))
    for call_id in ("fin-unary", "fin-stream", "fin-error"):
        info = echo_server.wait_cancel_status(call_id, "finished")
        assert (info.seen, info.finished, info.cancelled) == (True, True, False), call_id


def test_server_stream_cancellation_recorded(echo_server):
    call = echo_server.method("ServerStream")(
        EchoRequest(id="cancel-stream", count=100, interval_ms=200))
    assert next(call).index == 0
    assert echo_server.cancel_status("cancel-stream").seen
    call.cancel()
    info = echo_server.wait_cancel_status("cancel-stream")
    assert info.cancelled and not info.finished


def test_unary_deadline_recorded_as_cancelled(echo_server):
    with pytest.raises(grpc.RpcError) as exc:
        echo_server.method("Unary")(EchoRequest(id="cancel-unary", delay_ms=5000), timeout=0.3)
    assert exc.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    info = echo_server.wait_cancel_status("cancel-unary")
    assert info.cancelled and not info.finished


def test_h2_reset_recorded_as_cancelled(echo_server):
    """A peer that resets the stream (as the gateway does) is seen as a cancellation."""
    port = echo_server.port
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    conn.send_headers(1, grpc_h2_headers(port, "ServerStream"))
    conn.send_data(1, grpcweb.frame(EchoRequest(id="cancel-rst", count=50, interval_ms=100)),
                   end_stream=True)
    sock.sendall(conn.data_to_send())
    time.sleep(0.3)
    conn.reset_stream(1, h2.errors.ErrorCodes.CANCEL)
    sock.sendall(conn.data_to_send())
    try:
        info = echo_server.wait_cancel_status("cancel-rst")
        assert info.seen and info.cancelled and not info.finished
    finally:
        sock.close()


def test_sigterm_exits_zero(fresh_echo_server):
    assert fresh_echo_server.cancel_status("x").seen is False
    assert fresh_echo_server.stop() == 0


def test_sigterm_with_active_stream(fresh_echo_server):
    call = fresh_echo_server.method("ServerStream")(EchoRequest(count=1000, interval_ms=100))
    next(call)
    t0 = time.monotonic()
    assert fresh_echo_server.stop() == 0
    assert time.monotonic() - t0 < 5
    with pytest.raises(grpc.RpcError):
        list(call)


def test_kill(fresh_echo_server):
    assert fresh_echo_server.kill() == -9
    assert not fresh_echo_server.running()


def test_health_service(named_echo, tmp_path):
    """grpc.health.v1.Health/Check, steered by --health-file (what the gateway's health checks talk to)."""
    import health_pb

    hf = tmp_path / "health"
    server = named_echo("h", ["--health-file", str(hf)])
    check = server.channel.unary_unary(health_pb.CHECK_PATH,
                                       request_serializer=health_pb.HealthCheckRequest.SerializeToString,
                                       response_deserializer=health_pb.HealthCheckResponse.FromString)

    def status(service=""):
        return health_pb.STATUS_NAMES[check(health_pb.HealthCheckRequest(service=service), timeout=5).status]

    assert status() == "SERVING" and status(echo_pb.SERVICE) == "SERVING"
    with pytest.raises(grpc.RpcError) as e:
        status("no.such.Service")
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    hf.write_text("NOT_SERVING\nservice portico.test.Echo SERVING\n")
    assert status() == "NOT_SERVING" and status(echo_pb.SERVICE) == "SERVING"
    hf.write_text("error 14\n")
    with pytest.raises(grpc.RpcError) as e:
        status()
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    hf.write_text("delay_ms 1000\n")
    with pytest.raises(grpc.RpcError) as e:
        check(health_pb.HealthCheckRequest(), timeout=0.2)
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert server.log_text().count("Check service=''") >= 3
