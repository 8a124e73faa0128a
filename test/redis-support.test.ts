import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Cluster, Redis } from "ioredis";
import { readFileSync } from "node:fs";
import { redisCommand, startRedis, startRedisCluster, type RedisCluster, type RedisServer } from "./support/redis-server";
import { until } from "./support/until";

// The Redis peers the multi-replica tests run against are real: Debian's redis-server, one node or
// a 3-master cluster, driven here through ioredis (the client the server uses). This checks the
// peers themselves: what a test relies on (pub/sub, streams, hash slots, sharded pub/sub, outages
// on the same port) works, start-up is fast, and nothing outlives the test process.

const clients: (Redis | Cluster)[] = [];
const track = <T extends Redis | Cluster>(c: T) => {
  // Connection errors are expected here (outages on purpose); the tests watch commands and events.
  c.on("error", () => {});
  clients.push(c);
  return c;
};
const disconnectAll = () => {
  for (const c of clients.splice(0)) c.disconnect();
};

/** The next `event` from `emitter` whose arguments pass `match`, or a failure after `ms`. */
function nextEvent(emitter: Redis | Cluster, event: string, match: (...args: string[]) => boolean, ms = 3000) {
  return new Promise<string[]>((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.off(event, on);
      reject(new Error(`no matching "${event}" within ${ms} ms`));
    }, ms);
    const on = (...args: string[]) => {
      if (!match(...args)) return;
      clearTimeout(timer);
      emitter.off(event, on);
      resolve(args);
    };
    emitter.on(event, on);
  });
}

/** Whether `pid` is a live process (a zombie waiting to be reaped counts as gone). */
const alive = (pid: number) => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return !/^\d+ \(.*\) [ZX]/.test(stat);
  } catch {
    return false;
  }
};

describe("startRedis (one node)", () => {
  let redis: RedisServer;
  let c: Redis;
  beforeAll(async () => {
    const t = performance.now();
    redis = await startRedis();
    console.log(`[redis-support] one redis-server up in ${(performance.now() - t).toFixed(0)} ms`);
    // Reconnect quickly so the outage test does not wait on ioredis' default back-off.
    c = track(new Redis(redis.url, { retryStrategy: () => 20, maxRetriesPerRequest: 1 }));
  });
  afterAll(async () => {
    disconnectAll();
    await redis?.stop();
  });

  test("listens on 127.0.0.1 at its url, with persistence off", async () => {
    expect(redis.url).toBe(`redis://127.0.0.1:${redis.port}`);
    expect(await c.config("GET", "save")).toEqual(["save", ""]);
    expect(await c.config("GET", "appendonly")).toEqual(["appendonly", "no"]);
    expect(await c.config("GET", "bind")).toEqual(["bind", "127.0.0.1"]);
  });

  test("SET/GET", async () => {
    expect(await c.set("greeting", "hello")).toBe("OK");
    expect(await c.get("greeting")).toBe("hello");
  });

  test("PUBLISH reaches a SUBSCRIBE on another connection", async () => {
    const sub = track(new Redis(redis.url));
    await sub.subscribe("chat:1");
    const got = nextEvent(sub, "message", (channel) => channel === "chat:1");
    expect(await c.publish("chat:1", "hi")).toBe(1);
    expect(await got).toEqual(["chat:1", "hi"]);
  });

  test("XADD/XRANGE keep entries in order", async () => {
    const a = await c.xadd("events", "*", "type", "chunk", "n", "1");
    const b = await c.xadd("events", "*", "type", "chunk", "n", "2");
    const entries = await c.xrange("events", "-", "+");
    expect(entries).toEqual([
      [a!, ["type", "chunk", "n", "1"]],
      [b!, ["type", "chunk", "n", "2"]],
    ]);
  });

  test("stop() refuses connections; start() brings it back on the same port, empty; kill() is kill -9", async () => {
    await c.set("before-outage", "1");
    const pid = redis.pid()!;
    const closed = nextEvent(c, "close", () => true);
    await redis.stop();
    await closed;
    expect(redis.running()).toBe(false);
    expect(alive(pid)).toBe(false);
    await expect(redisCommand(redis.port, "PING")).rejects.toThrow();

    const t = performance.now();
    await redis.start();
    console.log(`[redis-support] restart on the same port in ${(performance.now() - t).toFixed(0)} ms`);
    expect(await redisCommand(redis.port, "PING")).toBe("PONG");
    // The same client reconnects to the same address and finds nothing persisted.
    await until(async () => (await c.ping().catch(() => "")) === "PONG", "the client to reconnect", 5000);
    expect(await c.get("before-outage")).toBeNull();

    const pid2 = redis.pid()!;
    await redis.kill();
    expect(alive(pid2)).toBe(false);
    await expect(redisCommand(redis.port, "PING")).rejects.toThrow();
    await redis.start();
    expect(await redisCommand(redis.port, "PING")).toBe("PONG");
  });
});

// A fresh cluster master refuses commands for its first 2 s (Redis' CLUSTER_WRITABLE_DELAY), so
// the cluster is started when the file loads and comes up while the one-node tests run.
const clusterT0 = performance.now();
const clusterUp = startRedisCluster({ nodes: 3 }).then((c) => {
  console.log(`[redis-support] 3-master cluster ok in ${(performance.now() - clusterT0).toFixed(0)} ms`);
  return c;
});
clusterUp.catch(() => {}); // awaited (and reported) in the cluster tests' beforeAll

describe("startRedisCluster (3 masters)", () => {
  let cluster: RedisCluster;
  let cc: Cluster;
  const cli = (o: ConstructorParameters<typeof Cluster>[1] = {}) =>
    track(new Cluster([{ host: "127.0.0.1", port: cluster.nodes[0]!.port }], o));
  const slotOf = async (key: string) => (await redisCommand(cluster.nodes[0]!.port, "CLUSTER", "KEYSLOT", key)) as number;
  /** The node owning `slot`, by the ranges it reports in CLUSTER SLOTS. */
  const ownerOf = async (slot: number) => {
    const ranges = (await redisCommand(cluster.nodes[0]!.port, "CLUSTER", "SLOTS")) as [number, number, [string, number]][];
    const r = ranges.find(([from, to]) => slot >= from && slot <= to);
    return r?.[2][1];
  };

  beforeAll(async () => {
    cluster = await clusterUp;
    cc = cli();
  });
  afterAll(async () => {
    disconnectAll();
    await cluster?.stop();
  });

  test("three masters with all 16384 slots, each node's url listed", async () => {
    expect(cluster.urls).toEqual(cluster.nodes.map((n) => `redis://127.0.0.1:${n.port}`));
    expect(new Set(cluster.nodes.map((n) => n.port)).size).toBe(3);
    for (const n of cluster.nodes) {
      const info = (await redisCommand(n.port, "CLUSTER", "INFO")) as string;
      expect(info).toContain("cluster_state:ok");
      expect(info).toContain("cluster_slots_assigned:16384");
      expect(info).toContain("cluster_known_nodes:3");
      expect(info).toContain("cluster_size:3");
    }
  });

  test("a Cluster client SETs keys with different hash tags onto all three nodes", async () => {
    const keys = Array.from({ length: 12 }, (_, i) => `{chat-${i}}:meta`);
    for (const k of keys) expect(await cc.set(k, k)).toBe("OK");
    for (const k of keys) expect(await cc.get(k)).toBe(k);
    const owners = await Promise.all(keys.map(async (k) => ownerOf(await slotOf(k))));
    expect(new Set(owners)).toEqual(new Set(cluster.nodes.map((n) => n.port)));
    // The keys really live where their slots are: each node holds some of them.
    for (const n of cluster.nodes) expect((await redisCommand(n.port, "DBSIZE")) as number).toBeGreaterThan(0);
  });

  test("keys sharing a {tag} share a slot, so multi-key commands work on them and not across tags", async () => {
    expect(await slotOf("{chat-7}:stream")).toBe(await slotOf("{chat-7}:meta"));
    expect(await slotOf("{chat-7}:meta")).toBe(await slotOf("chat-7"));
    expect(await cc.mset("{chat-7}:a", "1", "{chat-7}:b", "2")).toBe("OK");
    expect(await cc.mget("{chat-7}:a", "{chat-7}:b")).toEqual(["1", "2"]);
    expect(await slotOf("{chat-1}:a")).not.toBe(await slotOf("{chat-2}:a"));
    await expect(cc.mset("{chat-1}:a", "1", "{chat-2}:a", "2")).rejects.toThrow(/CROSSSLOT|same slot/i);
  });

  test("PUBLISH on one node reaches a subscriber connected through the Cluster client", async () => {
    const sub = cli();
    await sub.subscribe("replicas");
    // Publish straight to each node in turn: classic pub/sub is broadcast over the cluster bus.
    for (const n of cluster.nodes) {
      const pub = track(new Redis(n.url));
      const got = nextEvent(sub, "message", (ch, msg) => ch === "replicas" && msg === `from ${n.port}`);
      await pub.publish("replicas", `from ${n.port}`);
      expect(await got).toEqual(["replicas", `from ${n.port}`]);
    }
  });

  test("sharded pub/sub: SSUBSCRIBE through the Cluster client hears SPUBLISH, which only the owner accepts", async () => {
    const sub = cli({ shardedSubscribers: true });
    const pub = cli();
    const channels = ["chat:{c1}", "chat:{c2}", "chat:{c3}"];
    for (const ch of channels) await sub.ssubscribe(ch);
    for (const ch of channels) {
      const got = nextEvent(sub, "smessage", (c, m) => c === ch && m === `to ${ch}`);
      expect(await pub.spublish(ch, `to ${ch}`)).toBe(1);
      expect(await got).toEqual([ch, `to ${ch}`]);
    }
    // A node not owning the channel's slot redirects an SPUBLISH.
    const owner = await ownerOf(await slotOf("chat:{c1}"));
    const other = cluster.nodes.find((n) => n.port !== owner)!;
    const r = await redisCommand(other.port, "SPUBLISH", "chat:{c1}", "x");
    expect(r).toBeInstanceOf(Error);
    expect((r as Error).message).toMatch(/^MOVED \d+ 127\.0\.0\.1:\d+/);
  });

  test("a node stopped and started again on its port rejoins, and waitOk() sees the cluster ok again", async () => {
    // Clients would only retry the stopped node meanwhile; this test is about the servers.
    disconnectAll();
    const node = cluster.nodes[2]!;
    await node.stop();
    expect(node.running()).toBe(false);
    await expect(redisCommand(node.port, "PING")).rejects.toThrow();
    const t = performance.now();
    await node.start();
    await cluster.waitOk();
    console.log(`[redis-support] a cluster node back (restart + rejoin) in ${(performance.now() - t).toFixed(0)} ms`);
    const info = (await redisCommand(node.port, "CLUSTER", "INFO")) as string;
    expect(info).toContain("cluster_state:ok");
    expect(info).toContain("cluster_known_nodes:3");
  });
});

describe("leaks", () => {
  // A test process that dies without stopping its peers must not leave redis-server running.
  for (const how of ["process.exit(1)", "SIGTERM"] as const) {
    test(`redis-server children die with the test process (${how})`, async () => {
      const support = new URL("./support/redis-server.ts", import.meta.url).pathname;
      const code = `
        const { startRedis } = await import(${JSON.stringify(support)});
        const peers = await Promise.all([startRedis(), startRedis()]);
        console.log(JSON.stringify(peers.map((p) => p.pid())));
        // Wait to be told, so the test can first see the children alive.
        for await (const _ of console) ${how === "SIGTERM" ? "break;" : "process.exit(1);"}
        setInterval(() => {}, 1000);
      `;
      const child = Bun.spawn([process.execPath, "-e", code], { stdin: "pipe", stdout: "pipe", stderr: "pipe" });
      const reader = child.stdout.getReader();
      let out = "";
      while (!out.includes("\n")) {
        const { value, done } = await reader.read();
        if (done) break;
        out += new TextDecoder().decode(value);
      }
      const pids = JSON.parse(out) as number[];
      expect(pids).toHaveLength(2);
      expect(pids.every(alive)).toBe(true);
      if (how === "SIGTERM") child.kill("SIGTERM");
      else {
        child.stdin.write("go\n");
        await child.stdin.flush();
      }
      await child.exited;
      // SIGKILL is synchronous, but the kernel reaps asynchronously: allow it a moment.
      await until(() => pids.every((p) => !alive(p)), "every redis-server child to be gone", 2000);
    }, 15_000);
  }
});
