#!/usr/bin/env node
// Builds the demo page into demo/dist/ (gitignored): index.html as is, and app.js bundled with
// esbuild together with the grpc-web client and the echo schema (tests/browser/src/echo-schema.js,
// fed with the descriptor set that tests/upstream/echo_pb.py prints).
//
//   node demo/build.mjs          (scripts/demo runs it)
//
// The npm packages are the browser tests' (tests/browser/node_modules, from `npm ci` in
// scripts/install-deps): demo/ has no package.json of its own.
import { execFileSync } from "node:child_process";
import { createRequire } from "node:module";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, "..");
const MODULES = path.join(REPO, "tests/browser/node_modules");
const OUT = path.join(HERE, "dist");
const PYTHON = process.env.PYTHON || "/usr/bin/python3";

for (const m of ["esbuild", "grpc-web", "@bufbuild/protobuf"]) {
  if (!fs.existsSync(path.join(MODULES, m))) {
    console.error(`demo build: ${path.relative(REPO, MODULES)}/${m} missing: run scripts/install-deps`);
    process.exit(2);
  }
}

const fds = execFileSync(PYTHON, [path.join(REPO, "tests/upstream/echo_pb.py")]);
const { build } = createRequire(path.join(REPO, "tests/browser/package.json"))("esbuild");
fs.mkdirSync(OUT, { recursive: true });
await build({
  entryPoints: [path.join(HERE, "app.js")],
  bundle: true,
  format: "iife",
  platform: "browser",
  target: "chrome110",
  minify: true,
  sourcemap: true,
  outfile: path.join(OUT, "app.js"),
  nodePaths: [MODULES],
  logLevel: "warning",
  define: { __ECHO_FDS_B64__: JSON.stringify(fds.toString("base64")) },
});
fs.copyFileSync(path.join(HERE, "index.html"), path.join(OUT, "index.html"));
console.log(`demo page built into ${path.relative(process.cwd(), OUT) || "."}/`);
