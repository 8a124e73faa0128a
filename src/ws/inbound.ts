import type { Logger } from "../log";
import type { Connections, Socket } from "./connections";
import type { FramePipeline, Seen } from "./frame";
import { admitInbound, INBOUND_RETRY_AFTER_MS, type SocketLimits } from "./limits";
import type { CommandOutcomes } from "./outcomes";
import { frames } from "./protocol";

/**
 * Each socket's inbound queue: frames are handled one after another, in arrival order (an idle
 * socket starts at once, a busy one queues), and a socket holds at most `inboundMaxFrames` frames
 * and `inboundMaxBytes` bytes waiting (src/ws/limits.ts admitInbound).
 */
export function inboundQueue(o: {
  limits: SocketLimits;
  conns: Connections;
  log: Logger;
  handle: FramePipeline;
  outcomes: CommandOutcomes;
}) {
  const { limits, conns, log, handle, outcomes } = o;

  /**
   * A frame that finds the socket's queue full is dropped and answered at once (not in order: it
   * would otherwise wait in the very queue that is full) with ERROR RATE_LIMITED. The answer goes
   * through the send accounting, so a client that floods without reading is closed 1008 once the
   * answers pile up past SEND_BUFFER_LIMIT_BYTES: refusing never costs unbounded memory either.
   */
  function refuse(ws: Socket, bytes: number) {
    const b = ws.data.budget;
    if (b.dropped++ === 0) {
      log.warn("dropping frames: the socket's inbound queue is full", {
        connId: ws.data.id,
        pendingFrames: b.pending.frames,
        pendingBytes: b.pending.bytes,
        bytes,
      });
    }
    outcomes.dropped();
    conns.send(
      ws,
      frames.error("RATE_LIMITED", "too many frames waiting to be handled; this one was dropped", {
        retryAfterMs: INBOUND_RETRY_AFTER_MS,
        limit: limits.inboundMaxFrames,
      }),
    );
  }

  /** Queues one frame as it arrives. */
  return function receive(ws: Socket, raw: string | Buffer) {
    const bytes = typeof raw === "string" ? Buffer.byteLength(raw) : raw.byteLength;
    const b = ws.data.budget;
    if (!admitInbound(limits, b, bytes)) return refuse(ws, bytes);
    b.pending.frames += 1;
    b.pending.bytes += bytes;
    const job = async () => {
      try {
        const started = performance.now();
        const seen: Seen = {};
        const outcome = await handle(ws, raw, bytes, seen);
        outcomes.handled(ws, seen, outcome, (performance.now() - started) / 1000);
      } catch (e) {
        log.error("frame handling crashed", { error: e });
      } finally {
        b.pending.frames -= 1;
        b.pending.bytes -= bytes;
        if (b.pending.frames === 0) b.dropped = 0;
      }
    };
    ws.data.chain = b.pending.frames === 1 ? job() : ws.data.chain.then(job);
  };
}
