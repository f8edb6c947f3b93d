// The cases, run in the page by window.runCase(client, caseName, gatewayUrl, params).
//
// Each returns a JSON-able result {pass, reason, ...details}. pass is true/false when the page can
// judge alone, or null when the runner must finish the check (cancel → CancelStatus on the echo
// server, disallowed_origin → upstream never reached + CORS console error, suppress_preflight →
// no OPTIONS seen on the wire). Expectations are about the gateway; where a client library simply
// cannot do something, the per-client table below says so and the case reports it without failing.
import { makeClient, supportsSuppressPreflight } from "./clients.js";

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
  "jwt",
  // Run against the HTTPS (TLS, ALPN h2, gzip-enabled) gateway, or the plain one for the contrast;
  // the runner maps these rows onto the page cases below (see CASE_SPECS in run.mjs).
  "concurrent_streams",
  "gzip",
];
// preflight_control is not a column of its own: the runner runs it right after
// suppress_preflight, in the same browser context.

// Google grpc-web in binary mode reads the XHR as an arraybuffer, which is only available when the
// response is complete: server streaming works but is delivered all at once at the end.
const STREAMS_INCREMENTALLY = {
  "grpcweb-text": true, "grpcweb-binary": false, "connect-web": true, improbable: true, "protobuf-ts": true,
};

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
