import type { Logger } from "../log";
import type { Metrics } from "../metrics";
import type { Socket } from "./connections";
import type { Seen } from "./frame";

/** What became of each frame: counted and timed per type and outcome, logged when refused. */
export function commandOutcomes(metrics: Metrics, log: Logger) {
  const debug = log.enabled("debug");
  // prom-client hashes the labels on every call; the labelled children are looked up once.
  const counters = new Map<string, { inc(): void }>();
  const counted = (type: string, outcome: string) => {
    const key = `${type} ${outcome}`;
    let c = counters.get(key);
    if (!c) counters.set(key, (c = metrics.commands.labels(type, outcome)));
    return c;
  };
  const timers = new Map<string, { observe(v: number): void }>();
  const timed = (type: string) => {
    let t = timers.get(type);
    if (!t) timers.set(type, (t = metrics.commandSeconds.labels(type)));
    return t;
  };

  return {
    /** A frame handled (or refused while handled) in `seconds`. */
    handled(ws: Socket, seen: Seen, outcome: string, seconds: number) {
      // Unknown types share one label: a client must not be able to mint metric series.
      const type = seen.type ?? "invalid";
      counted(type, outcome).inc();
      timed(type).observe(seconds);
      // Every refusal is logged; a command that went through only at debug (a line per frame at
      // info cost more than the command itself).
      if (outcome !== "ok" || debug) {
        log[outcome === "ok" ? "debug" : "info"]("ws command", {
          type,
          outcome,
          durationMs: Math.round(seconds * 10_000) / 10,
          connId: ws.data.id,
          ...(typeof seen.chatId === "string" ? { chatId: seen.chatId.slice(0, 64) } : {}),
        });
      }
    },
    /** A frame dropped unread because the socket's inbound queue was full. */
    dropped: () => counted("dropped", "RATE_LIMITED").inc(),
  };
}
export type CommandOutcomes = ReturnType<typeof commandOutcomes>;
