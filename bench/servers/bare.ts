import { Database } from "bun:sqlite";
import { openAICompatibleModel } from "../../src/model/openai";
import { serveChild } from "../lib/proc";

// The bare limits: a Bun.serve WebSocket server that speaks the real PiChat protocol
// frames and does nothing else: no store, no validation beyond JSON.parse, no limits, no metrics,
// no logging, no bus. Two modes, two baselines:
//
//   protocol (BARE_MODEL_URL unset)  GET_CHAT_HISTORY answers from an in-memory map (the bench
//       seeds it with the very messages our server returned); SEND_MESSAGE answers from memory with
//       the frames our server streams for a reply of `tokens=N` chunks (" word" each, default 5).
//       The limit of the stack for a request/response command.
//   model (BARE_MODEL_URL set)        SEND_MESSAGE makes the same streamed Chat Completions call our
//       server makes, with our own model client (src/model/openai.ts), to the same local SSE model,
//       and forwards every delta as our MESSAGE frame, then the end frame; it stores nothing. The
//       limit for a send. Its prompt is the system prompt and the question (it keeps no history).
//
//   durable (BARE_SQLITE_PATH set, with BARE_MODEL_URL)  the model mode that also stores what a send
//       must: the question before the model call and the reply after it, each one INSERT committed
//       on its own into a SQLite file (WAL, synchronous NORMAL, as ours), a table keyed and indexed as
//       ours keeps messages. No usage, no lease, no history: the floor of a send that keeps its turns.
//
// Both answer CREATE_CHAT with NEW_CHAT (a chat in memory) so the same client code drives them.
// Frames are built exactly as src/ws/protocol.ts builds them (same keys, same order).

type Message = Record<string, unknown> & { id: string; chat_id: string };
const chats = new Map<string, { chat: Record<string, unknown>; messages: Message[] }>();

const SYSTEM = "You are PiChat, a helpful voice and chat assistant. Answer clearly and concisely.";
const modelUrl = process.env.BARE_MODEL_URL;
const db = process.env.BARE_SQLITE_PATH ? new Database(process.env.BARE_SQLITE_PATH) : undefined;
db?.exec(`PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
  CREATE TABLE IF NOT EXISTS messages (chat_id TEXT NOT NULL, id TEXT NOT NULL, role TEXT NOT NULL, content TEXT NOT NULL,
    created_at TEXT NOT NULL, PRIMARY KEY (chat_id, id));
  CREATE INDEX IF NOT EXISTS messages_page ON messages (chat_id, created_at, id);`);
const insert = db?.query("INSERT INTO messages (chat_id, id, role, content, created_at) VALUES (?1, ?2, ?3, ?4, ?5)");
const store = (chatId: string, role: string, content: string) =>
  insert?.run(chatId, crypto.randomUUID(), role, content, new Date().toISOString());
// Our own model client (src/model/openai.ts: the openai package makes the request, src/model/sse.ts
// reads the stream), so the limit of a send is measured with the same model call ours makes.
const client = modelUrl ? openAICompatibleModel({ baseURL: modelUrl, model: "bench", timeoutMs: 120_000 }) : undefined;

const delta = (chatId: string, traceId: string, seq: number, content: string) =>
  JSON.stringify({ type: "MESSAGE", chatId, content, traceId, end: false, seq });
const end = (chatId: string, traceId: string, seq: number) =>
  JSON.stringify({ type: "MESSAGE", chatId, content: "", traceId, end: true, seq });
const error = (code: string, message: string, extra: Record<string, unknown> = {}) =>
  JSON.stringify({ type: "ERROR", error: message, code, ...extra });

type Ws = import("bun").ServerWebSocket<unknown>;

async function streamFromModel(ws: Ws, chatId: string, content: string) {
  const traceId = crypto.randomUUID();
  let seq = 0;
  try {
    store(chatId, "user", content);
    const parts: string[] = [];
    const turns = [
      { role: "system" as const, content: SYSTEM },
      { role: "user" as const, content },
    ];
    for await (const d of client!.stream(turns, { signal: new AbortController().signal })) {
      if (db) parts.push(d);
      ws.send(delta(chatId, traceId, ++seq, d));
    }
    store(chatId, "assistant", parts.join(""));
    ws.send(end(chatId, traceId, seq + 1));
  } catch (e) {
    ws.send(JSON.stringify({ type: "MESSAGE", chatId, content: "", traceId, end: true, seq: seq + 1, reason: "error" }));
    ws.send(error("MODEL_ERROR", e instanceof Error ? e.message : String(e), { chatId, traceId }));
  }
}

function streamFromMemory(ws: Ws, chatId: string, content: string) {
  const traceId = crypto.randomUUID();
  const tokens = Number(/tokens=(\d+)/.exec(content)?.[1] ?? 5);
  for (let i = 1; i <= tokens; i++) ws.send(delta(chatId, traceId, i, " word"));
  ws.send(end(chatId, traceId, tokens + 1));
}

const server = Bun.serve({
  port: 0,
  hostname: "127.0.0.1",
  fetch(req, srv) {
    return srv.upgrade(req, { data: undefined }) ? undefined : new Response("expected a WebSocket upgrade", { status: 426 });
  },
  websocket: {
    message(ws, raw) {
      let f: Record<string, any>;
      try {
        f = JSON.parse(String(raw));
      } catch {
        return void ws.send(error("BAD_JSON", "the frame is not valid JSON"));
      }
      const a = { ...f, ...(f.payload ?? {}) };
      const withId = typeof f.requestId === "string" ? { requestId: f.requestId } : {};
      switch (f.type) {
        case "GET_CHAT_HISTORY": {
          const c = chats.get(a.chatId);
          if (!c) return void ws.send(error("CHAT_NOT_FOUND", "no such chat", { chatId: a.chatId, ...withId }));
          const messages = a.limit ? c.messages.slice(-a.limit) : c.messages;
          return void ws.send(
            JSON.stringify({ type: "CHAT_HISTORY", chatId: a.chatId, messages, hasMore: messages.length < c.messages.length, ...withId }),
          );
        }
        case "CREATE_CHAT": {
          const t = new Date().toISOString();
          const chat = { id: crypto.randomUUID(), name: a.name ?? "New Chat", active: true, created_at: t, updated_at: t };
          chats.set(chat.id, { chat, messages: [] });
          return void ws.send(JSON.stringify({ type: "NEW_CHAT", chat, ...withId }));
        }
        case "SEND_MESSAGE": {
          const content = String(a.message?.content ?? a.content ?? "");
          if (typeof a.chatId !== "string") return void ws.send(error("INVALID_FRAME", "chatId must be a string", withId));
          if (client) return void streamFromModel(ws, a.chatId, content);
          return streamFromMemory(ws, a.chatId, content);
        }
        default:
          return void ws.send(error("UNKNOWN_TYPE", "unknown frame type", withId));
      }
    },
  },
});

serveChild(
  { port: server.port, url: `ws://127.0.0.1:${server.port}`, mode: client ? (db ? "durable" : "model") : "protocol" },
  {
    /** The bench hands over a chat as our server returned it, so both sides send the same bytes. */
    seed: (a: { chat: Record<string, unknown> & { id: string }; messages: Message[] }) => {
      chats.set(a.chat.id, { chat: a.chat, messages: a.messages });
      return a.messages.length;
    },
    stop: () => server.stop(true),
  },
);
