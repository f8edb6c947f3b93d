#!/usr/bin/env node
// Proves the demo works in a real browser: runs scripts/demo (on free ports), opens the page in
// Debian's Chromium (headless, driven by playwright-core over CDP as in tests/browser/run.mjs),
// clicks each button, checks what the page shows, saves a screenshot, then stops the demo the way a
// person does (SIGINT, as Ctrl-C) and checks that all three of its processes are gone.
//
//   node demo/check.mjs              (make demo-check)
//
// Environment: PORTICO_BIN (passed on to scripts/demo), CHROMIUM (default /usr/bin/chromium),
// DEMO_SCREENSHOT (default /tmp/portico-demo.png). Exits 1 on any failure.
import { spawn } from "node:child_process";
import fs from "node:fs";
import { createRequire } from "node:module";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, "..");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const SCREENSHOT = process.env.DEMO_SCREENSHOT || "/tmp/portico-demo.png";
const CHROMIUM_FLAGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];
const UNARY_TEXT = "hello from the demo check ✓";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const T0 = Date.now();
const log = (msg) => console.log(`demo-check: ${((Date.now() - T0) / 1000).toFixed(1).padStart(4)} s  ${msg}`);

class CheckFailed extends Error {}

// What this check started, stopped (removed) at the end whatever happened: {demo, chromium, tmp}.
const procs = {};
function expect(cond, what) {
  if (!cond) throw new CheckFailed(what);
}

async function withTimeout(promise, ms, what) {
  let timer;
  try {
    return await Promise.race([promise, new Promise((_, reject) => {
      timer = setTimeout(() => reject(new CheckFailed(`${what}: timed out after ${ms} ms`)), ms);
    })]);
  } finally {
    clearTimeout(timer);
  }
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function listening(port) {
  return new Promise((resolve) => {
    const s = net.connect(port, "127.0.0.1");
    s.on("connect", () => { s.destroy(); resolve(true); });
    s.on("error", () => resolve(false));
  });
}

// A child process with its output kept (the tail is printed on failure).
function startChild(cmd, args, opts) {
  const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"], ...opts });
  const entry = { child, out: "", exited: false, code: null };
  entry.done = new Promise((resolve) => {
    child.on("exit", (code, signal) => { entry.exited = true; entry.code = code ?? signal; resolve(); });
    child.on("error", (e) => { entry.exited = true; entry.code = e.message; resolve(); });
  });
  const keep = (d) => { entry.out = (entry.out + d).slice(-20000); };
  child.stdout.on("data", keep);
  child.stderr.on("data", keep);
  return entry;
}

async function stop(entry, signal, graceMs) {
  if (!entry || entry.exited) return true;
  try { process.kill(entry.child.pid, signal); } catch { return true; }
  await Promise.race([entry.done, sleep(graceMs)]);
  return entry.exited;
}

async function startDemo(ports) {
  const env = {
    ...process.env,
    DEMO_UPSTREAM_PORT: String(ports.upstream),
    DEMO_GATEWAY_PORT: String(ports.gateway),
    DEMO_PAGE_PORT: String(ports.page),
  };
  const demo = startChild(path.join(REPO, "scripts/demo"), [], { env });
  procs.demo = demo;
  await withTimeout((async () => {
    while (!/Ctrl-C stops the demo/.test(demo.out)) {
      if (demo.exited) throw new CheckFailed(`scripts/demo exited (${demo.code}) before it was ready`);
      await sleep(100);
    }
  })(), 20000, "scripts/demo start");
  const m = /^\s*(http:\/\/127\.0\.0\.1:\d+\/\S*)\s*$/m.exec(demo.out);
  expect(m, "scripts/demo printed no page URL");
  demo.pageUrl = m[1];
  expect(demo.out.includes(`curl -s http://127.0.0.1:${ports.gateway}/portico.test.Echo/Unary`),
    "scripts/demo printed no curl example");
  return demo;
}

async function startChromium(tmp) {
  const args = [...CHROMIUM_FLAGS, `--user-data-dir=${fs.mkdtempSync(path.join(tmp, "profile-"))}`,
    "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1", "about:blank"];
  const entry = startChild(CHROMIUM, args, {});
  procs.chromium = entry;
  const ws = await withTimeout((async () => {
    for (;;) {
      const m = /DevTools listening on (ws:\/\/\S+)/.exec(entry.out);
      if (m) return m[1];
      if (entry.exited) throw new CheckFailed(`chromium exited (${entry.code})`);
      await sleep(50);
    }
  })(), 20000, "chromium start");
  const { chromium } = createRequire(path.join(REPO, "tests/browser/package.json"))("playwright-core");
  entry.browser = await chromium.connectOverCDP(ws);
  return entry;
}

// Browser.close lets Chromium reap its helper processes itself (see tests/browser/run.mjs).
async function closeChromium(entry) {
  if (!entry) return;
  if (entry.browser) {
    try {
      const s = await entry.browser.newBrowserCDPSession();
      await withTimeout(s.send("Browser.close").catch(() => {}), 3000, "Browser.close");
    } catch { /* SIGTERM below */ }
    await Promise.race([entry.done, sleep(5000)]);
    await entry.browser.close().catch(() => {});
  }
  if (!(await stop(entry, "SIGTERM", 5000))) await stop(entry, "SIGKILL", 2000);
}

// ------------------------------------------------------------------------------------------------
// the page

async function click(page, id, timeoutMs) {
  await page.click(`#${id}-run`);
  await page.waitForSelector(`#${id}-result[data-state="done"]`, { timeout: timeoutMs });
  return page.$eval(`#${id}-result`, (r) => ({
    code: r.dataset.code,
    text: r.innerText,
    elapsedMs: parseInt(r.querySelector(".elapsed")?.textContent ?? "", 10),
    rows: Object.fromEntries([...r.querySelectorAll("tr[data-key]")].map((tr) => [
      `${tr.closest("table").querySelector("caption").textContent}/${tr.dataset.key}`,
      tr.querySelector("td").textContent])),
  }));
}

async function checkPage(page) {
  // Unary: the text box's message comes back, with the server's headers and trailers.
  await page.fill("#unary-message", UNARY_TEXT);
  const unary = await click(page, "unary", 10000);
  expect(unary.code === "0", `unary: status ${unary.code}, expected 0 (${unary.text})`);
  const reply = await page.textContent('#unary-result [data-role="reply"]');
  expect(reply === UNARY_TEXT, `unary: reply ${JSON.stringify(reply)}, expected ${JSON.stringify(UNARY_TEXT)}`);
  expect(unary.rows["Response headers/x-echo-initial"] === "yes",
    `unary: response header x-echo-initial not shown (${JSON.stringify(unary.rows)})`);
  expect(unary.rows["Trailers/x-trailer-ok"] === "done", `unary: trailer x-trailer-ok not shown`);
  log(`unary ok: reply ${JSON.stringify(reply)}, ${Object.keys(unary.rows).length} header/trailer rows`);

  // Server stream: 10 messages in order, shown as they arrive (300 ms apart, not all at once).
  const stream = await click(page, "stream", 15000);
  expect(stream.code === "0", `stream: status ${stream.code}, expected 0 (${stream.text})`);
  const items = await page.$$eval("#stream-result li", (lis) => lis.map((li) => ({
    index: Number(li.dataset.index), t: parseFloat(li.querySelector(".t").textContent.replace("+", "")),
  })));
  expect(items.length === 10, `stream: ${items.length} messages shown, expected 10`);
  expect(items.every((it, i) => it.index === i), `stream: indexes ${items.map((it) => it.index)}`);
  const spread = items[9].t - items[0].t;
  expect(spread >= 2.0, `stream: the 10 messages arrived within ${spread.toFixed(3)} s, expected ~2.7 s apart`);
  expect(items.every((it, i) => i === 0 || it.t >= items[i - 1].t), "stream: timestamps not in order");
  log(`stream ok: 10 messages over ${spread.toFixed(3)} s`);

  // Error: code 5, the (non-ASCII, percent-encoded on the wire) message, the custom trailer.
  const error = await click(page, "error", 10000);
  expect(error.code === "5", `error: status ${error.code}, expected 5 (${error.text})`);
  expect((error.rows["Status/message"] || "").startsWith("no echo here ✗"),
    `error: message ${JSON.stringify(error.rows["Status/message"])}`);
  expect(error.rows["Status/x-trailer-custom"] === "custom-value",
    `error: x-trailer-custom ${JSON.stringify(error.rows["Status/x-trailer-custom"])}`);
  log(`error ok: 5, ${JSON.stringify(error.rows["Status/message"])}, x-trailer-custom: custom-value`);

  // Deadline: 1 s deadline on a 3 s call → DEADLINE_EXCEEDED after about 1 s.
  const deadline = await click(page, "deadline", 10000);
  expect(deadline.code === "4", `deadline: status ${deadline.code}, expected 4 (${deadline.text})`);
  expect(deadline.elapsedMs >= 900 && deadline.elapsedMs < 2500,
    `deadline: answered after ${deadline.elapsedMs} ms, expected about 1000`);
  log(`deadline ok: 4 after ${deadline.elapsedMs} ms (${JSON.stringify(deadline.rows["Status/message"])})`);
}

// ------------------------------------------------------------------------------------------------

async function main() {
  for (const m of ["playwright-core", "esbuild", "grpc-web"]) {
    if (!fs.existsSync(path.join(REPO, "tests/browser/node_modules", m))) {
      console.error(`demo-check: tests/browser/node_modules/${m} missing: run scripts/install-deps`);
      return 2;
    }
  }
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "portico-demo-check-"));
  procs.tmp = tmp;
  const ports = { upstream: await freePort(), gateway: await freePort(), page: await freePort() };
  const consoleLines = [];
  let ok = false;
  try {
    // Both at once (each takes seconds); either failing fails the check, and both get stopped.
    const started = await Promise.allSettled([
      startDemo(ports).then((d) => { log(`demo up: ${d.pageUrl} → portico :${ports.gateway} → echo :${ports.upstream}`); }),
      startChromium(tmp).then((c) => { log(`chromium ${c.browser.version()} up`); }),
    ]);
    for (const s of started) if (s.status === "rejected") throw s.reason;
    const { demo, chromium } = procs;
    const context = await chromium.browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    page.on("console", (m) => { if (m.type() === "error" || m.type() === "warning") consoleLines.push(`${m.type()}: ${m.text()}`); });
    page.on("pageerror", (e) => consoleLines.push(`pageerror: ${e.message}`));
    const calls = []; // the gRPC-Web calls as the browser sent them (preflights are not shown here)
    page.on("response", async (r) => {
      const q = r.request();
      if (q.method() !== "POST" || !q.url().startsWith(`http://127.0.0.1:${ports.gateway}/`)) return;
      calls.push({ path: new URL(q.url()).pathname, sent: q.headers()["content-type"], got: (await r.allHeaders())["content-type"] });
    });
    await page.goto(demo.pageUrl);
    await page.waitForFunction(() => window.demoReady === true, null, { timeout: 10000 });
    log("page loaded");
    try {
      expect(await page.textContent("#gateway") === `http://127.0.0.1:${ports.gateway}`, "page shows the wrong gateway");
      await checkPage(page);
      await sleep(100);
      const wrong = calls.filter((c) => c.sent !== "application/grpc-web-text" || !/^application\/grpc-web-text/.test(c.got || ""));
      expect(calls.length === 4 && !wrong.length, `calls on the wire not all grpc-web-text both ways: ${JSON.stringify(calls)}`);
      log(`on the wire: ${calls.length} POSTs to the gateway, application/grpc-web-text both ways`);
      expect(!consoleLines.length, `browser console: ${consoleLines.join(" | ")}`);
      ok = true;
    } finally {
      await page.screenshot({ path: SCREENSHOT, fullPage: true }).then(() => log(`screenshot: ${SCREENSHOT}`),
        (e) => log(`no screenshot: ${e.message}`));
    }
  } catch (e) {
    console.log(`demo-check: FAILED: ${e instanceof CheckFailed ? e.message : e.stack || e}`);
    if (consoleLines.length) console.log(`browser console:\n  ${consoleLines.join("\n  ")}`);
  } finally {
    await closeChromium(procs.chromium);
  }
  const { demo } = procs;

  // Stop the demo as Ctrl-C does. (SIGINT cannot be trapped by a script that was started with it
  // ignored, e.g. from a non-interactive background job; then SIGTERM, which it also handles.)
  if (demo && !demo.exited) {
    let how = "SIGINT";
    if (!(await stop(demo, "SIGINT", 15000))) {
      how = "SIGTERM";
      if (!(await stop(demo, "SIGTERM", 15000))) {
        how = "nothing";
        await stop(demo, "SIGKILL", 2000);
      }
    }
    const open = [];
    for (const [name, port] of Object.entries(ports)) if (await listening(port)) open.push(`${name} :${port}`);
    if (how === "nothing" || open.length) {
      console.log(`demo-check: FAILED: stopping the demo (${how}) left ${open.join(", ") || "the script running"}`);
      ok = false;
    } else {
      log(`demo stopped by ${how} (exit ${demo.code}), its three ports closed`);
    }
  }
  // Under ASan/UBSan (make asan), the gateway reports at exit; the demo script passes that through.
  const sanitizer = demo && /ERROR: \w+Sanitizer|runtime error:/.exec(demo.out);
  if (sanitizer) {
    console.log(`demo-check: FAILED: sanitizer report in the demo's output (${sanitizer[0]})`);
    ok = false;
  }
  if (!ok && demo) console.log(`scripts/demo output (tail):\n${demo.out.split("\n").slice(-40).map((l) => `  | ${l}`).join("\n")}`);
  fs.rmSync(tmp, { recursive: true, force: true });
  console.log(`demo-check: ${ok ? "passed" : "FAILED"} in ${((Date.now() - T0) / 1000).toFixed(1)} s`);
  return ok ? 0 : 1;
}

// Interrupted (Ctrl-C, a CI timeout) or output cut (| head): still stop what was started.
process.stdout.on("error", () => {});
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"]) {
  process.once(sig, async () => {
    await closeChromium(procs.chromium).catch(() => {});
    if (!(await stop(procs.demo, "SIGTERM", 15000))) await stop(procs.demo, "SIGKILL", 1000);
    if (procs.tmp) fs.rmSync(procs.tmp, { recursive: true, force: true });
    process.exit(sig === "SIGINT" ? 130 : 143);
  });
}

main().then((code) => process.exit(code), (e) => {
  console.error(e);
  process.exit(1);
});
