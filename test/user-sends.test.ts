import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { silentLogger } from "../src/log";
import { connectRedis, type RedisConnection } from "../src/redis/client";
import { redisUserSends } from "../src/redis/user-sends";
import { localUserSends } from "../src/ws/limits";
import { startRedis, type RedisServer } from "./support/redis-server";
import { until } from "./support/until";

// RATE_LIMIT_MESSAGES_PER_MINUTE is one bucket per user wherever they are connected: two replicas
// (two Redis connections here, as two server processes have) share it through Debian's redis-server;
// while Redis is down each replica counts alone. The sockets-level behaviour is in users.test.ts.

let redis: RedisServer;
let r0: RedisConnection;
let r1: RedisConnection;

beforeAll(async () => {
  redis = await startRedis();
  r0 = connectRedis({ url: redis.url, cluster: false, log: silentLogger, name: "r0" });
  r1 = connectRedis({ url: redis.url, cluster: false, log: silentLogger, name: "r1" });
  await until(() => r0.up() && r1.up(), "both connections up");
});
afterAll(async () => {
  await r0?.close();
  await r1?.close();
  await redis?.stop();
});

describe("sends per minute per user, across replicas", () => {
  test("a user's sends on two replicas come out of one bucket; another user's do not", async () => {
    const PER_MINUTE = 3;
    const onR0 = redisUserSends(r0, PER_MINUTE, localUserSends(PER_MINUTE), silentLogger);
    const onR1 = redisUserSends(r1, PER_MINUTE, localUserSends(PER_MINUTE), silentLogger);
    const alice = `u-${crypto.randomUUID()}`;
    const answers = [await onR0(alice), await onR1(alice), await onR0(alice), await onR1(alice)];
    expect(answers.slice(0, 3)).toEqual([{ ok: true }, { ok: true }, { ok: true }]);
    expect(answers[3]).toMatchObject({ ok: false });
    // A whole minute's allowance refills at PER_MINUTE a minute: the next token in about 20 s.
    const wait = (answers[3] as { retryAfterMs: number }).retryAfterMs;
    expect(wait).toBeGreaterThan(15_000);
    expect(wait).toBeLessThanOrEqual(20_000);
    expect(await onR1(`u-${crypto.randomUUID()}`)).toEqual({ ok: true });
  });

  test("while Redis is down each replica counts alone (its own bucket), and the shared one is used again when it is back", async () => {
    const PER_MINUTE = 2;
    const fallback = localUserSends(PER_MINUTE);
    const onR0 = redisUserSends(r0, PER_MINUTE, fallback, silentLogger);
    const bob = `u-${crypto.randomUUID()}`;
    await redis.stop();
    await until(() => !r0.up(), "r0 to see Redis down");
    expect([await onR0(bob), await onR0(bob), await onR0(bob)].map((a) => a.ok)).toEqual([true, true, false]);
    await redis.start();
    await until(() => r0.up(), "r0 to reconnect");
    // A fresh Redis: the shared bucket is full again, and it is the one counting.
    const carol = `u-${crypto.randomUUID()}`;
    const onR1 = redisUserSends(r1, PER_MINUTE, localUserSends(PER_MINUTE), silentLogger);
    await until(() => r1.up(), "r1 to reconnect");
    expect([await onR0(carol), await onR1(carol), await onR0(carol)].map((a) => a.ok)).toEqual([true, true, false]);
  });
});
