import * as v from "valibot";
import type { ChatService } from "../chat/service";
import type { Logger } from "../log";
import type { Connections, Socket } from "./connections";
import { errorFrameOf, FrameError } from "./errors";
import { handlers, isInboundType, parseArgs, type HandlerContext } from "./handlers";
import { admitFrame, type SocketLimits, type UserSends } from "./limits";
import { Envelope, frames, mergedArgs } from "./protocol";

// A lone surrogate ("\ud800") would be echoed as sent but stored as U+FFFD: make both the same.
const wellFormed = (_key: string, value: unknown) => (typeof value === "string" ? value.toWellFormed() : value);
// A frame's text is decoded from UTF-8 (bad bytes become U+FFFD), so it is well-formed itself: only a
// surrogate escape can hold a lone surrogate, and every other frame is parsed without the reviver
// (0.85 → 0.10 µs of CPU for a SEND_MESSAGE, bench/frame-cost.ts).
const SURROGATE_ESCAPE = /\\u[dD][89a-fA-F]/;
const parseFrame = (text: string): unknown => (SURROGATE_ESCAPE.test(text) ? JSON.parse(text, wellFormed) : JSON.parse(text));

/** What the frame turned out to be, as far as it was read (for the command's metrics and log line). */
export type Seen = { type?: string; chatId?: unknown };

/**
 * The frame pipeline: size and rate, JSON, envelope, type, arguments, then the handler table's entry.
 * Every failure is answered on the socket as an ERROR frame; resolves to "ok" or that error's code.
 */
export function framePipeline(o: { chat: ChatService; conns: Connections; limits: SocketLimits; userSends: UserSends; log: Logger }) {
  const { chat, conns, limits, userSends, log } = o;
  return async function handle(ws: Socket, raw: string | Buffer, bytes: number, seen: Seen): Promise<string> {
    let withId = {};
    try {
      admitFrame(limits, ws.data.budget, bytes);
      let json: unknown;
      try {
        json = parseFrame(typeof raw === "string" ? raw : raw.toString("utf8"));
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
  };
}
export type FramePipeline = ReturnType<typeof framePipeline>;
