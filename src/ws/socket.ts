import type { WebSocketHandler } from "bun";
import type { Identity } from "../auth/identity";
import type { ChatService } from "../chat/service";
import type { Logger } from "../log";
import type { Metrics } from "../metrics";
import { createConnections, type ConnData, type Connections } from "./connections";
import { framePipeline } from "./frame";
import { inboundQueue } from "./inbound";
import { newBudget, localUserSends, type SocketLimits, type UserSends } from "./limits";
import { connectionLoad, type ConnectionLoad } from "./load";
import { commandOutcomes } from "./outcomes";

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

/**
 * Bun's websocket handlers for /ws, adapted to the frame pipeline: a frame goes to the socket's
 * inbound queue (src/ws/inbound.ts), then through src/ws/frame.ts; open, drain and close go to
 * the connections (src/ws/connections.ts) and the per-address count (src/ws/load.ts).
 */
export function socketHandlers(
  chat: ChatService,
  limits: SocketLimits,
  o: { log: Logger; metrics: Metrics; userSends?: UserSends },
): { websocket: WebSocketHandler<ConnData>; conns: Connections; load: ConnectionLoad } {
  const { log, metrics } = o;
  const userSends = o.userSends ?? localUserSends(limits.messagesPerMinute);
  const conns = createConnections({ log, queueLimitBytes: limits.sendQueueLimitBytes });
  const counts = connectionLoad(() => conns.count);
  const receive = inboundQueue({
    limits,
    conns,
    log,
    handle: framePipeline({ chat, conns, limits, userSends, log }),
    outcomes: commandOutcomes(metrics, log),
  });

  const websocket: WebSocketHandler<ConnData> = {
    // Past the soft limit a frame gets an ERROR and the socket stays; past this one Bun closes with 1009.
    maxPayloadLength: limits.maxFrameBytes * 4,
    idleTimeout: limits.idleTimeoutS,
    sendPings: true,
    backpressureLimit: limits.sendQueueLimitBytes,
    closeOnBackpressureLimit: true,
    open(ws) {
      conns.add(ws);
      counts.opened(ws.data.address);
      metrics.connections.set(conns.count);
    },
    message: receive,
    drain(ws) {
      conns.drain(ws);
    },
    close(ws) {
      conns.remove(ws);
      counts.closed(ws.data.address);
      metrics.connections.set(conns.count);
    },
  };
  return { websocket, conns, load: counts.load };
}
