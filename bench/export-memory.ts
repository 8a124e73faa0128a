import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { hashToken, newPersonalToken } from "../src/auth/tokens";
import { openSqliteStore } from "../src/store/sqlite";
import { within } from "./lib/clock";

// What exporting a long chat costs the server's memory: a chat of EXPORT_N messages of
// EXPORT_CHARS characters in a SQLite file, the real server (bun src/index.ts) in a child process,
// and GET /api/chats/:id/export read to the end, fast and then slowly. The server's resident memory
// before, and its peak (VmHWM) after each read, against the size of the file.
//   bun bench/export-memory.ts            (EXPORT_N=20000 EXPORT_CHARS=5000: a ~100 MB file)

const N = Number(process.env.EXPORT_N ?? 20_000);
const CHARS = Number(process.env.EXPORT_CHARS ?? 5_000);
const API_TOKEN = "bench-legacy-token-0123456789abcdef";
const MB = (b: number) => `${(b / 1e6).toFixed(1)} MB`;

const dir = mkdtempSync(join(tmpdir(), "pichat-export-bench-"));
const dbPath = join(dir, "pichat.db");
const store = openSqliteStore(dbPath);
const user = { id: `u-${crypto.randomUUID()}`, name: "bench", created_at: new Date().toISOString() };
await store.createUser(user);
const token = newPersonalToken();
await store.addToken(user.id, hashToken(token));
const chatId = crypto.randomUUID();
const t0 = Date.UTC(2025, 0, 1);
await store.createChat(user.id, {
  id: chatId,
  name: "long",
  active: true,
  created_at: new Date(t0).toISOString(),
  updated_at: new Date(t0 + N).toISOString(),
});
const filler = "x".repeat(CHARS - 20);
for (let i = 0; i < N; i += 500) {
  await Promise.all(
    Array.from({ length: Math.min(500, N - i) }, (_, j) =>
      store.addMessage({
        id: `m-${i + j}`,
        chat_id: chatId,
        role: (i + j) % 2 ? "assistant" : "user",
        content: `${i + j} ${filler}`,
        created_at: new Date(t0 + i + j + 1).toISOString(),
      }),
    ),
  );
}
await store.close();

const port = 20_000 + Math.floor(Math.random() * 20_000);
const server = Bun.spawn(["bun", "src/index.ts"], {
  cwd: join(import.meta.dir, ".."),
  env: {
    ...process.env,
    SERVER_PORT: String(port),
    HOST: "127.0.0.1",
    SQLITE_PATH: dbPath,
    API_TOKEN,
    ENVIRONMENT: "development",
    LOG_LEVEL: "warn",
  },
  stdout: "ignore",
  stderr: "inherit",
});
const status = (field: string) =>
  Number(
    /(\d+) kB/.exec(
      readFileSync(`/proc/${server.pid}/status`, "utf8")
        .split("\n")
        .find((l) => l.startsWith(field)) ?? "",
    )?.[1] ?? 0,
  ) * 1024;
const url = `http://127.0.0.1:${port}`;

try {
  await within(
    (async () => {
      for (;;) {
        if (
          await fetch(`${url}/health/live`).then(
            (r) => r.ok,
            () => false,
          )
        )
          return;
        await Bun.sleep(50);
      }
    })(),
    20_000,
    "the server to start",
  );
  // Warm the route once on a small request, so the figures below are the export's, not start-up's.
  await fetch(`${url}/api/chats/${crypto.randomUUID()}/export`, { headers: { Authorization: `Bearer ${token}` } }).then((r) => r.text());
  Bun.gc(true);

  for (const pace of ["fast", "slow"] as const) {
    const before = status("VmRSS:");
    const started = performance.now();
    const res = await fetch(`${url}/api/chats/${chatId}/export`, { headers: { Authorization: `Bearer ${token}` } });
    let bytes = 0;
    let chunks = 0;
    for await (const chunk of res.body!) {
      bytes += chunk.byteLength;
      // A slow reader: a pause every 64 chunks, so the server's stream waits on the client.
      if (pace === "slow" && ++chunks % 64 === 0) await Bun.sleep(5);
    }
    const ms = performance.now() - started;
    console.log(
      `${pace} read: ${MB(bytes)} (${N} messages) in ${(ms / 1000).toFixed(1)} s; server RSS ${MB(before)} before, peak so far ${MB(status("VmHWM:"))}, now ${MB(status("VmRSS:"))}`,
    );
  }
} finally {
  server.kill();
  await server.exited;
  rmSync(dir, { recursive: true, force: true });
}
