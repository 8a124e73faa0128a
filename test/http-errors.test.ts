import { afterAll, beforeAll, expect, spyOn, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { newPersonalToken } from "../src/auth/tokens";
import { openSqliteStore } from "../src/store/sqlite";
import type { Store } from "../src/store/store";
import { startTestServer, type TestServer } from "./support/harness";

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

test("the server keeps answering after it", async () => {
  expect((await fetch(`${srv.url}/api/me?token=${LEGACY}`)).status).toBe(200);
  expect((await fetch(`${srv.url}/health/live`)).status).toBe(200);
});
