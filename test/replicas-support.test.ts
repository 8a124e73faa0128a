import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { startRedis, type RedisCluster, type RedisServer } from "./support/redis-server";
import { redisEnv, startReplicas, type Replicas } from "./support/replicas";
import { connect, type TestClient } from "./support/ws-client";

// The replica set the multi-replica tests run against: real server processes sharing one Cosmos
// store and one Redis. This checks the set itself (parallel start, the shared store, kill -9,
// restart on the same address, graceful stop); what replicas tell each other is tested elsewhere.

let redis: RedisServer;
let set: Replicas;
const clients: TestClient[] = [];
/** The environment a process was started with, as the kernel has it. */
const environOf = (pid: number) =>
  Object.fromEntries(
    readFileSync(`/proc/${pid}/environ`, "utf8")
      .split("\0")
      .filter(Boolean)
      .map((kv) => [kv.slice(0, kv.indexOf("=")), kv.slice(kv.indexOf("=") + 1)]),
  );
const alive = (pid: number) => {
  try {
    return !/^\d+ \(.*\) [ZX]/.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return false;
  }
};
const client = async (url: string) => {
  const c = await connect(url);
  clients.push(c);
  return c;
};

beforeAll(async () => {
  redis = await startRedis();
  const t = performance.now();
  set = await startReplicas({ n: 3, redis, env: { CHAT_TITLES: "false" } });
  console.log(
    `[replicas-support] 3 replicas listening in ${(performance.now() - t).toFixed(0)} ms (Cosmos test server and store included)`,
  );
});
afterAll(async () => {
  for (const c of clients) c.close();
  await set?.stop();
  await redis?.stop();
});

describe("startReplicas", () => {
  test("three processes on three ports, each given the shared store, the Redis URL and its own REPLICA_ID", () => {
    expect(new Set(set.replicas.map((r) => r.wsUrl)).size).toBe(3);
    expect(new Set(set.replicas.map((r) => r.proc.pid)).size).toBe(3);
    expect(set.env).toMatchObject({ REDIS_URL: redis.url, COSMOS_DATABASE: set.database, COSMOS_ENDPOINT: set.cosmos.endpoint });
    expect(set.env.REDIS_CLUSTER).toBeUndefined();
    set.replicas.forEach((r, i) => {
      expect(environOf(r.proc.pid)).toMatchObject({ REPLICA_ID: `r${i}`, REDIS_URL: redis.url, COSMOS_DATABASE: set.database });
      expect(r.lines.join("\n")).toContain('"store":"cosmos"');
    });
    // A cluster is named by any node's URL plus REDIS_CLUSTER=true.
    const cluster = { url: "redis://127.0.0.1:7000", urls: ["redis://127.0.0.1:7000"], nodes: [] } as unknown as RedisCluster;
    expect(redisEnv(cluster)).toEqual({ REDIS_URL: "redis://127.0.0.1:7000", REDIS_CLUSTER: "true" });
  });

  test("they share one store: a chat created through replica 0 is listed by replica 2 and is in the test's store", async () => {
    const a = await client(set.replicas[0]!.wsUrl);
    const chat = (await a.request({ type: "CREATE_CHAT", payload: { name: "shared" } }, "NEW_CHAT")).chat;
    const c = await client(set.replicas[2]!.wsUrl);
    const list = await c.request({ type: "GET_CHATS" }, "CHAT_LIST");
    expect(list.chats.map((x: { id: string }) => x.id)).toContain(chat.id);
    expect(await set.store.getChat("default", chat.id)).toMatchObject({ id: chat.id, name: "shared" });
  });

  test("kill(i) is kill -9; restart(i) brings the replica back on the same address with the same store", async () => {
    const old = set.replicas[1]!;
    const c = await client(old.wsUrl);
    await set.kill(1);
    expect(old.proc.signalCode).toBe("SIGKILL");
    await c.closed;
    await expect(connect(old.wsUrl)).rejects.toThrow();

    const t = performance.now();
    const back = await set.restart(1);
    console.log(`[replicas-support] a replica restarted in ${(performance.now() - t).toFixed(0)} ms`);
    expect(set.replicas[1]).toBe(back);
    expect(back.wsUrl).toBe(old.wsUrl);
    expect(back.proc.pid).not.toBe(old.proc.pid);
    expect(environOf(back.proc.pid).REPLICA_ID).toBe("r1");
    const list = await (await client(back.wsUrl)).request({ type: "GET_CHATS" }, "CHAT_LIST");
    expect(list.chats.map((x: { name: string }) => x.name)).toContain("shared");
  });

  test("terminate(i) is a graceful SIGTERM shutdown", async () => {
    const r = set.replicas[2]!;
    await set.terminate(2);
    expect(r.proc.exitCode).toBe(0);
    expect(r.lines.some((l) => l.includes("stopped"))).toBe(true);
  });

  test("stop() ends every replica", async () => {
    const pids = set.replicas.map((r) => r.proc.pid);
    await set.stop();
    expect(pids.filter(alive)).toEqual([]);
  });
});
