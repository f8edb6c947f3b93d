#!/usr/bin/python3
"""A tiny HTTP/2 (h2c, prior knowledge) server that does NOT speak gRPC properly.

Used to check how the gateway translates non-gRPC or broken upstream answers. Prints exactly one
line `PORT <n>` to stdout once listening; logs go to stderr. SIGTERM/SIGINT stop it (exit 0).

The answer is chosen by the last segment of the request's :path (after the request body ended):

  /<anything>/<NNN>    :status NNN, content-type --content-type, body --body
                       (e.g. /plain.Test/503 -> 503 text/html "<html>Service Unavailable</html>")
  /<anything>/reset    a valid gRPC response head (:status 200, application/grpc), one DATA frame
                       carrying one complete gRPC message, then RST_STREAM(INTERNAL_ERROR)
  /<anything>/reset_mid
                       as `reset`, but the DATA frame carries only the first half of a gRPC
                       message before the RST_STREAM(INTERNAL_ERROR)
  /<anything>/gzip     a gRPC response with grpc-encoding: gzip: one gzip-compressed message (flag
                       0x01), one uncompressed message, then trailers grpc-status 0
  /<anything>/deflate  the same with grpc-encoding: deflate (zlib format)
  /<anything>/gzip_corrupt, /gzip_bomb, /snappy
                       a compressed frame that is not valid gzip; one that inflates to 5 MiB; one
                       with an encoding no gateway decodes
  /<anything>/bad_status, /bad_status_only
                       a gRPC response whose trailers carry grpc-status "1x" (after one message), or
                       a Trailers-Only answer with grpc-status "-1"
  anything else        --status (default 503)

The gRPC message used by the reset modes is RESET_MESSAGE (an EchoResponse, see echo_pb.py).
"""

import argparse
import logging
import os
import signal
import socket
import struct
import sys
import threading
import zlib

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import echo_pb  # noqa: E402

log = logging.getLogger("plain_h2_server")

RESET_MESSAGE = echo_pb.EchoResponse(message="partial", index=7)


def grpc_frame(msg):
    payload = msg.SerializeToString()
    return struct.pack(">BI", 0, len(payload)) + payload


def compressed_frame(payload, wbits):
    z = zlib.compressobj(wbits=wbits)
    data = z.compress(payload) + z.flush()
    return struct.pack(">BI", 1, len(data)) + data


COMPRESSED_MESSAGES = [echo_pb.EchoResponse(message="compressed " + "z" * 200, index=0),
                       echo_pb.EchoResponse(message="plain", index=1)]


class Handler:
    def __init__(self, sock, args):
        self.sock = sock
        self.args = args
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=False, header_encoding="utf-8"))
        self.paths = {}

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def respond(self, sid):
        path = self.paths.pop(sid, "/")
        last = path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        log.info("stream %d: %s", sid, path)
        if last in ("reset", "reset_mid"):
            frame = grpc_frame(RESET_MESSAGE)
            if last == "reset_mid":
                frame = frame[:len(frame) // 2]
            self.conn.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc")])
            self.conn.send_data(sid, frame)
            self.flush()
            self.conn.reset_stream(sid, h2.errors.ErrorCodes.INTERNAL_ERROR)
            self.flush()
            return
        if last == "bad_status":
            self.conn.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc")])
            self.conn.send_data(sid, grpc_frame(RESET_MESSAGE))
            self.conn.send_headers(sid, [("grpc-status", "1x"), ("grpc-message", "odd")], end_stream=True)
            self.flush()
            return
        if last == "bad_status_only":
            self.conn.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc"), ("grpc-status", "-1")],
                                   end_stream=True)
            self.flush()
            return
        if last in ("gzip", "deflate", "gzip_corrupt", "gzip_bomb", "snappy"):
            encoding = {"deflate": "deflate", "snappy": "snappy"}.get(last, "gzip")
            wbits = 15 if last == "deflate" else 31
            first = COMPRESSED_MESSAGES[0].SerializeToString()
            if last == "gzip_corrupt":
                frame = struct.pack(">BI", 1, 12) + b"not gzip at!"
            elif last == "gzip_bomb":
                frame = compressed_frame(b"\0" * (5 * 1024 * 1024), wbits)
            else:
                frame = compressed_frame(first, wbits)
            self.conn.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc"),
                                         ("grpc-encoding", encoding)])
            self.conn.send_data(sid, frame + grpc_frame(COMPRESSED_MESSAGES[1]))
            self.conn.send_headers(sid, [("grpc-status", "0")], end_stream=True)
            self.flush()
            return
        status = int(last) if last.isdigit() and len(last) == 3 else self.args.status
        body = self.args.body.encode()
        self.conn.send_headers(sid, [(":status", str(status)),
                                     ("content-type", self.args.content_type),
                                     ("content-length", str(len(body)))],
                               end_stream=not body)
        if body:
            self.conn.send_data(sid, body, end_stream=True)
        self.flush()

    def run(self):
        try:
            self.conn.initiate_connection()
            self.flush()
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return
                for ev in self.conn.receive_data(data):
                    if isinstance(ev, h2.events.RequestReceived):
                        self.paths[ev.stream_id] = dict(ev.headers).get(":path", "/")
                        if ev.stream_ended:
                            self.respond(ev.stream_id)
                    elif isinstance(ev, h2.events.DataReceived):
                        self.conn.acknowledge_received_data(ev.flow_controlled_length,
                                                            ev.stream_id)
                        if ev.stream_ended:
                            self.respond(ev.stream_id)
                    elif isinstance(ev, h2.events.StreamEnded):
                        if ev.stream_id in self.paths:
                            self.respond(ev.stream_id)
                    elif isinstance(ev, h2.events.StreamReset):
                        self.paths.pop(ev.stream_id, None)
                    elif isinstance(ev, h2.events.ConnectionTerminated):
                        self.flush()
                        return
                self.flush()
        except (OSError, h2.exceptions.ProtocolError) as exc:
            log.info("connection ended: %s", exc)
        finally:
            self.sock.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = ephemeral")
    parser.add_argument("--status", type=int, default=503)
    parser.add_argument("--content-type", default="text/html")
    parser.add_argument("--body", default="<html>Service Unavailable</html>")
    args = parser.parse_args()

    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s plain_h2_server[%(process)d] %(message)s")
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((args.host, args.port))
    lsock.listen(64)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    signal.signal(signal.SIGINT, lambda *_: os._exit(0))
    print(f"PORT {lsock.getsockname()[1]}", flush=True)
    while True:
        sock, peer = lsock.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        log.info("connection from %s:%d", *peer)
        threading.Thread(target=Handler(sock, args).run, daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
