import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { transferGate } from "../src/http/throttle";
import { silentLogger } from "../src/log";
import { connectRedis, type RedisConnection } from "../src/redis/client";
import { redisTransfers } from "../src/redis/transfers";
import { startRedis, type RedisServer } from "./support/redis-server";
import { until } from "./support/until";

// A user's exports and imports across replicas: two Redis connections (as two server processes
// have) on Debian's redis-server share one running transfer and one start bucket per user; the HTTP
// side of it (the 429s) is in bounds.test.ts.

let redis: RedisServer;
let r0: RedisConnection;
let r1: RedisConnection;
const made: { close(): void }[] = [];

beforeAll(async () => {
  redis = await startRedis();
  r0 = connectRedis({ url: redis.url, cluster: false, log: silentLogger, name: "r0" });
  r1 = connectRedis({ url: redis.url, cluster: false, log: silentLogger, name: "r1" });
  await until(() => r0.up() && r1.up(), "both connections up");
});
afterAll(async () => {
  for (const m of made) m.close();
  await r0?.close();
  await r1?.close();
  await redis?.stop();
});

const gate = (conn: RedisConnection, replicaId: string, perMinute: number, leaseMs = 10_000) => {
  const g = redisTransfers(conn, { perMinute, leaseMs, replicaId, log: silentLogger }, transferGate({ concurrent: 1, perMinute }));
  made.push(g);
  return g;
};

describe("exports and imports across replicas", () => {
  test("one at a time per user whichever replica runs it; another user is free; a release frees it everywhere", async () => {
    const a = gate(r0, "r0", 100);
    const b = gate(r1, "r1", 100);
    const user = `u-${crypto.randomUUID()}`;
    const first = await a.admit(user);
    expect("release" in first).toBe(true);
    expect(await b.admit(user)).toEqual({ retryAfterS: 1, reason: "busy" });
    expect(await a.admit(user)).toEqual({ retryAfterS: 1, reason: "busy" });
    const other = await b.admit(`u-${crypto.randomUUID()}`);
    expect("release" in other).toBe(true);
    if ("release" in first) first.release();
    await until(async () => "release" in (await b.admit(user)), "the slot free on the other replica");
  });

  test("the rate is one bucket per user across replicas; refused starts take no token", async () => {
    const a = gate(r0, "r0", 3);
    const b = gate(r1, "r1", 3);
    const user = `u-${crypto.randomUUID()}`;
    for (const g of [a, b, a]) {
      const r = await g.admit(user);
      expect("release" in r).toBe(true);
      if ("release" in r) {
        // Busy while it runs, on both: no token taken by those refusals.
        expect((await (g === a ? b : a).admit(user)) as object).toEqual({ retryAfterS: 1, reason: "busy" });
        r.release();
        await until(async () => (await r0.cmd.exists(`pichat:{u:${user}}:transfer`)) === 0, "released");
      }
    }
    const fourth = await b.admit(user);
    expect(fourth).toMatchObject({ reason: "rate" });
    expect((fourth as { retryAfterS: number }).retryAfterS).toBeGreaterThanOrEqual(1);
  });

  test("a replica that dies holding a transfer frees it within a lease (not renewed)", async () => {
    const dead = redisTransfers(
      r0,
      { perMinute: 100, leaseMs: 300, replicaId: "dead", log: silentLogger },
      transferGate({ concurrent: 1, perMinute: 100 }),
    );
    const user = `u-${crypto.randomUUID()}`;
    expect("release" in (await dead.admit(user))).toBe(true);
    dead.close(); // stops renewing, as a killed process does
    const b = gate(r1, "r1", 100);
    expect(await b.admit(user)).toMatchObject({ reason: "busy" });
    await until(async () => "release" in (await b.admit(user)), "the lapsed slot taken", 5_000);
  });
});
