import type { WebSocketHandler } from "bun";
import * as v from "valibot";
import type { ChatDeps } from "../chat/deps";
import { AppError } from "../chat/errors";
import { isStoreUnavailable } from "../store/errors";
import type { Metrics } from "../metrics";
import { tokenBucket } from "./rate-limit";
import { createConnections, type ConnData, type Connections, type Socket } from "./connections";
import { handlers, isInboundType, parseArgs, type HandlerContext } from "./handlers";
import { Envelope, frames, mergedArgs } from "./protocol";

export type SocketOptions = {
  maxFrameBytes: number;
  maxMessageChars: number;
  maxGenerationsPerConnection: number;
  framesPerSecond: number;
  messagesPerMinute: number;
  sendQueueLimitBytes: number;
  idleTimeoutS: number;
};

// A lone surrogate ("\ud800") would be echoed as sent but stored as U+FFFD: make both the same.
const wellFormed = (_key: string, value: unknown) => (typeof value === "string" ? value.toWellFormed() : value);

/** The data a new socket starts with; `id` is unique across replicas. */
export function newConnData(o: SocketOptions): ConnData {
  return {
    id: crypto.randomUUID(),
    watching: new Set(),
    chain: Promise.resolve(),
    frames: tokenBucket({ perSecond: o.framesPerSecond, burst: o.framesPerSecond * 2 }),
    sends: tokenBucket({ perSecond: o.messagesPerMinute / 60, burst: o.messagesPerMinute }),
    generations: 0,
    queue: [],
    queuedBytes: 0,
    paused: false,
  };
}

/** Bun's websocket handlers for /ws: each frame is checked, then dispatched through the handler table. */
export function socketHandlers(deps: ChatDeps, o: SocketOptions, metrics: Metrics): { websocket: WebSocketHandler<ConnData>; conns: Connections } {
  const conns = createConnections({ log: deps.log, queueLimitBytes: o.sendQueueLimitBytes });
  const limits = { maxMessageChars: o.maxMessageChars, maxGenerationsPerConnection: o.maxGenerationsPerConnection, chatPageSize: 1000 };

  /** Handles one frame; resolves to "ok" or the error code it answered with. */
  async function handle(ws: Socket, raw: string | Buffer, seen: { type?: string; chatId?: unknown }): Promise<string> {
    const fail = (code: string, error: string, extra?: Record<string, unknown>) => {
      conns.send(ws, frames.error(code, error, extra));
      return code;
    };
    const bytes = typeof raw === "string" ? Buffer.byteLength(raw) : raw.byteLength;
    if (bytes > o.maxFrameBytes) return fail("FRAME_TOO_LARGE", `frames must be at most ${o.maxFrameBytes} bytes`, { limit: o.maxFrameBytes });
    const rate = ws.data.frames(Date.now());
    if (!rate.ok) return fail("RATE_LIMITED", "too many frames; slow down", { retryAfterMs: rate.retryAfterMs });

    let json: unknown;
    try {
      json = JSON.parse(typeof raw === "string" ? raw : raw.toString("utf8"), wellFormed);
    } catch {
      return fail("BAD_JSON", "the frame is not valid JSON");
    }
    const envelope = v.safeParse(Envelope, json);
    if (!envelope.success) return fail("INVALID_FRAME", "a frame must be a JSON object with a string `type`");
    const { type, requestId: rid } = envelope.output;
    const requestId = typeof rid === "string" && rid.length <= 200 ? rid : undefined;
    const withId = requestId ? { requestId } : {};
    if (!isInboundType(type)) return fail("UNKNOWN_TYPE", `unknown frame type ${JSON.stringify(type.slice(0, 64))}`, withId);
    seen.type = type;

    const merged = mergedArgs(json as Record<string, unknown>);
    seen.chatId = merged.chatId;
    const args = parseArgs(type, merged);
    if (!args.success) {
      const issue = args.issues[0];
      const field = v.getDotPath(issue);
      return fail("INVALID_FRAME", field && !issue.message.startsWith(field) ? `${field}: ${issue.message}` : issue.message, withId);
    }
    const ctx: HandlerContext = {
      ws, deps, conns, limits, requestId,
      reply: (frame) => conns.send(ws, { ...frame, ...withId }),
    };
    try {
      await (handlers[type].run as (c: HandlerContext, a: unknown) => Promise<void>)(ctx, args.output);
      return "ok";
    } catch (e) {
      if (e instanceof AppError) return fail(e.code, e.message, { ...e.details, ...withId });
      if (isStoreUnavailable(e)) return fail("STORE_UNAVAILABLE", "the store is unavailable; try again shortly", { retryAfterMs: 2000, ...withId });
      deps.log.error("command failed", { type, connId: ws.data.id, error: e });
      return fail("INTERNAL_ERROR", "something went wrong handling that frame", withId);
    }
  }

  const websocket: WebSocketHandler<ConnData> = {
    // Past the soft limit a frame gets an ERROR and the socket stays; past this one Bun closes with 1009.
    maxPayloadLength: o.maxFrameBytes * 4,
    idleTimeout: o.idleTimeoutS,
    sendPings: true,
    backpressureLimit: o.sendQueueLimitBytes,
    closeOnBackpressureLimit: true,
    open(ws) {
      conns.add(ws);
      metrics.connections.set(conns.count);
    },
    message(ws, raw) {
      ws.data.chain = ws.data.chain
        .then(async () => {
          const started = performance.now();
          const seen: { type?: string; chatId?: unknown } = {};
          const outcome = await handle(ws, raw, seen);
          const seconds = (performance.now() - started) / 1000;
          // Unknown types share one label: a client must not be able to mint metric series.
          const type = seen.type ?? "invalid";
          metrics.commands.inc({ type, outcome });
          metrics.commandSeconds.observe({ type }, seconds);
          deps.log.info("ws command", {
            type, outcome, durationMs: Math.round(seconds * 10_000) / 10, connId: ws.data.id,
            ...(typeof seen.chatId === "string" ? { chatId: seen.chatId.slice(0, 64) } : {}),
          });
        })
        .catch((e) => deps.log.error("frame handling crashed", { error: e }));
    },
    drain(ws) {
      conns.drain(ws);
    },
    close(ws) {
      conns.remove(ws);
      metrics.connections.set(conns.count);
    },
  };
  return { websocket, conns };
}
