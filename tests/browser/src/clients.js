// One adapter per real gRPC-Web client library, all with the same small interface so that every
// case runs unchanged against every client:
//
//   makeClient(name, gatewayUrl, {withCredentials, suppressCorsPreflight}) → adapter
//   adapter.unary(req, opts)                    → Promise<Outcome>
//   adapter.serverStream(req, opts, onMessage)  → {done: Promise<Outcome>, cancel()}
//   adapter.clientStream(reqs, opts)            → Promise<Outcome>          (WebSocket clients only)
//   adapter.bidi(opts)                          → {send(req), end(), cancel(), done, onMessage}
//                                                                           (WebSocket clients only)
//
// req is a plain init object in camelCase ({message, count, intervalMs, statusCode, ...}); reqs an
// array of them; opts = {headers: {name: value}, timeoutMs}. onMessage(plainResponse, index) fires as
// each message is delivered to the page (bidi: assign call.onMessage). The HTTP clients have no
// clientStream / bidi: a browser cannot stream a request body through them.
//
// Outcome: {code, message, headers, trailers, responses: [{t, message, index, payloadLen,
// headers}], error} with code a number (0 = OK), message the status message as the client hands
// it over, headers/trailers plain objects with lower-case names (only what the client exposes;
// for most clients, in a trailers-only error everything lands in `headers` or in the error's
// metadata), t = performance.now() at delivery.
import * as grpcWeb from "grpc-web";
import { createClient, ConnectError } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";
import { grpc } from "@improbable-eng/grpc-web";
import {
  createChannel, createClient as createNiceClient, WebsocketTransport as NiceWebsocketTransport,
  Metadata as NiceMetadata, ClientError as NiceClientError, Status as NiceStatus,
} from "nice-grpc-web";
import { GrpcWebFetchTransport, GrpcStatusCode } from "@protobuf-ts/grpcweb-transport";
import { RpcError } from "@protobuf-ts/runtime-rpc";
import {
  EchoService, EchoJsonService, SERVICE_NAME, encodeRequest, decodeRequest, decodeResponse, plainResponse,
  PtEchoRequest, PtEchoService,
} from "./proto.js";

export const CLIENTS = [
  "grpcweb-text", "grpcweb-binary", "connect-web", "improbable", "protobuf-ts", "improbable-ws", "nice-grpc-ws",
  "connect", "connect-get",
];

// The clients that speak the grpc-websockets transport (one WebSocket per call) instead of HTTP.
export function isWebSocketClient(name) {
  return name === "improbable-ws" || name === "nice-grpc-ws";
}

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
// connect-web (Buf): fetch + ReadableStream. `protocol`:
//   "grpc-web"    createGrpcWebTransport, binary only (application/grpc-web+proto)
//   "connect"     createConnectTransport in its default JSON format (application/json,
//                 application/connect+json) against portico.test.EchoJson, the JSON-codec echo service
//   "connect-get" createConnectTransport, binary, useHttpGet: Unary (marked NO_SIDE_EFFECTS) as a GET with
//                 the message in the query, streams as application/connect+proto
// Credentials through a wrapped fetch.
function connectClient(base, { withCredentials = false } = {}, protocol = "grpc-web") {
  const options = {
    baseUrl: base,
    fetch: withCredentials ? (input, init) => fetch(input, { ...init, credentials: "include" }) : undefined,
  };
  const transport = protocol === "grpc-web" ? createGrpcWebTransport({ ...options, useBinaryFormat: true })
    : createConnectTransport({ ...options, useBinaryFormat: protocol === "connect-get", useHttpGet: protocol === "connect-get" });
  const client = createClient(protocol === "connect" ? EchoJsonService : EchoService, transport);

  // The deadline goes out as a plain header (grpc-timeout, or Connect's connect-timeout-ms) rather than
  // `timeoutMs`: timeoutMs also arms a local timer that aborts the fetch at the same instant, so the
  // DEADLINE_EXCEEDED the page sees would be connect's own, not the one the gateway sends.
  function callOptions(opts, out, signal) {
    const headers = { ...(opts.headers || {}) };
    if (opts.timeoutMs && protocol === "grpc-web") headers["grpc-timeout"] = `${opts.timeoutMs}m`;
    else if (opts.timeoutMs) headers["connect-timeout-ms"] = `${opts.timeoutMs}`;
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
// credentials 'same-origin' or 'include'), binary only; or, as `improbable-ws`, its
// WebsocketTransport (grpc-websockets: the metadata goes out as the first binary message, each
// request message as 0x00 + frame, 0x01 ends the request; cancel = WebSocket close()). No deadline
// option: grpc-timeout is sent as plain metadata. Message classes are duck-typed (serializeBinary /
// deserializeBinary).
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
const impMethod = (methodName, requestStream, responseStream) => ({
  methodName, service: impService, requestStream, responseStream,
  requestType: ImpRequest, responseType: ImpResponse,
});
const ImpUnary = impMethod("Unary", false, false);
const ImpServerStream = impMethod("ServerStream", false, true);
const ImpClientStream = impMethod("ClientStream", true, false);
const ImpBidi = impMethod("Bidi", true, true);

function impMetadataObj(md) {
  const out = {};
  if (md) md.forEach((name, values) => { out[name.toLowerCase()] = values.join(", "); });
  return out;
}

function improbableClient(base, { withCredentials = false } = {}, websocket = false) {
  const transport = websocket ? grpc.WebsocketTransport() : grpc.CrossBrowserHttpTransport({ withCredentials });
  function metadata(opts) {
    const md = { ...(opts.headers || {}) };
    if (opts.timeoutMs) md["grpc-timeout"] = `${opts.timeoutMs}m`;
    return md;
  }

  // grpc.client: the general form (any method type); `send` may be called until finishSend().
  function open(method, opts, onMessage) {
    const out = newOutcome();
    let resolveDone;
    const done = new Promise((r) => { resolveDone = r; });
    const client = grpc.client(method, { host: base, transport });
    client.onHeaders((h) => { out.headers = impMetadataObj(h); });
    client.onMessage((m) => record(out, m.toObject(), onMessage));
    client.onEnd((code, message, trailers) => {
      out.code = code;
      out.message = message;
      out.trailers = impMetadataObj(trailers);
      resolveDone(out);
    });
    client.start(metadata(opts));
    return {
      out,
      done,
      send: (req) => client.send(new ImpRequest(req)),
      end: () => client.finishSend(),
      cancel() {
        client.close();
        out.cancelledByClient = true;
        if (out.code === null) out.code = 1;
        resolveDone(out);
      },
    };
  }

  const adapter = {
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
  if (!websocket) return adapter;
  adapter.clientStream = (reqs, opts = {}) => {
    const call = open(ImpClientStream, opts);
    for (const r of reqs) call.send(r);
    call.end();
    return call.done;
  };
  adapter.bidi = (opts = {}) => {
    const handle = { onMessage: null };
    const call = open(ImpBidi, opts, (m, i) => { if (handle.onMessage) handle.onMessage(m, i); });
    return Object.assign(handle, { send: call.send, end: call.end, cancel: call.cancel, done: call.done });
  };
  return adapter;
}

// ---------------------------------------------------------------------------------------------
// nice-grpc-web with its WebsocketTransport (createChannel(url, WebsocketTransport())): async
// iterables in and out, AbortSignal to cancel (the transport then closes the WebSocket). The service
// definition is written by hand in ts-proto's "generic definitions" shape ({name, fullName,
// methods: {key: {name, requestType, requestStream, responseType, responseStream, options}}}, the
// message types being {encode(m) → {finish()}, decode(bytes), fromPartial(init)}) over the
// @bufbuild/protobuf codecs. Errors are ClientError {code, details} with no metadata: the trailers
// come through onTrailer (grpc-status and grpc-message removed), the headers through onHeader. No
// deadline option in the browser package: grpc-timeout goes out as plain metadata.
const niceType = (encode, decode) => ({
  fromPartial: (init) => init,
  encode: (init) => ({ finish: () => encode(init) }),
  decode,
});
const NiceEchoRequest = niceType(encodeRequest, decodeRequest);
const NiceEchoResponse = niceType(() => { throw new Error("server side only"); }, decodeResponse);
const niceMethod = (name, requestStream, responseStream) => ({
  name, requestType: NiceEchoRequest, requestStream, responseType: NiceEchoResponse, responseStream, options: {},
});
export const NiceEchoDefinition = {
  name: "Echo",
  fullName: SERVICE_NAME,
  methods: {
    unary: niceMethod("Unary", false, false),
    serverStream: niceMethod("ServerStream", false, true),
    clientStream: niceMethod("ClientStream", true, false),
    bidi: niceMethod("Bidi", true, true),
  },
};

function niceMetadataObj(md) {
  const out = {};
  if (md) {
    for (const [k, values] of md) {
      out[k.toLowerCase()] = values.map((v) => (typeof v === "string" ? v : `<${v.length} bytes>`)).join(", ");
    }
  }
  return out;
}

// An async iterable the page pushes into (a bidi request stream).
function pushable() {
  const items = [];
  const waiting = [];
  let ended = false;
  return {
    push(v) {
      if (ended) throw new Error("request stream already ended");
      if (waiting.length) waiting.shift()({ value: v, done: false });
      else items.push(v);
    },
    end() {
      ended = true;
      while (waiting.length) waiting.shift()({ value: undefined, done: true });
    },
    [Symbol.asyncIterator]() {
      return {
        next: () => {
          if (items.length) return Promise.resolve({ value: items.shift(), done: false });
          if (ended) return Promise.resolve({ value: undefined, done: true });
          return new Promise((resolve) => waiting.push(resolve));
        },
        return: () => { ended = true; return Promise.resolve({ value: undefined, done: true }); },
      };
    },
  };
}

function niceGrpcClient(base) {
  const client = createNiceClient(NiceEchoDefinition, createChannel(base, NiceWebsocketTransport()));

  function callOptions(opts, out, signal) {
    const md = { ...(opts.headers || {}) };
    if (opts.timeoutMs) md["grpc-timeout"] = `${opts.timeoutMs}m`;
    return {
      metadata: NiceMetadata(md),
      signal,
      onHeader: (h) => { out.headers = niceMetadataObj(h); },
      onTrailer: (t) => { out.trailers = niceMetadataObj(t); },
    };
  }

  function fail(out, e) {
    if (e instanceof NiceClientError) {
      out.code = e.code;
      out.message = e.details;
    } else if (e && e.name === "AbortError") {
      out.code = NiceStatus.CANCELLED;
      out.message = e.message;
    } else {
      out.code = NiceStatus.UNKNOWN;
      out.message = String(e && e.message);
    }
    out.error = errText(e);
  }

  // A response stream (server streaming or bidi) read into `out`.
  function readAll(iterable, out, onMessage) {
    return (async () => {
      try {
        for await (const resp of iterable) record(out, resp, onMessage);
        out.code = 0;
      } catch (e) {
        if (out.cancelledByClient && out.code === null) out.code = NiceStatus.CANCELLED;
        else fail(out, e);
      }
      return out;
    })();
  }

  return {
    async unary(req, opts = {}) {
      const out = newOutcome();
      try {
        record(out, await client.unary(req, callOptions(opts, out)));
        out.code = 0;
      } catch (e) {
        fail(out, e);
      }
      return out;
    },
    serverStream(req, opts = {}, onMessage) {
      const out = newOutcome();
      const ac = new AbortController();
      const done = readAll(client.serverStream(req, callOptions(opts, out, ac.signal)), out, onMessage);
      return { done, cancel() { out.cancelledByClient = true; ac.abort(); } };
    },
    async clientStream(reqs, opts = {}) {
      const out = newOutcome();
      async function* requests() {
        for (const r of reqs) yield r;
      }
      try {
        record(out, await client.clientStream(requests(), callOptions(opts, out)));
        out.code = 0;
      } catch (e) {
        fail(out, e);
      }
      return out;
    },
    bidi(opts = {}) {
      const out = newOutcome();
      const ac = new AbortController();
      const requests = pushable();
      const handle = { onMessage: null };
      const done = readAll(client.bidi(requests, callOptions(opts, out, ac.signal)), out,
        (m, i) => { if (handle.onMessage) handle.onMessage(m, i); });
      return Object.assign(handle, {
        done,
        send: (req) => requests.push(req),
        end: () => requests.end(),
        cancel() { out.cancelledByClient = true; ac.abort(); },
      });
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
    case "connect": return connectClient(base, opts, "connect");
    case "connect-get": return connectClient(base, opts, "connect-get");
    case "improbable": return improbableClient(base, opts);
    case "protobuf-ts": return protobufTsClient(base, opts);
    case "improbable-ws": return improbableClient(base, opts, true);
    case "nice-grpc-ws": return niceGrpcClient(base);
    default: throw new Error(`unknown client ${name}`);
  }
}

// grpc-web's suppressCorsPreflight is the only client option of its kind.
export function supportsSuppressPreflight(name) {
  return name === "grpcweb-text" || name === "grpcweb-binary";
}
