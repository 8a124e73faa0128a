import { afterAll, beforeAll, expect, spyOn, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { newPersonalToken } from "../src/auth/tokens";
import { openSqliteStore } from "../src/store/sqlite";
import type { Store } from "../src/store/store";
import { startTestServer, type TestServer } from "./support/harness";
import { forEachLine } from "./support/lines";
import { until } from "./support/until";

// An error nothing else caught, in an HTTP route: one log line through the logger (so the configured
// secrets are redacted), a generic 500 body, and nothing printed past the logger.

const LEGACY = "legacy-token-http-errors-6b0d2f8a4c1e";
let dir: string;
let base: Store;
let srv: TestServer;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "pichat-errors-"));
  base = openSqliteStore(join(dir, "broken.db"));
  // A store failing in a way nobody expected (not a StoreUnavailableError), with a secret in its message.
  const broken: Store = {
    ...base,
    userOfToken: async () => {
      throw new TypeError(`driver exploded while using ${LEGACY} at /var/lib/secret-path`);
    },
  };
  srv = await startTestServer({ API_TOKEN: LEGACY }, { store: broken });
});
afterAll(async () => {
  await srv?.close();
  await base?.close();
  rmSync(dir, { recursive: true, force: true });
});

test("an uncaught error in a route: one redacted JSON log line through the logger, a generic 500, nothing on console.error", async () => {
  const printed = spyOn(console, "error");
  try {
    const token = newPersonalToken();
    const before = srv.log.lines.length;
    const res = await fetch(`${srv.url}/api/me?token=${token}`);
    expect(res.status).toBe(500);
    expect(res.headers.get("content-type")).toContain("application/json");
    const text = await res.text();
    expect(JSON.parse(text)).toEqual({ error: "internal error", code: "INTERNAL_ERROR" });
    expect(text).not.toContain("exploded");

    const lines = srv.log.lines.slice(before).filter((l) => l.includes("request failed"));
    expect(lines).toHaveLength(1);
    const line = JSON.parse(lines[0]!);
    expect(line).toMatchObject({ level: "error", msg: "request failed", method: "GET", path: "/api/me" });
    expect(line.error.name).toBe("TypeError");
    expect(lines[0]).toContain("driver exploded");
    expect(lines[0]).toContain("[redacted]");
    expect(lines[0]).not.toContain(LEGACY);
    expect(lines[0]).not.toContain(token); // the query string is not logged
    expect(printed).not.toHaveBeenCalled();
  } finally {
    printed.mockRestore();
  }
});

test("the server keeps answering after it; /api/me shows {id, name, via} and nothing of the token, never cached", async () => {
  const me = await fetch(`${srv.url}/api/me?token=${LEGACY}`);
  expect(me.status).toBe(200);
  expect(me.headers.get("cache-control")).toBe("no-store");
  expect(await me.json()).toEqual({ id: "default", name: "default", via: "api_token" });
  expect((await fetch(`${srv.url}/health/live`)).status).toBe(200);
});

test("an unhandled rejection or an uncaught exception elsewhere is logged through the logger, and the process keeps serving", async () => {
  const work = mkdtempSync(join(tmpdir(), "pichat-stray-"));
  // Loaded before src/index.ts: fires once index.ts has registered its process handlers.
  const preload = join(work, "stray.ts");
  await Bun.write(
    preload,
    `const t = setInterval(() => {
  if (!process.listenerCount("unhandledRejection") || !process.listenerCount("uncaughtException")) return;
  clearInterval(t);
  void Promise.reject(new Error("stray rejection ${LEGACY}"));
  setTimeout(() => { throw new Error("stray exception"); }, 0);
}, 20);`,
  );
  const proc = Bun.spawn([process.execPath, "--preload", preload, join(import.meta.dir, "..", "src", "index.ts")], {
    cwd: work,
    env: { PATH: process.env.PATH, HOME: work, HOST: "127.0.0.1", SERVER_PORT: "0", SQLITE_PATH: join(work, "p.db"), API_TOKEN: LEGACY },
    stdout: "pipe",
    stderr: "pipe",
  });
  const lines: string[] = [];
  void forEachLine(proc.stdout, (l) => lines.push(l));
  try {
    await until(
      () => lines.some((l) => l.includes("uncaught exception")) && lines.some((l) => l.includes("unhandled rejection")),
      "both logged",
    );
    const url = /"url":"(http:\/\/[^"]+?)\/?"/.exec(lines.find((l) => l.includes("PiChat backend listening"))!)![1];
    expect((await fetch(`${url}/health/live`)).status).toBe(200);
    expect(proc.exitCode).toBeNull();
    expect(lines.join("\n")).not.toContain(LEGACY); // through the redactor
  } finally {
    proc.kill("SIGKILL");
    await proc.exited;
    rmSync(work, { recursive: true, force: true });
  }
}, 20_000);
