import { backoffDelay, DEFAULT_BACKOFF, type Backoff } from "./backoff";
import { createStreams } from "./streams";
import type { AnswerOf, ConnectionState, ErrorCode, RequestArgs, RequestType, ServerFrame, ServerFrameType } from "./types";

// PiChat's typed /ws client: requests that resolve on their answer, events by frame type, and a
// connection that comes back by itself and catches up (docs/protocol.md §9): watched chats restored,
// streaming replies RESUMEd from the last seq applied, unaccepted SEND_MESSAGEs resent with their id.
// No runtime dependency: the global WebSocket of browsers, Bun and Node ≥ 22.

export type * from "./types";
export { backoffDelay, type Backoff } from "./backoff";

type Token = string | null | undefined;
export type ClientOptions = {
  /** ws:// or wss:// URL of /ws. */
  url: string | URL;
  /** Read at every (re)connect; none for a server that needs no sign-in. */
  token?: Token | (() => Token | Promise<Token>);
  /** How the token travels: a `bearer.<token>` subprotocol (default; works in browsers) or `?token=`. */
  tokenIn?: "subprotocol" | "query";
  /** Reconnect backoff (ms); `false` never reconnects. */
  reconnect?: Partial<Backoff> | false;
  /** Another WebSocket implementation (default: the global one). */
  WebSocket?: typeof WebSocket;
  /** For jitter; tests pass their own. */
  random?: () => number;
  /**
   * Pacing, below the server's defaults (RATE_LIMIT_FRAMES_PER_SECOND 50 with a burst of 100;
   * INBOUND_QUEUE_MAX_FRAMES 128): frames per second (burst twice that) and requests sent and not yet answered.
   */
  framesPerSecond?: number;
  maxInFlight?: number;
};

/** An ERROR answer, or a request the connection could not carry (code DISCONNECTED / CLOSED). */
export class PiChatError extends Error {
  override name = "PiChatError";
  constructor(
    readonly code: ErrorCode | "DISCONNECTED" | "CLOSED",
    message: string,
    readonly frame?: ServerFrame<"ERROR">,
  ) {
    super(message);
  }
}

export type StateDetail = { code?: number; reason?: string; attempt?: number; delayMs?: number };
export type PiChatClient = ReturnType<typeof createClient>;

// Closes the server makes on purpose that a new connection with the same token would get again
// (src/ws/protocol.ts `closes`): the client stops. Every other close is reconnected.
export const isFinalClose = (code: number, reason: string) => code === 1008 && reason !== "client too slow";
// Requests that are safe to send twice: resent after a reconnect when their answer was lost.
// SEND_MESSAGE is, because it always carries a message id (the server stores and answers it once).
const RESENDABLE = new Set<RequestType>([
  "GET_CHATS",
  "GET_CHAT_HISTORY",
  "GET_SETTINGS",
  "GET_TOOLS",
  "UPDATE_SETTINGS",
  "RENAME_CHAT",
  "WATCH",
  "UNWATCH",
  "SEARCH",
  "GET_BRANCHES",
  "SELECT_BRANCH",
  "RESUME",
  "SEND_MESSAGE",
  "GET_FOLDERS",
  "PIN_CHAT",
  "MOVE_CHAT",
  "RENAME_FOLDER",
  "RATE_REPLY",
  "GET_SHARES",
  "KEEP_CHAT",
]);
// These make the socket's implicit watch (its focus) the request's chat.
const FOCUSING = new Set<RequestType>(["GET_CHAT_HISTORY", "SEND_MESSAGE", "EDIT_MESSAGE", "REGENERATE", "SELECT_BRANCH", "RESUME"]);
// A SEND_MESSAGE answered with these was not stored: it is kept and sent again on the next connection.
const SEND_AGAIN = new Set<string>(["SHUTTING_DOWN"]);
// A reply whose RESUME failed with these is asked again later; any other failure ends it as interrupted.
const RESUME_AGAIN = new Set<string>(["STORE_UNAVAILABLE", "RATE_LIMITED", "INTERNAL_ERROR"]);
const RESUME_RETRY_MS = 1000;

/**
 * A question's id, chosen here so a resend is recognised. crypto.randomUUID exists only in secure
 * contexts (https, localhost); a page served over plain http on a LAN address has getRandomValues only.
 */
export function newMessageId(): string {
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6]! & 0x0f) | 0x40; // version 4
  b[8] = (b[8]! & 0x3f) | 0x80; // RFC 4122 variant
  const hex = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

type Pending = {
  requestId: string;
  type: RequestType;
  frame: Record<string, unknown>;
  sent: boolean;
  /** Internal requests (restoring after a reconnect) are not shown to listeners. */
  quiet: boolean;
  resolve(f: ServerFrame): void;
  reject(e: PiChatError): void;
};
type Listener = (f: ServerFrame) => void;

export function createClient(o: ClientOptions) {
  const WS = o.WebSocket ?? globalThis.WebSocket;
  const backoff = o.reconnect === false ? undefined : { ...DEFAULT_BACKOFF, ...o.reconnect };
  const random = o.random ?? Math.random;
  const listeners = new Map<string, Set<Listener>>();
  const stateListeners = new Set<(s: ConnectionState, d: StateDetail) => void>();
  const pending = new Map<string, Pending>();
  const streams = createStreams();
  const explicit = new Set<string>();
  let focus: string | undefined;
  let ws: WebSocket | undefined;
  let state: ConnectionState = "connecting";
  let attempt = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let counter = 0;
  const prefix = Math.floor(random() * 36 ** 6).toString(36);
  const resumeTimers = new Set<ReturnType<typeof setTimeout>>();
  /** Replies RESUMEd and not answered yet. */
  const catchingUp = new Set<string>();

  const setState = (s: ConnectionState, d: StateDetail = {}) => {
    state = s;
    for (const fn of stateListeners) fn(s, d);
  };
  const emit = (f: ServerFrame) => {
    for (const fn of listeners.get(f.type) ?? []) fn(f);
    for (const fn of listeners.get("*") ?? []) fn(f);
  };
  const perSecond = o.framesPerSecond ?? 40;
  const maxInFlight = o.maxInFlight ?? 32;
  let tokens = perSecond * 2;
  let refilled = Date.now();
  let paced: ReturnType<typeof setTimeout> | undefined;
  let restoringNow = false;
  /** In the order they were sent: an ERROR the server could not tie to a request answers one of these. */
  const inFlight: Pending[] = [];

  /**
   * Sends what waits, in order (restoring requests first), while the socket is open, the frame budget
   * lasts and fewer than maxInFlight are unanswered: the server then never refuses a frame for its rate
   * or its queue, refusals that it cannot tie to a requestId.
   */
  function flush() {
    if (ws?.readyState !== 1) return;
    const now = Date.now();
    const restoring = restoringNow;
    tokens = Math.min(perSecond * 2, tokens + ((now - refilled) / 1000) * perSecond);
    refilled = now;
    const waiting = [...pending.values()].filter((p) => !p.sent);
    for (const p of [...waiting.filter((w) => w.quiet), ...waiting.filter((w) => !w.quiet)]) {
      if (tokens < 1 || (!p.quiet && (restoring || inFlight.length >= maxInFlight))) break;
      tokens -= 1;
      ws.send(JSON.stringify(p.frame));
      p.sent = true;
      inFlight.push(p);
    }
    if (tokens < 1 && !paced && [...pending.values()].some((p) => !p.sent)) {
      paced = setTimeout(
        () => {
          paced = undefined;
          flush();
        },
        Math.ceil(1000 / perSecond),
      );
    }
  }
  function settle(p: Pending) {
    pending.delete(p.requestId);
    const i = inFlight.indexOf(p);
    if (i >= 0) inFlight.splice(i, 1);
  }

  /** What a request changes in what the socket watches, kept to restore it on the next socket. */
  function track(type: RequestType, args: Record<string, unknown>) {
    const chatId = typeof args.chatId === "string" ? args.chatId : undefined;
    if (type === "WATCH") for (const id of args.chatIds as string[]) explicit.add(id);
    if (type === "UNWATCH") for (const id of args.chatIds as string[]) explicit.delete(id);
    if (FOCUSING.has(type) && chatId && chatId !== focus) {
      // The server stops streaming the old focus to this socket: its replies are no longer followed.
      if (focus && !explicit.has(focus)) streams.forgetChat(focus);
      focus = chatId;
    }
  }
  function forgetChat(chatId: string) {
    explicit.delete(chatId);
    if (focus === chatId) focus = undefined;
    streams.forgetChat(chatId);
  }

  function enqueue<T extends RequestType>(type: T, args: Record<string, unknown>, quiet: boolean): Promise<AnswerOf<T>> {
    if (state === "closed" || state === "stopped") return Promise.reject(new PiChatError("CLOSED", `the client is ${state}`));
    const requestId = `${prefix}-${++counter}`;
    const frame = { ...args, type, requestId };
    return new Promise<AnswerOf<T>>((resolve, reject) => {
      const p: Pending = { requestId, type, frame, sent: false, quiet, resolve: resolve as (f: ServerFrame) => void, reject };
      pending.set(requestId, p);
      if (!quiet) track(type, args);
      flush();
    });
  }

  /** A request: resolves with its answer frame, rejects with a PiChatError for an ERROR. Queued while disconnected. */
  function request<T extends RequestType>(type: T, ...rest: {} extends RequestArgs<T> ? [args?: RequestArgs<T>] : [args: RequestArgs<T>]) {
    const args = { ...(rest[0] as Record<string, unknown> | undefined) };
    if (type === "SEND_MESSAGE") {
      // Every question carries its id, so sending it again after a reconnect is answered once.
      const message = (args.message ?? {}) as { content?: string | null; id?: string | null };
      const id = message.id ?? (args.messageId as string | undefined) ?? newMessageId();
      args.message = { content: message.content ?? args.content, id };
      delete args.content;
      delete args.messageId;
    }
    return enqueue(type, args, false);
  }

  /**
   * A MESSAGE, live or RESUME's answer (`resumed`). While a reply is being caught up (RESUME sent, not
   * answered), its live frames are dropped: the answer holds their text, and the server sends it in
   * order before the frames that follow it.
   */
  function onMessageFrame(f: ServerFrame<"MESSAGE">, resumed: boolean) {
    // RESUME of a reply stored mid-stream by a process that is gone (its lease not yet expired): not
    // over, but not live anywhere either. Ask again until the server has settled it.
    if (resumed && f.end && f.message?.status === "streaming") return resumeLater(f.chatId, f.traceId);
    if (resumed) catchingUp.delete(f.traceId);
    else if (catchingUp.has(f.traceId)) return;
    else if (!streams.knows(f.traceId) && (f.end || (f.seq ?? 0) > 1)) {
      // Joined mid-reply, or only for its end (it streamed while this client was away): fetch it from
      // its start (RESUME answers a finished reply with the stored message).
      streams.saw(f.chatId, f.traceId, 0);
      return resume(f.chatId, f.traceId, 0);
    }
    if (streams.accept(f)) emit(f);
  }

  /**
   * An ERROR about a frame the server refused before reading it (its rate, its size) has no requestId.
   * Frames are answered in order, so it is the oldest one unanswered; a frame dropped because too many
   * wait (it has `limit`) is answered at once, so it is the newest.
   */
  function unclaimed(f: ServerFrame<"ERROR">): Pending | undefined {
    if (f.chatId || f.traceId) return undefined; // a reply's failure, to every watcher
    return f.code === "RATE_LIMITED" && f.limit !== undefined ? inFlight.at(-1) : inFlight[0];
  }

  function onFrame(f: ServerFrame) {
    const p =
      typeof f.requestId === "string"
        ? pending.get(f.requestId)
        : f.type === "ERROR" && f.requestId === undefined
          ? unclaimed(f)
          : undefined;
    if (f.type === "CHAT_DELETED") forgetChat(f.chatId);
    // A history page shown (not one read to restore the focus) holds a streaming reply's text up to its seq.
    if (f.type === "CHAT_HISTORY" && !p?.quiet) for (const m of f.messages) if (m.streaming) streams.saw(f.chatId, m.id, m.seq ?? 0);
    if (p) {
      settle(p);
      if (f.type === "ERROR") {
        if (p.type === "SEND_MESSAGE" && SEND_AGAIN.has(f.code)) {
          pending.set(p.requestId, { ...p, sent: false });
        } else {
          if (p.type === "RESUME") {
            catchingUp.delete(p.frame.traceId as string);
            resumeFailed(p.frame, f);
          }
          p.reject(new PiChatError(f.code, f.error, f));
        }
        if (!p.quiet) emit(f);
        flush();
        return;
      }
      if (f.type === "MESSAGE") onMessageFrame(f, p.type === "RESUME");
      else if (!p.quiet) emit(f);
      p.resolve(f);
      flush();
      return;
    }
    if (f.type === "MESSAGE") return onMessageFrame(f, false);
    emit(f);
  }

  function resumeFailed(frame: Record<string, unknown>, e: ServerFrame<"ERROR">) {
    const chatId = frame.chatId as string;
    const traceId = frame.traceId as string;
    if (RESUME_AGAIN.has(e.code)) return resumeLater(chatId, traceId);
    if (e.code === "CHAT_NOT_FOUND") return forgetChat(chatId);
    // The reply is gone (GENERATION_NOT_FOUND): close it for whoever shows it, as the server would.
    if (streams.isEnded(traceId)) return;
    streams.end(traceId);
    emit({ type: "MESSAGE", chatId, traceId, content: "", end: true, reason: "interrupted" });
  }

  function resume(chatId: string, traceId: string, seq: number) {
    catchingUp.add(traceId);
    enqueue("RESUME", { chatId, traceId, fromSeq: seq }, true).catch(() => {});
  }
  function resumeLater(chatId: string, traceId: string) {
    const t = setTimeout(() => {
      resumeTimers.delete(t);
      const s = streams.following().find(([id]) => id === traceId);
      if (s && state === "open") resume(chatId, traceId, s[1].seq);
    }, RESUME_RETRY_MS);
    resumeTimers.add(t);
  }

  /** On a new socket: watches back, every followed reply RESUMEd, then every request not answered, in order. */
  function restore() {
    restoringNow = true;
    if (explicit.size) enqueue("WATCH", { chatIds: [...explicit] }, true).catch(() => {});
    for (const [traceId, s] of streams.following()) resume(s.chatId, traceId, s.seq);
    // RESUME moves the socket's focus; put it back where it was (the smallest read that does).
    if (focus) enqueue("GET_CHAT_HISTORY", { chatId: focus, limit: 1 }, true).catch(() => {});
    restoringNow = false;
    flush(); // then every request not answered, in order
  }

  async function open() {
    clearTimeout(timer);
    const token = typeof o.token === "function" ? await o.token() : o.token;
    if (state === "closed" || state === "stopped") return;
    const url = new URL(o.url);
    const protocols = ["pichat"];
    if (token && o.tokenIn === "query") url.searchParams.set("token", token);
    else if (token) protocols.push(`bearer.${token}`);
    let socket: WebSocket;
    try {
      socket = new WS(url, protocols);
    } catch (e) {
      // A token that cannot be a subprotocol name (tokenIn: "query" carries any), or a bad URL.
      return stop(0, e instanceof Error ? e.message : String(e));
    }
    ws = socket;
    let opened = false;
    socket.onopen = () => {
      opened = true;
      attempt = 0;
      setState("open");
      restore();
    };
    socket.onmessage = (e) => {
      let f: ServerFrame;
      try {
        f = JSON.parse(typeof e.data === "string" ? e.data : new TextDecoder().decode(e.data as ArrayBuffer));
      } catch {
        return;
      }
      if (f && typeof f.type === "string") onFrame(f);
    };
    socket.onclose = (e) => {
      if (ws !== socket) return;
      ws = undefined;
      void closed(e.code, e.reason, opened, token);
    };
  }

  async function closed(code: number, reason: string, opened: boolean, token: Token) {
    for (const t of resumeTimers) clearTimeout(t);
    resumeTimers.clear();
    catchingUp.clear();
    inFlight.length = 0;
    clearTimeout(paced);
    paced = undefined;
    // Answers lost with the socket: what is safe to send again waits for the next one; the rest fails.
    for (const p of [...pending.values()]) {
      // The next socket's restore() asks its own.
      if (p.quiet) pending.delete(p.requestId);
      else if (!p.sent || RESENDABLE.has(p.type)) p.sent = false;
      else {
        pending.delete(p.requestId);
        p.reject(new PiChatError("DISCONNECTED", `the connection dropped before ${p.type} was answered`));
      }
    }
    if (state === "closed") return;
    if (isFinalClose(code, reason) || (!opened && (await refused(token)))) return stop(code, reason || "the token was refused");
    if (!backoff) return stop(code, reason || "disconnected");
    const delayMs = backoffDelay(attempt++, backoff, random);
    setState("reconnecting", { code, reason, attempt, delayMs });
    timer = setTimeout(() => void open(), delayMs);
  }

  /** A socket that never opened: a browser hides the upgrade's status, so ask over plain HTTP (401 = token refused). */
  async function refused(token: Token): Promise<boolean> {
    if (typeof fetch !== "function") return false;
    const http = new URL(o.url);
    http.protocol = http.protocol === "wss:" ? "https:" : "http:";
    try {
      const res = await fetch(http, { headers: token ? { Authorization: `Bearer ${token}` } : {} });
      return res.status === 401;
    } catch {
      return false;
    }
  }

  function stop(code: number, reason: string) {
    for (const p of pending.values()) p.reject(new PiChatError("CLOSED", reason));
    pending.clear();
    setState("stopped", { code, reason });
  }

  void open();

  return {
    /** Where the connection stands. */
    get state() {
      return state;
    },
    request,
    /** Sends a question; resolves on MESSAGE_ACCEPTED. Sent again with the same id after a reconnect until accepted. */
    send: (chatId: string, content: string, o2: { messageId?: string } = {}) =>
      request("SEND_MESSAGE", { chatId, message: { content, id: o2.messageId ?? newMessageId() } }),
    /** Listens to one server frame type ("*": every frame); returns the function that stops listening. */
    on<T extends ServerFrameType | "*">(type: T, fn: (f: T extends ServerFrameType ? ServerFrame<T> : ServerFrame) => void): () => void {
      let set = listeners.get(type);
      if (!set) listeners.set(type, (set = new Set()));
      set.add(fn as Listener);
      return () => set.delete(fn as Listener);
    },
    /** Listens to the connection's state: open, reconnecting (with the close and the delay), stopped (with the reason). */
    onState(fn: (s: ConnectionState, d: StateDetail) => void): () => void {
      stateListeners.add(fn);
      return () => stateListeners.delete(fn);
    },
    /** The replies being followed (to RESUME after a reconnect), with the last seq applied. */
    following: () => streams.following().map(([traceId, s]) => ({ traceId, ...s })),
    /** Requests sent or queued and not answered yet. */
    waiting: () => [...pending.values()].filter((p) => !p.quiet).map((p) => ({ requestId: p.requestId, type: p.type })),
    /** Drops the socket now, as a network failure would (the client reconnects). */
    reconnect() {
      ws?.close(4000, "reconnect");
    },
    /** Closes for good: no reconnect; unanswered requests fail with CLOSED. */
    close() {
      clearTimeout(timer);
      setState("closed");
      for (const p of pending.values()) p.reject(new PiChatError("CLOSED", "the client was closed"));
      pending.clear();
      ws?.close(1000, "closed");
      ws = undefined;
    },
  };
}
