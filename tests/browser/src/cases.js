// The cases, run in the page by window.runCase(client, caseName, gatewayUrl, params).
//
// Each returns a JSON-able result {pass, reason, ...details}. pass is true/false when the page can
// judge alone, or null when the runner must finish the check (cancel → CancelStatus on the echo
// server, disallowed_origin → upstream never reached + CORS console error, suppress_preflight →
// no OPTIONS seen on the wire). Expectations are about the gateway; where a client library simply
// cannot do something, the per-client table below says so and the case reports it without failing.
import { makeClient, supportsSuppressPreflight, isWebSocketClient } from "./clients.js";
import { SERVICE_NAME, encodeRequest, decodeResponse, encodeCancelQuery, decodeCancelInfo } from "./proto.js";

export const CASES = [
  "unary",
  "unicode_1mib",
  "server_stream",
  "error_unary_trailers_only",
  "error_stream_trailers_only",
  "error_after_messages",
  "headers",
  "deadline",
  "cancel",
  "disallowed_origin",
  "credentials",
  "suppress_preflight",
  "get_cache",
  "jwt",
  // Request streaming: only the WebSocket clients can (client_stream, bidi, bidi_cancel).
  "client_stream",
  "bidi",
  "bidi_cancel",
  // Run against the HTTPS (TLS, ALPN h2, gzip-enabled) gateway, or the plain one for the contrast;
  // the runner maps these rows onto the page cases below (see CASE_SPECS in run.mjs).
  "concurrent_streams",
  "gzip",
  // No client library: plain fetch() with a ReadableStream body over HTTP/2 (TLS gateway).
  "h2_request_stream",
];
// preflight_control is not a column of its own: the runner runs it right after
// suppress_preflight, in the same browser context.

// Google grpc-web in binary mode reads the XHR as an arraybuffer, which is only available when the
// response is complete: server streaming works but is delivered all at once at the end.
const STREAMS_INCREMENTALLY = {
  "grpcweb-text": true, "grpcweb-binary": false, "connect-web": true, improbable: true, "protobuf-ts": true,
  "improbable-ws": true, "nice-grpc-ws": true, connect: true, "connect-get": true,
};

const NO_REQUEST_STREAMING = "a gRPC-Web HTTP client sends the request body whole: no client streaming from a browser "
  + "(only the WebSocket clients can; see h2_request_stream for fetch upload streaming)";

export const ERROR_MESSAGE = "not found: ✗ ünïcödé 100% sure";
const CUSTOM_TRAILER = ["x-trailer-custom", "custom-value"];

function rand() {
  return Math.random().toString(36).slice(2, 10);
}

// A string of exactly `bytes` UTF-8 bytes mixing 1-, 2-, 3- and 4-byte characters.
export function unicodeString(bytes) {
  const unit = "héllo wörld — ✓ 日本語テキスト 🚀🌍 Ωμέγα; ";
  const enc = new TextEncoder();
  const unitLen = enc.encode(unit).length;
  let s = unit.repeat(Math.floor(bytes / unitLen));
  s += "x".repeat(bytes - enc.encode(s).length);
  return s;
}

function check(conds) {
  const failed = conds.filter(([ok]) => !ok).map(([, why]) => why);
  return { pass: failed.length === 0, reason: failed.join("; ") };
}

function statusText(out) {
  return `code=${out.code} message=${JSON.stringify(out.message)}${out.error ? ` error=${JSON.stringify(out.error)}` : ""}`;
}

// Where did the client put a header/trailer? Trailers-only errors carry the trailers as HTTP
// headers, so clients expose them as headers, trailers or error metadata depending on the library.
function findMeta(out, name) {
  for (const where of ["trailers", "errorMetadata", "headers"]) {
    const v = out[where] && out[where][name];
    if (v !== undefined) return { where, value: v };
  }
  return { where: null, value: undefined };
}

function summary(out) {
  return {
    code: out.code,
    message: out.message,
    error: out.error,
    headers: out.headers,
    trailers: out.trailers,
    errorMetadata: out.errorMetadata,
    responses: out.responses.map((r) => ({ ...r, message: r.message.length > 80 ? `${r.message.slice(0, 80)}…(${r.message.length} chars)` : r.message })),
  };
}

function expectError(out, code, message, { responses = 0 } = {}) {
  const trailer = findMeta(out, CUSTOM_TRAILER[0]);
  return {
    ...check([
      [out.code === code, `expected code ${code}, got ${statusText(out)}`],
      [out.message === message, `expected message ${JSON.stringify(message)}, got ${JSON.stringify(out.message)}`],
      [trailer.value === CUSTOM_TRAILER[1], `custom trailer ${CUSTOM_TRAILER[0]} not readable (got ${JSON.stringify(trailer.value)})`],
      [out.responses.length === responses, `expected ${responses} messages before the error, got ${out.responses.length}`],
    ]),
    trailerFoundIn: trailer.where,
    call: summary(out),
  };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// An h2 connection to the (HTTPS) gateway before any WebSocket: Chromium opens a wss:// WebSocket
// as an extended CONNECT stream (RFC 8441) only on an h2 connection it already has to that origin, in
// the same pool: credentials "include", as a WebSocket handshake carries cookies.
async function warmUp(base) {
  await fetch(`${base}/healthz`, { mode: "no-cors", credentials: "include" });
}

function errMessage(e) {
  return e instanceof Error ? `${e.name}: ${e.message}` : String(e);
}

// gRPC-Web framing by hand, for the fetch-only case: flag byte, 4-byte big-endian length, payload.
function grpcWebFrame(payload, flag = 0) {
  const f = new Uint8Array(5 + payload.length);
  f[0] = flag;
  new DataView(f.buffer).setUint32(1, payload.length);
  f.set(payload, 5);
  return f;
}

// A whole gRPC-Web response body → {messages: [Uint8Array], trailers: {name: value}, rest: bytes
// left over (an incomplete frame)}.
function parseGrpcWeb(buf) {
  const messages = [];
  const trailers = {};
  let off = 0;
  while (off + 5 <= buf.length) {
    const len = new DataView(buf.buffer, buf.byteOffset + off + 1, 4).getUint32(0);
    if (off + 5 + len > buf.length) break;
    const payload = buf.subarray(off + 5, off + 5 + len);
    if (buf[off] & 0x80) {
      for (const line of new TextDecoder().decode(payload).split("\r\n")) {
        const i = line.indexOf(":");
        if (i > 0) trailers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
      }
    } else {
      messages.push(payload);
    }
    off += 5 + len;
  }
  return { messages, trailers, rest: buf.length - off };
}

const RUNNERS = {
  async unary(client, base) {
    const c = makeClient(client, base);
    const text = `hello from ${client}`;
    const out = await c.unary({ message: text });
    const r = out.responses[0];
    return {
      ...check([
        [out.code === 0, `call failed: ${statusText(out)}`],
        [out.responses.length === 1, `expected 1 message, got ${out.responses.length}`],
        [r && r.message === text, `echoed message differs: ${JSON.stringify(r && r.message)}`],
        [out.trailers["x-trailer-ok"] === "done", `trailer x-trailer-ok not read (trailers: ${JSON.stringify(out.trailers)})`],
      ]),
      upstreamSaw: r && r.headers,
      call: summary(out),
    };
  },

  async unicode_1mib(client, base) {
    const c = makeClient(client, base);
    const text = unicodeString(1024 * 1024);
    const t0 = performance.now();
    const out = await c.unary({ message: text });
    const r = out.responses[0];
    const same = !!r && r.message === text;
    let firstDiff;
    if (r && !same) {
      firstDiff = 0;
      while (firstDiff < text.length && text[firstDiff] === r.message[firstDiff]) firstDiff++;
    }
    return {
      ...check([
        [out.code === 0, `call failed: ${statusText(out)}`],
        [same, r ? `echo differs (sent ${text.length} chars, got ${r.message.length}, first difference at ${firstDiff})` : "no message"],
      ]),
      bytes: new TextEncoder().encode(text).length,
      ms: Math.round(performance.now() - t0),
      call: summary(out),
    };
  },

  async server_stream(client, base) {
    const c = makeClient(client, base);
    const count = 10;
    const t0 = performance.now();
    const out = await c.serverStream({ message: "tick", count, intervalMs: 200 }, {}).done;
    const ts = out.responses.map((r) => Math.round(r.t - t0));
    const indexes = out.responses.map((r) => r.index);
    const first = ts[0];
    const last = ts[ts.length - 1];
    const incremental = ts.length === count && first < last - 1000;
    const conds = [
      [out.code === 0, `call failed: ${statusText(out)}`],
      [out.responses.length === count, `expected ${count} messages, got ${out.responses.length}`],
      [indexes.every((v, i) => v === i), `messages out of order: ${JSON.stringify(indexes)}`],
      [out.trailers["x-trailer-ok"] === "done", `trailer x-trailer-ok not read (trailers: ${JSON.stringify(out.trailers)})`],
    ];
    let note;
    if (STREAMS_INCREMENTALLY[client]) {
      conds.push([incremental, `not incremental: first at ${first} ms, last at ${last} ms`]);
    } else {
      note = incremental ? "streamed incrementally (unexpected for this client)" : "delivered at once (expected: XHR arraybuffer)";
    }
    return { ...check(conds), note, arrivalsMs: ts, call: summary(out) };
  },

  async error_unary_trailers_only(client, base) {
    const c = makeClient(client, base);
    const out = await c.unary({ message: "x", statusCode: 5, statusMessage: ERROR_MESSAGE });
    return expectError(out, 5, ERROR_MESSAGE);
  },

  async error_stream_trailers_only(client, base) {
    const c = makeClient(client, base);
    const out = await c.serverStream({ message: "x", count: 0, statusCode: 5, statusMessage: ERROR_MESSAGE }, {}).done;
    return expectError(out, 5, ERROR_MESSAGE);
  },

  async error_after_messages(client, base) {
    const c = makeClient(client, base);
    const out = await c.serverStream({
      message: "x", count: 2, statusCode: 5, statusMessage: ERROR_MESSAGE, failAfterMessages: true,
    }, {}).done;
    return expectError(out, 5, ERROR_MESSAGE, { responses: 2 });
  },

  async headers(client, base) {
    const c = makeClient(client, base);
    const value = `bar-${rand()}`;
    const out = await c.unary({ message: "headers" }, { headers: { "x-echo-foo": value } });
    const r = out.responses[0];
    return {
      ...check([
        [out.code === 0, `call failed: ${statusText(out)}`],
        [r && r.headers["x-echo-foo"] === value, `upstream did not get x-echo-foo (got ${JSON.stringify(r && r.headers)})`],
        [out.headers["x-echoed-foo"] === value, `response header x-echoed-foo not readable (headers: ${JSON.stringify(out.headers)})`],
      ]),
      call: summary(out),
    };
  },

  // A bearer token checked by the gateway (ES256, JWKS file): a valid one reaches the upstream with its
  // subject as x-auth-user-id; an expired one is refused with UNAUTHENTICATED and a readable message.
  async jwt(client, base, params = {}) {
    const c = makeClient(client, base);
    const ok = await c.unary({ message: "with token" }, { headers: { authorization: `Bearer ${params.valid}` } });
    const r = ok.responses[0];
    const bad = await c.unary({ message: "expired" }, { headers: { authorization: `Bearer ${params.expired}` } });
    return {
      ...check([
        [ok.code === 0, `valid token: call failed: ${statusText(ok)}`],
        [r && r.headers["x-auth-user-id"] === "browser-user", `upstream did not get the subject (got ${JSON.stringify(r && r.headers)})`],
        [r && !("authorization" in r.headers), "the token was forwarded although strip_token is on"],
        [bad.code === 16, `expired token: expected UNAUTHENTICATED (16), got ${statusText(bad)}`],
        [/invalid token: token expired/.test(bad.message), `expired token: message not readable: ${JSON.stringify(bad.message)}`],
      ]),
      call: { ok: summary(ok), expired: summary(bad) },
    };
  },

  async deadline(client, base) {
    const c = makeClient(client, base);
    const t0 = performance.now();
    const out = await c.unary({ message: "slow", delayMs: 3000 }, { timeoutMs: 500 });
    const ms = Math.round(performance.now() - t0);
    return {
      ...check([
        [out.code === 4, `expected DEADLINE_EXCEEDED (4), got ${statusText(out)}`],
        [ms < 2500, `took ${ms} ms`],
      ]),
      ms,
      call: summary(out),
    };
  },

  // Cancel a running server stream after its first message (clients that deliver nothing before the
  // response completes — grpc-web binary — cancel 700 ms in instead, with ~7 messages sent); the
  // runner then asks the echo server (CancelStatus) whether the upstream call was cancelled.
  async cancel(client, base) {
    const c = makeClient(client, base);
    const id = `cancel-${client}-${rand()}`;
    const incremental = STREAMS_INCREMENTALLY[client];
    let call;
    const first = new Promise((resolve) => {
      call = c.serverStream({ id, message: "cancel-me", count: 50, intervalMs: 100 }, {}, (_m, i) => { if (i === 0) resolve(); });
    });
    const trigger = incremental ? first.then(() => true) : sleep(700).then(() => true);
    const got = await Promise.race([trigger, call.done.then(() => false), sleep(5000).then(() => false)]);
    if (!got) {
      const out = await Promise.race([call.done, sleep(10)]);
      return { pass: false, reason: `call ended or stalled before it could be cancelled: ${out ? statusText(out) : "timeout"}`, id };
    }
    call.cancel();
    const out = await Promise.race([call.done, sleep(2000).then(() => null)]);
    await sleep(200);
    return {
      pass: null,
      id,
      cancelledAfter: incremental ? "first message" : "700 ms (client delivers no message before the end)",
      messagesBeforeCancel: out ? out.responses.length : null,
      clientSaw: out ? statusText(out) : "done promise did not settle after cancel()",
    };
  },

  // Runs on the page served from the origin that is NOT in the allowlist.
  async disallowed_origin(client, base) {
    const c = makeClient(client, base);
    const id = `origin-${client}-${rand()}`;
    const out = await c.unary({ id, message: "should never arrive" });
    const res = check([[out.code !== 0 && out.code !== null, `call succeeded from a disallowed origin: ${statusText(out)}`]]);
    return { ...res, pass: res.pass ? null : false, id, call: summary(out) };
  },

  async credentials(client, base, params = {}) {
    const c = makeClient(client, base, { withCredentials: true });
    const out = await c.unary({ message: "with cookie" });
    const r = out.responses[0];
    const cookie = r && r.headers.cookie;
    return {
      ...check([
        [out.code === 0, `call failed: ${statusText(out)}`],
        [!!params.cookie, "runner passed no cookie to expect"],
        [typeof cookie === "string" && cookie.includes(params.cookie), `upstream cookie header ${JSON.stringify(cookie)} lacks ${params.cookie}`],
      ]),
      call: summary(out),
    };
  },

  async suppress_preflight(client, base) {
    if (isWebSocketClient(client)) return { pass: "n/a", reason: "WebSocket: a handshake is never preflighted" };
    if (!supportsSuppressPreflight(client)) return { pass: "n/a", reason: "client has no suppressCorsPreflight" };
    const c = makeClient(client, base, { suppressCorsPreflight: true });
    const value = `sp-${rand()}`;
    const out = await c.unary({ message: "no preflight" }, { headers: { "x-echo-foo": value } });
    const r = out.responses[0];
    const res = check([
      [out.code === 0, `call failed: ${statusText(out)}`],
      [r && r.message === "no preflight", "echoed message differs"],
      [r && r.headers["x-echo-foo"] === value, `metadata from $httpHeaders did not reach the upstream (got ${JSON.stringify(r && r.headers)})`],
    ]);
    return { ...res, pass: res.pass ? null : false, call: summary(out) };
  },

  // Connect GET (connect-get only): the same side-effect-free call twice. The first goes out as a GET with
  // no header of its own, a CORS simple request: the runner checks that no OPTIONS was sent and that it
  // was a GET. The route's get_cache_control ("private, max-age=60") lets the browser answer the second
  // from its HTTP cache: both answers carry the same x-request-id (the gateway makes one per call), and
  // the runner sees the second served from the cache.
  async get_cache(client, base) {
    if (client !== "connect-get") return { pass: "n/a", reason: "only Connect clients with useHttpGet send GET" };
    const c = makeClient(client, base);
    const req = { message: `cache-me-${rand()}` };
    const a = await c.unary(req);
    const b = await c.unary(req);
    const ida = a.headers["x-request-id"];
    const res = check([
      [a.code === 0 && b.code === 0, `calls failed: ${statusText(a)} / ${statusText(b)}`],
      [a.responses[0] && b.responses[0] && b.responses[0].message === req.message, "echo differs"],
      [a.headers["cache-control"] === "private, max-age=60", `cache-control ${JSON.stringify(a.headers["cache-control"])}`],
      [!!ida && b.headers["x-request-id"] === ida, `second answer not the cached first one (x-request-id ${ida} then ${b.headers["x-request-id"]})`],
    ]);
    return { ...res, pass: res.pass ? null : false, requestIds: [ida, b.headers["x-request-id"]], call: summary(a) };
  },

  // ClientStream: `n` messages sent one after the other, then the end of the request; the echo server
  // answers once with the messages joined by '|' and index = how many it got.
  async client_stream(client, base) {
    const c = makeClient(client, base);
    if (!c.clientStream) return { pass: "n/a", reason: NO_REQUEST_STREAMING };
    const n = 20;
    const id = `cs-${client}-${rand()}`;
    const reqs = Array.from({ length: n }, (_, i) => ({ message: `m${i}-${"é".repeat(i)}`, ...(i === 0 ? { id } : {}) }));
    const value = `cs-${rand()}`;
    const out = await c.clientStream(reqs, { headers: { "x-echo-foo": value } });
    const r = out.responses[0];
    const joined = reqs.map((q) => q.message).join("|");
    return {
      ...check([
        [out.code === 0, `call failed: ${statusText(out)}`],
        [out.responses.length === 1, `expected 1 response, got ${out.responses.length}`],
        [r && r.message === joined, `joined messages differ: ${JSON.stringify(r && r.message)}`],
        [r && r.index === n, `index (messages the upstream got) ${r && r.index}, expected ${n}`],
        // the echo server answers metadata x-echo-foo with the response header x-echoed-foo
        [out.headers["x-echoed-foo"] === value, `metadata x-echo-foo not echoed as response header x-echoed-foo (headers: ${JSON.stringify(out.headers)})`],
        [out.trailers["x-trailer-ok"] === "done", `trailer x-trailer-ok not read (trailers: ${JSON.stringify(out.trailers)})`],
      ]),
      call: summary(out),
    };
  },

  // Bidi ping-pong: send one message, wait for its echo, `rounds` times, then end the request; every
  // echo in order, OK status, trailers. Proves each request message is forwarded at once (not held
  // until the request ends) and each response delivered at once.
  async bidi(client, base, params = {}) {
    const c = makeClient(client, base);
    if (!c.bidi) return { pass: "n/a", reason: NO_REQUEST_STREAMING };
    if (params.warmUp) await warmUp(base);
    const rounds = 50;
    const call = c.bidi({ headers: { "x-echo-foo": "bidi" } });
    const pending = new Map();
    call.onMessage = (m, i) => { const w = pending.get(i); if (w) w(m); };
    const rtts = [];
    const problems = [];
    const t0 = performance.now();
    for (let i = 0; i < rounds; i++) {
      const text = `ping-${i}`;
      const echoed = new Promise((resolve) => pending.set(i, resolve));
      const ts = performance.now();
      call.send({ message: text });
      const m = await Promise.race([echoed, call.done.then(() => null), sleep(5000).then(() => undefined)]);
      if (!m) {
        problems.push(m === null ? `call ended at round ${i}` : `no echo of round ${i} within 5 s`);
        break;
      }
      rtts.push(performance.now() - ts);
      if (m.message !== text || m.index !== i) {
        problems.push(`round ${i}: got ${JSON.stringify([m.message, m.index])}`);
        break;
      }
    }
    call.end();
    const out = await Promise.race([call.done, sleep(5000).then(() => null)]);
    if (!out) {
      call.cancel();
      return { pass: false, reason: `${problems.concat("no status within 5 s of the end of the request").join("; ")}` };
    }
    const indexes = out.responses.map((r) => r.index);
    return {
      ...check([
        [problems.length === 0, problems.join("; ")],
        [out.code === 0, `call failed: ${statusText(out)}`],
        [out.responses.length === rounds, `expected ${rounds} messages, got ${out.responses.length}`],
        [indexes.every((v, i) => v === i), `messages out of order: ${JSON.stringify(indexes)}`],
        [out.headers["x-echoed-foo"] === "bidi", `response header x-echoed-foo not readable (headers: ${JSON.stringify(out.headers)})`],
        [out.trailers["x-trailer-ok"] === "done", `trailer x-trailer-ok not read (trailers: ${JSON.stringify(out.trailers)})`],
      ]),
      note: `${rounds} round trips in ${Math.round(performance.now() - t0)} ms `
        + `(median ${rtts.length ? rtts.sort((a, b) => a - b)[rtts.length >> 1].toFixed(1) : "?"} ms)`,
      call: { ...summary(out), responses: `${out.responses.length} messages` },
    };
  },

  // Bidi cancelled by the client after two round trips; the runner asks the echo server
  // (CancelStatus) whether the upstream call was cancelled, as for `cancel`.
  async bidi_cancel(client, base) {
    const c = makeClient(client, base);
    if (!c.bidi) return { pass: "n/a", reason: NO_REQUEST_STREAMING };
    const id = `bidi-cancel-${client}-${rand()}`;
    const call = c.bidi({});
    let got = 0;
    let next;
    call.onMessage = (_m, i) => { got = i + 1; if (next) next(); };
    for (let i = 0; i < 2; i++) {
      const echoed = new Promise((resolve) => { next = resolve; });
      call.send(i === 0 ? { id, message: "first" } : { message: "second" });
      const ok = await Promise.race([echoed.then(() => true), call.done.then(() => false), sleep(5000).then(() => false)]);
      if (!ok) {
        call.cancel();
        return { pass: false, reason: `no echo of message ${i} before cancelling (${got} received)`, id };
      }
    }
    call.cancel();
    const out = await Promise.race([call.done, sleep(2000).then(() => null)]);
    await sleep(200);
    return {
      pass: null,
      id,
      cancelledAfter: `${got} echoes, request still open`,
      clientSaw: out ? statusText(out) : "done promise did not settle after cancel()",
    };
  },

  // `streams` (8) ServerStream calls at once from one page, count=10 interval_ms=200 each (≈ 1.8 s):
  // over HTTP/2 they share one connection and all run together; over HTTP/1.1 Chromium's limit of
  // 6 connections per origin makes the rest wait. The page only measures (per stream: first
  // message, end, messages, status) and lists what looks wrong in `problems`; the runner judges,
  // with the CDP view of the same requests (protocol, connection, response/finish times).
  async concurrent_streams(client, base, params = {}) {
    const n = params.streams || 8;
    const count = 10;
    const intervalMs = 200;
    const giveUpMs = params.giveUpMs || 15000;
    const c = makeClient(client, base);
    if (params.warmUp) await warmUp(base);
    const t0 = performance.now();
    const rel = () => Math.round(performance.now() - t0);
    const streams = [];
    const dones = [];
    for (let i = 0; i < n; i++) {
      const s = { i, firstMs: null, endMs: null, messages: 0, code: null, message: "" };
      streams.push(s);
      const call = c.serverStream({ message: `stream-${i}`, count, intervalMs }, {}, (_m, idx) => {
        s.messages = idx + 1;
        if (idx === 0) s.firstMs = rel();
      });
      dones.push(call.done.then((out) => {
        s.endMs = rel();
        s.code = out.code;
        s.message = out.message;
        s.messages = out.responses.length;
        s.inOrder = out.responses.every((r, k) => r.index === k && r.message === `stream-${i}`);
        if (out.error) s.error = out.error;
      }));
    }
    const allDone = await Promise.race([Promise.all(dones).then(() => true), sleep(giveUpMs).then(() => false)]);
    const totalMs = rel();
    const incremental = STREAMS_INCREMENTALLY[client];
    const problems = [];
    if (!allDone) {
      const open = streams.filter((s) => s.endMs === null);
      problems.push(`${open.length} of ${n} streams still open after ${giveUpMs} ms: `
        + open.map((s) => `#${s.i} (${s.messages} msgs${s.firstMs !== null ? `, first at ${s.firstMs} ms` : ", none yet"})`).join(", "));
    }
    const bad = streams.filter((s) => s.endMs !== null && (s.code !== 0 || s.messages !== count || !s.inOrder));
    if (bad.length) {
      problems.push(`streams not OK: ${bad.map((s) => `#${s.i} code=${s.code} ${JSON.stringify(s.message)} ${s.messages}/${count} msgs${s.inOrder ? "" : " out of order"}${s.error ? ` ${s.error}` : ""}`).join("; ")}`);
    }
    const ends = streams.map((s) => s.endMs).filter((v) => v !== null);
    const firstEnd = ends.length ? Math.min(...ends) : null;
    const firsts = streams.map((s) => s.firstMs);
    const lateFirst = incremental && firstEnd !== null ? streams.filter((s) => s.firstMs === null || s.firstMs > firstEnd) : [];
    if (lateFirst.length) {
      problems.push(`${lateFirst.length} stream(s) got their first message only after stream #${streams.find((s) => s.endMs === firstEnd).i} had finished at ${firstEnd} ms: `
        + lateFirst.map((s) => `#${s.i} first at ${s.firstMs} ms`).join(", "));
    }
    if (totalMs >= (params.maxTotalMs || 4000)) problems.push(`${n} streams took ${totalMs} ms (one alone takes ≈ ${(count - 1) * intervalMs} ms)`);
    return {
      pass: null,
      problems,
      totalMs,
      firstEndMs: firstEnd,
      lastFirstMs: incremental && firsts.every((v) => v !== null) ? Math.max(...firsts) : null,
      incremental,
      streams,
    };
  },

  // Against the gateway with compression.gzip on: a ~64 KiB compressible unary echo (decoded and
  // compared by the client), then a ServerStream count=5 interval_ms=300 with 4 KiB payloads that
  // must still arrive message by message. The runner checks content-encoding: gzip in CDP.
  async gzip(client, base) {
    const c = makeClient(client, base);
    const text = unicodeString(64 * 1024);
    const u0 = performance.now();
    const u = await c.unary({ message: text });
    const unaryMs = Math.round(performance.now() - u0);
    const r = u.responses[0];
    const same = !!r && r.message === text;
    const count = 5;
    const t0 = performance.now();
    const s = await c.serverStream({ message: "gz", count, intervalMs: 300, size: 4096 }, {}).done;
    const ts = s.responses.map((m) => Math.round(m.t - t0));
    const first = ts[0];
    const last = ts[ts.length - 1];
    const incremental = ts.length === count && first < last - 800;
    const conds = [
      [u.code === 0, `unary failed: ${statusText(u)}`],
      [same, r ? `64 KiB echo differs (sent ${text.length} chars, got ${r.message.length})` : "unary: no message"],
      [s.code === 0, `stream failed: ${statusText(s)}`],
      [s.responses.length === count, `stream: expected ${count} messages, got ${s.responses.length}`],
      [s.responses.every((m, i) => m.index === i && m.payloadLen === 4096), `stream: wrong index/payload: ${JSON.stringify(s.responses.map((m) => [m.index, m.payloadLen]))}`],
      [s.trailers["x-trailer-ok"] === "done", `stream: trailer x-trailer-ok not read (trailers: ${JSON.stringify(s.trailers)})`],
    ];
    let note;
    if (STREAMS_INCREMENTALLY[client]) {
      conds.push([incremental, `gzip stream not incremental: first message at ${first} ms, last at ${last} ms`]);
    } else {
      note = incremental ? "stream incremental (unexpected for this client)" : "stream delivered at once (expected: XHR arraybuffer)";
    }
    const res = check(conds);
    return {
      ...res,
      pass: res.pass ? null : false,
      note,
      unaryBytes: new TextEncoder().encode(text).length,
      unaryMs,
      streamArrivalsMs: ts,
      call: { unary: summary(u), stream: summary(s) },
    };
  },

  // No client library: the page's own fetch() with a ReadableStream request body (duplex: "half";
  // Chromium streams request bodies over HTTP/2 or QUIC only, hence the HTTPS gateway). Part 1:
  // ClientStream, `n` gRPC-Web frames enqueued 100 ms apart; while the body is still open (after frame
  // 3), a second fetch asks the echo server (CancelStatus, through the plain gateway
  // params.probeGateway: another connection, the echo server is the same) whether it has already seen
  // the call (the id rides in the first message): proof that the body is streamed all the way to the
  // upstream, not buffered by Chromium or the gateway. Then the response: the joined messages and
  // grpc-status 0 in the 0x80 trailer frame. Part 2: Bidi, one frame, then up to 1.5 s to see whether
  // fetch() hands over the response while the request body is still open (the echo server answers
  // each message at once), then the rest and the whole response.
  async h2_request_stream(_client, base, params = {}) {
    const headers = { "content-type": "application/grpc-web+proto", "x-grpc-web": "1" };
    const url = (method) => `${base}/${SERVICE_NAME}/${method}`;
    const streamed = (method) => {
      let ctrl;
      const body = new ReadableStream({ start(c) { ctrl = c; } });
      const t0 = performance.now();
      const state = { ctrl, respMs: null, response: null };
      state.response = fetch(url(method), { method: "POST", body, duplex: "half", headers }).then((r) => {
        state.respMs = Math.round(performance.now() - t0);
        return r;
      });
      state.response.catch(() => {});
      return state;
    };
    const read = async (resp) => ({ status: resp.status, ...parseGrpcWeb(new Uint8Array(await resp.arrayBuffer())) });

    // part 1: ClientStream
    const n = 10;
    const id = `h2rs-${rand()}`;
    const msgs = Array.from({ length: n }, (_, i) => `chunk-${i}`);
    const cs = streamed("ClientStream");
    let probe = null;
    const t0 = performance.now();
    for (let i = 0; i < n; i++) {
      cs.ctrl.enqueue(grpcWebFrame(encodeRequest({ message: msgs[i], ...(i === 0 ? { id } : {}) })));
      if (i === 3) {
        const p0 = performance.now();
        const probeUrl = `${(params.probeGateway || base).replace(/\/+$/, "")}/${SERVICE_NAME}/CancelStatus`;
        const r = await read(await fetch(probeUrl, { method: "POST", headers, body: grpcWebFrame(encodeCancelQuery({ id })) }));
        const info = r.messages.length ? decodeCancelInfo(r.messages[0]) : null;
        probe = { seen: !!(info && info.seen), grpcStatus: r.trailers["grpc-status"], atMs: Math.round(p0 - t0), responseAlready: cs.respMs !== null };
      }
      await sleep(100);
    }
    const closedMs = Math.round(performance.now() - t0);
    cs.ctrl.close();
    let csOut;
    try {
      csOut = await read(await cs.response);
    } catch (e) {
      return { pass: false, reason: `ClientStream fetch failed: ${errMessage(e)}`, probe };
    }
    const reply = csOut.messages.length === 1 ? decodeResponse(csOut.messages[0]) : null;

    // part 2: Bidi
    const k = 5;
    const bd = streamed("Bidi");
    bd.ctrl.enqueue(grpcWebFrame(encodeRequest({ message: "bidi-0" })));
    const early = await Promise.race([bd.response.then(() => true, () => false), sleep(1500).then(() => false)]);
    for (let i = 1; i < k; i++) bd.ctrl.enqueue(grpcWebFrame(encodeRequest({ message: `bidi-${i}` })));
    bd.ctrl.close();
    let bdOut;
    try {
      bdOut = await read(await bd.response);
    } catch (e) {
      return { pass: false, reason: `Bidi fetch failed: ${errMessage(e)}`, probe };
    }
    const echoes = bdOut.messages.map((m) => decodeResponse(m).message);

    // part 3 (reported, not judged): the same streaming body to the plain HTTP/1.1 gateway
    let h1 = "not tried";
    if (params.probeGateway) {
      const body = new ReadableStream({ start(c) { c.enqueue(grpcWebFrame(encodeRequest({ message: "h1" }))); c.close(); } });
      const probeBase = params.probeGateway.replace(/\/+$/, "");
      h1 = await fetch(`${probeBase}/${SERVICE_NAME}/ClientStream`, { method: "POST", body, duplex: "half", headers })
        .then((r) => `answered ${r.status}`, (e) => `refused by Chromium (${errMessage(e)})`);
    }

    const conds = [
      [csOut.status === 200, `ClientStream: HTTP ${csOut.status}`],
      [csOut.trailers["grpc-status"] === "0", `ClientStream: grpc-status ${JSON.stringify(csOut.trailers["grpc-status"])} ${JSON.stringify(csOut.trailers["grpc-message"] || "")}`],
      [csOut.trailers["x-trailer-ok"] === "done", `ClientStream: trailer x-trailer-ok missing (${JSON.stringify(csOut.trailers)})`],
      [reply && reply.message === msgs.join("|") && reply.index === n, `ClientStream: echo ${JSON.stringify(reply && [reply.message, reply.index])}`],
      [csOut.rest === 0, `ClientStream: ${csOut.rest} stray bytes after the frames`],
      [probe && probe.grpcStatus === "0", `CancelStatus probe failed: ${JSON.stringify(probe)}`],
      [probe && probe.seen, "the upstream had not seen the call 300 ms after its first message, with the request body still open: the body was not streamed"],
      [bdOut.status === 200 && bdOut.trailers["grpc-status"] === "0", `Bidi: HTTP ${bdOut.status} grpc-status ${JSON.stringify(bdOut.trailers["grpc-status"])}`],
      [JSON.stringify(echoes) === JSON.stringify(Array.from({ length: k }, (_, i) => `bidi-${i}`)), `Bidi: echoes ${JSON.stringify(echoes)}`],
    ];
    return {
      ...check(conds),
      note: `ClientStream: ${n} frames over ${closedMs} ms, upstream saw the call at ${probe && probe.atMs} ms with the body open; `
        + `response ${cs.respMs} ms after the start (body closed at ${closedMs} ms). Bidi: response `
        + `${early ? "handed over while the request body was open" : "not handed over while the request body was open (1.5 s; half duplex)"}. `
        + `Over HTTP/1.1: ${h1}`,
      probe,
      responseBeforeEnd: { clientStream: probe && probe.responseAlready, bidi: early },
      http1: h1,
      clientStream: { ...csOut, messages: csOut.messages.length },
      bidi: { status: bdOut.status, trailers: bdOut.trailers, echoes },
    };
  },

  // The same client without suppressCorsPreflight, in the same browser context right after
  // suppress_preflight: proves the runner's preflight detector does see OPTIONS requests.
  async preflight_control(client, base) {
    if (!supportsSuppressPreflight(client)) return { pass: "n/a", reason: "control for suppress_preflight" };
    const c = makeClient(client, base);
    const out = await c.unary({ message: "with preflight" }, { headers: { "x-echo-foo": "control" } });
    const res = check([[out.code === 0, `call failed: ${statusText(out)}`]]);
    return { ...res, pass: res.pass ? null : false, call: summary(out) };
  },
};

export async function runCase(client, caseName, gatewayUrl, params) {
  const fn = RUNNERS[caseName];
  if (!fn) return { pass: false, reason: `unknown case ${caseName}` };
  try {
    return await fn(client, gatewayUrl.replace(/\/+$/, ""), params);
  } catch (e) {
    return { pass: false, reason: `page exception: ${e && e.stack ? e.stack : e}` };
  }
}
