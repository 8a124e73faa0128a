import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadConfig, SECRET_VARS } from "../../src/config";
import { createLogger, type Logger } from "../../src/log";
import { modelFromConfig } from "../../src/model";
import type { Model } from "../../src/model/model";
import { startServer, type ServerParts } from "../../src/server";
import { openSqliteStore } from "../../src/store/sqlite";
import type { Store } from "../../src/store/store";
import { connect, type TestClient } from "./ws-client";

/** Log lines kept in memory, so tests can assert what was (and was not) logged. */
export function memoryLogger(level: "debug" | "info" = "debug", secrets: string[] = []): Logger & { lines: string[] } {
  const lines: string[] = [];
  const log = createLogger({ level, json: true, secrets, write: (l) => lines.push(l) });
  return Object.assign(log, { lines });
}

/**
 * The real server on an ephemeral loopback port, configured through the same env schema as
 * production. Pass `store` or `model` to use a specific peer; otherwise a temp SQLite file and
 * whatever the env selects (the offline model by default).
 */
export async function startTestServer(
  env: Record<string, string> = {},
  parts: {
    store?: Store;
    model?: Model;
    startDevices?: ServerParts["startDevices"];
    /** Wraps whichever model the server gets (e.g. createHolds().wrap, to hold a reply in flight). */
    wrapModel?: (m: Model) => Model;
  } = {},
) {
  const dir = mkdtempSync(join(tmpdir(), "pichat-test-"));
  const config = loadConfig({
    SERVER_PORT: "0",
    HOST: "127.0.0.1",
    SQLITE_PATH: join(dir, "pichat.db"),
    OFFLINE_MODEL_DELAY_MS: "0",
    ENVIRONMENT: "test",
    // Every client of a test is the same user unless it signs in as another: their sends share one
    // bucket (per user), which tests of other things must not run into. limits.test.ts sets its own.
    RATE_LIMIT_MESSAGES_PER_MINUTE: "100000",
    // Likewise every test signs in from loopback: failed sign-ins and exports are bounded in bounds.test.ts.
    SIGN_IN_FAILURES_PER_MINUTE: "100000",
    TRANSFERS_PER_MINUTE: "100000",
    ...env,
  });
  const store = parts.store ?? openSqliteStore(config.SQLITE_PATH);
  // Redacting the configured secrets, as src/index.ts's logger does.
  const log = memoryLogger(
    "debug",
    SECRET_VARS.map((k) => config[k]).filter((x): x is string => !!x),
  );
  const model = parts.model ?? (await modelFromConfig(config));
  const running = startServer({
    config,
    store,
    model: parts.wrapModel ? parts.wrapModel(model) : model,
    log,
    startDevices: parts.startDevices,
  });
  // Ready as /health/ready says: what the first send loads is loaded.
  await running.warmed;
  const wsUrl = `${running.url.replace(/^http/, "ws")}/ws`;
  // Every client a test opens is closed with the server, so a failing test leaks nothing.
  const clients: TestClient[] = [];
  return {
    ...running,
    config,
    store,
    log,
    wsUrl,
    async connect(o: Parameters<typeof connect>[1] & { query?: string } = {}) {
      const client = await connect(o.query ? `${wsUrl}?${o.query}` : wsUrl, o);
      clients.push(client);
      return client;
    },
    async close() {
      for (const c of clients) c.close();
      await running.stop(1000);
      if (!parts.store) await store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
export type TestServer = Awaited<ReturnType<typeof startTestServer>>;
