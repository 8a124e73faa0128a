import { forEachLine } from "./lines";
import type { Subprocess } from "bun";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { reapOnExit, removeOnExit } from "./reaper";

// Real Redis for tests: Debian's `redis-server` as child processes on loopback, each in its own
// temp dir, nothing persisted (`--save "" --appendonly no`), so a stop()/start() is a Redis that
// went away and came back empty on the same address. A 3-master Redis Cluster is built the way
// redis-cli does it (epochs, slots, MEET), then awaited by polling CLUSTER INFO on every node.
// Every child is SIGKILLed when the test process exits (reaper.ts), so a failing test leaks none.

const REDIS_SERVER = process.env.REDIS_SERVER_BIN ?? "redis-server";
/** Redis refuses writes on a fresh cluster master for this long after it starts (CLUSTER_WRITABLE_DELAY, hard-coded in Redis). */
export const CLUSTER_WRITABLE_DELAY_MS = 2000;
const SLOTS = 16384;

export type RedisServer = {
  url: string;
  port: number;
  /** The temp dir it runs in (cluster nodes keep nodes.conf here across restarts). */
  dir: string;
  /** Its log (stdout) lines, for failure messages. */
  lines: string[];
  running(): boolean;
  /** The current process id (undefined while stopped). */
  pid(): number | undefined;
  /** SIGTERM, SIGKILL after 3 s; resolves when the process is gone. No-op when stopped. */
  stop(): Promise<void>;
  /** Starts it again on the same port (empty: nothing is persisted); resolves once it accepts connections. */
  start(): Promise<void>;
  /** kill -9; resolves when the process is gone. */
  kill(): Promise<void>;
};

export type RedisClusterNode = RedisServer;

export type RedisCluster = {
  /** One redis:// URL per node. */
  urls: string[];
  /** Any node's URL: a cluster client discovers the rest. */
  url: string;
  nodes: RedisClusterNode[];
  /** Resolves once every running node reports cluster_state:ok and knows all nodes (deadline `ms`). */
  waitOk(ms?: number): Promise<void>;
  /** Stops every node and removes the temp dirs. */
  stop(): Promise<void>;
};

type ClusterConf = { nodeTimeoutMs: number; requireFullCoverage: boolean };

// ---- ports ----

// Ports come from 20000–22767, below Linux's ephemeral range (32768+), so no outgoing connection
// can be holding them; a cluster node's bus port (port + 10000) then stays below it too.
const PORT_LOW = 20_000;
const PORT_SPAN = 2768;

function canBind(port: number): boolean {
  try {
    const l = Bun.listen({ hostname: "127.0.0.1", port, socket: { data() {} } });
    l.stop(true);
    return true;
  } catch {
    return false;
  }
}

function freePort(withBus: boolean): number {
  for (let i = 0; i < 200; i++) {
    const port = PORT_LOW + Math.floor(Math.random() * PORT_SPAN);
    if (canBind(port) && (!withBus || canBind(port + 10_000))) return port;
  }
  throw new Error("no free loopback port found for redis-server");
}

// ---- one process ----

function args(port: number, dir: string, cluster?: ClusterConf): string[] {
  const a = [
    "--port",
    String(port),
    "--bind",
    "127.0.0.1",
    "--protected-mode",
    "no",
    "--save",
    "",
    "--appendonly",
    "no",
    "--dir",
    dir,
    "--logfile",
    "",
    "--daemonize",
    "no",
    "--loglevel",
    "notice",
    "--databases",
    "1",
    // serverCron acts on SIGTERM; at 100 Hz instead of 10 a stop() takes ~10 ms, not ~100.
    "--hz",
    "100",
  ];
  if (cluster) {
    a.push(
      "--cluster-enabled",
      "yes",
      "--cluster-config-file",
      join(dir, "nodes.conf"),
      "--cluster-node-timeout",
      String(cluster.nodeTimeoutMs),
      "--cluster-require-full-coverage",
      cluster.requireFullCoverage ? "yes" : "no",
    );
  }
  return a;
}

type Launch = { proc: Subprocess<"ignore", "pipe", "pipe">; exited: Promise<number> };

/** Spawns redis-server and resolves once it logs that it accepts connections; rejects with its log if it exits first. */
async function launch(port: number, dir: string, lines: string[], cluster?: ClusterConf): Promise<Launch> {
  const proc = Bun.spawn([REDIS_SERVER, ...args(port, dir, cluster)], { cwd: dir, stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  reapOnExit(proc);
  const stderr = new Response(proc.stderr).text();
  let ready!: () => void;
  const isReady = new Promise<void>((r) => (ready = r));
  // Keep draining stdout for the process's whole life, or a chatty Redis would block on a full pipe.
  void forEachLine(proc.stdout, (line) => {
    if (lines.length > 2000) lines.splice(0, 1000);
    lines.push(line);
    if (line.includes("Ready to accept connections")) ready();
  });
  const timeout = Bun.sleep(10_000).then(() => "timeout" as const);
  const outcome = await Promise.race([isReady.then(() => "ready" as const), proc.exited.then(() => "exited" as const), timeout]);
  if (outcome === "ready") return { proc, exited: proc.exited };
  if (outcome === "timeout") {
    proc.kill("SIGKILL");
    await proc.exited;
  }
  const log = `${lines.slice(-15).join("\n")}\n${(await stderr).slice(0, 1000)}`;
  throw Object.assign(
    new Error(
      `redis-server on port ${port} ${outcome === "timeout" ? "did not become ready within 10 s" : `exited (${proc.exitCode ?? proc.signalCode})`}:\n${log}`,
    ),
    {
      addressInUse: /address already in use/i.test(log),
    },
  );
}

async function startNode(o: { cluster?: ClusterConf }): Promise<RedisServer> {
  const dir = mkdtempSync(join(tmpdir(), "pichat-redis-"));
  removeOnExit(dir);
  const lines: string[] = [];
  let port = 0;
  let current: Launch | undefined;
  // Another test process may take the probed port before redis-server binds it: pick another.
  for (let attempt = 0; ; attempt++) {
    port = freePort(Boolean(o.cluster));
    try {
      current = await launch(port, dir, lines, o.cluster);
      break;
    } catch (e) {
      if (!(e as { addressInUse?: boolean }).addressInUse || attempt >= 5) throw e;
      rmSync(join(dir, "nodes.conf"), { force: true });
    }
  }
  const alive = () => current !== undefined && current.proc.exitCode === null && current.proc.signalCode === null;
  const gone = async (signal: "SIGTERM" | "SIGKILL") => {
    const c = current;
    if (!c) return;
    current = undefined;
    c.proc.kill(signal);
    if (signal === "SIGTERM") {
      const timer = setTimeout(() => c.proc.kill("SIGKILL"), 3000);
      await c.exited;
      clearTimeout(timer);
    } else {
      await c.exited;
    }
  };
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    dir,
    lines,
    running: alive,
    pid: () => (alive() ? current?.proc.pid : undefined),
    stop: () => gone("SIGTERM"),
    kill: () => gone("SIGKILL"),
    async start() {
      if (alive()) return;
      current = await launch(port, dir, lines, o.cluster);
    },
  };
}

/** One Redis on a free loopback port, persistence off. */
export function startRedis(): Promise<RedisServer> {
  return startNode({});
}

// ---- a minimal RESP client for set-up commands (no reconnects, no client-side state) ----

type Reply = string | number | null | Reply[] | Error;

function parseReply(buf: string, at: number): { value: Reply; next: number } | undefined {
  const eol = buf.indexOf("\r\n", at);
  if (eol < 0) return undefined;
  const head = buf.slice(at + 1, eol);
  switch (buf[at]) {
    case "+":
      return { value: head, next: eol + 2 };
    case "-":
      return { value: new Error(head), next: eol + 2 };
    case ":":
      return { value: Number(head), next: eol + 2 };
    case "$": {
      const n = Number(head);
      if (n < 0) return { value: null, next: eol + 2 };
      // Set-up replies are ASCII, so characters are bytes here.
      if (buf.length < eol + 2 + n + 2) return undefined;
      return { value: buf.slice(eol + 2, eol + 2 + n), next: eol + 2 + n + 2 };
    }
    case "*": {
      const n = Number(head);
      if (n < 0) return { value: null, next: eol + 2 };
      const items: Reply[] = [];
      let next = eol + 2;
      for (let i = 0; i < n; i++) {
        const r = parseReply(buf, next);
        if (!r) return undefined;
        items.push(r.value);
        next = r.next;
      }
      return { value: items, next };
    }
    default:
      throw new Error(`unexpected RESP reply: ${JSON.stringify(buf.slice(at, at + 40))}`);
  }
}

/** Sends one command to 127.0.0.1:`port` on a fresh connection and returns its reply (an Error for -ERR). */
export function redisCommand(port: number, ...argv: (string | number)[]): Promise<Reply> {
  const payload = `*${argv.length}\r\n${argv.map((a) => `$${Buffer.byteLength(String(a))}\r\n${a}\r\n`).join("")}`;
  return new Promise((resolve, reject) => {
    let buf = "";
    let settled = false;
    const timer = setTimeout(() => finish(new Error(`redis 127.0.0.1:${port} did not answer ${argv[0]} within 2 s`)), 2000);
    // A reply (an -ERR one included) resolves; a transport failure rejects.
    const finish = (r: { reply: Reply } | Error, sock?: { end(): void }) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock?.end();
      if (r instanceof Error) reject(r);
      else resolve(r.reply);
    };
    Bun.connect({
      hostname: "127.0.0.1",
      port,
      socket: {
        open(s) {
          s.write(payload);
        },
        data(s, chunk) {
          buf += chunk.toString("latin1");
          const r = parseReply(buf, 0);
          if (r) finish({ reply: r.value }, s);
        },
        close() {
          finish(new Error(`redis 127.0.0.1:${port} closed the connection before answering ${argv[0]}`));
        },
        error(_s, e) {
          finish(e);
        },
        connectError(_s, e) {
          finish(e);
        },
      },
    }).catch((e: Error) => finish(e));
  });
}

// ---- cluster ----

const infoField = (info: string, key: string) => new RegExp(`^${key}:(\\S+)`, "m").exec(info)?.[1];

/**
 * A real Redis Cluster of `nodes` masters (no replicas) on loopback, slots split evenly. Resolves
 * once every node says cluster_state:ok. Redis itself keeps a fresh master down for 2 s after it
 * starts (CLUSTER_WRITABLE_DELAY), so this takes a little over 2 s; start it in parallel with other
 * set-up. A restarted node (nodes[i].start()) rejoins from its nodes.conf, also after 2 s; call
 * waitOk() to wait for it. `nodeTimeoutMs` is how soon the others mark a stopped node as failed
 * (with full coverage required, the whole cluster then refuses commands until it is back).
 */
export async function startRedisCluster(
  o: { nodes?: number; nodeTimeoutMs?: number; requireFullCoverage?: boolean } = {},
): Promise<RedisCluster> {
  const n = o.nodes ?? 3;
  if (n < 1) throw new Error("a cluster needs at least one node");
  const conf: ClusterConf = { nodeTimeoutMs: o.nodeTimeoutMs ?? 500, requireFullCoverage: o.requireFullCoverage ?? true };
  const started = await Promise.allSettled(Array.from({ length: n }, () => startNode({ cluster: conf })));
  const nodes = started.flatMap((s) => (s.status === "fulfilled" ? [s.value] : []));
  const failed = started.find((s) => s.status === "rejected");
  const stopAll = async () => {
    await Promise.all(nodes.map((x) => x.stop()));
    for (const x of nodes) rmSync(x.dir, { recursive: true, force: true });
  };
  if (failed) {
    await stopAll();
    throw failed.reason;
  }

  const check = (r: Reply, what: string) => {
    if (r instanceof Error) throw new Error(`${what}: ${r.message}`);
    return r;
  };
  try {
    // As redis-cli --cluster create does: distinct config epochs (no epoch-collision round), each
    // master its slot range, then one node meets the others and gossip spreads the rest.
    await Promise.all(
      nodes.map(async (x, i) => {
        check(await redisCommand(x.port, "CLUSTER", "SET-CONFIG-EPOCH", i + 1), `SET-CONFIG-EPOCH on ${x.port}`);
        const from = Math.floor((SLOTS * i) / n);
        const to = Math.floor((SLOTS * (i + 1)) / n) - 1;
        check(await redisCommand(x.port, "CLUSTER", "ADDSLOTSRANGE", from, to), `ADDSLOTSRANGE on ${x.port}`);
      }),
    );
    const first = nodes[0]!;
    for (const x of nodes.slice(1)) check(await redisCommand(first.port, "CLUSTER", "MEET", "127.0.0.1", x.port), `MEET ${x.port}`);
  } catch (e) {
    await stopAll();
    throw e;
  }

  const waitOk = async (ms = 10_000) => {
    const deadline = Date.now() + ms;
    let last = "";
    for (;;) {
      const running = nodes.filter((x) => x.running());
      const infos = await Promise.all(running.map((x) => redisCommand(x.port, "CLUSTER", "INFO").catch((e: Error) => e)));
      const bad = infos.flatMap((info, i) => {
        if (typeof info !== "string") return [`${running[i]!.port}: ${info instanceof Error ? info.message : String(info)}`];
        const state = infoField(info, "cluster_state");
        const known = Number(infoField(info, "cluster_known_nodes"));
        const assigned = Number(infoField(info, "cluster_slots_assigned"));
        return state === "ok" && known === n && assigned === SLOTS
          ? []
          : [`${running[i]!.port}: state ${state}, ${known} known, ${assigned} slots`];
      });
      if (bad.length === 0) return;
      last = bad.join("; ");
      if (Date.now() > deadline) throw new Error(`the Redis cluster was not ok within ${ms} ms: ${last}`);
      await Bun.sleep(25);
    }
  };
  try {
    await waitOk();
  } catch (e) {
    await stopAll();
    throw e;
  }
  const urls = nodes.map((x) => x.url);
  return { urls, url: urls[0]!, nodes, waitOk, stop: stopAll };
}
