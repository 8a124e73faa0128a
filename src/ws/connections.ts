import type { ServerWebSocket } from "bun";
import type { Logger } from "../log";
import { frames } from "./protocol";
import type { ChatClient } from "../chat/context";
import type { Budget } from "./limits";

type Delta = { chatId: string; traceId: string; seq: number; content: string };
type Queued = { data: string; bytes: number; delta?: Delta };

export type ConnData = {
  id: string;
  /** Chats whose new messages this socket receives. */
  watching: Set<string>;
  /** Frames are handled one after another, in arrival order. */
  chain: Promise<void>;
  /** What this socket has used of its limits (src/ws/limits.ts). */
  budget: Budget;
  /** While the socket is under backpressure, frames wait here instead of in the socket buffer. */
  queue: Queued[];
  queuedBytes: number;
  paused: boolean;
};
export type Socket = ServerWebSocket<ConnData>;

export const CLOSE_TOO_SLOW = 1008;

/**
 * Live sockets of this process and the chats they watch. A slow reader is paused rather than
 * buffered without bound: its stream deltas are merged while it catches up, and it is closed
 * if what waits for it still grows past `queueLimitBytes`.
 */
export function createConnections({ log, queueLimitBytes }: { log: Logger; queueLimitBytes: number }) {
  const sockets = new Map<string, Socket>();
  const watchers = new Map<string, Set<Socket>>();

  function push(ws: Socket, data: string, delta?: Delta) {
    const d = ws.data;
    const last = d.queue.at(-1);
    if (delta && last?.delta && last.delta.traceId === delta.traceId) {
      const merged = { ...last.delta, seq: delta.seq, content: last.delta.content + delta.content };
      const mergedData = JSON.stringify(frames.delta({ type: "reply_delta", ...merged }));
      const bytes = Buffer.byteLength(mergedData);
      d.queuedBytes += bytes - last.bytes;
      d.queue[d.queue.length - 1] = { data: mergedData, bytes, delta: merged };
    } else {
      const bytes = Buffer.byteLength(data);
      d.queue.push({ data, bytes, delta });
      d.queuedBytes += bytes;
    }
    if (d.queuedBytes > queueLimitBytes) {
      log.warn("closing a client that does not keep up", { connId: d.id, queuedBytes: d.queuedBytes });
      d.queue = [];
      d.queuedBytes = 0;
      ws.close(CLOSE_TOO_SLOW, "client too slow");
    }
  }

  function send(ws: Socket, data: string, delta?: Delta) {
    if (ws.readyState !== 1) return;
    if (ws.data.paused) return push(ws, data, delta);
    // -1: accepted but the socket buffer is over its mark; later frames wait in our queue.
    if (ws.send(data) === -1) ws.data.paused = true;
  }

  function drain(ws: Socket) {
    const d = ws.data;
    d.paused = false;
    while (d.queue.length > 0) {
      const next = d.queue.shift()!;
      d.queuedBytes -= next.bytes;
      if (ws.send(next.data) === -1) {
        d.paused = true;
        return;
      }
    }
  }

  function watch(ws: Socket, chatId: string) {
    if (ws.data.watching.has(chatId)) return;
    ws.data.watching.add(chatId);
    let set = watchers.get(chatId);
    if (!set) watchers.set(chatId, (set = new Set()));
    set.add(ws);
  }

  function unwatch(ws: Socket, chatId: string) {
    ws.data.watching.delete(chatId);
    watchers.get(chatId)?.delete(ws);
  }

  return {
    add(ws: Socket) {
      sockets.set(ws.data.id, ws);
    },
    remove(ws: Socket) {
      sockets.delete(ws.data.id);
      for (const chatId of ws.data.watching) watchers.get(chatId)?.delete(ws);
      ws.data.watching.clear();
      ws.data.queue = [];
    },
    watch,
    unwatch,
    /** The socket as the chat service sees it. */
    client(ws: Socket): ChatClient {
      return {
        id: ws.data.id,
        watch(chatId) {
          if (ws.data.watching.has(chatId)) return () => {};
          watch(ws, chatId);
          return () => unwatch(ws, chatId);
        },
      };
    },
    forgetChat(chatId: string) {
      for (const ws of watchers.get(chatId) ?? []) ws.data.watching.delete(chatId);
      watchers.delete(chatId);
    },
    send(ws: Socket, frame: object) {
      send(ws, JSON.stringify(frame));
    },
    /** To everyone watching a chat, except the socket with id `except`. Serialised once. */
    toChat(chatId: string, frame: object, o: { except?: string; delta?: Delta } = {}) {
      const set = watchers.get(chatId);
      if (!set || set.size === 0) return;
      const data = JSON.stringify(frame);
      for (const ws of set) if (ws.data.id !== o.except) send(ws, data, o.delta);
    },
    toAll(frame: object, o: { except?: string } = {}) {
      const data = JSON.stringify(frame);
      for (const ws of sockets.values()) if (ws.data.id !== o.except) send(ws, data);
    },
    drain,
    get count() {
      return sockets.size;
    },
    all: () => [...sockets.values()],
  };
}
export type Connections = ReturnType<typeof createConnections>;
