// One adapter per real gRPC-Web client library, all with the same small interface so that every
// case runs unchanged against every client:
//
//   makeClient(name, gatewayUrl, {withCredentials, suppressCorsPreflight}) → adapter
//   adapter.unary(req, opts)                    → Promise<Outcome>
//   adapter.serverStream(req, opts, onMessage)  → {done: Promise<Outcome>, cancel()}
//
// req is a plain init object in camelCase ({message, count, intervalMs, statusCode, ...});
// opts = {headers: {name: value}, timeoutMs}. onMessage(plainResponse, index) fires as each
// message is delivered to the page.
//
// Outcome: {code, message, headers, trailers, responses: [{t, message, index, payloadLen,
// headers}], error} with code a number (0 = OK), message the status message as the client hands
// it over, headers/trailers plain objects with lower-case names (only what the client exposes;
// for most clients, in a trailers-only error everything lands in `headers` or in the error's
// metadata), t = performance.now() at delivery.
import * as grpcWeb from "grpc-web";
import { createClient, ConnectError } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { grpc } from "@improbable-eng/grpc-web";
import { GrpcWebFetchTransport, GrpcStatusCode } from "@protobuf-ts/grpcweb-transport";
import { RpcError } from "@protobuf-ts/runtime-rpc";
import {
  EchoService, SERVICE_NAME, encodeRequest, decodeResponse, plainResponse,
  PtEchoRequest, PtEchoService,
} from "./proto.js";

export const CLIENTS = ["grpcweb-text", "grpcweb-binary", "connect-web", "improbable", "protobuf-ts"];

function newOutcome() {
  return { code: null, message: "", headers: {}, trailers: {}, responses: [], error: undefined };
}

function lowerObj(obj) {
  const out = {};
  for (const [k, v] of Object.entries(obj || {})) out[k.toLowerCase()] = Array.isArray(v) ? v.join(", ") : String(v);
  return out;
}

function headersObj(h) {
  const out = {};
  if (h) h.forEach((v, k) => { out[k.toLowerCase()] = v; });
  return out;
}

function errText(e) {
  if (e === undefined || e === null) return undefined;
  if (e instanceof Error) return `${e.name}: ${e.message}`;
  return typeof e === "string" ? e : JSON.stringify(e);
}

// grpc-message is percent-encoded on the wire; protobuf-ts hands it over raw.
function percentDecode(s) {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

function record(out, resp, onMessage) {
  const m = { t: performance.now(), ...plainResponse(resp) };
  out.responses.push(m);
  if (onMessage) onMessage(m, out.responses.length - 1);
}

// ---------------------------------------------------------------------------------------------
// grpc-web (Google): XHR via Closure XhrIo; 'text' = application/grpc-web-text (XHR responseText,
// streams incrementally), 'binary' = application/grpc-web+proto (XHR arraybuffer: the response is
// only parsed when the XHR completes). Deadline is the `deadline` metadata key (ms since epoch).
function grpcWebClient(format, base, { withCredentials = false, suppressCorsPreflight = false } = {}) {
  const client = new grpcWeb.GrpcWebClientBase({ format, withCredentials, suppressCorsPreflight });
  const descriptor = (name, type) => new grpcWeb.MethodDescriptor(
    `/${SERVICE_NAME}/${name}`, type, Object, Object,
    (req) => encodeRequest(req), (bytes) => decodeResponse(bytes));
  const unaryDesc = descriptor("Unary", grpcWeb.MethodType.UNARY);
  const streamDesc = descriptor("ServerStream", grpcWeb.MethodType.SERVER_STREAMING);

  function metadata(opts) {
    const md = { ...(opts.headers || {}) };
    if (opts.timeoutMs) md.deadline = String(Date.now() + opts.timeoutMs);
    return md;
  }

  function wire(stream, out, finish, onMessage) {
    stream.on("metadata", (md) => { out.headers = lowerObj(md); });
    stream.on("data", (resp) => record(out, resp, onMessage));
    stream.on("status", (st) => {
      out.code = st.code;
      out.message = st.details;
      out.trailers = lowerObj(st.metadata);
      if (st.code !== 0) finish();
    });
    stream.on("error", (err) => {
      out.code = err.code;
      out.message = err.message;
      out.errorMetadata = lowerObj(err.metadata);
      out.error = errText(err);
      // 'status' follows 'error' synchronously for server errors; give it a turn.
      setTimeout(finish, 0);
    });
    stream.on("end", () => finish());
  }

  return {
    unary(req, opts = {}) {
      return new Promise((resolve) => {
        const out = newOutcome();
        let done = false;
        const finish = () => { if (!done) { done = true; setTimeout(() => resolve(out), 0); } };
        const stream = client.rpcCall(base + `/${SERVICE_NAME}/Unary`, req, metadata(opts), unaryDesc,
          (err, resp) => {
            if (err) {
              out.code = err.code;
              out.message = err.message;
              out.errorMetadata = lowerObj(err.metadata);
              out.error = errText(err);
            } else if (resp) {
              record(out, resp);
              if (out.code === null) out.code = 0;
            }
            finish();
          });
        stream.on("metadata", (md) => { out.headers = lowerObj(md); });
        stream.on("status", (st) => {
          out.code = st.code;
          out.message = st.details;
          out.trailers = lowerObj(st.metadata);
        });
      });
    },
    serverStream(req, opts = {}, onMessage) {
      const out = newOutcome();
      let resolveDone;
      const done = new Promise((r) => { resolveDone = r; });
      let finished = false;
      const finish = () => { if (!finished) { finished = true; if (out.code === null) out.code = 0; resolveDone(out); } };
      const stream = client.serverStreaming(base + `/${SERVICE_NAME}/ServerStream`, req, metadata(opts), streamDesc);
      wire(stream, out, finish, onMessage);
      return {
        done,
        cancel() {
          stream.cancel();
          out.cancelledByClient = true;
          if (out.code === null) out.code = 1;
          finish();
        },
      };
    },
  };
}

// ---------------------------------------------------------------------------------------------
// connect-web (Buf): fetch + ReadableStream, binary only (application/grpc-web+proto).
// Credentials through a wrapped fetch.
function connectClient(base, { withCredentials = false } = {}) {
  const transport = createGrpcWebTransport({
    baseUrl: base,
    useBinaryFormat: true,
    fetch: withCredentials ? (input, init) => fetch(input, { ...init, credentials: "include" }) : undefined,
  });
  const client = createClient(EchoService, transport);

  // The deadline goes out as a plain grpc-timeout header rather than `timeoutMs`: timeoutMs also
  // arms a local timer that aborts the fetch at the same instant, so the DEADLINE_EXCEEDED the page
  // sees would be connect's own, not the one the gateway sends.
  function callOptions(opts, out, signal) {
    const headers = { ...(opts.headers || {}) };
    if (opts.timeoutMs) headers["grpc-timeout"] = `${opts.timeoutMs}m`;
    return {
      headers,
      signal,
      onHeader: (h) => { out.headers = headersObj(h); },
      onTrailer: (t) => { out.trailers = headersObj(t); },
    };
  }

  function fail(out, e) {
    const ce = ConnectError.from(e);
    out.code = ce.code;
    out.message = ce.rawMessage;
    out.errorMetadata = headersObj(ce.metadata);
    out.error = errText(e);
  }

  return {
    async unary(req, opts = {}) {
      const out = newOutcome();
      try {
        const resp = await client.unary(req, callOptions(opts, out));
        record(out, resp);
        out.code = 0;
      } catch (e) {
        fail(out, e);
      }
      return out;
    },
    serverStream(req, opts = {}, onMessage) {
      const out = newOutcome();
      const ac = new AbortController();
      const done = (async () => {
        try {
          for await (const resp of client.serverStream(req, callOptions(opts, out, ac.signal))) {
            record(out, resp, onMessage);
          }
          out.code = 0;
        } catch (e) {
          fail(out, e);
        }
        return out;
      })();
      return { done, cancel() { out.cancelledByClient = true; ac.abort(); } };
    },
  };
}

// ---------------------------------------------------------------------------------------------
// @improbable-eng/grpc-web: CrossBrowserHttpTransport (fetch + ReadableStream in Chromium,
// credentials 'same-origin' or 'include'), binary only. No deadline option: grpc-timeout is sent
// as plain metadata. Message classes are duck-typed (serializeBinary / deserializeBinary).
class ImpRequest {
  constructor(init) { this.init = init; }
  serializeBinary() { return encodeRequest(this.init); }
  toObject() { return this.init; }
}

class ImpResponse {
  static deserializeBinary(bytes) {
    const r = new ImpResponse();
    r.msg = decodeResponse(bytes);
    return r;
  }
  serializeBinary() { throw new Error("not needed"); }
  toObject() { return this.msg; }
}

const impService = { serviceName: SERVICE_NAME };
const impMethod = (methodName, responseStream) => ({
  methodName, service: impService, requestStream: false, responseStream,
  requestType: ImpRequest, responseType: ImpResponse,
});
const ImpUnary = impMethod("Unary", false);
const ImpServerStream = impMethod("ServerStream", true);

function impMetadataObj(md) {
  const out = {};
  if (md) md.forEach((name, values) => { out[name.toLowerCase()] = values.join(", "); });
  return out;
}

function improbableClient(base, { withCredentials = false } = {}) {
  const transport = grpc.CrossBrowserHttpTransport({ withCredentials });
  function metadata(opts) {
    const md = { ...(opts.headers || {}) };
    if (opts.timeoutMs) md["grpc-timeout"] = `${opts.timeoutMs}m`;
    return md;
  }
  return {
    unary(req, opts = {}) {
      return new Promise((resolve) => {
        grpc.unary(ImpUnary, {
          host: base,
          request: new ImpRequest(req),
          metadata: metadata(opts),
          transport,
          onEnd: (res) => {
            const out = newOutcome();
            out.code = res.status;
            out.message = res.statusMessage;
            out.headers = impMetadataObj(res.headers);
            out.trailers = impMetadataObj(res.trailers);
            if (res.message) record(out, res.message.toObject());
            resolve(out);
          },
        });
      });
    },
    serverStream(req, opts = {}, onMessage) {
      const out = newOutcome();
      let resolveDone;
      const done = new Promise((r) => { resolveDone = r; });
      const request = grpc.invoke(ImpServerStream, {
        host: base,
        request: new ImpRequest(req),
        metadata: metadata(opts),
        transport,
        onHeaders: (h) => { out.headers = impMetadataObj(h); },
        onMessage: (m) => record(out, m.toObject(), onMessage),
        onEnd: (code, message, trailers) => {
          out.code = code;
          out.message = message;
          out.trailers = impMetadataObj(trailers);
          resolveDone(out);
        },
      });
      return {
        done,
        cancel() {
          request.close();
          out.cancelledByClient = true;
          if (out.code === null) out.code = 1;
          resolveDone(out);
        },
      };
    },
  };
}

// ---------------------------------------------------------------------------------------------
// protobuf-ts GrpcWebFetchTransport: fetch + ReadableStream, format 'text' (its default; 'binary'
// also works). Errors are RpcError with a *string* code ("NOT_FOUND"); grpc-message is not
// percent-decoded by the library (decoded here). `timeout` only sets grpc-timeout (no local timer).
function ptCode(name) {
  const n = GrpcStatusCode[name];
  return typeof n === "number" ? n : 2;
}

function protobufTsClient(base, { withCredentials = false } = {}, format = "text") {
  const transport = new GrpcWebFetchTransport({
    baseUrl: base,
    format,
    fetchInit: withCredentials ? { credentials: "include" } : undefined,
  });
  const unaryMethod = PtEchoService.methods.find((m) => m.name === "Unary");
  const streamMethod = PtEchoService.methods.find((m) => m.name === "ServerStream");

  function options(opts, abort) {
    return transport.mergeOptions({ meta: opts.headers || {}, timeout: opts.timeoutMs, abort });
  }

  async function settle(call, out) {
    try {
      out.headers = lowerObj(await call.headers);
    } catch { /* reported through status below */ }
    try {
      const status = await call.status;
      out.code = ptCode(status.code);
      out.message = percentDecode(status.detail || "");
      out.trailers = lowerObj(await call.trailers);
    } catch (e) {
      if (e instanceof RpcError) {
        out.code = ptCode(e.code);
        out.rawMessage = e.message;
        out.message = percentDecode(e.message);
        out.errorMetadata = lowerObj(e.meta);
      } else {
        out.code = 2;
      }
      out.error = errText(e);
    }
    return out;
  }

  return {
    async unary(req, opts = {}) {
      const out = newOutcome();
      const call = transport.unary(unaryMethod, PtEchoRequest.create(req), options(opts));
      try {
        record(out, await call.response);
      } catch { /* settle() reports it */ }
      return settle(call, out);
    },
    serverStream(req, opts = {}, onMessage) {
      const out = newOutcome();
      const ac = new AbortController();
      const call = transport.serverStreaming(streamMethod, PtEchoRequest.create(req), options(opts, ac.signal));
      const done = (async () => {
        try {
          for await (const resp of call.responses) record(out, resp, onMessage);
        } catch { /* settle() reports it */ }
        return settle(call, out);
      })();
      return { done, cancel() { out.cancelledByClient = true; ac.abort(); } };
    },
  };
}

export function makeClient(name, base, opts = {}) {
  switch (name) {
    case "grpcweb-text": return grpcWebClient("text", base, opts);
    case "grpcweb-binary": return grpcWebClient("binary", base, opts);
    case "connect-web": return connectClient(base, opts);
    case "improbable": return improbableClient(base, opts);
    case "protobuf-ts": return protobufTsClient(base, opts);
    default: throw new Error(`unknown client ${name}`);
  }
}

// grpc-web's suppressCorsPreflight is the only client option of its kind.
export function supportsSuppressPreflight(name) {
  return name === "grpcweb-text" || name === "grpcweb-binary";
}
