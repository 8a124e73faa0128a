import { forEachLine } from "./lines";
import type { Subprocess } from "bun";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { reapOnExit } from "./reaper";

// The real server as its own process (`bun src/index.ts`), configured only through env, so a test
// can SIGTERM it or kill -9 it and start another on the same store.

const REPO = join(import.meta.dir, "..", "..");

export type ServerProcess = {
  proc: Subprocess<"ignore", "pipe", "pipe">;
  wsUrl: string;
  httpUrl: string;
  /** The SQLite file it uses (unless the env names Cosmos). */
  dbPath: string;
  dir: string;
  lines: string[];
  waitLine(re: RegExp, ms: number): Promise<string>;
  /** kill -9: no shutdown code runs. Resolves when the process is gone. */
  crash(): Promise<void>;
};

/**
 * Starts `bun src/index.ts` with only the env given (and PATH/HOME), in a temp dir (no .env from
 * the repository); resolves once it listens. `dbPath` defaults to a file in that dir.
 */
export async function spawnServer(env: Record<string, string>, o: { dbPath?: string } = {}): Promise<ServerProcess> {
  const dir = mkdtempSync(join(tmpdir(), "pichat-proc-"));
  const dbPath = o.dbPath ?? join(dir, "pichat.db");
  const proc = Bun.spawn([process.execPath, join(REPO, "src/index.ts")], {
    cwd: dir,
    env: {
      PATH: process.env.PATH ?? "",
      HOME: process.env.HOME ?? dir,
      ENVIRONMENT: "test",
      HOST: "127.0.0.1",
      SERVER_PORT: "0",
      SQLITE_PATH: dbPath,
      LOG_LEVEL: "info",
      ...env,
    },
    stdout: "pipe",
    stderr: "pipe",
  });
  // Never outlives the test process, even when a test fails before killing it.
  reapOnExit(proc);
  const lines: string[] = [];
  const waiters = new Set<() => void>();
  void forEachLine(proc.stdout, (line) => {
    lines.push(line);
    for (const w of waiters) w();
  }).then(() => {
    for (const w of waiters) w();
  });
  const stderr = new Response(proc.stderr).text();
  const waitLine = (re: RegExp, ms: number) =>
    new Promise<string>((resolve, reject) => {
      const check = () => {
        const hit = lines.find((l) => re.test(l));
        if (hit) {
          done();
          resolve(hit);
        } else if (proc.exitCode !== null || proc.signalCode !== null) {
          done();
          void stderr.then((e) =>
            reject(
              new Error(
                `the server exited (${proc.exitCode ?? proc.signalCode}) before logging ${re}: ${e.slice(0, 500)} ${lines.join("\n").slice(-500)}`,
              ),
            ),
          );
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`no log line ${re} within ${ms} ms; got: ${lines.join("\n").slice(-800)}`));
      }, ms);
      const done = () => {
        clearTimeout(timer);
        waiters.delete(check);
      };
      waiters.add(check);
      void proc.exited.then(check);
      check();
    });
  const listening = await waitLine(/PiChat backend listening/, 15_000).catch(async (e: unknown) => {
    // A server that never came up must not linger (holding its port, its store's leases).
    proc.kill("SIGKILL");
    await proc.exited;
    throw e;
  });
  const wsUrl = /"websocket":"(ws:\/\/[^"]+)"/.exec(listening)?.[1];
  if (!wsUrl) throw new Error(`no websocket url in: ${listening}`);
  return {
    proc,
    wsUrl,
    httpUrl: wsUrl.replace(/^ws/, "http").replace(/\/ws$/, ""),
    dbPath,
    dir,
    waitLine,
    lines,
    async crash() {
      proc.kill("SIGKILL");
      await proc.exited;
    },
  };
}
