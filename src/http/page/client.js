// Built by `bun run build:client` from client/ (the typed PiChat client): do not edit by hand.
// client/backoff.ts
var DEFAULT_BACKOFF = { minMs: 250, maxMs: 15000, factor: 2 };
function backoffDelay(attempt, b, random = Math.random) {
  const ceiling = Math.min(b.maxMs, b.minMs * b.factor ** Math.max(0, attempt));
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}

// client/streams.ts
function createStreams(keepEnded = 2000) {
  const live = new Map;
  const ended = new Set;
  const end = (traceId) => {
    live.delete(traceId);
    ended.add(traceId);
    if (ended.size > keepEnded)
      ended.delete(ended.values().next().value);
  };
  return {
    accept(f) {
      if (ended.has(f.traceId))
        return false;
      const s = live.get(f.traceId);
      if (f.end) {
        end(f.traceId);
        return true;
      }
      const seq = f.seq ?? 0;
      if (s && seq <= s.seq)
        return false;
      live.set(f.traceId, { chatId: f.chatId, seq });
      return true;
    },
    saw(chatId, traceId, seq) {
      if (ended.has(traceId))
        return;
      const s = live.get(traceId);
      if (!s || s.seq < seq)
        live.set(traceId, { chatId, seq });
    },
    end,
    drop: (traceId) => live.delete(traceId),
    forgetChat(chatId) {
      for (const [t, s] of live)
        if (s.chatId === chatId)
          live.delete(t);
    },
    following: () => [...live],
    isEnded: (traceId) => ended.has(traceId),
    knows: (traceId) => live.has(traceId) || ended.has(traceId)
  };
}

// client/index.ts
class PiChatError extends Error {
  code;
  frame;
  name = "PiChatError";
  constructor(code, message, frame) {
    super(message);
    this.code = code;
    this.frame = frame;
  }
}
var isFinalClose = (code, reason) => code === 1008 && reason !== "client too slow";
var RESENDABLE = new Set([
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
  "KEEP_CHAT"
]);
var FOCUSING = new Set(["GET_CHAT_HISTORY", "SEND_MESSAGE", "EDIT_MESSAGE", "REGENERATE", "SELECT_BRANCH", "RESUME"]);
var SEND_AGAIN = new Set(["SHUTTING_DOWN"]);
var RESUME_AGAIN = new Set(["STORE_UNAVAILABLE", "RATE_LIMITED", "INTERNAL_ERROR"]);
var RESUME_RETRY_MS = 1000;
function newMessageId() {
  if (typeof crypto.randomUUID === "function")
    return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = b[6] & 15 | 64;
  b[8] = b[8] & 63 | 128;
  const hex = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
function createClient(o) {
  const WS = o.WebSocket ?? globalThis.WebSocket;
  const backoff = o.reconnect === false ? undefined : { ...DEFAULT_BACKOFF, ...o.reconnect };
  const random = o.random ?? Math.random;
  const listeners = new Map;
  const stateListeners = new Set;
  const pending = new Map;
  const streams = createStreams();
  const explicit = new Set;
  let focus;
  let ws;
  let state = "connecting";
  let attempt = 0;
  let timer;
  let counter = 0;
  const prefix = Math.floor(random() * 36 ** 6).toString(36);
  const resumeTimers = new Set;
  const catchingUp = new Set;
  const setState = (s, d = {}) => {
    state = s;
    for (const fn of stateListeners)
      fn(s, d);
  };
  const emit = (f) => {
    for (const fn of listeners.get(f.type) ?? [])
      fn(f);
    for (const fn of listeners.get("*") ?? [])
      fn(f);
  };
  const perSecond = o.framesPerSecond ?? 40;
  const maxInFlight = o.maxInFlight ?? 32;
  let tokens = perSecond * 2;
  let refilled = Date.now();
  let paced;
  let restoringNow = false;
  const inFlight = [];
  function flush() {
    if (ws?.readyState !== 1)
      return;
    const now = Date.now();
    const restoring = restoringNow;
    tokens = Math.min(perSecond * 2, tokens + (now - refilled) / 1000 * perSecond);
    refilled = now;
    const waiting = [...pending.values()].filter((p) => !p.sent);
    for (const p of [...waiting.filter((w) => w.quiet), ...waiting.filter((w) => !w.quiet)]) {
      if (tokens < 1 || !p.quiet && (restoring || inFlight.length >= maxInFlight))
        break;
      tokens -= 1;
      ws.send(JSON.stringify(p.frame));
      p.sent = true;
      inFlight.push(p);
    }
    if (tokens < 1 && !paced && [...pending.values()].some((p) => !p.sent)) {
      paced = setTimeout(() => {
        paced = undefined;
        flush();
      }, Math.ceil(1000 / perSecond));
    }
  }
  function settle(p) {
    pending.delete(p.requestId);
    const i = inFlight.indexOf(p);
    if (i >= 0)
      inFlight.splice(i, 1);
  }
  function track(type, args) {
    const chatId = typeof args.chatId === "string" ? args.chatId : undefined;
    if (type === "WATCH")
      for (const id of args.chatIds)
        explicit.add(id);
    if (type === "UNWATCH")
      for (const id of args.chatIds)
        explicit.delete(id);
    if (FOCUSING.has(type) && chatId && chatId !== focus) {
      if (focus && !explicit.has(focus))
        streams.forgetChat(focus);
      focus = chatId;
    }
  }
  function forgetChat(chatId) {
    explicit.delete(chatId);
    if (focus === chatId)
      focus = undefined;
    streams.forgetChat(chatId);
  }
  function enqueue(type, args, quiet) {
    if (state === "closed" || state === "stopped")
      return Promise.reject(new PiChatError("CLOSED", `the client is ${state}`));
    const requestId = `${prefix}-${++counter}`;
    const frame = { ...args, type, requestId };
    return new Promise((resolve, reject) => {
      const p = { requestId, type, frame, sent: false, quiet, resolve, reject };
      pending.set(requestId, p);
      if (!quiet)
        track(type, args);
      flush();
    });
  }
  function request(type, ...rest) {
    const args = { ...rest[0] };
    if (type === "SEND_MESSAGE") {
      const message = args.message ?? {};
      const id = message.id ?? args.messageId ?? newMessageId();
      args.message = { content: message.content ?? args.content, id };
      delete args.content;
      delete args.messageId;
    }
    return enqueue(type, args, false);
  }
  function onMessageFrame(f, resumed) {
    if (resumed && f.end && f.message?.status === "streaming")
      return resumeLater(f.chatId, f.traceId);
    if (resumed)
      catchingUp.delete(f.traceId);
    else if (catchingUp.has(f.traceId))
      return;
    else if (!streams.knows(f.traceId) && (f.end || (f.seq ?? 0) > 1)) {
      streams.saw(f.chatId, f.traceId, 0);
      return resume(f.chatId, f.traceId, 0);
    }
    if (streams.accept(f))
      emit(f);
  }
  function unclaimed(f) {
    if (f.chatId || f.traceId)
      return;
    return f.code === "RATE_LIMITED" && f.limit !== undefined ? inFlight.at(-1) : inFlight[0];
  }
  function onFrame(f) {
    const p = typeof f.requestId === "string" ? pending.get(f.requestId) : f.type === "ERROR" && f.requestId === undefined ? unclaimed(f) : undefined;
    if (f.type === "CHAT_DELETED")
      forgetChat(f.chatId);
    if (f.type === "CHAT_HISTORY" && !p?.quiet) {
      for (const m of f.messages)
        if (m.streaming)
          streams.saw(f.chatId, m.id, m.seq ?? 0);
    }
    if (p) {
      settle(p);
      if (f.type === "ERROR") {
        if (p.type === "SEND_MESSAGE" && SEND_AGAIN.has(f.code)) {
          pending.set(p.requestId, { ...p, sent: false });
        } else {
          if (p.type === "RESUME") {
            catchingUp.delete(p.frame.traceId);
            resumeFailed(p.frame, f);
          }
          p.reject(new PiChatError(f.code, f.error, f));
        }
        if (!p.quiet)
          emit(f);
        flush();
        return;
      }
      if (f.type === "MESSAGE")
        onMessageFrame(f, p.type === "RESUME");
      else if (!p.quiet)
        emit(f);
      p.resolve(f);
      flush();
      return;
    }
    if (f.type === "MESSAGE")
      return onMessageFrame(f, false);
    emit(f);
  }
  function resumeFailed(frame, e) {
    const chatId = frame.chatId;
    const traceId = frame.traceId;
    if (RESUME_AGAIN.has(e.code))
      return resumeLater(chatId, traceId);
    if (e.code === "CHAT_NOT_FOUND")
      return forgetChat(chatId);
    if (streams.isEnded(traceId))
      return;
    streams.end(traceId);
    emit({ type: "MESSAGE", chatId, traceId, content: "", end: true, reason: "interrupted" });
  }
  function resume(chatId, traceId, seq) {
    catchingUp.add(traceId);
    enqueue("RESUME", { chatId, traceId, fromSeq: seq }, true).catch(() => {});
  }
  function resumeLater(chatId, traceId) {
    const t = setTimeout(() => {
      resumeTimers.delete(t);
      const s = streams.following().find(([id]) => id === traceId);
      if (s && state === "open")
        resume(chatId, traceId, s[1].seq);
    }, RESUME_RETRY_MS);
    resumeTimers.add(t);
  }
  function restore() {
    restoringNow = true;
    if (explicit.size)
      enqueue("WATCH", { chatIds: [...explicit] }, true).catch(() => {});
    for (const [traceId, s] of streams.following())
      resume(s.chatId, traceId, s.seq);
    if (focus)
      enqueue("GET_CHAT_HISTORY", { chatId: focus, limit: 1 }, true).catch(() => {});
    restoringNow = false;
    flush();
  }
  async function open() {
    clearTimeout(timer);
    const token = typeof o.token === "function" ? await o.token() : o.token;
    if (state === "closed" || state === "stopped")
      return;
    const url = new URL(o.url);
    const protocols = ["pichat"];
    if (token && o.tokenIn === "query")
      url.searchParams.set("token", token);
    else if (token)
      protocols.push(`bearer.${token}`);
    let socket;
    try {
      socket = new WS(url, protocols);
    } catch (e) {
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
      let f;
      try {
        f = JSON.parse(typeof e.data === "string" ? e.data : new TextDecoder().decode(e.data));
      } catch {
        return;
      }
      if (f && typeof f.type === "string")
        onFrame(f);
    };
    socket.onclose = (e) => {
      if (ws !== socket)
        return;
      ws = undefined;
      closed(e.code, e.reason, opened, token);
    };
  }
  async function closed(code, reason, opened, token) {
    for (const t of resumeTimers)
      clearTimeout(t);
    resumeTimers.clear();
    catchingUp.clear();
    inFlight.length = 0;
    clearTimeout(paced);
    paced = undefined;
    for (const p of [...pending.values()]) {
      if (p.quiet)
        pending.delete(p.requestId);
      else if (!p.sent || RESENDABLE.has(p.type))
        p.sent = false;
      else {
        pending.delete(p.requestId);
        p.reject(new PiChatError("DISCONNECTED", `the connection dropped before ${p.type} was answered`));
      }
    }
    if (state === "closed")
      return;
    if (isFinalClose(code, reason) || !opened && await refused(token))
      return stop(code, reason || "the token was refused");
    if (!backoff)
      return stop(code, reason || "disconnected");
    const delayMs = backoffDelay(attempt++, backoff, random);
    setState("reconnecting", { code, reason, attempt, delayMs });
    timer = setTimeout(() => void open(), delayMs);
  }
  async function refused(token) {
    if (typeof fetch !== "function")
      return false;
    const http = new URL(o.url);
    http.protocol = http.protocol === "wss:" ? "https:" : "http:";
    try {
      const res = await fetch(http, { headers: token ? { Authorization: `Bearer ${token}` } : {} });
      return res.status === 401;
    } catch {
      return false;
    }
  }
  function stop(code, reason) {
    for (const p of pending.values())
      p.reject(new PiChatError("CLOSED", reason));
    pending.clear();
    setState("stopped", { code, reason });
  }
  open();
  return {
    get state() {
      return state;
    },
    request,
    send: (chatId, content, o2 = {}) => request("SEND_MESSAGE", { chatId, message: { content, id: o2.messageId ?? newMessageId() } }),
    on(type, fn) {
      let set = listeners.get(type);
      if (!set)
        listeners.set(type, set = new Set);
      set.add(fn);
      return () => set.delete(fn);
    },
    onState(fn) {
      stateListeners.add(fn);
      return () => stateListeners.delete(fn);
    },
    following: () => streams.following().map(([traceId, s]) => ({ traceId, ...s })),
    waiting: () => [...pending.values()].filter((p) => !p.quiet).map((p) => ({ requestId: p.requestId, type: p.type })),
    reconnect() {
      ws?.close(4000, "reconnect");
    },
    close() {
      clearTimeout(timer);
      setState("closed");
      for (const p of pending.values())
        p.reject(new PiChatError("CLOSED", "the client was closed"));
      pending.clear();
      ws?.close(1000, "closed");
      ws = undefined;
    }
  };
}
export {
  PiChatError,
  backoffDelay,
  createClient,
  isFinalClose,
  newMessageId
};
