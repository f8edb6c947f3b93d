"""The shortest end-to-end path: a gRPC-Web call through the real binary to the real upstream."""

import echo_pb
import grpcweb


def test_unary_binary_round_trip(portico):
    gw = portico()
    req = echo_pb.EchoRequest(message="hello portico").SerializeToString()
    status, headers, messages, trailers = grpcweb.call(gw.port, "/portico.test.Echo/Unary", req)
    assert status == 200
    assert headers["content-type"] == "application/grpc-web+proto"
    assert len(messages) == 1
    assert echo_pb.EchoResponse.FromString(messages[0]).message == "hello portico"
    assert trailers is not None and trailers["grpc-status"] == "0"
