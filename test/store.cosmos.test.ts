import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Agent } from "node:https";
import { createServer as createNetServer, type AddressInfo, type Socket } from "node:net";
import { CosmosClient } from "@azure/cosmos";
import { openCosmosStore, type CosmosStoreConfig } from "../src/store/cosmos";
import { isStoreUnavailable } from "../src/store/errors";
import type { Store } from "../src/store/store";
import { allPages, chatFixture, isoAt, messageFixture, storeContract } from "./store.contract";
import { COSMOS_TEST_CONTAINERS, startCosmosServer, type CosmosTestServer } from "./support/cosmos-server";

// Each suite gets its own server (stop/start in one must not disturb another) and a fresh database.

const configFor = (server: CosmosTestServer, database = `pichat-${crypto.randomUUID()}`): CosmosStoreConfig => ({
  endpoint: server.endpoint,
  key: server.key,
  database,
  containers: COSMOS_TEST_CONTAINERS,
  allowSelfSignedCert: true,
  requestTimeoutMs: 2000,
});

storeContract("cosmos", async () => {
  const server = await startCosmosServer();
  // The test server compiles each distinct query on first use, slowly on a busy machine: the
  // production default timeout here, not the outage tests' 2 s.
  const store = await openCosmosStore({ ...configFor(server), requestTimeoutMs: 5000 });
  return {
    store,
    cleanup: async () => {
      await store.close();
      await server.stop();
    },
  };
});

describe("cosmos store", () => {
  let server: CosmosTestServer;
  beforeAll(async () => {
    server = await startCosmosServer();
  });
  afterAll(async () => server?.stop());

  test("creates the database and containers with their partition keys, idempotently", async () => {
    const config = configFor(server);
    const first = await openCosmosStore(config);
    const chat = chatFixture();
    await first.createChat("default", chat);
    // A second replica opening the same database: createIfNotExists, nothing lost.
    const second = await openCosmosStore(config);
    expect(await second.getChat("default", chat.id)).toEqual(chat);

    const client = new CosmosClient({
      endpoint: server.endpoint,
      key: server.key,
      agent: new Agent({ rejectUnauthorized: false }),
      connectionPolicy: { enableEndpointDiscovery: false },
    });
    const db = client.database(config.database);
    const definition = async (id: string) => (await db.container(id).read()).resource;
    const keys: Record<string, string> = {};
    for (const id of Object.values(COSMOS_TEST_CONTAINERS)) keys[id] = (await definition(id))?.partitionKey?.paths?.[0] ?? "";
    expect(keys).toEqual({
      chats: "/owner",
      messages: "/chat_id",
      users: "/id",
      settings: "/owner",
      processed_messages: "/id",
      checkpoints: "/scope",
    });
    expect((await definition("processed_messages"))?.defaultTtl).toBe(-1);
    client.dispose();
    await first.close();
    await second.close();
  });

  test("containers created before the composite indexes get them on open, and history pages work", async () => {
    const config = configFor(server);
    const client = new CosmosClient({
      endpoint: server.endpoint,
      key: server.key,
      agent: new Agent({ rejectUnauthorized: false }),
      connectionPolicy: { enableEndpointDiscovery: false },
    });
    // As the first release created them: no indexing policy on messages, none on chats either.
    const { database } = await client.databases.createIfNotExists({ id: config.database });
    await database.containers.createIfNotExists({ id: "messages", partitionKey: { paths: ["/chat_id"] } });
    await database.containers.createIfNotExists({ id: "chats", partitionKey: { paths: ["/owner"] } });
    const composite = async (id: string) => (await database.container(id).read()).resource?.indexingPolicy?.compositeIndexes ?? [];
    expect(await composite("messages")).toEqual([]);

    const warnings: string[] = [];
    const store = await openCosmosStore({ ...config, requestTimeoutMs: 5000, warn: (m) => warnings.push(m) });
    expect(warnings).toEqual([]);
    expect(await composite("messages")).toEqual([
      [
        { path: "/created_at", order: "descending" },
        { path: "/id", order: "descending" },
      ],
    ]);
    expect((await composite("chats")).length).toBe(1);

    const chat = chatFixture();
    await store.createChat("default", chat);
    const made = [];
    for (let i = 0; i < 5; i++) {
      const m = messageFixture(chat.id, { created_at: isoAt(0), id: `m${i}` });
      await store.addMessage(m);
      made.push(m);
    }
    expect((await allPages(store, chat.id, 2)).reverse().flat()).toStrictEqual(made);
    // Opening again changes nothing more.
    await (await openCosmosStore({ ...config, requestTimeoutMs: 5000, warn: (m) => warnings.push(m) })).close();
    expect((await composite("messages")).length).toBe(1);
    expect(warnings).toEqual([]);
    client.dispose();
    await store.close();
  });

  test("deleteChat sweeps a chat's messages even when the chat record is already gone", async () => {
    const store = await openCosmosStore({ ...configFor(server), requestTimeoutMs: 5000 });
    const chat = chatFixture();
    await store.createChat("default", chat);
    await store.addMessage(messageFixture(chat.id));
    expect(await store.deleteChat("default", chat.id)).toBe(true);
    // A writer that lost the race stores its message after the delete: the next delete removes it.
    await store.addMessage(messageFixture(chat.id));
    expect(await store.deleteChat("default", chat.id)).toBe(false);
    expect(await store.listMessages(chat.id, { limit: 10 })).toEqual([]);
    await store.close();
  });

  test("an expired processed record can be claimed again, and is purged", async () => {
    // Cosmos-specific: the takeover of an expired record is an etag-guarded replace, raced here,
    // and the purge is a cross-partition query. A TTL of 0 is expired when written: no sleep needed.
    const store = await openCosmosStore(configFor(server));
    const id = `dev/msg?#${crypto.randomUUID()}`; // characters Cosmos forbids in ids
    expect(await store.claimProcessed(id, 0)).toBe(true);
    const racers = await Promise.all(Array.from({ length: 6 }, () => store.claimProcessed(id, 3600)));
    expect(racers.filter(Boolean)).toHaveLength(1);
    expect(await store.claimProcessed(id, 3600)).toBe(false);
    const expired = [crypto.randomUUID(), crypto.randomUUID()];
    for (const e of expired) expect(await store.claimProcessed(e, 0)).toBe(true);
    expect(await store.purgeProcessed()).toBe(2);
    expect(await store.purgeProcessed()).toBe(0);
    expect(await store.claimProcessed(id, 3600)).toBe(false);
    await store.close();
  });

  test("a stopped server is reported unavailable quickly; the same store recovers", async () => {
    const store: Store = await openCosmosStore(configFor(server));
    const chat = chatFixture();
    await store.createChat("default", chat);

    await server.stop();
    const started = performance.now();
    const err = await store.ping().catch((e: unknown) => e);
    const elapsed = performance.now() - started;
    console.log(`cosmos: dead server reported unavailable after ${elapsed.toFixed(0)} ms`);
    expect(isStoreUnavailable(err)).toBe(true);
    expect(elapsed).toBeLessThan(10_000);
    expect(String((err as Error).message)).not.toContain(server.key);
    expect(isStoreUnavailable(await store.getChat("default", chat.id).catch((e: unknown) => e))).toBe(true);

    await server.start();
    await store.ping();
    expect(await store.getChat("default", chat.id)).toEqual(chat);
    await store.close();
  });

  test("opening against a dead server fails as StoreUnavailableError", async () => {
    const dead = await startCosmosServer();
    await dead.stop();
    const err = await openCosmosStore(configFor(dead)).catch((e: unknown) => e);
    expect(isStoreUnavailable(err)).toBe(true);
  });

  test("a server that accepts connections but never answers times out as StoreUnavailableError", async () => {
    // A network partition looks like this, not like a refused connection.
    const sockets = new Set<Socket>();
    const blackHole = createNetServer((s) => void sockets.add(s));
    await new Promise<void>((resolve) => blackHole.listen(0, "127.0.0.1", resolve));
    const { port } = blackHole.address() as AddressInfo;
    const started = performance.now();
    const err = await openCosmosStore({ ...configFor(server), endpoint: `https://127.0.0.1:${port}/` }).catch((e: unknown) => e);
    const elapsed = performance.now() - started;
    console.log(`cosmos: unanswering server reported unavailable after ${elapsed.toFixed(0)} ms (request timeout 2000 ms)`);
    expect(isStoreUnavailable(err)).toBe(true);
    expect(elapsed).toBeLessThan(10_000);
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => blackHole.close(() => resolve()));
  });
});
