import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Agent } from "node:https";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CosmosClient } from "@azure/cosmos";
import { hashToken } from "../src/auth/tokens";
import type { Store } from "../src/store/store";
import { openCosmosStoreAt, startCosmosServer, type CosmosTestServer } from "./support/cosmos-server";
import { UPGRADE_HEADERS } from "./support/fixtures";
import { startTestServer, type TestServer } from "./support/harness";
import { reapOnExit } from "./support/reaper";
import { within } from "./support/until";
import { connect, type TestClient } from "./support/ws-client";

// `bun run users` and `bun run devices` as a person runs them: a separate process on the same store
// as a server that is already running (a SQLite file, then the Cosmos test server), with nothing
// restarted in between. Revocation is seen on the sockets it must close.

const REPO = join(import.meta.dir, "..");
const LEGACY = "0f3c9a7d5e2b4c1a8f6e0d9b7c5a3e1f";
const TOKEN_LINE = /^pc_[\w-]{43}$/;

type Run = { code: number; stdout: string; stderr: string; lastLine: string };

function cli(env: Record<string, string>) {
  const cwd = mkdtempSync(join(tmpdir(), "pichat-cli-")); // no .env from the repository
  const run = async (script: "users" | "devices", ...args: string[]): Promise<Run> => {
    const proc = Bun.spawn([process.execPath, join(REPO, "scripts", `${script}.ts`), ...args], {
      cwd,
      env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? cwd, ENVIRONMENT: "test", ...env },
      stdout: "pipe",
      stderr: "pipe",
    });
    reapOnExit(proc);
    const [stdout, stderr, code] = await within(
      Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]),
      20_000,
      `${script} ${args.join(" ")}`,
    );
    return { code, stdout, stderr, lastLine: stdout.trimEnd().split("\n").at(-1) ?? "" };
  };
  return { run, cleanup: () => rmSync(cwd, { recursive: true, force: true }) };
}

function cliCases(
  kind: string,
  setup: () => Promise<{
    srv: TestServer;
    store: Store;
    env: Record<string, string>;
    /** Every stored byte (or document) that could hold a token. */ storedText: () => Promise<string>;
    close: () => Promise<void>;
  }>,
) {
  describe(`users and devices CLI on ${kind}`, () => {
    let s: Awaited<ReturnType<typeof setup>>;
    let run: ReturnType<typeof cli>["run"];
    let cleanup: () => void;
    const clients: TestClient[] = [];
    beforeAll(async () => {
      s = await setup();
      ({ run, cleanup } = cli(s.env));
    });
    afterAll(async () => {
      for (const c of clients) c.close();
      await s?.close();
      cleanup?.();
    });

    const open = async (token: string) => {
      const c = await connect(`${s.srv.wsUrl}?token=${token}`);
      clients.push(c);
      expect((await c.request({ type: "GET_CHATS" }, "CHAT_LIST")).type).toBe("CHAT_LIST");
      return c;
    };
    const me = async (token: string) => {
      const res = await fetch(`${s.srv.url}/api/me`, { headers: { Authorization: `Bearer ${token}` } });
      return { status: res.status, body: await res.json() };
    };
    const tokens: Record<string, string[]> = { alice: [], bob: [] };

    test("users add prints the new token alone on stdout's last line; it works on the running server at once", async () => {
      const added = await Promise.all(["alice", "bob"].map(async (name) => [name, await run("users", "add", name)] as const));
      for (const [name, r] of added) {
        expect({ code: r.code, stderr: r.stderr }).toMatchObject({ code: 0 });
        expect(r.lastLine).toMatch(TOKEN_LINE);
        tokens[name]!.push(r.lastLine);
      }
      const alice = await s.store.findUser("alice");
      expect((await me(tokens.alice![0]!)).body).toEqual({ id: alice!.id, name: "alice", via: "token" });
      await open(tokens.alice![0]!);
    });

    test("a taken name, an unknown user and a bad command fail with a clear message and a non-zero exit", async () => {
      const [taken, unknown, reserved, bad, device] = await Promise.all([
        run("users", "add", "alice"),
        run("users", "token", "nobody"),
        run("users", "add", "default"),
        run("users", "frobnicate"),
        run("devices", "assign", "pi-9", "nobody"),
      ]);
      expect(taken.code).toBe(1);
      expect(taken.stderr).toContain('the name "alice" is taken');
      expect(taken.stdout).toBe("");
      expect(unknown.code).toBe(1);
      expect(unknown.stderr).toContain('no user named "nobody"');
      expect(reserved.code).toBe(1);
      expect(bad.code).toBe(2);
      expect(device.code).toBe(1);
      expect(await s.store.deviceOwner("pi-9")).toBeUndefined();
    });

    test("users token issues a second token; users list shows the users", async () => {
      const r = await run("users", "token", "alice");
      expect(r.code).toBe(0);
      expect(r.lastLine).toMatch(TOKEN_LINE);
      expect(r.lastLine).not.toBe(tokens.alice![0]);
      tokens.alice!.push(r.lastLine);
      await open(r.lastLine);
      const list = await run("users", "list");
      expect(list.code).toBe(0);
      const names = list.stdout
        .trim()
        .split("\n")
        .map((l) => l.split("\t")[0]);
      expect(names).toEqual(["alice", "bob"]);
    });

    test("users revoke closes every socket of the user's tokens within seconds (1008); others stay; revoked tokens get 401", async () => {
      const a1 = await open(tokens.alice![0]!);
      const a2 = await open(tokens.alice![1]!);
      const b = await open(tokens.bob![0]!);
      const r = await run("users", "revoke", "alice");
      expect(r.code).toBe(0);
      expect(r.stdout).toContain("Revoked 2 tokens of alice");
      // AUTH_RECHECK_MS plus a lookup (and a second of slack).
      for (const c of [a1, a2])
        expect(await within(c.closed, RECHECK_MS + 1_500, "alice's socket to close")).toEqual({ code: 1008, reason: "token revoked" });
      expect((await b.request({ type: "GET_CHATS" }, "CHAT_LIST")).type).toBe("CHAT_LIST");
      for (const t of tokens.alice!) {
        expect((await me(t)).status).toBe(401);
        const up = await fetch(`${s.srv.url}/ws?token=${t}`, { headers: UPGRADE_HEADERS });
        expect(up.status).toBe(401);
      }
      // Nothing remembers the refusal: a token issued after the revoke works at once.
      const again = await run("users", "token", "alice");
      expect((await me(again.lastLine)).status).toBe(200);
      tokens.alice!.push(again.lastLine);
    });

    test("no token is stored, only its SHA-256", async () => {
      const stored = await s.storedText();
      for (const t of [...tokens.alice!, ...tokens.bob!]) {
        expect(stored).not.toContain(t);
        expect(stored).not.toContain(t.slice(3)); // not even without its prefix
      }
      expect(stored).toContain(hashToken(tokens.bob![0]!));
    });

    test("devices assign stores the owner: a user by name, or default for the legacy user", async () => {
      const alice = await s.store.findUser("alice");
      const [r, legacy] = await Promise.all([run("devices", "assign", "pi-7", "alice"), run("devices", "assign", "pi-8", "default")]);
      expect(r.code).toBe(0);
      expect(await s.store.deviceOwner("pi-7")).toBe(alice!.id);
      expect(legacy.code).toBe(0);
      expect(await s.store.deviceOwner("pi-8")).toBe("default");
      // Moving a device.
      expect((await run("devices", "assign", "pi-7", "bob")).code).toBe(0);
      expect(await s.store.deviceOwner("pi-7")).toBe((await s.store.findUser("bob"))!.id);
      const show = await run("devices", "show", "pi-8");
      expect(show.stdout.trim()).toBe("pi-8\tdefault");
    });

    test("users limit sets a user's own token budget (N, none, default); a running server refuses over it; bad values exit 2", async () => {
      expect((await run("users", "add", "lim")).code).toBe(0);
      const lim = (await s.store.findUser("lim"))!;
      expect((await run("users", "limit", "lim", "--tokens-per-day", "5")).code).toBe(0);
      expect(await s.store.tokensPerDay(lim.id)).toBe(5);
      expect((await run("users", "limit", "lim", "--tokens-per-day", "none")).code).toBe(0);
      expect(await s.store.tokensPerDay(lim.id)).toBeNull();
      expect((await run("users", "limit", "lim", "--tokens-per-day", "default")).code).toBe(0);
      expect(await s.store.tokensPerDay(lim.id)).toBeUndefined();
      expect((await run("users", "limit", "lim", "--tokens-per-day", "lots")).code).toBe(2);
      expect((await run("users", "limit", "nobody-here", "--tokens-per-day", "5")).code).toBe(1);
      // Tokens issued by the CLI sign in; the budget it set refuses a question before it is stored.
      const token = (await run("users", "token", "lim")).lastLine;
      expect((await run("users", "limit", "lim", "--tokens-per-day", "1")).code).toBe(0);
      const c = await open(token);
      const chatId = (await c.request({ type: "CREATE_CHAT" }, "NEW_CHAT")).chat.id;
      expect(await c.request({ type: "SEND_MESSAGE", chatId, content: "hello" }, "MESSAGE_ACCEPTED")).toMatchObject({
        code: "BUDGET_EXCEEDED",
      });
      expect(await s.store.listMessages(chatId, { limit: 5 })).toEqual([]);
    });

    test("users usage sums tokens per user, day and model since a date; --json for scripts", async () => {
      expect((await run("users", "add", "spender")).code).toBe(0);
      const u = (await s.store.findUser("spender"))!;
      const today = new Date().toISOString().slice(0, 10);
      const yesterday = new Date(Date.now() - 86_400_000).toISOString().slice(0, 10);
      const rec = (id: string, date: string, model: string, p: number, c: number, estimated = false) =>
        s.store.addUsage({
          id,
          user_id: u.id,
          chat_id: "c",
          message_id: id,
          model,
          kind: "reply",
          prompt_tokens: p,
          completion_tokens: c,
          estimated,
          created_at: `${date}T12:00:00.000Z`,
        });
      await rec("a", today, "gpt-4o", 10, 5);
      await rec("b", today, "gpt-4o", 20, 7, true);
      await rec("c", yesterday, "gpt-4o-mini", 3, 1);
      const todayOnly = await run("users", "usage", "spender", "--json");
      expect(todayOnly.code).toBe(0);
      expect(JSON.parse(todayOnly.lastLine)).toEqual([
        { user: "spender", date: today, model: "gpt-4o", prompt: 30, completion: 12, calls: 2, estimated: 1 },
      ]);
      const both = await run("users", "usage", "spender", "--since", yesterday, "--json");
      expect(JSON.parse(both.lastLine)).toHaveLength(2);
      const text = await run("users", "usage", "--since", yesterday);
      expect(text.stdout).toContain(`spender\t${yesterday}\tgpt-4o-mini\tprompt 3\tcompletion 1\tcalls 1`);
      expect((await run("users", "usage", "--since", "yesterday")).code).toBe(2);
    });
  });
}

const RECHECK_MS = 500;
const serverEnv = { API_TOKEN: LEGACY, AUTH_RECHECK_MS: String(RECHECK_MS) };

cliCases("a SQLite file", async () => {
  const srv = await startTestServer(serverEnv);
  const path = srv.config.SQLITE_PATH;
  return {
    srv,
    store: srv.store,
    env: { SQLITE_PATH: path },
    storedText: async () =>
      [path, `${path}-wal`]
        .filter(existsSync)
        .map((p) => readFileSync(p).toString("latin1"))
        .join("\n"),
    close: () => srv.close(),
  };
});

let cosmos: CosmosTestServer;
beforeAll(async () => {
  cosmos = await startCosmosServer();
});
afterAll(async () => {
  await cosmos?.stop();
});

cliCases("the Cosmos test server", async () => {
  const database = `pichat-cli-${crypto.randomUUID()}`;
  const store = await openCosmosStoreAt(cosmos, database);
  const srv = await startTestServer(serverEnv, { store });
  const client = new CosmosClient({
    endpoint: cosmos.endpoint,
    key: cosmos.key,
    agent: new Agent({ rejectUnauthorized: false }),
    connectionPolicy: { enableEndpointDiscovery: false },
  });
  return {
    srv,
    store,
    env: { COSMOS_ENDPOINT: cosmos.endpoint, COSMOS_KEY: cosmos.key, COSMOS_DATABASE: database, COSMOS_ALLOW_SELF_SIGNED_CERT: "true" },
    storedText: async () => {
      const { resources } = await client.database(database).container("users").items.readAll().fetchAll();
      return JSON.stringify(resources);
    },
    close: async () => {
      await srv.close();
      await store.close();
      client.dispose();
    },
  };
});
