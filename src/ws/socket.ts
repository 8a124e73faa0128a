import type { WebSocketHandler } from "bun";
import * as v from "valibot";
import type { ChatService } from "../chat/service";
import type { Logger } from "../log";
import type { Metrics } from "../metrics";
import { createConnections, type ConnData, type Connections, type Socket } from "./connections";
import { errorFrameOf, FrameError } from "./errors";
import { handlers, isInboundType, parseArgs, type HandlerContext } from "./handlers";
import { admitFrame, newBudget, type SocketLimits } from "./limits";
import { Envelope, frames, mergedArgs } from "./protocol";

// A lone surrogate ("\ud800") would be echoed as sent but stored as U+FFFD: make both the same.
const wellFormed = (_key: string, value: unknown) => (typeof value === "string" ? value.toWellFormed() : value);

/** The data a new socket starts with; `id` is unique across replicas. */
export function newConnData(limits: SocketLimits): ConnData {
  return {
    id: crypto.randomUUID(),
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
export function socketHandlers(chat: ChatService, limits: SocketLimits, o: { log: Logger; metrics: Metrics }): { websocket: WebSocketHandler<ConnData>; conns: Connections } {
  const { log, metrics } = o;
  const conns = createConnections({ log, queueLimitBytes: limits.sendQueueLimitBytes });

  /** Handles one frame; resolves to "ok" or the error code it answered with. */
  async function handle(ws: Socket, raw: string | Buffer, seen: { type?: string; chatId?: unknown }): Promise<string> {
    let withId = {};
    try {
      admitFrame(limits, ws.data.budget, typeof raw === "string" ? Buffer.byteLength(raw) : raw.byteLength);
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
        ws, chat, client: conns.client(ws), limits, requestId,
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

  const websocket: WebSocketHandler<ConnData> = {
    // Past the soft limit a frame gets an ERROR and the socket stays; past this one Bun closes with 1009.
    maxPayloadLength: limits.maxFrameBytes * 4,
    idleTimeout: limits.idleTimeoutS,
    sendPings: true,
    backpressureLimit: limits.sendQueueLimitBytes,
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
          log.info("ws command", {
            type, outcome, durationMs: Math.round(seconds * 10_000) / 10, connId: ws.data.id,
            ...(typeof seen.chatId === "string" ? { chatId: seen.chatId.slice(0, 64) } : {}),
          });
        })
        .catch((e) => log.error("frame handling crashed", { error: e }));
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
