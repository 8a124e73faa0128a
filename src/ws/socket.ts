import type { WebSocketHandler } from "bun";
import * as v from "valibot";
import type { Identity } from "../auth/identity";
import type { ChatService } from "../chat/service";
import type { Logger } from "../log";
import type { Metrics } from "../metrics";
import { createConnections, type ConnData, type Connections, type Socket } from "./connections";
import { errorFrameOf, FrameError } from "./errors";
import { handlers, isInboundType, parseArgs, type HandlerContext } from "./handlers";
import { admitFrame, admitInbound, INBOUND_RETRY_AFTER_MS, localUserSends, newBudget, type SocketLimits, type UserSends } from "./limits";
import { Envelope, frames, mergedArgs } from "./protocol";

// A lone surrogate ("\ud800") would be echoed as sent but stored as U+FFFD: make both the same.
const wellFormed = (_key: string, value: unknown) => (typeof value === "string" ? value.toWellFormed() : value);

/** Sockets open now: in the whole process, and from one peer address (the upgrade caps read it). */
export type ConnectionLoad = { total(): number; from(address: string): number };

/** The data a new socket starts with; `id` is unique across replicas. `address` is the peer's IP. */
export function newConnData(limits: SocketLimits, address: string, user: Identity): ConnData {
  return {
    id: crypto.randomUUID(),
    user,
    address,
    watching: new Set(),
    explicit: new Set(),
    chain: Promise.resolve(),
    budget: newBudget(limits),
    queue: [],
    queuedBytes: 0,
    paused: false,
  };
}

/** Bun's websocket handlers for /ws: each frame is checked, then dispatched through the handler table. */
export function socketHandlers(
  chat: ChatService,
  limits: SocketLimits,
  o: { log: Logger; metrics: Metrics; userSends?: UserSends },
): { websocket: WebSocketHandler<ConnData>; conns: Connections; load: ConnectionLoad } {
  const userSends = o.userSends ?? localUserSends(limits.messagesPerMinute);
  const { log, metrics } = o;
  const conns = createConnections({ log, queueLimitBytes: limits.sendQueueLimitBytes });
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

  /** Handles one frame; resolves to "ok" or the error code it answered with. */
  async function handle(ws: Socket, raw: string | Buffer, bytes: number, seen: { type?: string; chatId?: unknown }): Promise<string> {
    let withId = {};
    try {
      admitFrame(limits, ws.data.budget, bytes);
      let json: unknown;
      try {
        json = JSON.parse(typeof raw === "string" ? raw : raw.toString("utf8"), wellFormed);
      } catch {
        throw new FrameError("BAD_JSON", "the frame is not valid JSON");
      }
      const envelope = v.safeParse(Envelope, json);
      if (!envelope.success) throw new FrameError("INVALID_FRAME", "a frame must be a JSON object with a string `type`");
      const { type, requestId: rid } = envelope.output;
      const requestId = typeof rid === "string" && rid.length <= 200 ? rid : undefined;
      withId = requestId ? { requestId } : {};
      if (!isInboundType(type)) throw new FrameError("UNKNOWN_TYPE", `unknown frame type ${JSON.stringify(type.slice(0, 64))}`);
      seen.type = type;

      const merged = mergedArgs(json as Record<string, unknown>);
      seen.chatId = merged.chatId;
      const args = parseArgs(type, merged);
      if (!args.success) {
        const issue = args.issues[0];
        const field = v.getDotPath(issue);
        throw new FrameError("INVALID_FRAME", field && !issue.message.startsWith(field) ? `${field}: ${issue.message}` : issue.message);
      }
      const ctx: HandlerContext = {
        ws,
        chat,
        client: conns.client(ws),
        limits,
        userSends,
        requestId,
        reply: (frame) => conns.send(ws, { ...frame, ...withId }),
      };
      await (handlers[type].run as (c: HandlerContext, a: unknown) => Promise<void>)(ctx, args.output);
      return "ok";
    } catch (e) {
      const f = errorFrameOf(e);
      if (f.internal) log.error("command failed", { type: seen.type, connId: ws.data.id, error: e });
      conns.send(ws, frames.error(f.code, f.message, { ...f.details, ...withId }));
      return f.code;
    }
  }

  /** Open sockets per peer address, for the per-address cap at upgrade (src/app.ts). */
  const perAddress = new Map<string, number>();

  /**
   * A frame that finds the socket's queue full is dropped and answered at once (not in order: it
   * would otherwise wait in the very queue that is full) with ERROR RATE_LIMITED. The answer goes
   * through the send accounting, so a client that floods without reading is closed 1008 once the
   * answers pile up past SEND_BUFFER_LIMIT_BYTES: refusing never costs unbounded memory either.
   */
  function refuseInbound(ws: Socket, bytes: number) {
    const b = ws.data.budget;
    if (b.dropped++ === 0) {
      log.warn("dropping frames: the socket's inbound queue is full", {
        connId: ws.data.id,
        pendingFrames: b.pending.frames,
        pendingBytes: b.pending.bytes,
        bytes,
      });
    }
    metrics.commands.inc({ type: "dropped", outcome: "RATE_LIMITED" });
    conns.send(
      ws,
      frames.error("RATE_LIMITED", "too many frames waiting to be handled; this one was dropped", {
        retryAfterMs: INBOUND_RETRY_AFTER_MS,
        limit: limits.inboundMaxFrames,
      }),
    );
  }

  const websocket: WebSocketHandler<ConnData> = {
    // Past the soft limit a frame gets an ERROR and the socket stays; past this one Bun closes with 1009.
    maxPayloadLength: limits.maxFrameBytes * 4,
    idleTimeout: limits.idleTimeoutS,
    sendPings: true,
    backpressureLimit: limits.sendQueueLimitBytes,
    closeOnBackpressureLimit: true,
    open(ws) {
      conns.add(ws);
      perAddress.set(ws.data.address, (perAddress.get(ws.data.address) ?? 0) + 1);
      metrics.connections.set(conns.count);
    },
    message(ws, raw) {
      const bytes = typeof raw === "string" ? Buffer.byteLength(raw) : raw.byteLength;
      const b = ws.data.budget;
      if (!admitInbound(limits, b, bytes)) return refuseInbound(ws, bytes);
      b.pending.frames += 1;
      b.pending.bytes += bytes;
      const job = async () => {
        try {
          const started = performance.now();
          const seen: { type?: string; chatId?: unknown } = {};
          const outcome = await handle(ws, raw, bytes, seen);
          const seconds = (performance.now() - started) / 1000;
          // Unknown types share one label: a client must not be able to mint metric series.
          const type = seen.type ?? "invalid";
          counted(type, outcome).inc();
          timed(type).observe(seconds);
          // Every refusal is logged; a command that went through only at debug (a line per frame
          // at info cost more than the command itself: issue 15).
          if (outcome !== "ok" || debug) {
            log[outcome === "ok" ? "debug" : "info"]("ws command", {
              type,
              outcome,
              durationMs: Math.round(seconds * 10_000) / 10,
              connId: ws.data.id,
              ...(typeof seen.chatId === "string" ? { chatId: seen.chatId.slice(0, 64) } : {}),
            });
          }
        } catch (e) {
          log.error("frame handling crashed", { error: e });
        } finally {
          b.pending.frames -= 1;
          b.pending.bytes -= bytes;
          if (b.pending.frames === 0) b.dropped = 0;
        }
      };
      // Frames are handled one after another: an idle socket starts at once, a busy one queues.
      ws.data.chain = b.pending.frames === 1 ? job() : ws.data.chain.then(job);
    },
    drain(ws) {
      conns.drain(ws);
    },
    close(ws) {
      conns.remove(ws);
      const n = (perAddress.get(ws.data.address) ?? 1) - 1;
      if (n > 0) perAddress.set(ws.data.address, n);
      else perAddress.delete(ws.data.address);
      metrics.connections.set(conns.count);
    },
  };
  /** What the upgrade caps look at: sockets open in this process, and from one address. */
  const load = { total: () => conns.count, from: (address: string) => perAddress.get(address) ?? 0 };
  return { websocket, conns, load };
}
