import type { ServerWebSocket } from "bun";
import type { Logger } from "../log";
import { frames } from "./protocol";
import type { Identity } from "../auth/identity";
import type { ChatClient } from "../chat/context";
import { FrameError } from "./errors";
import type { Budget } from "./limits";

type Delta = { chatId: string; traceId: string; seq: number; content: string };
type Queued = { data: string; bytes: number; delta?: Delta };

export type ConnData = {
  id: string;
  /** Who signed in on this socket: everything it touches and is shown belongs to `user.userId`. */
  user: Identity;
  /** The peer's IP address (for the per-address connection cap). */
  address: string;
  /** Chats whose live frames this socket receives: its focus and its explicit watches. */
  watching: Set<string>;
  /**
   * The one implicit watch: the chat last opened (GET_CHAT_HISTORY, RESUME) or sent to. Moving it
   * drops the previous one, so a client showing one chat never gets another chat's stream.
   */
  focus?: string;
  /** Chats watched with WATCH: kept when the focus moves, until UNWATCH or the chat's deletion. */
  explicit: Set<string>;
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

/** Chats one socket may watch with WATCH (its focus is not counted). */
export const MAX_WATCHED_CHATS = 100;

/** A socket as its frame handlers see it: the chat service's view plus explicit watches. */
export type SocketClient = ChatClient & {
  /** WATCH: `exist` throws CHAT_NOT_FOUND for an unknown id; answers what the socket now watches. */
  watchExplicitly(chatIds: string[], exist: (chatIds: string[]) => Promise<void>): Promise<Watches>;
  /** UNWATCH: answers what the socket now watches. */
  unwatchExplicitly(chatIds: string[]): Watches;
};
export type Watches = { chatIds: string[]; focus: string | null };

/**
 * Live sockets of this process and the chats they watch. A slow reader is paused rather than
 * buffered without bound: its stream deltas are merged while it catches up, and it is closed
 * if what waits for it still grows past `queueLimitBytes`.
 */
export function createConnections({
  log,
  queueLimitBytes,
  maxWatched = MAX_WATCHED_CHATS,
}: {
  log: Logger;
  queueLimitBytes: number;
  maxWatched?: number;
}) {
  const sockets = new Map<string, Socket>();
  const watchers = new Map<string, Set<Socket>>();
  /** Each user's sockets: chat-list frames go to these only. */
  const byOwner = new Map<string, Set<Socket>>();

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
    closeIfTooSlow(ws);
  }

  /**
   * What waits for this client is Bun's buffer for the socket (bytes it accepted and the kernel
   * has not taken: one large frame can put megabytes there at once) plus our queue. Past the limit
   * the socket is closed 1008, which also frees Bun's buffer; true when it was.
   */
  function closeIfTooSlow(ws: Socket): boolean {
    const d = ws.data;
    const buffered = ws.readyState === 1 ? ws.getBufferedAmount() : 0;
    if (buffered + d.queuedBytes <= queueLimitBytes) return false;
    log.warn("closing a client that does not keep up", { connId: d.id, queuedBytes: d.queuedBytes, bufferedBytes: buffered });
    d.queue = [];
    d.queuedBytes = 0;
    ws.close(CLOSE_TOO_SLOW, "client too slow");
    return true;
  }

  /**
   * Sends one frame; false when later frames must wait in our queue (or the socket was closed).
   * Bun answers > 0: written out whole, nothing waits; -1: accepted, but the socket buffer is over
   * its mark; 0: dropped. After -1 what waits is counted against the limit; after 0 a frame is
   * lost, and a client must never go on past a gap, so it is closed as too slow.
   */
  function write(ws: Socket, data: string): boolean {
    const sent = ws.send(data);
    if (sent > 0) return true;
    ws.data.paused = true;
    if (!closeIfTooSlow(ws) && sent === 0) ws.close(CLOSE_TOO_SLOW, "client too slow");
    return false;
  }

  function send(ws: Socket, data: string, delta?: Delta) {
    if (ws.readyState !== 1) return;
    if (ws.data.paused) return push(ws, data, delta);
    write(ws, data);
  }

  function drain(ws: Socket) {
    const d = ws.data;
    d.paused = false;
    while (d.queue.length > 0) {
      const next = d.queue.shift()!;
      d.queuedBytes -= next.bytes;
      if (!write(ws, next.data)) return;
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
    const set = watchers.get(chatId);
    set?.delete(ws);
    if (set?.size === 0) watchers.delete(chatId);
  }

  /** Stops a chat's frames to a socket unless it still wants them (its focus or an explicit watch). */
  function release(ws: Socket, chatId: string) {
    if (ws.data.focus !== chatId && !ws.data.explicit.has(chatId)) unwatch(ws, chatId);
  }

  /**
   * Moves the socket's implicit watch to `chatId`, dropping the previous focus unless it is
   * explicitly watched. Synchronous, so the chat service can call it at the exact moment its
   * snapshot is taken: every frame of the old chat sent after this is withheld, every frame of
   * the new one delivered. The undo (for a send to a chat that turns out not to exist) puts the
   * previous focus back, unless the focus has moved on since.
   */
  function focus(ws: Socket, chatId: string): () => void {
    const d = ws.data;
    const prev = d.focus;
    if (prev === chatId) return () => {};
    d.focus = chatId;
    watch(ws, chatId);
    if (prev !== undefined) release(ws, prev);
    return () => {
      // undefined: chatId was deleted meanwhile (forgetChat), which is no reason to keep the old focus dropped.
      if (d.focus !== chatId && d.focus !== undefined) return;
      d.focus = prev;
      if (prev !== undefined) watch(ws, prev);
      release(ws, chatId);
    };
  }

  /** Chats being checked for WATCH, each with the ids deleted while its check ran. */
  const checks = new Set<Set<string>>();

  /** What WATCH / UNWATCH answer: everything the socket watches, and which one is its focus. */
  const watchesOf = (ws: Socket) => ({ chatIds: [...ws.data.watching], focus: ws.data.focus ?? null });

  /**
   * WATCH: adds explicit watches, all or none. Over `maxWatched` explicit watches is refused
   * before anything is read; `exist` (the chat service) throws CHAT_NOT_FOUND for an unknown id.
   * A chat deleted while that check ran is left out (its CHAT_DELETED has gone out already).
   */
  async function watchExplicitly(ws: Socket, chatIds: string[], exist: (chatIds: string[]) => Promise<void>) {
    const d = ws.data;
    const fresh = [...new Set(chatIds)].filter((id) => !d.explicit.has(id));
    if (d.explicit.size + fresh.length > maxWatched) {
      throw new FrameError("TOO_MANY_WATCHES", `a connection may watch at most ${maxWatched} chats with WATCH; UNWATCH some first`, {
        limit: maxWatched,
        watched: d.explicit.size,
      });
    }
    const deleted = new Set<string>();
    checks.add(deleted);
    try {
      // The focus was found when it was opened and is dropped when deleted: no need to read it again.
      await exist(fresh.filter((id) => id !== d.focus));
    } finally {
      checks.delete(deleted);
    }
    if (ws.readyState !== 1) return watchesOf(ws);
    for (const id of fresh) {
      if (deleted.has(id)) continue;
      d.explicit.add(id);
      watch(ws, id);
    }
    return watchesOf(ws);
  }

  /** UNWATCH: stops these chats' frames, explicit or focus alike; unknown ids are ignored. */
  function unwatchExplicitly(ws: Socket, chatIds: string[]) {
    const d = ws.data;
    for (const id of chatIds) {
      d.explicit.delete(id);
      if (d.focus === id) d.focus = undefined;
      unwatch(ws, id);
    }
    return watchesOf(ws);
  }

  return {
    add(ws: Socket) {
      sockets.set(ws.data.id, ws);
      const owner = ws.data.user.userId;
      let set = byOwner.get(owner);
      if (!set) byOwner.set(owner, (set = new Set()));
      set.add(ws);
    },
    remove(ws: Socket) {
      sockets.delete(ws.data.id);
      const set = byOwner.get(ws.data.user.userId);
      set?.delete(ws);
      if (set?.size === 0) byOwner.delete(ws.data.user.userId);
      for (const chatId of [...ws.data.watching]) unwatch(ws, chatId);
      ws.data.focus = undefined;
      ws.data.explicit.clear();
      ws.data.queue = [];
    },
    /** The socket as the chat service sees it (`watch` moves its focus), plus WATCH / UNWATCH for the handlers. */
    client(ws: Socket): SocketClient {
      return {
        id: ws.data.id,
        owner: ws.data.user.userId,
        watch: (chatId) => focus(ws, chatId),
        watchExplicitly: (chatIds, exist) => watchExplicitly(ws, chatIds, exist),
        unwatchExplicitly: (chatIds) => unwatchExplicitly(ws, chatIds),
      };
    },
    /** A deleted chat: nobody watches it any more, explicitly or as their focus. */
    forgetChat(chatId: string) {
      for (const deleted of checks) deleted.add(chatId);
      for (const ws of watchers.get(chatId) ?? []) {
        ws.data.watching.delete(chatId);
        ws.data.explicit.delete(chatId);
        if (ws.data.focus === chatId) ws.data.focus = undefined;
      }
      watchers.delete(chatId);
    },
    send(ws: Socket, frame: object) {
      send(ws, JSON.stringify(frame));
    },
    /**
     * To everyone watching a chat, except the socket with id `except`. Serialised once. Only the
     * chat's owner can start watching it; with `owner`, that is checked again per socket.
     */
    toChat(chatId: string, frame: object, o: { except?: string; delta?: Delta; owner?: string } = {}) {
      const set = watchers.get(chatId);
      if (!set || set.size === 0) return;
      const data = JSON.stringify(frame);
      for (const ws of set)
        if (ws.data.id !== o.except && (o.owner === undefined || ws.data.user.userId === o.owner)) send(ws, data, o.delta);
    },
    /** To every socket of one user (their chat list changed), except the socket with id `except`. */
    toOwner(owner: string, frame: object, o: { except?: string } = {}) {
      const set = byOwner.get(owner);
      if (!set || set.size === 0) return;
      const data = JSON.stringify(frame);
      for (const ws of set) if (ws.data.id !== o.except) send(ws, data);
    },
    /** Every socket of one user (revocation closes them). */
    ofOwner: (owner: string): Socket[] => [...(byOwner.get(owner) ?? [])],
    /** To every socket (RESYNC: it names no chat). */
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
