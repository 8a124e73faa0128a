import { expect, test } from "bun:test";
import { createClient, newMessageId, type ServerFrame } from "../client";
import { until } from "./support/until";

// The client's catch-up rules with the server's frames in the orders that are hard to time on a real
// server (client.test.ts and client-recovery.test.ts run the real one): an in-memory socket the test
// answers by hand. Pure client logic; nothing here stands in for the server in any other test.

type Sent = Record<string, any>;
class ScriptedSocket {
  static all: ScriptedSocket[] = [];
  readyState = 0;
  sent: Sent[] = [];
  onopen?: () => void;
  onmessage?: (e: { data: string }) => void;
  onclose?: (e: { code: number; reason: string }) => void;
  constructor(
    readonly url: URL,
    readonly protocols: string[],
  ) {
    ScriptedSocket.all.push(this);
  }
  send(data: string) {
    this.sent.push(JSON.parse(data));
  }
  close(code = 1000, reason = "") {
    this.drop(code, reason);
  }
  // The test's side:
  open() {
    this.readyState = 1;
    this.onopen?.();
  }
  deliver(f: object) {
    this.onmessage?.({ data: JSON.stringify(f) });
  }
  drop(code = 1006, reason = "") {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
}

const chatId = "3f2b6c1e-8a4d-4e7b-9c2a-5d1e7f3a9b60";
const traceId = "c4e8a2f1-6b3d-4c9e-8a7f-2d5b1e9c3a70";
const delta = (seq: number, content: string) => ({ type: "MESSAGE", chatId, traceId, content, end: false, seq });

test("after a reconnect, live chunks that race RESUME's catch-up are dropped: each chunk is handed on once, in order", async () => {
  ScriptedSocket.all = [];
  const client = createClient({
    url: "ws://test/ws",
    WebSocket: ScriptedSocket as unknown as typeof WebSocket,
    reconnect: { minMs: 1, maxMs: 2 },
  });
  const shown: string[] = [];
  client.on("MESSAGE", (f: ServerFrame<"MESSAGE">) => shown.push(f.end ? "<end>" : f.content));
  const first = await until(() => ScriptedSocket.all[0], "a socket");
  first.open();
  const history = client.request("GET_CHAT_HISTORY", { chatId });
  const asked = first.sent.at(-1)!;
  first.deliver({
    type: "CHAT_HISTORY",
    requestId: asked.requestId,
    chatId,
    hasMore: false,
    messages: [
      { id: traceId, chat_id: chatId, role: "assistant", content: "abc", created_at: "2025-03-14T09:27:10.205Z", streaming: true, seq: 3 },
    ],
  });
  await history;
  first.deliver(delta(3, "c")); // already in the history
  first.deliver(delta(4, "d"));
  first.drop();

  const second = await until(() => ScriptedSocket.all[1], "a second socket");
  second.open();
  const resume = second.sent.find((f) => f.type === "RESUME")!;
  expect(resume).toMatchObject({ chatId, traceId, fromSeq: 4 });
  // The restored focus is asked for after the RESUME (RESUME moves it).
  expect(second.sent.map((f) => f.type)).toEqual(["RESUME", "GET_CHAT_HISTORY"]);
  second.deliver(delta(5, "e")); // live, before the catch-up: in it
  second.deliver(delta(6, "f"));
  second.deliver({ ...delta(6, "ef"), requestId: resume.requestId }); // the catch-up
  second.deliver(delta(7, "g"));
  second.deliver({ type: "MESSAGE", chatId, traceId, content: "", end: true, seq: 8 });
  second.deliver({ type: "MESSAGE", chatId, traceId, content: "", end: true, seq: 8 }); // a second end: dropped
  expect(shown).toEqual(["d", "ef", "g", "<end>"]);
  expect(client.following()).toEqual([]);
  client.close();
});

test("a reply first met by its end, or mid-way, is fetched from its start; one whose RESUME finds nothing ends as interrupted", async () => {
  ScriptedSocket.all = [];
  const client = createClient({ url: "ws://test/ws", WebSocket: ScriptedSocket as unknown as typeof WebSocket });
  const shown: ServerFrame<"MESSAGE">[] = [];
  client.on("MESSAGE", (f) => shown.push(f));
  const socket = await until(() => ScriptedSocket.all[0], "a socket");
  socket.open();
  socket.deliver({ type: "MESSAGE", chatId, traceId, content: "", end: true, seq: 4 });
  const resume = socket.sent.at(-1)!;
  expect(resume).toMatchObject({ type: "RESUME", chatId, traceId, fromSeq: 0 });
  const message = { id: traceId, chat_id: chatId, role: "assistant", content: "abc", created_at: "2025-03-14T09:27:10.205Z" };
  socket.deliver({ type: "MESSAGE", chatId, traceId, content: "", end: true, message, requestId: resume.requestId });
  expect(shown.map((f) => f.message?.content)).toEqual(["abc"]);

  const other = "7d3e9f2a-1b4c-4e6d-8a5f-0c9b8a7d6e5f";
  socket.deliver({ type: "MESSAGE", chatId, traceId: other, content: "c", end: false, seq: 3 });
  const again = socket.sent.at(-1)!;
  expect(again).toMatchObject({ type: "RESUME", traceId: other, fromSeq: 0 });
  socket.deliver({
    type: "ERROR",
    code: "GENERATION_NOT_FOUND",
    error: "no such reply",
    chatId,
    traceId: other,
    requestId: again.requestId,
  });
  expect(shown.at(-1)).toMatchObject({ traceId: other, end: true, reason: "interrupted" });
  expect(shown.length).toBe(2);
  client.close();
});

test("a question's id is a UUID even where crypto.randomUUID is missing (a page on plain http off localhost)", () => {
  const real = crypto.randomUUID;
  const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
  try {
    Object.defineProperty(crypto, "randomUUID", { value: undefined, configurable: true });
    const ids = new Set(Array.from({ length: 1000 }, () => newMessageId()));
    expect(ids.size).toBe(1000);
    expect([...ids].every((id) => uuid.test(id))).toBe(true);
  } finally {
    Object.defineProperty(crypto, "randomUUID", { value: real, configurable: true });
  }
  expect(newMessageId()).toMatch(uuid);
});
