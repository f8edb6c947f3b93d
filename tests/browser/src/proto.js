// Message and service definitions of portico.test.Echo for the page bundle.
//
// Two independent encoders, on purpose:
//  * @bufbuild/protobuf v2, from the FileDescriptorSet that tests/upstream/echo_pb.py prints
//    (echo-schema.js, shared with the demo page; the runner injects the set base64-encoded as
//    __ECHO_FDS_B64__ at bundle time). Used by grpc-web, connect-web, improbable and
//    nice-grpc-web.
//  * @protobuf-ts/runtime MessageType with hand-written field info. Used by protobuf-ts.
export {
  EchoRequestSchema, EchoResponseSchema, EchoService, EchoJsonService, SERVICE_NAME, encodeRequest, decodeRequest, decodeResponse,
  encodeCancelQuery, decodeCancelInfo,
} from "./echo-schema.js";
import { MessageType, ScalarType } from "@protobuf-ts/runtime";
import { ServiceType } from "@protobuf-ts/runtime-rpc";

// protobuf-ts: the same two messages, described by hand.
export const PtEchoRequest = new MessageType("portico.test.EchoRequest", [
  { no: 1, name: "message", kind: "scalar", T: ScalarType.STRING },
  { no: 2, name: "count", kind: "scalar", T: ScalarType.INT32 },
  { no: 3, name: "interval_ms", kind: "scalar", T: ScalarType.INT32 },
  { no: 4, name: "size", kind: "scalar", T: ScalarType.INT32 },
  { no: 5, name: "status_code", kind: "scalar", T: ScalarType.INT32 },
  { no: 6, name: "status_message", kind: "scalar", T: ScalarType.STRING },
  { no: 7, name: "delay_ms", kind: "scalar", T: ScalarType.INT32 },
  { no: 8, name: "id", kind: "scalar", T: ScalarType.STRING },
  { no: 9, name: "payload", kind: "scalar", T: ScalarType.BYTES },
  { no: 10, name: "fail_after_messages", kind: "scalar", T: ScalarType.BOOL },
]);

export const PtEchoResponse = new MessageType("portico.test.EchoResponse", [
  { no: 1, name: "message", kind: "scalar", T: ScalarType.STRING },
  { no: 2, name: "index", kind: "scalar", T: ScalarType.INT32 },
  { no: 3, name: "payload", kind: "scalar", T: ScalarType.BYTES },
  { no: 4, name: "headers", kind: "map", K: ScalarType.STRING, V: { kind: "scalar", T: ScalarType.STRING } },
]);

export const PtEchoService = new ServiceType("portico.test.Echo", [
  { name: "Unary", options: {}, I: PtEchoRequest, O: PtEchoResponse },
  { name: "ServerStream", serverStreaming: true, options: {}, I: PtEchoRequest, O: PtEchoResponse },
]);

// A response of either library as a plain object the runner can print.
export function plainResponse(r) {
  const payload = r.payload || new Uint8Array(0);
  return {
    message: r.message,
    index: r.index,
    payloadLen: payload.length,
    headers: Object.assign({}, r.headers || {}),
  };
}
