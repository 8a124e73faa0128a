import type { Store } from "../../src/store/store";
import { openCosmosStoreAt, startCosmosServer, type CosmosTestServer } from "./cosmos-server";
import type { RedisCluster, RedisServer } from "./redis-server";
import { spawnServer, type ServerProcess } from "./server-process";

// Several replicas of the real server, each its own process (`bun src/index.ts`), sharing one
// Cosmos store (the Cosmos test server, one database per startReplicas call) and one Redis (a node
// or a cluster), the way they run behind a load balancer. Each can be killed -9, stopped with
// SIGTERM and restarted on its own port; every process is SIGKILLed if the test process exits first.

export type Replicas = {
  /** replicas[i] is replica i's current process (restart(i) replaces it). */
  replicas: ServerProcess[];
  /** The env every replica got (store, Redis and the caller's), without the per-replica REPLICA_ID. */
  env: Record<string, string>;
  cosmos: CosmosTestServer;
  /** The Cosmos database the replicas share. */
  database: string;
  /** The test's own handle on the shared store, to read what the replicas wrote. */
  store: Store;
  /** kill -9 replica i: no shutdown code runs. Resolves when the process is gone. */
  kill(i: number): Promise<void>;
  /** SIGTERM replica i (a graceful shutdown), SIGKILL after `ms`; resolves when the process is gone. */
  terminate(i: number, ms?: number): Promise<void>;
  /** Starts replica i again, on the port it had, with the same env; kills -9 the old process first if it still runs. */
  restart(i: number): Promise<ServerProcess>;
  /** SIGTERM every replica (SIGKILL after 5 s), close the test's store, stop the Cosmos server if started here. Idempotent. */
  stop(): Promise<void>;
};

/** REDIS_URL (and REDIS_CLUSTER) for a Redis node or cluster from redis-server.ts. */
export function redisEnv(redis: RedisServer | RedisCluster): Record<string, string> {
  return "nodes" in redis ? { REDIS_URL: redis.urls.join(","), REDIS_CLUSTER: "true" } : { REDIS_URL: redis.url };
}

const running = (p: ServerProcess) => p.proc.exitCode === null && p.proc.signalCode === null;
const portOf = (p: ServerProcess) => new URL(p.httpUrl).port;

async function terminate(p: ServerProcess, ms: number) {
  if (!running(p)) return;
  p.proc.kill("SIGTERM");
  const timer = setTimeout(() => p.proc.kill("SIGKILL"), ms);
  await p.proc.exited;
  clearTimeout(timer);
}

/**
 * Starts `n` replicas with `env` plus the shared store's Cosmos settings, the Redis settings of
 * `redis` (or pass REDIS_URL/REDIS_CLUSTER in `env`) and REPLICA_ID=r<i> (`perReplica(i)` may add
 * or override per-replica vars). `cosmos` is shared with the caller if given, else started here.
 * The database (`database`, default a fresh `pichat-replicas-<uuid>`) is created before any
 * replica starts, so the replicas start in parallel without racing to create it.
 */
export async function startReplicas(o: {
  n: number;
  env?: Record<string, string>;
  redis?: RedisServer | RedisCluster;
  cosmos?: CosmosTestServer;
  database?: string;
  perReplica?: (i: number) => Record<string, string>;
}): Promise<Replicas> {
  const ownCosmos = !o.cosmos;
  const cosmos = o.cosmos ?? (await startCosmosServer());
  const database = o.database ?? `pichat-replicas-${crypto.randomUUID()}`;
  const env: Record<string, string> = {
    COSMOS_ENDPOINT: cosmos.endpoint,
    COSMOS_KEY: cosmos.key,
    COSMOS_ALLOW_SELF_SIGNED_CERT: "true",
    COSMOS_DATABASE: database,
    ...(o.redis ? redisEnv(o.redis) : {}),
    ...o.env,
  };
  const store = await openCosmosStoreAt(cosmos, database);

  const spawn = async (i: number, port?: string) => {
    // spawnServer reaps its process if the test process exits first.
    return spawnServer({ ...env, REPLICA_ID: `r${i}`, ...o.perReplica?.(i), ...(port ? { SERVER_PORT: port } : {}) });
  };
  const replicas: ServerProcess[] = [];
  const started = await Promise.allSettled(Array.from({ length: o.n }, (_, i) => spawn(i)));
  for (const s of started) if (s.status === "fulfilled") replicas.push(s.value);
  const failed = started.find((s) => s.status === "rejected");

  let stopped: Promise<void> | undefined;
  const stop = () =>
    (stopped ??= (async () => {
      await Promise.all(replicas.map((p) => terminate(p, 5000)));
      await store.close();
      if (ownCosmos) await cosmos.stop();
    })());
  if (failed) {
    await stop();
    throw failed.reason;
  }

  const at = (i: number) => {
    const p = replicas[i];
    if (!p) throw new Error(`no replica ${i} (there are ${replicas.length})`);
    return p;
  };
  return {
    replicas,
    env,
    cosmos,
    database,
    store,
    stop,
    kill: (i) => at(i).crash(),
    terminate: (i, ms = 5000) => terminate(at(i), ms),
    async restart(i) {
      const old = at(i);
      if (running(old)) await old.crash();
      // Same port: to a client (and a load balancer) it is the same replica coming back.
      const p = await spawn(i, portOf(old));
      replicas[i] = p;
      return p;
    },
  };
}
