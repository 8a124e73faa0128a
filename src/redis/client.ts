import { Cluster, Redis } from "ioredis";
import type { Logger } from "../log";

// One client library for both shapes of Redis: ioredis follows a Cluster's MOVED/ASK redirects and
// re-subscribes after a reconnect; Bun's built-in client does neither across nodes (docs/scaling.md).

export type RedisClient = Redis | Cluster;

export type RedisConnection = {
  /** Commands; fails fast while Redis is down (no offline queue), so nothing piles up in memory. */
  cmd: RedisClient;
  /** Subscriptions (a connection in subscriber mode cannot run commands). */
  sub: RedisClient;
  mode: "single" | "cluster";
  /** True while the command connection is ready. */
  up(): boolean;
  /** Round trip in ms, or undefined when Redis does not answer within `timeoutMs`. */
  ping(timeoutMs?: number): Promise<number | undefined>;
  close(): Promise<void>;
};

export function connectRedis(o: { url: string; cluster: boolean; log: Logger; name: string }): RedisConnection {
  const common = {
    connectionName: `pichat-${o.name}`,
    enableOfflineQueue: false,
    // Keep retrying, never faster than every 100 ms nor slower than every 2 s.
    retryStrategy: (times: number) => Math.min(100 * times, 2000),
    maxRetriesPerRequest: 1,
    // Each command goes out when it is issued: auto-pipelining would hold every token's publish
    // until setImmediate, behind this replica's own fan-out.
    enableAutoPipelining: false,
  };
  const make = (offlineQueue: boolean, subscriber = false): RedisClient => {
    if (!o.cluster) return new Redis(o.url, { ...common, enableOfflineQueue: offlineQueue, lazyConnect: false });
    // Any node finds the rest; several (comma-separated) let a restart find the cluster while one is down.
    const urls = o.url.split(",").map((x) => new URL(x.trim()));
    const u = urls[0]!;
    const tls = u.protocol === "rediss:" ? { tls: { servername: u.hostname } } : {};
    return new Cluster(
      urls.map((n) => ({ host: n.hostname, port: Number(n.port || 6379) })),
      {
        enableOfflineQueue: offlineQueue,
        // The bus uses sharded pub/sub: one channel, one slot, one node, so one replica's events stay in order.
        shardedSubscribers: subscriber,
        enableAutoPipelining: common.enableAutoPipelining,
        clusterRetryStrategy: common.retryStrategy,
        redisOptions: {
          connectionName: common.connectionName,
          maxRetriesPerRequest: 1,
          ...tls,
          ...(u.password ? { password: decodeURIComponent(u.password) } : {}),
          ...(u.username ? { username: decodeURIComponent(u.username) } : {}),
        },
      },
    );
  };
  const cmd = make(false);
  // The subscriber queues its (re-)subscriptions until it is connected.
  const sub = make(true, true);
  // Errors are reported by /health and the bus; logging each reconnect attempt would flood the log.
  let lastLogged = 0;
  const onError = (e: Error) => {
    if (Date.now() - lastLogged < 10_000) return;
    lastLogged = Date.now();
    o.log.warn("redis connection error", { error: e.message });
  };
  cmd.on("error", onError);
  sub.on("error", onError);

  return {
    cmd,
    sub,
    mode: o.cluster ? "cluster" : "single",
    up: () => cmd.status === "ready",
    async ping(timeoutMs = 1000) {
      if (cmd.status !== "ready") return undefined;
      const started = performance.now();
      let timer: ReturnType<typeof setTimeout> | undefined;
      const late = new Promise<undefined>((r) => (timer = setTimeout(() => r(undefined), timeoutMs)));
      try {
        return await Promise.race([cmd.ping().then(() => performance.now() - started), late]);
      } catch {
        return undefined;
      } finally {
        clearTimeout(timer);
      }
    },
    async close() {
      await Promise.allSettled([cmd.quit(), sub.quit()]);
      cmd.disconnect();
      sub.disconnect();
    },
  };
}
