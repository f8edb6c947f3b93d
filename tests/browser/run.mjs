#!/usr/bin/env node
// Browser interop tests: real gRPC-Web client libraries in Debian Chromium, on a page served from
// another origin than the gateway (so CORS is real), through Portico to the Python echo upstream.
//
//   node tests/browser/run.mjs [--client a,b] [--case x,y] [--verbose]
//   node tests/browser/run.mjs --build-only      # just bundle the page into tests/browser/dist/
//
// Environment: PORTICO_BIN (default build/portico), PYTHON (default /usr/bin/python3),
// CHROMIUM (default /usr/bin/chromium), BROWSER_TEST_TIMEOUT_MS (per case, default 30000),
// PORTICO_LOG_LEVEL (log_level of both gateways, default info), BROWSER_TLS_TRUST (spki, the
// default: --ignore-certificate-errors-spki-list=<server key hash>, falling back to "all" if
// Chromium still refuses the certificate; all: --ignore-certificate-errors).
//
// What it starts, all on 127.0.0.1 with ports it picks, all stopped by PID at the end:
//   * tests/upstream/echo_server.py (port E)
//   * two static servers for the page: origin A (allowed) and origin C (not in the allowlist)
//   * a third static server, origin L: not allowed until the live_origin case adds it through the
//     admin API (and removes it again), without restarting the gateway
//   * portico --config FILE --listen 127.0.0.1:B --upstream 127.0.0.1:E --workers 1
//             --allow-origin http://127.0.0.1:A --admin 127.0.0.1:M   (FILE has the `cors:` section)
//   * the HTTPS leg (only if a selected case needs it): a CA and a server certificate for
//     127.0.0.1/localhost made with the openssl CLI in the temp dir, and a second
//     portico --config FILE2 --listen 127.0.0.1:T --tls-cert … --tls-key … (same upstream and
//     CORS; FILE2 adds `compression: {gzip: true, min_size: 1KiB}`): TLS with ALPN h2
//   * chromium --headless … --remote-debugging-port=0 --user-data-dir=<fresh temp dir>
//     --ignore-certificate-errors-spki-list=<sha256 of the server's SPKI>, driven by
//     playwright-core over CDP; every client × case gets a fresh browser context. The page stays
//     on http://127.0.0.1:A (an http page may fetch https).
// The WebSocket clients (improbable-ws, nice-grpc-ws: grpc-websockets) call the same gateways
// through ws:// and wss://; CDP shows their handshakes and frames, and the runner checks they used
// nothing else (on the HTTPS gateway a WebSocket is an HTTP/1.1 upgrade, or an RFC 8441 extended
// CONNECT stream when the page already has an h2 connection to it). Cells that cannot apply (request
// streaming for the HTTP clients; gzip and preflight rows for WebSockets) are "–" with the reason,
// decided before a page is opened.
// Prints a case × client table and "N passed, N failed, N skipped[, N reported]"; exits 1 if any
// case failed. Rows marked "(report)" measure without judging (HTTP/1.1 contrast); rows run "once"
// (h2_request_stream: the page's own fetch(), no client library) have one cell.
import { spawn, spawnSync } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import http2 from "node:http2";
import https from "node:https";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, "../..");
const PYTHON = process.env.PYTHON || "/usr/bin/python3";
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const PORTICO_BIN = path.resolve(REPO, process.env.PORTICO_BIN || "build/portico");
const CASE_TIMEOUT_MS = Number(process.env.BROWSER_TEST_TIMEOUT_MS || 30000);
const CHROMIUM_FLAGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];

const CLIENTS = [
  "grpcweb-text", "grpcweb-binary", "connect-web", "improbable", "protobuf-ts", "improbable-ws", "nice-grpc-ws",
  "connect", "connect-get",
];
// The clients that use the grpc-websockets transport (one WebSocket per call).
const WS_CLIENTS = new Set(["improbable-ws", "nice-grpc-ws"]);
const CASES = [
  "unary", "unicode_1mib", "server_stream", "error_unary_trailers_only", "error_stream_trailers_only",
  "error_after_messages", "headers", "deadline", "cancel", "disallowed_origin", "credentials",
  "suppress_preflight", "get_cache", "live_origin", "jwt", "client_stream", "bidi", "bidi_cancel",
  "https_unary", "https_server_stream", "https_bidi", "h2_concurrent_streams", "h1_concurrent_streams", "gzip",
  "h2_request_stream",
];

// Rows that are not "the page case of the same name against the plain gateway". leg: which
// gateway (plain = HTTP/1.1 on http://, tls = HTTPS with ALPN h2 and gzip on); page: the case
// run in the page; reportOnly: measured and printed, never failed (the cell shows `cell`).
const CASE_SPECS = {
  https_unary: { leg: "tls", page: "unary" },
  https_server_stream: { leg: "tls", page: "server_stream" },
  // WebSocket clients only: bidi over an extended CONNECT stream (RFC 8441) of the page's h2 connection
  https_bidi: { leg: "tls", page: "bidi", warmUp: true, wsProtocol: "h2" },
  h2_concurrent_streams: { leg: "tls", page: "concurrent_streams", protocol: "h2" },
  h1_concurrent_streams: { leg: "plain", page: "concurrent_streams", protocol: "http/1.1", reportOnly: true },
  gzip: { leg: "tls", page: "gzip" },
  // once: not per client (plain fetch() in the page, no client library): one run, one cell.
  h2_request_stream: { leg: "tls", page: "h2_request_stream", once: true },
};
const caseSpec = (name) => CASE_SPECS[name] || { leg: "plain", page: name };
const ONCE = "fetch"; // the client name of `once` rows: the page's own fetch(), no library
const CONCURRENT_STREAMS = 8;

// Cells that cannot apply, decided before a page is opened: the reason shown for the "–".
const REQUEST_STREAMING = new Set(["client_stream", "bidi", "bidi_cancel", "https_bidi"]);
function notApplicable(client, caseName) {
  if (caseName === "get_cache" && client !== "connect-get") return "only Connect clients with useHttpGet send GET";
  // a GET carries the message in its URL, bounded by limits.max_header_size (16 KiB): big messages are POSTs
  if (client === "connect-get" && (caseName === "unicode_1mib" || caseName === "gzip")) {
    return "Connect GET: the message is in the URL (at most limits.max_header_size); large messages use POST";
  }
  if (client === "connect" || client === "connect-get") {
    if (caseName === "suppress_preflight") return "no suppressCorsPreflight (Connect GET is the simple-request path: get_cache)";
    if (REQUEST_STREAMING.has(caseName)) {
      return "connect-web sends a request body whole (fetch without a request stream): no client or bidi streaming from a browser";
    }
  }
  if (!WS_CLIENTS.has(client)) {
    return REQUEST_STREAMING.has(caseName)
      ? "gRPC-Web over HTTP: the client sends the request body whole (no client streaming); only the WebSocket clients can"
      : null;
  }
  switch (caseName) {
  case "suppress_preflight": return "WebSocket: a handshake is never preflighted";
  case "gzip": return "WebSocket: no content-encoding (permessage-deflate not offered)";
  default: return null;
  }
}

// The jwt case: an ES256 key pair made here, its public half as the gateway's JWKS file, and two tokens
// signed with it (node's crypto: raw r||s signatures as JWS wants).
function makeJwt(tmp) {
  const { privateKey, publicKey } = crypto.generateKeyPairSync("ec", { namedCurve: "P-256" });
  const jwk = { ...publicKey.export({ format: "jwk" }), kid: "browser-key", use: "sig", alg: "ES256" };
  const jwksFile = path.join(tmp, "browser-jwks.json");
  fs.writeFileSync(jwksFile, JSON.stringify({ keys: [jwk] }));
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const sign = (claims) => {
    const input = `${b64({ alg: "ES256", kid: "browser-key", typ: "JWT" })}.${b64(claims)}`;
    const sig = crypto.sign("sha256", Buffer.from(input), { key: privateKey, dsaEncoding: "ieee-p1363" });
    return `${input}.${sig.toString("base64url")}`;
  };
  const now = Math.floor(Date.now() / 1000);
  const base = { iss: "https://issuer.browser.test/", aud: "portico-browser", sub: "browser-user" };
  return { jwksFile, tokens: { valid: sign({ ...base, exp: now + 3600 }), expired: sign({ ...base, iat: now - 7200, exp: now - 3600 }) } };
}

function corsConfigYaml(allowedOrigin, { gzip = false, jwksFile = undefined } = {}) {
  return [
    "# Written by tests/browser/run.mjs for one run.",
    `log_level: ${process.env.PORTICO_LOG_LEVEL || "info"}`,
    ...(gzip ? ["compression:", "  gzip: true", "  min_size: 1KiB"] : []),
    // Connect GET answers of Unary may be cached by the browser (the get_cache case); "default" is the
    // upstream of the command line's --upstream
    "routes:",
    "  - {path: /portico.test.Echo/Unary, upstream: default, get_cache_control: \"private, max-age=60\"}",
    "  - {prefix: /, upstream: default}",
    // optional everywhere: the other cases send no token; the jwt case sends a valid and an expired one
    ...(jwksFile ? ["jwt:", "  providers:", "    - name: browser", "      issuer: https://issuer.browser.test/",
      "      audiences: [portico-browser]", `      jwks_file: ${JSON.stringify(jwksFile)}`,
      "      claims_to_headers: [{claim: sub, header: x-auth-user-id}]", "      strip_token: true",
      "  default: {providers: [browser], optional: true}"] : []),
    "cors:",
    `  allow_origins: [${JSON.stringify(allowedOrigin)}]`,
    "  allow_credentials: true",
    // No expose_headers on purpose: the gateway must expose grpc-status, grpc-message and every
    // custom header it actually sends by itself, or the header/error cases fail.
    "  max_age: 600",
    "",
  ].join("\n");
}

// ------------------------------------------------------------------------------------------------
// small utilities

function parseArgs(argv) {
  const opts = { clients: CLIENTS, cases: CASES, verbose: false, buildOnly: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      if (i + 1 >= argv.length) die(`${a} needs a value`);
      return argv[++i];
    };
    if (a === "--client") opts.clients = val().split(",");
    else if (a === "--case") opts.cases = val().split(",");
    else if (a === "--verbose" || a === "-v") opts.verbose = true;
    else if (a === "--build-only") opts.buildOnly = true;
    else if (a === "--help" || a === "-h") {
      const lines = fs.readFileSync(fileURLToPath(import.meta.url), "utf8").split("\n").slice(1);
      const header = lines.slice(0, lines.findIndex((l) => !l.startsWith("//")));
      console.log(header.map((l) => l.replace(/^\/\/ ?/, "")).join("\n"));
      process.exit(0);
    } else die(`unknown argument ${a}`);
  }
  for (const c of opts.clients) if (!CLIENTS.includes(c)) die(`unknown client ${c} (known: ${CLIENTS.join(", ")})`);
  for (const c of opts.cases) if (!CASES.includes(c)) die(`unknown case ${c} (known: ${CASES.join(", ")})`);
  return opts;
}

function die(msg) {
  console.error(`browser tests: ${msg}`);
  process.exit(2);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function withTimeout(promise, ms, what) {
  let timer;
  try {
    return await Promise.race([
      promise,
      new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`${what}: timed out after ${ms} ms`)), ms); }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

// Keeps the last `max` lines written by a child process.
class LogTail {
  constructor(max = 200) { this.max = max; this.lines = []; this.partial = ""; }
  push(chunk) {
    const parts = (this.partial + chunk.toString("utf8")).split("\n");
    this.partial = parts.pop();
    for (const l of parts) {
      this.lines.push(l);
      if (this.lines.length > this.max) this.lines.shift();
    }
  }
  tail(n) { return [...this.lines, ...(this.partial ? [this.partial] : [])].slice(-n); }
}

// A loopback port that was free a moment ago and not handed out before in this run: a gateway's listener and
// admin ports are picked before either is bound, and Portico's listeners use SO_REUSEPORT.
const handedOut = new Set();
function probePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.unref();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}
async function freePort() {
  for (let i = 0; i < 100; i++) {
    const port = await probePort();
    if (!handedOut.has(port)) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error("freePort: no new ephemeral port in 100 tries");
}

// GET over http or https (https: verified against `ca`, which also proves the test certificate is
// valid for 127.0.0.1).
function httpGet(url, timeoutMs = 1000, ca = undefined) {
  return new Promise((resolve, reject) => {
    const mod = url.startsWith("https:") ? https : http;
    const req = mod.get(url, { timeout: timeoutMs, ...(ca ? { ca } : {}) }, (res) => {
      let body = "";
      res.on("data", (d) => { body += d; });
      res.on("end", () => resolve({ status: res.statusCode, body }));
    });
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", reject);
  });
}

// A request to the gateway's admin API; resolves to { status, body (parsed JSON) }.
function adminRequest(port, method, pathname, body = "") {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port, method, path: pathname, timeout: 10000,
      headers: { "content-type": "text/plain", "content-length": Buffer.byteLength(body) } }, (res) => {
      let text = "";
      res.on("data", (d) => { text += d; });
      res.on("end", () => {
        try { resolve({ status: res.statusCode, body: JSON.parse(text) }); } catch (e) { reject(new Error(`admin API: ${text}`)); }
      });
    });
    req.on("timeout", () => req.destroy(new Error("admin API: timeout")));
    req.on("error", reject);
    req.end(body);
  });
}

// Children, stopped by PID at exit (SIGTERM, then SIGKILL).
const children = [];

function startChild(name, cmd, args, opts = {}) {
  const log = new LogTail(opts.logLines || 300);
  const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"], ...opts.spawn });
  const entry = { name, child, log, exited: false, code: null };
  child.on("exit", (code, signal) => { entry.exited = true; entry.code = code ?? signal; });
  child.on("error", (e) => { entry.exited = true; entry.code = e.message; log.push(`spawn error: ${e.message}\n`); });
  child.stderr.on("data", (d) => log.push(d));
  if (!opts.ownStdout) child.stdout.on("data", (d) => log.push(d));
  children.push(entry);
  return entry;
}

async function stopChild(entry, graceMs = 5000) {
  if (!entry || entry.exited || entry.child.pid === undefined) return;
  try { process.kill(entry.child.pid, "SIGTERM"); } catch { return; }
  const t0 = Date.now();
  while (!entry.exited && Date.now() - t0 < graceMs) await sleep(50);
  if (!entry.exited) {
    try { process.kill(entry.child.pid, "SIGKILL"); } catch { /* gone */ }
    while (!entry.exited && Date.now() - t0 < graceMs + 2000) await sleep(50);
  }
}

// ------------------------------------------------------------------------------------------------
// the schema, from the Python definitions (one source of truth for page and runner)

function echoDescriptorSet() {
  return new Promise((resolve, reject) => {
    const p = spawn(PYTHON, [path.join(REPO, "tests/upstream/echo_pb.py")], { stdio: ["ignore", "pipe", "pipe"] });
    const out = [];
    let err = "";
    p.stdout.on("data", (d) => out.push(d));
    p.stderr.on("data", (d) => { err += d; });
    p.on("error", reject);
    p.on("exit", (code) => {
      if (code === 0) resolve(Buffer.concat(out));
      else reject(new Error(`echo_pb.py exited ${code}: ${err}`));
    });
  });
}

async function loadSchema(fdsBytes) {
  const pb = await import("@bufbuild/protobuf");
  const { FileDescriptorSetSchema } = await import("@bufbuild/protobuf/wkt");
  const registry = pb.createFileRegistry(pb.fromBinary(FileDescriptorSetSchema, new Uint8Array(fdsBytes)));
  return {
    encodeCancelQuery: (id) => pb.toBinary(registry.getMessage("portico.test.CancelQuery"),
      pb.create(registry.getMessage("portico.test.CancelQuery"), { id })),
    decodeCancelInfo: (bytes) => pb.fromBinary(registry.getMessage("portico.test.CancelInfo"), bytes),
  };
}

async function buildBundle(outDir, fdsBytes) {
  const esbuild = await import("esbuild");
  fs.mkdirSync(outDir, { recursive: true });
  await esbuild.build({
    entryPoints: [path.join(HERE, "src/page.js")],
    bundle: true,
    format: "iife",
    platform: "browser",
    target: "chrome110",
    outfile: path.join(outDir, "bundle.js"),
    logLevel: "warning",
    define: { __ECHO_FDS_B64__: JSON.stringify(fdsBytes.toString("base64")) },
  });
  fs.writeFileSync(path.join(outDir, "index.html"),
    "<!doctype html>\n<meta charset=\"utf-8\">\n<title>portico browser tests</title>\n"
    + "<script src=\"bundle.js\"></script>\n<p>portico browser test page</p>\n");
}

// ------------------------------------------------------------------------------------------------
// test PKI, as tests/integration/certs.py makes it: a CA and a server certificate for
// localhost / 127.0.0.1 (P-256 keys, valid two days), with the openssl CLI.

function openssl(args) {
  const r = spawnSync("openssl", args, { encoding: "utf8" });
  if (r.error) throw new Error(`openssl CLI: ${r.error.message} (apt-get install openssl)`);
  if (r.status !== 0) throw new Error(`openssl ${args.join(" ")} failed (${r.status}):\n${r.stderr}`);
  return r.stdout;
}

function makeTestPki(dir) {
  fs.mkdirSync(dir, { recursive: true });
  const f = (name) => path.join(dir, name);
  const keygen = (file) => openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", file]);
  keygen(f("ca.key"));
  openssl(["req", "-x509", "-new", "-key", f("ca.key"), "-out", f("ca.pem"), "-subj", "/CN=Portico Browser Test CA",
    "-days", "2", "-addext", "basicConstraints=critical,CA:TRUE",
    "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-addext", "subjectKeyIdentifier=hash"]);
  keygen(f("server.key"));
  openssl(["req", "-new", "-key", f("server.key"), "-out", f("server.csr"), "-subj", "/CN=localhost"]);
  fs.writeFileSync(f("server.ext"), [
    "basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature", "extendedKeyUsage=serverAuth",
    "authorityKeyIdentifier=keyid", "subjectAltName=DNS:localhost,IP:127.0.0.1", ""].join("\n"));
  openssl(["x509", "-req", "-in", f("server.csr"), "-CA", f("ca.pem"), "-CAkey", f("ca.key"), "-out", f("server.pem"),
    "-set_serial", "1000", "-days", "2", "-extfile", f("server.ext")]);
  // What --ignore-certificate-errors-spki-list wants: base64(sha256(DER SubjectPublicKeyInfo)).
  const spkiDer = crypto.createPublicKey(fs.readFileSync(f("server.key"))).export({ type: "spki", format: "der" });
  return {
    caFile: f("ca.pem"), certFile: f("server.pem"), keyFile: f("server.key"),
    ca: fs.readFileSync(f("ca.pem")),
    spki: crypto.createHash("sha256").update(spkiDer).digest("base64"),
  };
}

// ------------------------------------------------------------------------------------------------
// servers

function startStaticServer(dir) {
  const files = {
    "/": ["index.html", "text/html; charset=utf-8"],
    "/index.html": ["index.html", "text/html; charset=utf-8"],
    "/bundle.js": ["bundle.js", "text/javascript; charset=utf-8"],
  };
  const server = http.createServer((req, res) => {
    const pathname = new URL(req.url, "http://x").pathname;
    if (pathname === "/favicon.ico") {
      res.writeHead(204);
      res.end();
      return;
    }
    const f = files[pathname];
    if (!f || (req.method !== "GET" && req.method !== "HEAD")) {
      res.writeHead(404, { "content-type": "text/plain" });
      res.end("not found\n");
      return;
    }
    const body = fs.readFileSync(path.join(dir, f[0]));
    res.writeHead(200, { "content-type": f[1], "content-length": body.length, "cache-control": "no-store" });
    res.end(req.method === "HEAD" ? undefined : body);
  });
  return new Promise((resolve, reject) => {
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => resolve({ server, origin: `http://127.0.0.1:${server.address().port}` }));
  });
}

async function startEcho() {
  const entry = startChild("echo_server", PYTHON, [path.join(REPO, "tests/upstream/echo_server.py"), "--port", "0"],
    { ownStdout: true });
  let buf = "";
  const port = await withTimeout(new Promise((resolve, reject) => {
    entry.child.stdout.on("data", (d) => {
      buf += d;
      const m = /^PORT (\d+)$/m.exec(buf);
      if (m) resolve(Number(m[1]));
    });
    entry.child.on("exit", () => reject(new Error(`echo server exited: ${entry.log.tail(20).join("\n")}`)));
  }), 15000, "echo server start");
  entry.port = port;
  return entry;
}

// The plain gateway (pki undefined): HTTP/1.1 on http://127.0.0.1:port. The HTTPS one (pki given):
// --tls-cert/--tls-key on its --listen address and gzip compression on.
async function startPortico(echoPort, allowedOrigin, tmp, pki = undefined, jwksFile = undefined) {
  if (!fs.existsSync(PORTICO_BIN)) throw new Error(`${PORTICO_BIN} not found (run make, or set PORTICO_BIN)`);
  const name = pki ? "portico-tls" : "portico";
  const configFile = path.join(tmp, `${name}.yaml`);
  const configText = corsConfigYaml(allowedOrigin, { gzip: !!pki, jwksFile });
  fs.writeFileSync(configFile, configText);
  const scheme = pki ? "https" : "http";
  let lastError = "";
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    const adminPort = pki ? undefined : await freePort();
    const args = [
      "--config", configFile,
      "--listen", `127.0.0.1:${port}`,
      ...(adminPort ? ["--admin", `127.0.0.1:${adminPort}`] : []),
      ...(pki ? ["--tls-cert", pki.certFile, "--tls-key", pki.keyFile] : []),
      "--upstream", `127.0.0.1:${echoPort}`,
      "--workers", "1",
      "--allow-origin", allowedOrigin,
    ];
    const entry = startChild(name, PORTICO_BIN, args, { logLines: 2000 });
    entry.port = port;
    entry.adminPort = adminPort;
    entry.args = args;
    entry.configFile = configFile;
    entry.origin = `${scheme}://127.0.0.1:${port}`;
    const t0 = Date.now();
    while (Date.now() - t0 < 10000) {
      if (entry.exited) break;
      try {
        const r = await httpGet(`${entry.origin}/healthz`, 500, pki && pki.ca);
        if (r.status === 200) return entry;
        lastError = `/healthz answered ${r.status}`;
      } catch (e) { lastError = e.message; }
      await sleep(100);
    }
    const why = entry.exited ? `exited (${entry.code})` : `no /healthz answer in 10 s (last: ${lastError})`;
    const bindFailure = entry.log.tail(50).some((l) => /address already in use|EADDRINUSE|bind/i.test(l));
    await stopChild(entry);
    if (!bindFailure || attempt === 2) {
      throw new Error(`${name} ${why}\n  command: ${PORTICO_BIN} ${args.join(" ")}\n  config:\n`
        + configText.replace(/^/gm, "    ")
        + `\n  log:\n${entry.log.tail(40).map((l) => `    ${l}`).join("\n")}`);
    }
  }
  throw new Error("unreachable");
}

async function startChromium(tmp, extraFlags = []) {
  const userDataDir = fs.mkdtempSync(path.join(tmp, "chromium-profile-"));
  const args = [...CHROMIUM_FLAGS, ...extraFlags, `--user-data-dir=${userDataDir}`, "--remote-debugging-port=0",
    "--remote-debugging-address=127.0.0.1", "about:blank"];
  const entry = startChild("chromium", CHROMIUM, args, { logLines: 300 });
  let buf = "";
  const ws = await withTimeout(new Promise((resolve, reject) => {
    entry.child.stderr.on("data", (d) => {
      buf += d;
      const m = /DevTools listening on (ws:\/\/\S+)/.exec(buf);
      if (m) resolve(m[1]);
    });
    entry.child.on("exit", () => reject(new Error(`chromium exited: ${entry.log.tail(20).join("\n")}`)));
  }), 30000, "chromium start");
  const { chromium } = await import("playwright-core");
  const browser = await chromium.connectOverCDP(ws);
  entry.browser = browser;
  entry.flags = extraFlags;
  return entry;
}

// Closes Chromium through CDP (Browser.close lets it reap its helper processes; a bare SIGTERM
// leaves them to init, zombies in a container whose PID 1 does not reap), then stops it by PID.
async function stopChromium(entry) {
  if (!entry) return;
  if (entry.browser) {
    try {
      const s = await entry.browser.newBrowserCDPSession();
      await withTimeout(s.send("Browser.close").catch(() => {}), 3000, "Browser.close");
    } catch { /* fall back to SIGTERM below */ }
    const t0 = Date.now();
    while (!entry.exited && Date.now() - t0 < 5000) await sleep(50);
    await entry.browser.close().catch(() => {});
  }
  await stopChild(entry);
}

// Does Chromium accept the HTTPS gateway's certificate? A top-level navigation to its /healthz.
async function probeTls(browser, origin) {
  const context = await browser.newContext();
  try {
    const page = await context.newPage();
    const resp = await page.goto(`${origin}/healthz`, { timeout: 10000 });
    const status = resp ? resp.status() : null;
    return { ok: status === 200, detail: `GET /healthz → ${status}` };
  } catch (e) {
    return { ok: false, detail: e.message.split("\n")[0] };
  } finally {
    await context.close().catch(() => {});
  }
}

// Chromium that trusts the HTTPS gateway: by the server key's SPKI hash (certificate verification
// stays on for everything else), or, if this Chromium ignores that flag, --ignore-certificate-errors.
async function startTrustingChromium(tmp, tls) {
  const spkiFlag = `--ignore-certificate-errors-spki-list=${tls.pki.spki}`;
  const mode = process.env.BROWSER_TLS_TRUST || "spki";
  if (mode !== "spki" && mode !== "all") die(`BROWSER_TLS_TRUST=${mode}: spki or all`);
  if (mode === "spki") {
    const entry = await startChromium(tmp, [spkiFlag]);
    const probe = await probeTls(entry.browser, tls.origin);
    if (probe.ok) return { entry, trust: `${spkiFlag.split("=")[0]}=${tls.pki.spki}` };
    console.log(`browser tests: Chromium refused ${tls.origin} with ${spkiFlag.split("=")[0]} (${probe.detail}); `
      + "retrying with --ignore-certificate-errors");
    await stopChromium(entry);
  }
  const entry = await startChromium(tmp, ["--ignore-certificate-errors"]);
  const probe = await probeTls(entry.browser, tls.origin);
  if (!probe.ok) {
    await stopChromium(entry);
    throw new Error(`Chromium cannot load ${tls.origin}/healthz even with --ignore-certificate-errors: ${probe.detail}`);
  }
  return { entry, trust: "--ignore-certificate-errors" };
}

// CancelStatus straight to the echo server over h2c (not through the gateway).
function cancelStatus(schema, echoPort, id) {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`http://127.0.0.1:${echoPort}`);
    session.on("error", reject);
    const msg = schema.encodeCancelQuery(id);
    const frame = Buffer.alloc(5 + msg.length);
    frame.writeUInt32BE(msg.length, 1);
    Buffer.from(msg).copy(frame, 5);
    const req = session.request({
      ":method": "POST", ":path": "/portico.test.Echo/CancelStatus",
      "content-type": "application/grpc", te: "trailers",
    });
    const chunks = [];
    let status = null;
    req.on("response", (h) => { if (h["grpc-status"] !== undefined) status = h["grpc-status"]; });
    req.on("trailers", (t) => { status = t["grpc-status"]; });
    req.on("data", (d) => chunks.push(d));
    req.on("end", () => {
      session.close();
      const body = Buffer.concat(chunks);
      if (status !== "0" || body.length < 5) {
        reject(new Error(`CancelStatus failed: grpc-status ${status}, ${body.length} bytes`));
        return;
      }
      resolve(schema.decodeCancelInfo(new Uint8Array(body.subarray(5, 5 + body.readUInt32BE(1)))));
    });
    req.on("error", reject);
    req.setTimeout(3000, () => req.close(http2.constants.NGHTTP2_CANCEL));
    req.end(frame);
  });
}

// ------------------------------------------------------------------------------------------------
// running one cell

// Records every request of a page at the network level through CDP, preflights included
// (playwright's own request events deliberately hide CORS preflights). Times (tSent, tResponse =
// response head, tFirstData, tEnd = loadingFinished/Failed) are CDP monotonic seconds;
// decodedBytes / encodedBytes sum Network.dataReceived, encodedDataLength is loadingFinished's.
// WebSockets are recorded apart (`sockets`): URL, handshake request headers and response status,
// frames sent and received (count, the first sent one, i.e. the header block, as text, control
// bytes), errors, close.
async function watchNetwork(context, page) {
  const requests = new Map();
  const sockets = new Map();
  const sock = (id) => {
    if (!sockets.has(id)) sockets.set(id, { framesSent: 0, framesReceived: 0, controlBytes: [], errors: [] });
    return sockets.get(id);
  };
  const cdp = await context.newCDPSession(page);
  const upd = (id, fields) => requests.set(id, { ...(requests.get(id) || {}), ...fields });
  cdp.on("Network.requestWillBeSent", (e) => {
    upd(e.requestId, { method: e.request.method, url: e.request.url, type: e.type, headers: e.request.headers, tSent: e.timestamp });
  });
  cdp.on("Network.requestWillBeSentExtraInfo", (e) => upd(e.requestId, { wireHeaders: e.headers }));
  cdp.on("Network.responseReceived", (e) => {
    const r = requests.get(e.requestId) || {};
    upd(e.requestId, {
      status: e.response.status, type: r.type || e.type, responseHeaders: e.response.headers,
      protocol: e.response.protocol, connectionId: e.response.connectionId, tResponse: e.timestamp,
      ...(e.response.fromDiskCache || e.response.fromMemoryCache ? { fromCache: true } : {}),
    });
  });
  cdp.on("Network.responseReceivedExtraInfo", (e) => upd(e.requestId, { wireResponseHeaders: e.headers }));
  cdp.on("Network.dataReceived", (e) => {
    const r = requests.get(e.requestId) || {};
    upd(e.requestId, {
      tFirstData: r.tFirstData ?? e.timestamp,
      decodedBytes: (r.decodedBytes || 0) + e.dataLength,
      encodedBytes: (r.encodedBytes || 0) + e.encodedDataLength,
    });
  });
  cdp.on("Network.requestServedFromCache", (e) => upd(e.requestId, { fromCache: true }));
  cdp.on("Network.loadingFinished", (e) => upd(e.requestId, { tEnd: e.timestamp, encodedDataLength: e.encodedDataLength }));
  cdp.on("Network.loadingFailed", (e) => {
    upd(e.requestId, { failed: e.errorText, corsError: e.corsErrorStatus && e.corsErrorStatus.corsError, tEnd: e.timestamp });
  });
  cdp.on("Network.webSocketCreated", (e) => { sock(e.requestId).url = e.url; });
  cdp.on("Network.webSocketWillSendHandshakeRequest", (e) => {
    Object.assign(sock(e.requestId), { handshakeHeaders: e.request.headers, tSent: e.timestamp });
  });
  cdp.on("Network.webSocketHandshakeResponseReceived", (e) => {
    Object.assign(sock(e.requestId), {
      status: e.response.status, responseHeaders: e.response.headers, tResponse: e.timestamp,
    });
  });
  cdp.on("Network.webSocketFrameSent", (e) => {
    const w = sock(e.requestId);
    const bytes = e.response.opcode === 2 ? Buffer.from(e.response.payloadData, "base64") : Buffer.from(e.response.payloadData || "");
    if (w.framesSent === 0) w.headerBlock = bytes.toString("latin1");
    else if (bytes.length) w.controlBytes.push(bytes[0]);
    w.framesSent++;
  });
  cdp.on("Network.webSocketFrameReceived", (e) => { sock(e.requestId).framesReceived++; });
  cdp.on("Network.webSocketFrameError", (e) => {
    const w = sock(e.requestId);
    w.errors.push(e.errorMessage);
    // a refused handshake gets no webSocketHandshakeResponseReceived, only this error
    const m = /Unexpected response code: (\d+)/.exec(e.errorMessage || "");
    if (m && w.status === undefined) w.status = Number(m[1]);
  });
  cdp.on("Network.webSocketClosed", (e) => { sock(e.requestId).tClosed = e.timestamp; });
  await cdp.send("Network.enable");
  return { list: () => [...requests.values()], sockets: () => [...sockets.values()], cdp };
}

function headerValue(headers, name) {
  for (const [k, v] of Object.entries(headers || {})) if (k.toLowerCase() === name) return v;
  return undefined;
}

function toGateway(reqs, gatewayOrigin) {
  return reqs.filter((r) => r.url && r.url.startsWith(gatewayOrigin));
}

// The gateway's WebSockets: http://h:p → ws://h:p, https → wss.
function socketsToGateway(sockets, gatewayOrigin) {
  const wsOrigin = gatewayOrigin.replace(/^http/, "ws");
  return sockets.filter((w) => w.url && w.url.startsWith(wsOrigin));
}

async function runCell(env, client, caseName) {
  const { browser, allowedOrigin, deniedOrigin } = env;
  const spec = caseSpec(caseName);
  const gatewayOrigin = env.gateways[spec.leg];
  if (!gatewayOrigin) return { pass: false, reason: `no ${spec.leg} gateway` };
  const na = notApplicable(client, caseName);
  if (na) return { pass: "n/a", reason: na };
  const timing = {};
  let tMark = Date.now();
  const lap = (name) => { const now = Date.now(); timing[name] = now - tMark; tMark = now; };
  const context = await browser.newContext();
  lap("context");
  const consoleLines = [];
  try {
    const params = {};
    if (caseName === "credentials") {
      params.cookie = `portico_test=c${Math.random().toString(36).slice(2, 10)}`;
      const [name, value] = params.cookie.split("=");
      await context.addCookies([{ name, value, url: `${gatewayOrigin}/` }]);
    }
    const page = await context.newPage();
    page.on("console", (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
    page.on("pageerror", (e) => consoleLines.push(`pageerror: ${e.message}`));
    const net = await watchNetwork(context, page);
    const origin = caseName === "disallowed_origin" ? deniedOrigin : caseName === "live_origin" ? env.liveOrigin : allowedOrigin;
    lap("page");
    await page.goto(`${origin}/index.html`);
    await page.waitForFunction(() => window.porticoReady === true, null, { timeout: 10000 });
    lap("load");
    if (spec.page === "concurrent_streams") params.streams = CONCURRENT_STREAMS;
    if (WS_CLIENTS.has(client) && (spec.warmUp || (spec.page === "concurrent_streams" && spec.leg === "tls"))) params.warmUp = true;
    if (caseName === "jwt") Object.assign(params, env.jwtTokens);
    if (caseName === "h2_request_stream") params.probeGateway = env.gateways.plain;
    const evaluate = (name) => withTimeout(
      page.evaluate(([c, n, g, p]) => window.runCase(c, n, g, p), [client, name, gatewayOrigin, params]),
      CASE_TIMEOUT_MS, `${client}/${name}`);

    if (caseName === "live_origin") return await liveOrigin(env, evaluate, consoleLines);
    const result = await evaluate(spec.page);
    lap("case");
    const marks = { beforeControl: net.list().length };
    if (caseName === "suppress_preflight" && result.pass !== "n/a" && result.pass !== false) {
      marks.beforeControl = net.list().length;
      result.control = await evaluate("preflight_control");
    }
    await sleep(100); // let the last CDP events arrive
    const reqs = net.list();
    result.requests = toGateway(reqs, gatewayOrigin).map((r) => ({
      method: r.method, url: r.url.slice(gatewayOrigin.length), type: r.type, status: r.status, protocol: r.protocol,
      failed: r.failed, corsError: r.corsError, headers: r.wireHeaders || r.headers, responseHeaders: r.responseHeaders,
      fromCache: r.fromCache,
    }));
    result.sockets = socketsToGateway(net.sockets(), gatewayOrigin).map((w) => ({
      url: w.url.slice(gatewayOrigin.length - 2), status: w.status, framesSent: w.framesSent, framesReceived: w.framesReceived,
      headerBlock: w.headerBlock, controlBytes: w.controlBytes.join(","), errors: w.errors,
      handshakeHeaders: w.handshakeHeaders, responseHeaders: w.responseHeaders,
    }));
    await finishCheck({ ...env, gatewayOrigin, spec }, client, caseName, result, reqs, marks, consoleLines);
    lap("check");
    result.console = consoleLines;
    result.timing = timing;
    return result;
  } catch (e) {
    return { pass: false, reason: e.message.split("\n")[0], console: consoleLines };
  } finally {
    await context.close().catch(() => {});
  }
}

// The page on origin L: refused, then L is allowed through the admin API and the same page (no
// reload, same browser context) calls again, then L is removed again and refused again.
async function liveOrigin(env, evaluate, consoleLines) {
  const enc = encodeURIComponent(env.liveOrigin);
  const before = await evaluate("disallowed_origin");
  if (before.pass === false) return { ...before, reason: `before the API change: ${before.reason}` };
  const add = await adminRequest(env.adminPort, "POST", "/config/cors/origins", env.liveOrigin);
  if (add.status !== 200 || !add.body.changed) return { pass: false, reason: `admin API add: ${add.status} ${JSON.stringify(add.body)}` };
  const after = await evaluate("unary");
  const del = await adminRequest(env.adminPort, "DELETE", `/config/cors/origins/${enc}`);
  if (del.status !== 200) return { pass: false, reason: `admin API remove: ${del.status} ${JSON.stringify(del.body)}` };
  if (after.pass !== true) return { ...after, pass: false, reason: `after the API added the origin: ${after.reason}`, console: consoleLines };
  const again = await evaluate("disallowed_origin");
  if (again.pass === false) return { ...again, reason: `after the API removed the origin: ${again.reason}` };
  return { pass: true, note: `refused, allowed by version ${add.body.version}, refused by version ${del.body.version}`, call: after.call };
}

// Checks the page cannot make on its own.
async function finishCheck(env, client, caseName, result, reqs, marks, consoleLines) {
  const fail = (why) => { result.pass = false; result.reason = why; };
  const gw = (list) => toGateway(list, env.gatewayOrigin);
  const { spec } = env;
  const ws = WS_CLIENTS.has(client);
  // A WebSocket client must really have used WebSockets: no POST to the gateway, and every
  // handshake answered 101 (HTTP/1.1 upgrade), or 200 on the HTTPS gateway (RFC 8441 extended
  // CONNECT over h2, which Chromium uses when it already has an h2 connection to the origin); 403
  // from the disallowed origin.
  if (ws && result.pass !== false && result.pass !== "n/a") {
    const posts = gw(reqs).filter((r) => r.method === "POST");
    const sockets = result.sockets || [];
    const want = caseName === "disallowed_origin" ? [403] : spec.leg === "tls" ? [101, 200] : [101];
    if (posts.length) return fail(`${posts.length} POST(s) to the gateway from a WebSocket client`);
    if (!sockets.length) return fail("no WebSocket to the gateway seen on the network");
    const other = sockets.filter((w) => !want.includes(w.status));
    if (other.length) return fail(`WebSocket handshake answered ${other.map((w) => w.status ?? "nothing").join(", ")}, expected ${want.join(" or ")}`);
    if (spec.wsProtocol === "h2" && sockets.some((w) => w.status !== 200)) {
      return fail(`WebSocket(s) not over h2 although the page had an h2 connection: status ${sockets.map((w) => w.status).join(", ")} (200 = extended CONNECT)`);
    }
    if (spec.leg === "tls" && result.pass === true) {
      const h2 = sockets.filter((w) => w.status === 200).length;
      result.note = [result.note, `wss: ${sockets.length - h2} over HTTP/1.1 (101), ${h2} over h2 (extended CONNECT, 200)`].filter(Boolean).join("; ");
    }
  }
  // Every call to the HTTPS gateway must have gone over HTTP/2 (ALPN h2); a WebSocket client's
  // over wss (checked above).
  // (calls: POSTs, and the Connect GETs of connect-get, which carry a query)
  if (spec.leg === "tls" && !ws && result.pass !== false && result.pass !== "n/a") {
    const posts = gw(reqs).filter((r) => r.method === "POST" || (r.method === "GET" && r.url.includes("?")));
    const notH2 = posts.filter((r) => r.protocol !== "h2");
    if (!posts.length) return fail("no call to the HTTPS gateway seen on the network");
    if (notH2.length) {
      return fail(`${notH2.length} of ${posts.length} POSTs not over h2: ${notH2.map((r) => `${r.url.slice(env.gatewayOrigin.length)} protocol=${r.protocol}${r.failed ? ` (${r.failed})` : ""}`).join(", ")}`);
    }
  }
  // connect-get must really have used GET for Unary (useHttpGet, the method marked NO_SIDE_EFFECTS)
  if (client === "connect-get" && spec.page === "unary" && result.pass === true) {
    const unary = gw(reqs).filter((r) => r.url.includes("/portico.test.Echo/Unary"));
    if (!unary.length || unary.some((r) => r.method !== "GET" && r.method !== "OPTIONS")) {
      return fail(`Unary not called with GET: ${unary.map((r) => r.method).join(", ") || "no request seen"}`);
    }
    result.note = [result.note, "GET"].filter(Boolean).join("; ");
  }
  if (result.pass !== null) return;
  if (spec.page === "concurrent_streams" && ws) {
    checkConcurrentSockets(env, result);
  } else if (spec.page === "concurrent_streams") {
    checkConcurrentStreams(env, client, result, gw(reqs));
  } else if (spec.page === "gzip") {
    checkGzip(result, gw(reqs), env.gatewayOrigin);
  } else if (caseName === "cancel" || caseName === "bidi_cancel") {
    let info;
    const t0 = Date.now();
    do {
      await sleep(100);
      info = await env.cancelStatus(result.id);
    } while (!info.cancelled && Date.now() - t0 < 5000);
    result.upstream = { seen: info.seen, cancelled: info.cancelled, finished: info.finished };
    if (!info.cancelled) result.logs = env.recentLogs(30).filter((l) => /ServerStream|Bidi|cancel|went away|closed/i.test(l));
    if (!info.seen) return fail("upstream never saw the call");
    if (info.finished) return fail("upstream call ran to completion: cancel did not reach it");
    if (!info.cancelled) return fail("upstream call not cancelled 5 s after the client cancelled");
    result.pass = true;
  } else if (caseName === "disallowed_origin") {
    await sleep(300);
    const info = await env.cancelStatus(result.id);
    result.upstream = { seen: info.seen };
    if (info.seen) return fail("the call reached the upstream although the origin is not allowed");
    if (ws) {
      // no CORS for WebSockets: the gateway checks the handshake's Origin itself and answers 403
      const refused = (result.sockets || []).filter((w) => w.status === 403);
      const consoleSaw = consoleLines.some((l) => /WebSocket connection to .* failed/i.test(l));
      result.refusalReported = { handshake403: refused.length, console: consoleSaw };
      if (!refused.length) return fail(`call failed (${result.call.code}) but no WebSocket handshake was refused with 403`);
      result.pass = true;
      result.note = `handshake refused with 403; the client saw ${JSON.stringify(result.call.message)}`;
      return;
    }
    const corsConsole = consoleLines.some((l) => /CORS policy|Access-Control-Allow-Origin/i.test(l));
    const corsNet = gw(reqs).some((r) => r.corsError);
    result.corsReported = { console: corsConsole, network: corsNet };
    if (!corsConsole && !corsNet) return fail(`call failed (${result.call.code}) but not at the CORS layer`);
    result.pass = true;
  } else if (caseName === "suppress_preflight") {
    const mine = gw(reqs.slice(0, marks.beforeControl));
    const control = gw(reqs.slice(marks.beforeControl));
    const options = mine.filter((r) => r.method === "OPTIONS" || r.type === "Preflight");
    const posts = mine.filter((r) => r.method === "POST");
    if (options.length) return fail(`a preflight was sent: ${options.map((r) => `${r.method} ${r.url}`).join(", ")}`);
    if (!posts.length) return fail("no POST seen on the network");
    if (!posts.some((r) => r.url.includes("httpHeaders"))) return fail(`POST without $httpHeaders: ${posts[0].url}`);
    if (!result.control || result.control.pass === false) {
      return fail(`control call (same client, preflight allowed) failed: ${result.control && result.control.reason}`);
    }
    if (!control.some((r) => r.method === "OPTIONS" || r.type === "Preflight")) {
      return fail("the preflight detector saw no OPTIONS for the control call: cannot judge");
    }
    result.pass = true;
  } else if (caseName === "get_cache") {
    const mine = gw(reqs);
    const options = mine.filter((r) => r.method === "OPTIONS" || r.type === "Preflight");
    const gets = mine.filter((r) => r.method === "GET" && r.url.includes("/Unary?"));
    const wire = gets.filter((r) => !r.fromCache);
    if (options.length) return fail(`a preflight was sent: ${options.map((r) => `${r.method} ${r.url}`).join(", ")}`);
    if (mine.some((r) => r.method === "POST")) return fail("a POST went to the gateway: the call was not a GET");
    if (wire.length !== 1) return fail(`expected one GET on the wire and one from the cache, got ${wire.length} on the wire of ${gets.length}`);
    result.pass = true;
    result.note = `no OPTIONS; 1 GET on the wire, ${gets.length - wire.length} answered from the browser cache`;
  } else {
    fail(`no runner check for ${caseName}`);
  }
}

// concurrent_streams: the page's measurements plus the network view. Over h2 (judged) all
// CONCURRENT_STREAMS responses must have started before the first stream finished, all over h2;
// over HTTP/1.1 (report only) the cell says "<started together>+<had to wait>".
function checkConcurrentStreams(env, client, result, reqs) {
  const { spec } = env;
  const n = CONCURRENT_STREAMS;
  const posts = reqs.filter((r) => r.method === "POST" && r.url.includes("/ServerStream"));
  const preflights = reqs.filter((r) => r.method === "OPTIONS" || r.type === "Preflight");
  const t0 = Math.min(...reqs.map((r) => r.tSent).filter((t) => t !== undefined));
  const rel = (t) => (t === undefined ? null : Math.round((t - t0) * 1000));
  const streams = posts.map((r) => ({
    protocol: r.protocol, connection: r.connectionId, sent: rel(r.tSent), response: rel(r.tResponse),
    firstData: rel(r.tFirstData), end: rel(r.tEnd), status: r.status, failed: r.failed,
  }));
  const ends = streams.map((x) => x.end).filter((v) => v !== null);
  const firstEnd = ends.length ? Math.min(...ends) : Infinity;
  const together = streams.filter((x) => x.response !== null && x.response < firstEnd).length;
  const count = (xs) => Object.entries(xs.reduce((m, x) => ({ ...m, [x]: (m[x] || 0) + 1 }), {}))
    .map(([k, v]) => `${k}×${v}`).join(" ");
  const protocols = count(streams.map((x) => x.protocol ?? "none"));
  const connections = new Set(streams.map((x) => x.connection).filter((c) => c !== undefined)).size;
  result.network = {
    protocols, connections, preflights: { count: preflights.length, protocols: count(preflights.map((r) => r.protocol ?? "none")) },
    firstEndMs: Number.isFinite(firstEnd) ? firstEnd : null, startedBeforeFirstEnd: together, streams,
  };
  const summaryText = `${protocols || "no POSTs"} on ${connections} connection(s): ${together} of ${n} responses `
    + `started before the first stream ended${Number.isFinite(firstEnd) ? ` (${firstEnd} ms)` : ""}, all done in ${result.totalMs} ms`
    + (result.lastFirstMs !== null ? `, last first-message at ${result.lastFirstMs} ms` : "");
  const problems = [...result.problems];
  if (posts.length !== n) problems.push(`${posts.length} ServerStream POSTs on the network, expected ${n}`);
  if (spec.reportOnly) {
    result.pass = "info";
    result.cell = `${together}+${n - together}`;
    result.note = `HTTP/1.1 contrast — ${summaryText}${problems.length ? `; ${problems.join("; ")}` : ""}`;
    if (posts.some((r) => r.protocol !== spec.protocol)) result.note += ` (expected ${spec.protocol})`;
    return;
  }
  const wrong = posts.filter((r) => r.protocol !== spec.protocol);
  if (wrong.length) problems.push(`protocol ${protocols}, expected ${spec.protocol} for all`);
  if (together < n) {
    problems.push(`only ${together} of ${n} responses started before the first stream ended at ${firstEnd} ms `
      + `(response heads at ${JSON.stringify(streams.map((x) => x.response))} ms)`);
  }
  if (problems.length) {
    result.pass = false;
    result.reason = `${problems.join("; ")} — ${summaryText}`;
    return;
  }
  result.pass = true;
  result.note = summaryText + (result.incremental ? "" : " (client delivers messages at the end; judged on the network view)");
}

// concurrent_streams for a WebSocket client: one WebSocket per call, so the page's own times tell
// how many streams ran together (first message before the first end). Over HTTP/1.1 (report) each is
// its own TCP connection; on the HTTPS gateway (judged) the page first opened an h2 connection, and
// every WebSocket must then be an extended CONNECT stream on it (RFC 8441: CDP shows 200, not 101).
function checkConcurrentSockets(env, result) {
  const n = CONCURRENT_STREAMS;
  const sockets = result.sockets || [];
  const firstEnd = result.firstEndMs;
  const together = result.streams.filter((x) => x.firstMs !== null && (firstEnd === null || x.firstMs <= firstEnd)).length;
  const over = (status) => sockets.filter((w) => w.status === status).length;
  const summaryText = `${sockets.length} WebSocket(s): ${over(101)} HTTP/1.1 upgrades, ${over(200)} h2 extended CONNECTs; `
    + `${together} of ${n} streams had their first message before the first stream ended${firstEnd !== null ? ` (${firstEnd} ms)` : ""}, `
    + `all done in ${result.totalMs} ms${result.lastFirstMs !== null ? `, last first-message at ${result.lastFirstMs} ms` : ""}`;
  if (env.spec.reportOnly) {
    result.pass = "info";
    result.cell = `${together}+${n - together}`;
    result.note = `WebSockets — ${summaryText}${result.problems.length ? `; ${result.problems.join("; ")}` : ""}`;
    return;
  }
  const problems = [...result.problems];
  if (sockets.length !== n) problems.push(`${sockets.length} WebSockets on the network, expected ${n}`);
  if (over(200) !== sockets.length) problems.push(`${sockets.length - over(200)} WebSocket(s) not over h2 (status ${sockets.map((w) => w.status).join(",")})`);
  if (together < n) problems.push(`only ${together} of ${n} streams started before the first one ended`);
  if (problems.length) {
    result.pass = false;
    result.reason = `${problems.join("; ")} — ${summaryText}`;
    return;
  }
  result.pass = true;
  result.note = `WebSockets over h2 (RFC 8441) — ${summaryText}`;
}

// gzip: both calls answered with content-encoding: gzip by the gateway, over h2, and fewer bytes
// on the wire than the client got.
function checkGzip(result, reqs, gatewayOrigin) {
  const fail = (why) => { result.pass = false; result.reason = why; };
  const posts = reqs.filter((r) => r.method === "POST");
  const wire = {};
  for (const [name, pathPart] of [["unary", "/Unary"], ["stream", "/ServerStream"]]) {
    const r = posts.find((q) => q.url.includes(pathPart));
    if (!r) return fail(`no ${pathPart} POST seen on the network`);
    wire[name] = {
      contentEncoding: headerValue(r.responseHeaders, "content-encoding") ?? null,
      acceptEncoding: headerValue(r.wireHeaders || r.headers, "accept-encoding") ?? null,
      encodedDataLength: r.encodedDataLength ?? null, decodedBytes: r.decodedBytes ?? null,
      protocol: r.protocol,
    };
  }
  result.wire = wire;
  for (const [name, w] of Object.entries(wire)) {
    if (w.contentEncoding !== "gzip") {
      return fail(`${name} response content-encoding ${JSON.stringify(w.contentEncoding)}, expected "gzip" `
        + `(request Accept-Encoding: ${JSON.stringify(w.acceptEncoding)}, response headers: ${JSON.stringify(posts.find((q) => q.url.includes(name === "unary" ? "/Unary" : "/ServerStream")).responseHeaders)})`);
    }
  }
  const u = wire.unary;
  if (u.encodedDataLength !== null && u.encodedDataLength > result.unaryBytes / 2) {
    return fail(`unary: ${u.encodedDataLength} bytes on the wire for a ${result.unaryBytes}-byte compressible message: not compressed?`);
  }
  result.pass = true;
  result.note = `content-encoding gzip on both; unary ${u.encodedDataLength ?? "?"} bytes on the wire for `
    + `${u.decodedBytes ?? "?"} decoded; stream arrivals ${JSON.stringify(result.streamArrivalsMs)} ms`
    + (result.note ? `; ${result.note}` : "");
}

// ------------------------------------------------------------------------------------------------
// report

function cell(result) {
  if (!result) return " ";
  if (result.pass === true) return "✓";
  if (result.pass === "n/a") return "–";
  if (result.pass === "info") return result.cell || "i";
  return "✗";
}

const rowLabel = (cs) => {
  const spec = caseSpec(cs);
  return spec.reportOnly ? `${cs} (report)` : cs;
};

function printTable(opts, results) {
  const w0 = Math.max(...opts.cases.map((c) => rowLabel(c).length), 4) + 2;
  const widths = opts.clients.map((c) => Math.max(c.length, 3) + 2);
  const pad = (s, w) => s + " ".repeat(Math.max(0, w - [...s].length));
  const lines = [pad("case", w0) + opts.clients.map((c, i) => pad(c, widths[i])).join("")];
  lines.push("-".repeat(lines[0].length));
  for (const cs of opts.cases) {
    if (caseSpec(cs).once) {
      const r = results.get(`${ONCE}/${cs}`);
      lines.push(pad(rowLabel(cs), w0) + (r ? `${cell(r)} (once, no client library: the page's own fetch())` : ""));
      continue;
    }
    lines.push(pad(rowLabel(cs), w0) + opts.clients.map((c, i) => pad(cell(results.get(`${c}/${cs}`)), widths[i])).join(""));
  }
  console.log(lines.join("\n"));
  const legs = new Set(opts.cases.map((c) => caseSpec(c).leg));
  const legend = ["✓ pass, ✗ fail, – not applicable"];
  if (legs.has("tls")) legend.push("https_*, h2_*, gzip: HTTPS gateway (TLS, ALPN h2, gzip on; the WebSocket clients: wss)");
  if (opts.cases.includes("h1_concurrent_streams")) {
    legend.push(`(report) not judged: k+m = k of ${CONCURRENT_STREAMS} streams started together over HTTP/1.1, m waited for a free connection`);
  }
  console.log(legend.join("; "));
}

function shorten(s, n = 220) {
  s = String(s || "").replace(/\s+/g, " ");
  return s.length > n ? `${s.slice(0, n)}…` : s;
}

// ------------------------------------------------------------------------------------------------

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  if (Number(process.versions.node.split(".")[0]) < 20) die(`node ${process.versions.node}: playwright-core needs node >= 20`);
  for (const m of ["playwright-core", "esbuild", "grpc-web", "@connectrpc/connect-web"]) {
    if (!fs.existsSync(path.join(HERE, "node_modules", m))) die(`node_modules/${m} missing: run scripts/install-deps (npm ci in tests/browser)`);
  }
  const fds = await echoDescriptorSet();
  if (opts.buildOnly) {
    const out = path.join(HERE, "dist");
    await buildBundle(out, fds);
    console.log(`bundle written to ${path.relative(REPO, out)}/`);
    return 0;
  }
  if (!fs.existsSync(CHROMIUM)) die(`${CHROMIUM} not found: apt-get install chromium (scripts/install-deps)`);

  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "portico-browser-"));
  const servers = [];
  let chromiumEntry;
  let failed = 0;
  let passed = 0;
  let skipped = 0;
  let reported = 0;
  const gatewayProcs = [];
  const cleanup = async () => {
    await stopChromium(chromiumEntry);
    for (const e of [...children].reverse()) await stopChild(e);
    for (const s of servers) s.close();
    fs.rmSync(tmp, { recursive: true, force: true });
  };
  const onSignal = (sig) => { cleanup().finally(() => process.exit(sig === "SIGINT" ? 130 : 143)); };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);

  try {
    const dist = path.join(tmp, "dist");
    await buildBundle(dist, fds);
    const schema = await loadSchema(fds);
    const echo = await startEcho();
    const allowed = await startStaticServer(dist);
    const denied = await startStaticServer(dist);
    const live = await startStaticServer(dist);
    servers.push(allowed.server, denied.server, live.server);
    const jwt = makeJwt(tmp);
    const portico = await startPortico(echo.port, allowed.origin, tmp, undefined, jwt.jwksFile);
    gatewayProcs.push(portico);
    const gateways = { plain: portico.origin };
    let trust = null;
    if (opts.cases.some((c) => caseSpec(c).leg === "tls")) {
      const pki = makeTestPki(path.join(tmp, "pki"));
      const tlsPortico = await startPortico(echo.port, allowed.origin, tmp, pki);
      gatewayProcs.push(tlsPortico);
      gateways.tls = tlsPortico.origin;
      const started = await startTrustingChromium(tmp, { pki, origin: tlsPortico.origin });
      chromiumEntry = started.entry;
      trust = started.trust;
    } else {
      chromiumEntry = await startChromium(tmp);
    }
    console.log(`browser tests: chromium ${chromiumEntry.browser.version()}, page ${allowed.origin} `
      + `(denied origin ${denied.origin}), portico ${gateways.plain}${gateways.tls ? ` and ${gateways.tls} (TLS h2, gzip)` : ""} `
      + `→ echo 127.0.0.1:${echo.port}${trust ? `; certificate trusted by ${trust}` : ""}`);

    const env = {
      browser: chromiumEntry.browser, gateways, allowedOrigin: allowed.origin, deniedOrigin: denied.origin,
      liveOrigin: live.origin, adminPort: portico.adminPort, jwtTokens: jwt.tokens,
      cancelStatus: (id) => cancelStatus(schema, echo.port, id),
      // what the processes logged lately, for a failure's own lines (the tails printed at the end are long past it)
      recentLogs: (n) => [...gatewayProcs.flatMap((g) => g.log.tail(n).map((l) => `${g.name} | ${l}`)),
        ...echo.log.tail(n).map((l) => `echo | ${l}`)],
    };
    const results = new Map();
    const runOne = async (client, cs) => {
      const t0 = Date.now();
      const r = await runCell(env, client, cs);
      r.ms = Date.now() - t0;
      results.set(`${client}/${cs}`, r);
      if (r.pass === true) passed++;
      else if (r.pass === "n/a") skipped++;
      else if (r.pass === "info") reported++;
      else failed++;
      const mark = cell(r);
      const ok = r.pass === true || r.pass === "info";
      console.log(`  ${mark} ${client} ${cs} (${r.ms} ms)${ok ? (r.note ? ` — ${r.note}` : "") : ` — ${shorten(r.reason, 600)}`}`);
      if (opts.verbose) console.log(JSON.stringify(r, null, 2).replace(/^/gm, "      "));
    };
    const gatewayDied = () => {
      const dead = gatewayProcs.filter((g) => g.exited);
      for (const g of dead) console.log(`${g.name} exited (${g.code}) during the run`);
      if (dead.length) failed++;
      return dead.length > 0;
    };
    const anyExited = () => gatewayProcs.some((g) => g.exited);
    // rows that are not per client run once, under the pseudo-client ONCE
    for (const cs of opts.cases.filter((c) => caseSpec(c).once)) {
      await runOne(ONCE, cs);
      if (anyExited()) break;
    }
    if (!gatewayDied()) {
      for (const client of opts.clients) {
        for (const cs of opts.cases.filter((c) => !caseSpec(c).once)) {
          await runOne(client, cs);
          if (anyExited()) break;
        }
        if (gatewayDied()) break;
      }
    }

    // Stop the gateways now (SIGTERM = drain, exit 0) so that an exit status or a sanitizer report
    // at shutdown (ASan/LSan/UBSan builds) counts as a failure.
    const gatewayTrouble = [];
    for (const g of gatewayProcs) {
      const wasRunning = !g.exited;
      await stopChild(g, 15000);
      const sanitizer = g.log.tail(2000).filter((l) => /ERROR: (Address|Leak)Sanitizer|runtime error:|SUMMARY: \w+Sanitizer/.test(l));
      if ((wasRunning && g.code !== 0) || sanitizer.length) {
        gatewayTrouble.push(`${g.name} exit status ${g.code}${sanitizer.length ? `; sanitizer: ${sanitizer.slice(0, 6).join(" | ")}` : ""}`);
      }
    }

    console.log("");
    printTable(opts, results);
    const contrast = [...results.entries()].filter(([k, r]) => /\/h[12]_concurrent_streams$/.test(k) && r.pass !== "n/a");
    if (contrast.length) {
      console.log(`\n${CONCURRENT_STREAMS} concurrent ServerStreams (10 × 200 ms each) from one page, HTTP/2 vs HTTP/1.1:`);
      for (const [k, r] of contrast) console.log(`  ${cell(r)} ${k}: ${shorten(r.pass === false ? r.reason : r.note, 400)}`);
    }
    const failures = [...results.entries()].filter(([, r]) => r.pass !== true && r.pass !== "n/a" && r.pass !== "info");
    if (failures.length) {
      console.log("\nfailures:");
      for (const [k, r] of failures) {
        console.log(`  ✗ ${k}: ${shorten(r.reason, 400)}`);
        if (r.call && !opts.verbose) console.log(`      call: ${shorten(JSON.stringify(r.call), 400)}`);
        const gw = (r.requests || []).map((q) => `${q.method} ${q.status ?? "-"}${q.corsError ? ` cors:${q.corsError}` : ""}${q.failed ? ` (${q.failed})` : ""}`);
        if (gw.length) console.log(`      network: ${gw.join(", ")}`);
        const ws = (r.sockets || []).map((w) => `WebSocket ${w.url} ${w.status ?? "-"} sent ${w.framesSent} received ${w.framesReceived}${w.errors.length ? ` (${w.errors.join("; ")})` : ""}`);
        if (ws.length) console.log(`      sockets: ${shorten(ws.join(", "), 400)}`);
        const cons = (r.console || []).filter((l) => !/^(log|debug):/.test(l));
        if (cons.length) console.log(`      console: ${shorten(cons.join(" | "), 400)}`);
        if (r.logs && r.logs.length) console.log(`      logs then:\n${r.logs.map((l) => `        ${shorten(l, 300)}`).join("\n")}`);
      }
    }
    if (gatewayTrouble.length) {
      console.log("\ngateway shutdown:");
      for (const t of gatewayTrouble) console.log(`  ✗ ${shorten(t, 800)}`);
      failed += gatewayTrouble.length;
    }
    if (failed) {
      for (const g of gatewayProcs) {
        console.log(`\n${g.name} (${PORTICO_BIN} ${g.args.join(" ")}) log tail:`);
        console.log(g.log.tail(60).map((l) => `  | ${l}`).join("\n"));
      }
      console.log("echo server log tail:");
      console.log(echo.log.tail(20).map((l) => `  | ${l}`).join("\n"));
    }
  } catch (e) {
    failed++;
    console.log(`browser tests: setup failed: ${e.message}`);
    for (const c of children) {
      if (c.name.startsWith("portico")) console.log(`${c.name} log tail:\n${c.log.tail(60).map((l) => `  | ${l}`).join("\n")}`);
    }
  } finally {
    await cleanup();
  }
  console.log(`\nbrowser: ${passed} passed, ${failed} failed, ${skipped} skipped${reported ? `, ${reported} reported` : ""}`);
  return failed ? 1 : 0;
}

main().then((code) => process.exit(code), (e) => {
  console.error(e);
  process.exit(1);
});
