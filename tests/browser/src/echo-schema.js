// portico.test.Echo for page bundles, as @bufbuild/protobuf v2 descriptors: a registry built from the
// FileDescriptorSet that tests/upstream/echo_pb.py prints, so the page and the Python server share one
// schema. The bundler injects that set base64-encoded as __ECHO_FDS_B64__ (esbuild `define`; see
// tests/browser/run.mjs and demo/build.mjs). Shared by the browser tests (through proto.js) and the
// demo page (demo/app.js).
import { create, createFileRegistry, fromBinary, toBinary } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { base64Decode } from "@bufbuild/protobuf/wire";

/* global __ECHO_FDS_B64__ */
const registry = createFileRegistry(fromBinary(FileDescriptorSetSchema, base64Decode(__ECHO_FDS_B64__)));

function need(kind, value, name) {
  if (!value) throw new Error(`descriptor set has no ${kind} ${name}`);
  return value;
}

export const EchoRequestSchema = need("message", registry.getMessage("portico.test.EchoRequest"), "EchoRequest");
export const EchoResponseSchema = need("message", registry.getMessage("portico.test.EchoResponse"), "EchoResponse");
const CancelQuerySchema = need("message", registry.getMessage("portico.test.CancelQuery"), "CancelQuery");
const CancelInfoSchema = need("message", registry.getMessage("portico.test.CancelInfo"), "CancelInfo");
export const EchoService = need("service", registry.getService("portico.test.Echo"), "portico.test.Echo");
export const SERVICE_NAME = EchoService.typeName;
// The same methods served with the JSON codec (application/grpc+json upstream): what a Connect client in
// its default JSON format calls.
export const EchoJsonService = need("service", registry.getService("portico.test.EchoJson"), "portico.test.EchoJson");

// init: a plain object in camelCase ({message, count, intervalMs, statusCode, ...}).
export function encodeRequest(init) {
  return toBinary(EchoRequestSchema, create(EchoRequestSchema, init));
}

export function decodeResponse(bytes) {
  return fromBinary(EchoResponseSchema, bytes);
}

export function decodeRequest(bytes) {
  return fromBinary(EchoRequestSchema, bytes);
}

// CancelStatus (the echo server's record of calls that carried an `id`): {id} → bytes, bytes →
// {cancelled, finished, seen}.
export function encodeCancelQuery(init) {
  return toBinary(CancelQuerySchema, create(CancelQuerySchema, init));
}

export function decodeCancelInfo(bytes) {
  return fromBinary(CancelInfoSchema, bytes);
}
