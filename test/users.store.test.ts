import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { User } from "../src/records";
import { openSqliteStore } from "../src/store/sqlite";
import type { Store } from "../src/store/store";
import { openTestCosmosStore, startCosmosServer, type CosmosTestServer } from "./support/cosmos-server";

// Users, personal token hashes and device owners: the same cases on the SQLite file and on the
// Cosmos test server. Name uniqueness is the database's decision, so concurrent creates race for real.

const newUser = (name: string): User => ({ id: `u-${crypto.randomUUID()}`, name, created_at: new Date().toISOString() });
const hash = () => Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("hex");

function userCases(kind: string, open: () => Store, raceTrials: number) {
  describe(`users on ${kind}`, () => {
    test("createUser, then findUser and listUsers see it; a taken name is refused and nothing is written", async () => {
      const store = open();
      const alice = newUser(`alice-${crypto.randomUUID()}`);
      expect(await store.createUser(alice)).toBe(true);
      expect(await store.findUser(alice.name)).toEqual(alice);
      const clash = newUser(alice.name);
      expect(await store.createUser(clash)).toBe(false);
      expect(await store.findUser(alice.name)).toEqual(alice);
      expect((await store.listUsers()).filter((u) => u.name === alice.name)).toEqual([alice]);
      expect(await store.findUser(`nobody-${crypto.randomUUID()}`)).toBeUndefined();
      // The loser's id holds nothing: a token for it is refused.
      await expect(store.addToken(clash.id, hash())).rejects.toThrow();
    });

    test("listUsers is sorted by name; names with / ? # and non-ASCII are fine", async () => {
      const store = open();
      const tag = crypto.randomUUID();
      const names = [`zed/${tag}`, `ämy?${tag}`, `bob#${tag}`];
      for (const n of names) expect(await store.createUser(newUser(n))).toBe(true);
      const listed = (await store.listUsers()).map((u) => u.name).filter((n) => n.endsWith(tag));
      expect(listed).toEqual([...names].sort());
      for (const n of names) expect((await store.findUser(n))?.name).toBe(n);
    });

    test("tokens: addToken then userOfToken; unknown hashes find no one; revokeTokens removes all of that user's only", async () => {
      const store = open();
      const a = newUser(`a-${crypto.randomUUID()}`);
      const b = newUser(`b-${crypto.randomUUID()}`);
      await store.createUser(a);
      await store.createUser(b);
      const [a1, a2, b1] = [hash(), hash(), hash()];
      await store.addToken(a.id, a1);
      await store.addToken(a.id, a2);
      await store.addToken(b.id, b1);
      expect(await store.userOfToken(a1)).toEqual(a);
      expect(await store.userOfToken(a2)).toEqual(a);
      expect(await store.userOfToken(b1)).toEqual(b);
      expect(await store.userOfToken(hash())).toBeUndefined();
      expect(await store.revokeTokens(a.id)).toBe(2);
      expect(await store.userOfToken(a1)).toBeUndefined();
      expect(await store.userOfToken(a2)).toBeUndefined();
      expect(await store.userOfToken(b1)).toEqual(b);
      expect(await store.revokeTokens(a.id)).toBe(0);
      // A token issued after a revoke works.
      const a3 = hash();
      await store.addToken(a.id, a3);
      expect(await store.userOfToken(a3)).toEqual(a);
    });

    test("assignDevice sets and moves a device's owner; an unknown device has none", async () => {
      const store = open();
      const device = `pi/${crypto.randomUUID()}?#`;
      expect(await store.deviceOwner(device)).toBeUndefined();
      await store.assignDevice(device, "u-1");
      expect(await store.deviceOwner(device)).toBe("u-1");
      await store.assignDevice(device, "default");
      expect(await store.deviceOwner(device)).toBe("default");
      expect(await store.deviceOwner(`${device}x`)).toBeUndefined();
    });

    test(`two concurrent createUser with one name: exactly one wins (${raceTrials} trials)`, async () => {
      const store = open();
      for (let i = 0; i < raceTrials; i++) {
        const name = `race-${i}-${crypto.randomUUID()}`;
        const [x, y] = [newUser(name), newUser(name)];
        const wins = await Promise.all([store.createUser(x), store.createUser(y)]);
        expect(wins.filter(Boolean).length).toBe(1);
        const winner = wins[0] ? x : y;
        expect(await store.findUser(name)).toEqual(winner);
        expect((await store.listUsers()).filter((u) => u.name === name)).toEqual([winner]);
      }
    });
  });
}

let dir: string;
let sqlite: Store;
let cosmos: CosmosTestServer;
let cosmosStore: Store;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "pichat-users-"));
  sqlite = openSqliteStore(join(dir, "users.db"));
  cosmos = await startCosmosServer();
  cosmosStore = await openTestCosmosStore(cosmos, "pichat-users");
});
afterAll(async () => {
  await sqlite?.close();
  await cosmosStore?.close();
  await cosmos?.stop();
  rmSync(dir, { recursive: true, force: true });
});

userCases("SQLite", () => sqlite, 20);
userCases("Cosmos DB", () => cosmosStore, 25);

describe("SQLite file", () => {
  test("a file from before users existed gains the tables on open and keeps its data", async () => {
    const path = join(dir, "old.db");
    const { Database } = await import("bun:sqlite");
    const old = new Database(path, { create: true });
    old.exec("CREATE TABLE settings (owner TEXT PRIMARY KEY, value TEXT NOT NULL); INSERT INTO settings VALUES ('default', '{\"a\":1}')");
    old.close();
    const store = openSqliteStore(path);
    try {
      expect(await store.getSettings("default")).toEqual({ a: 1 });
      const u = newUser("old-file-user");
      expect(await store.createUser(u)).toBe(true);
      await store.assignDevice("pi-1", u.id);
      expect(await store.deviceOwner("pi-1")).toBe(u.id);
    } finally {
      await store.close();
    }
  });
});
