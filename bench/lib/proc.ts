import { readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { now, within } from "./clock";

// Child processes of the bench: servers under test, baselines, peers and socket-holding clients.
// They talk to the bench over Bun's IPC channel (JSON): a child announces itself with
// {t:"ready", info}, answers {t:"req", id, cmd, args} with {t:"res", id, ok, value|error}, and may
// push {t:"event", ...} at any time. Every child exits on its own when the bench goes away
// (IPC disconnect) or after a hard lifetime cap, so no run can leave processes behind.

export const BENCH_DIR = join(import.meta.dir, "..");
/** No child of the bench lives longer than this, whatever happens to the bench. */
export const CHILD_MAX_LIFETIME_MS = 15 * 60_000;
export const PROFILE_DIR = join(tmpdir(), "pichat-bench-profiles");

type Msg = { t: string; [k: string]: unknown };

export type Child<Info = Record<string, unknown>> = {
  name: string;
  pid: number;
  info: Info;
  /** Sends a command and waits (bounded) for its answer. */
  call<T = unknown>(cmd: string, args?: unknown, timeoutMs?: number): Promise<T>;
  /** Events the child pushes. */
  onEvent(fn: (e: Msg) => void): void;
  /** Clock offset of the child relative to this process, in ms (child time − our time). */
  clockOffsetMs(): Promise<number>;
  /** CPU seconds (user + system) the child has used so far, from /proc. */
  cpuSeconds(): number;
  /** Resident set size in bytes, from /proc. */
  rssBytes(): number;
  stop(): Promise<void>;
  exited: Promise<number | null>;
};

const live = new Set<Subprocess>();
let hooksInstalled = false;
function installHooks() {
  if (hooksInstalled) return;
  hooksInstalled = true;
  // Only the children this process started, by their own handles.
  const killAll = () => {
    for (const p of live) {
      try {
        p.kill("SIGKILL");
      } catch {}
    }
  };
  process.on("exit", killAll);
  for (const sig of ["SIGINT", "SIGTERM"] as const) {
    process.on(sig, () => {
      killAll();
      process.exit(130);
    });
  }
}

export async function spawnChild<Info = Record<string, unknown>>(
  script: string,
  o: { name?: string; env?: Record<string, string>; args?: string[]; readyTimeoutMs?: number } = {},
): Promise<Child<Info>> {
  installHooks();
  const name = o.name ?? script;
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  const eventFns: ((e: Msg) => void)[] = [];
  let readyResolve!: (info: Info) => void;
  const ready = new Promise<Info>((r) => (readyResolve = r));
  let nextId = 1;

  // BENCH_CPU_PROF=app,baseline: those children write a CPU profile (markdown) when they exit.
  const profiled = (process.env.BENCH_CPU_PROF ?? "").split(",").includes(name);
  const flags = profiled
    ? [
        process.env.BENCH_CPU_PROF_JSON ? "--cpu-prof" : "--cpu-prof-md",
        `--cpu-prof-dir=${PROFILE_DIR}`,
        `--cpu-prof-interval=${process.env.BENCH_CPU_PROF_INTERVAL ?? 250}`,
      ]
    : [];
  if (profiled) console.log(`   (${name} writes a CPU profile to ${PROFILE_DIR} when it stops)`);
  const proc = Bun.spawn([process.execPath, ...flags, join(BENCH_DIR, script), ...(o.args ?? [])], {
    cwd: join(BENCH_DIR, ".."),
    env: { ...process.env, ...o.env, BENCH_CHILD: "1" },
    stdio: ["ignore", "inherit", "inherit"],
    serialization: "json",
    ipc(message: Msg) {
      if (message.t === "ready") readyResolve(message.info as Info);
      else if (message.t === "res") {
        const p = pending.get(message.id as number);
        if (!p) return;
        pending.delete(message.id as number);
        if (message.ok) p.resolve(message.value);
        else p.reject(new Error(`${name}: ${String(message.error)}`));
      } else if (message.t === "event") for (const fn of eventFns) fn(message);
    },
  });
  live.add(proc);
  const exited = proc.exited.then((code) => {
    live.delete(proc);
    for (const p of pending.values()) p.reject(new Error(`${name} exited (${code}) before answering`));
    pending.clear();
    return code;
  });

  const info = await within(
    Promise.race([ready, exited.then((c) => Promise.reject(new Error(`${name} exited (${c}) before it was ready`)))]),
    o.readyTimeoutMs ?? 30_000,
    `${name} to start`,
  ).catch((e) => {
    proc.kill("SIGKILL");
    throw e;
  });

  const call = <T>(cmd: string, args?: unknown, timeoutMs = 30_000): Promise<T> => {
    const id = nextId++;
    const p = new Promise<T>((resolve, reject) => pending.set(id, { resolve: resolve as (v: unknown) => void, reject }));
    proc.send({ t: "req", id, cmd, args });
    return within(p, timeoutMs, `${name} to answer ${cmd}`).finally(() => pending.delete(id));
  };

  return {
    name,
    pid: proc.pid,
    info,
    call,
    onEvent: (fn) => void eventFns.push(fn),
    async clockOffsetMs() {
      // NTP-style: the exchange with the shortest round trip bounds the error by half of it.
      let best = { rtt: Infinity, offset: 0 };
      for (let i = 0; i < 30; i++) {
        const t0 = now();
        const t = await call<number>("now", undefined, 5000);
        const t1 = now();
        if (t1 - t0 < best.rtt) best = { rtt: t1 - t0, offset: t - (t0 + t1) / 2 };
      }
      return best.offset;
    },
    cpuSeconds: () => cpuSecondsOf(proc.pid),
    rssBytes: () => rssOf(proc.pid),
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      await call("stop", undefined, 10_000).catch(() => {});
      const gone = await within(exited, 5000, `${name} to exit`).then(
        () => true,
        () => false,
      );
      if (!gone) {
        proc.kill("SIGKILL");
        await within(exited, 5000, `${name} to die`).catch(() => {});
      }
    },
    exited,
  };
}

const CLK_TCK = 100;
export function cpuSecondsOf(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // After the command: state(0) ... utime(11) stime(12), in clock ticks.
    return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
  } catch {
    return Number.NaN;
  }
}
export function rssOf(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) * 1024 : Number.NaN;
  } catch {
    return Number.NaN;
  }
}
/** CPU seconds of this process. */
export const selfCpuSeconds = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};

/** Measures CPU use of some processes over a window, as a share of one core. */
export function cpuWindow(children: { name: string; cpuSeconds(): number }[]) {
  const t0 = now();
  const start = children.map((c) => c.cpuSeconds());
  const self0 = selfCpuSeconds();
  return () => {
    const wall = (now() - t0) / 1000;
    const out: Record<string, number> = { bench: Math.round(((selfCpuSeconds() - self0) / wall) * 100) };
    children.forEach((c, i) => (out[c.name] = Math.round(((c.cpuSeconds() - start[i]!) / wall) * 100)));
    return out;
  };
}

// ---- child side ----

export type Handlers = Record<string, (args: any) => unknown>;

/**
 * Runs in a child: answers the bench's commands, exits when the bench goes away or the lifetime
 * cap passes. `stop` is handled here if the child does not handle it: it answers, then exits.
 */
export function serveChild(info: Record<string, unknown>, handlers: Handlers) {
  if (!process.send) throw new Error("this script is a bench child: run it through the bench");
  const send = (m: Msg) => {
    try {
      process.send!(m);
    } catch {
      process.exit(0);
    }
  };
  const all: Handlers = {
    now: () => now(),
    mem: (a: { gc?: boolean } = {}) => {
      if (a?.gc) Bun.gc(true);
      return process.memoryUsage();
    },
    ...handlers,
  };
  process.on("message", async (m: Msg) => {
    if (m.t !== "req") return;
    const fn = all[m.cmd as string];
    try {
      if (!fn && m.cmd !== "stop") throw new Error(`unknown command ${String(m.cmd)}`);
      const value = fn ? await fn(m.args) : undefined;
      send({ t: "res", id: m.id, ok: true, value: value ?? null });
    } catch (e) {
      send({ t: "res", id: m.id, ok: false, error: e instanceof Error ? e.message : String(e) });
    }
    if (m.cmd === "stop") setTimeout(() => process.exit(0), 50);
  });
  process.on("disconnect", () => process.exit(0));
  setTimeout(() => process.exit(3), CHILD_MAX_LIFETIME_MS).unref();
  send({ t: "ready", info });
  return { event: (e: Record<string, unknown>) => send({ t: "event", ...e }) };
}
