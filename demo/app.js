// The demo page: Google's grpc-web client (text mode) calling portico.test.Echo through Portico.
// Bundled into demo/dist/app.js by demo/build.mjs. The messages are @bufbuild/protobuf descriptors
// built from the echo server's own schema (tests/browser/src/echo-schema.js); the method
// descriptors below are what protoc-gen-grpc-web would generate.
//
// Each panel's result element carries data-state (running | done) and, once done, data-code (the
// gRPC status code) for demo/check.mjs.
import * as grpcWeb from "grpc-web";
import { SERVICE_NAME, encodeRequest, decodeResponse } from "../tests/browser/src/echo-schema.js";

const GATEWAY = new URLSearchParams(location.search).get("gateway") || "http://127.0.0.1:8080";

const client = new grpcWeb.GrpcWebClientBase({ format: "text" });
const method = (name, type) => new grpcWeb.MethodDescriptor(
  `/${SERVICE_NAME}/${name}`, type, Object, Object, encodeRequest, decodeResponse);
const Unary = method("Unary", grpcWeb.MethodType.UNARY);
const ServerStream = method("ServerStream", grpcWeb.MethodType.SERVER_STREAMING);
const url = (m) => GATEWAY + m.getName();

const CODE_NAMES = Object.fromEntries(
  Object.entries(grpcWeb.StatusCode).filter(([, v]) => typeof v === "number").map(([k, v]) => [v, k]));

// ------------------------------------------------------------------------------------------------
// rendering

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else e.setAttribute(k, v);
  }
  e.append(...children.filter((c) => c !== null && c !== undefined));
  return e;
}

function statusBadge(code) {
  if (code === null) return el("span", { class: "status run" }, "running…");
  return el("span", { class: `status ${code === 0 ? "ok" : "err"}`, "data-role": "status" },
    `${code} ${CODE_NAMES[code] || ""}`.trim());
}

function table(caption, rows, highlight) {
  const t = el("table", {}, el("caption", {}, caption));
  if (!rows.length) t.append(el("tr", {}, el("td", {}, "(none)")));
  for (const [k, v] of rows) {
    t.append(el("tr", k === highlight ? { class: "hl", "data-key": k } : { "data-key": k },
      el("th", {}, k), el("td", { class: "mono" }, v)));
  }
  return t;
}

const sortedEntries = (md) => Object.entries(md || {}).sort(([a], [b]) => a.localeCompare(b));

function clock(date) {
  const p = (n, w = 2) => String(n).padStart(w, "0");
  return `${p(date.getHours())}:${p(date.getMinutes())}:${p(date.getSeconds())}.${p(date.getMilliseconds(), 3)}`;
}

// A panel: its button, its result element, and a helper to (re)draw the result.
function panel(id, run) {
  const form = document.getElementById(`${id}-form`);
  const button = document.getElementById(`${id}-run`);
  const result = document.getElementById(`${id}-result`);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    button.disabled = true;
    result.dataset.state = "running";
    delete result.dataset.code;
    const t0 = performance.now();
    const show = (code, ...body) => {
      const ms = Math.round(performance.now() - t0);
      result.replaceChildren(el("div", {}, statusBadge(code), el("span", { class: "elapsed" }, `${ms} ms`)), ...body);
    };
    try {
      const code = await run(show, t0);
      result.dataset.code = String(code);
    } catch (e) {
      result.replaceChildren(el("div", {}, el("span", { class: "status err" }, "page error"), ` ${e}`));
      result.dataset.code = "page-error";
    } finally {
      result.dataset.state = "done";
      button.disabled = false;
    }
  });
}

// ------------------------------------------------------------------------------------------------
// calls

// A unary call → {code, message, response, headers, trailers}. grpc-web hands the response
// headers to 'metadata', the trailers of a successful call to 'status', and on failure everything
// readable (headers of a trailers-only answer included) to err.metadata.
function unary(request, metadata = {}) {
  return new Promise((resolve) => {
    const out = { code: null, message: "", response: null, headers: {}, trailers: {} };
    const call = client.rpcCall(url(Unary), request, metadata, Unary, (err, response) => {
      if (err) {
        out.code = err.code;
        out.message = err.message;
        out.trailers = err.metadata || {};
      } else {
        out.code = 0;
        out.response = response;
      }
      setTimeout(() => resolve(out), 0);
    });
    call.on("metadata", (md) => { out.headers = md; });
    call.on("status", (st) => { if (st.code === 0) out.trailers = st.metadata || {}; });
  });
}

panel("unary", async (show) => {
  const message = document.getElementById("unary-message").value;
  show(null);
  const out = await unary({ message });
  if (out.code !== 0) {
    show(out.code, el("p", {}, out.message));
    return out.code;
  }
  show(0,
    el("p", {}, "Reply: ", el("strong", { "data-role": "reply" }, out.response.message)),
    table("Response headers", sortedEntries(out.headers)),
    table("Trailers", sortedEntries(out.trailers)));
  return 0;
});

panel("stream", (show, t0) => new Promise((resolve) => {
  const list = el("ol", { class: "stream" });
  let code = null;
  let message = "";
  show(null, list);
  const call = client.serverStreaming(url(ServerStream),
    { message: "tick", count: 10, intervalMs: 300 }, {}, ServerStream);
  call.on("data", (r) => {
    const t = (performance.now() - t0) / 1000;
    list.append(el("li", { "data-index": String(r.index) },
      el("span", { class: "t" }, `+${t.toFixed(3)} s`),
      el("span", { class: "clock" }, clock(new Date())),
      el("span", { class: "i" }, `#${r.index}`),
      el("span", {}, r.message)));
  });
  let finished = false;
  const finish = () => {
    if (finished) return;
    finished = true;
    show(code ?? 0, list, el("p", {}, code ? message : `${list.children.length} messages, then OK.`));
    resolve(code ?? 0);
  };
  call.on("status", (st) => { code = st.code; message = st.details; });
  call.on("error", (err) => {
    code = err.code;
    message = err.message;
    setTimeout(finish, 0); // 'status' may follow 'error'; no 'end' is promised after one
  });
  call.on("end", finish);
}));

panel("error", async (show) => {
  show(null);
  const out = await unary({ message: "boom", statusCode: 5, statusMessage: "no echo here ✗ (asked for by the demo)" });
  show(out.code,
    table("Status", [["code", `${out.code} ${CODE_NAMES[out.code] || ""}`], ["message", out.message],
      ["x-trailer-custom", out.trailers["x-trailer-custom"] ?? "(not readable)"]], "x-trailer-custom"),
    table("Trailers (a trailers-only answer: sent as HTTP headers)", sortedEntries(out.trailers)));
  return out.code;
});

panel("deadline", async (show) => {
  show(null);
  // grpc-web's deadline: the `deadline` metadata key, in ms since the epoch (→ grpc-timeout: 1000m).
  const out = await unary({ message: "slow", delayMs: 3000 }, { deadline: String(Date.now() + 1000) });
  show(out.code, table("Status", [["code", `${out.code} ${CODE_NAMES[out.code] || ""}`], ["message", out.message]]));
  return out.code;
});

document.getElementById("page-origin").textContent = location.origin;
document.getElementById("gateway").textContent = GATEWAY;
window.demoReady = true;
