import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createClient, isFinalClose, PiChatError, type PiChatClient, type ServerFrame } from "../client";
import { backoffDelay } from "../client/backoff";
import type { Message } from "../src/records";
import { closes } from "../src/ws/protocol";
import { openTestCosmosStore, startCosmosServer } from "./support/cosmos-server";
import { frameProblems } from "./support/frame-check";
import { startTestServer, type TestServer } from "./support/harness";
import { startSseModel, type SseModel } from "./support/sse-model";
import { startSwitchRelay } from "./support/switch-relay";
import { until, within } from "./support/until";
import { addUser } from "./support/users";

// The typed client (client/) against the real server: answers by requestId, typed events, and a
// connection cut under it (a TCP relay that drops every connection at once) that loses nothing and
// repeats nothing. Every frame it hands to listeners is checked against its schema (the spec's contract).

let model: SseModel;
const serverEnv = () => ({
  OPENAI_BASE_URL: `${model.url}/v1`,
  OPENAI_MODEL: "m",
  CHAT_TITLES: "false",
  CHAT_QUEUE_LIMIT: "200",
  RATE_LIMIT_FRAMES_PER_SECOND: "100000",
  AUTH_RECHECK_MS: "100",
});
let server: TestServer;
const clients: PiChatClient[] = [];
const problems: string[] = [];

beforeAll(async () => {
  model = await startSseModel({ tokens: ["a", "b", "c", "d", "e"], delayMs: 2 });
  server = await startTestServer(serverEnv());
});
afterAll(async () => {
  for (const c of clients) c.close();
  await server?.close();
  model?.stop();
});

/** A client that records every frame it passes on, and checks each against the contract. */
function open(url = server.wsUrl, token?: string) {
  const frames: ServerFrame[] = [];
  const client = createClient({ url, token, reconnect: { minMs: 20, maxMs: 200 } });
  if (process.env.DEBUG_CLIENT) client.onState((s, d) => console.log("state", s, JSON.stringify(d)));
  client.on("*", (f) => {
    frames.push(f);
    problems.push(...frameProblems(f as Record<string, unknown>));
  });
  clients.push(client);
  return { client, frames };
}
const opened = (c: PiChatClient) => until(() => c.state === "open", "the client to be open");
/** Resolves when the client next loses its connection (it may be open again by the time a poll would look). */
const dropped = (c: PiChatClient) =>
  new Promise<void>((resolve) => {
    const off = c.onState((s) => s === "reconnecting" && (off(), resolve()));
  });

describe("typed requests and events", () => {
  test("requests resolve on their answer by requestId; an ERROR rejects with its code; a reply streams as events", async () => {
    const { client, frames } = open();
    const [a, b] = await Promise.all([client.request("CREATE_CHAT", { name: "one" }), client.request("CREATE_CHAT", { name: "two" })]);
    expect(a.type).toBe("NEW_CHAT");
    expect([a.chat.name, b.chat.name]).toEqual(["one", "two"]);
    const err = await client.request("GET_CHAT_HISTORY", { chatId: crypto.randomUUID() }).catch((e) => e);
    expect(err).toBeInstanceOf(PiChatError);
    expect(err.code).toBe("CHAT_NOT_FOUND");

    const ended = new Promise<ServerFrame<"MESSAGE">>((resolve) => client.on("MESSAGE", (f) => f.end && resolve(f)));
    const accepted = await client.send(a.chat.id, "hello", { messageId: "q-hello" });
    expect(accepted).toMatchObject({ type: "MESSAGE_ACCEPTED", messageId: "q-hello", duplicate: false });
    const end = await within(ended, 5000, "the reply's end frame");
    const text = frames
      .filter((f): f is ServerFrame<"MESSAGE"> => f.type === "MESSAGE" && f.traceId === end.traceId)
      .map((f) => f.content)
      .join("");
    expect(text).toBe("abcde");
    // The same id again is answered once: a duplicate, nothing new stored.
    expect(await client.send(a.chat.id, "hello", { messageId: "q-hello" })).toMatchObject({ duplicate: true });
    const history = await client.request("GET_CHAT_HISTORY", { chatId: a.chat.id });
    expect(history.messages.map((m) => m.content)).toEqual(["hello", "abcde"]);
    expect(problems).toEqual([]);
  });

  test("backoff grows to its ceiling with jitter between half and all of it", () => {
    const b = { minMs: 100, maxMs: 1000, factor: 2 };
    expect([0, 1, 2, 3, 4, 10].map((n) => backoffDelay(n, b, () => 0))).toEqual([50, 100, 200, 400, 500, 500]);
    expect([0, 1, 2, 3, 4, 10].map((n) => backoffDelay(n, b, () => 1))).toEqual([100, 200, 400, 800, 1000, 1000]);
  });
});

/**
 * 100 sends through 3 forced disconnects on `srv`: five questions at each cut reach the server and are
 * stored while their answers are lost; the client sends them again (duplicates) with the rest.
 */
async function hundredSends(srv: TestServer) {
  const relay = startSwitchRelay(Number(new URL(srv.url).port));
  try {
    const { client, frames } = open(relay.url);
    const chat = (await client.request("CREATE_CHAT", { name: "hundred" })).chat;
    await client.request("WATCH", { chatIds: [chat.id] });
    const ids = Array.from({ length: 100 }, (_, i) => `q-${i}`);
    const accepted: string[] = [];
    const storedIds = async () => new Set((await srv.store.pageMessages(chat.id, { limit: 1000 })).items.map((m) => m.id));
    const sends: Promise<unknown>[] = [];
    const send = (i: number) => sends.push(client.send(chat.id, `question ${i}`, { messageId: ids[i] }).then(() => accepted.push(ids[i]!)));
    for (let i = 0; i < 100; i++) {
      if (i === 25 || i === 50 || i === 75) {
        // A disconnect that loses answers: five questions reach the server and are stored, their
        // MESSAGE_ACCEPTED never reaches the client; then the connection drops.
        await opened(client);
        await until(() => client.waiting().length === 0, "the sends before it answered");
        relay.stall();
        for (let k = i; k < i + 5; k++) send(k);
        await until(async () => (await storedIds()).has(ids[i + 4]!), `${ids[i + 4]} stored`);
        const noticed = dropped(client);
        relay.cut();
        await within(noticed, 5000, "the client to notice the cut");
        i += 4;
        continue;
      }
      send(i); // the ones right after a cut are sent while the client reconnects: queued, sent on the new socket
    }
    const all = Promise.all(sends);
    await within(all, 30_000, "every send accepted");
    expect(relay.connections()).toBeGreaterThanOrEqual(4);
    // The fifteen whose answers were lost were sent again, and the server said so instead of storing them twice.
    expect(frames.filter((f) => f.type === "MESSAGE_ACCEPTED" && f.duplicate).length).toBeGreaterThanOrEqual(15);

    // Every reply finished: read the store the server wrote.
    const stored = await until(
      async () => {
        const page = await srv.store.pageMessages(chat.id, { limit: 1000 });
        const replies = page.items.filter((m) => m.role === "assistant");
        return replies.length >= 100 && !replies.some((m) => m.status === "streaming") && page.items;
      },
      "100 replies stored",
      30_000,
    );
    const questions = stored.filter((m: Message) => m.role === "user");
    expect(questions.map((m) => m.id)).toEqual(ids);
    const replies = stored.filter((m: Message) => m.role === "assistant");
    expect(replies.map((m) => m.parent_id)).toEqual(ids);
    expect(replies.every((m) => m.content === "abcde" && !m.status)).toBe(true);

    // The client handed on no chunk twice and no reply's end twice; each reply it followed from its
    // start shows exactly the stored text.
    const messages = frames.filter((f): f is ServerFrame<"MESSAGE"> => f.type === "MESSAGE");
    const byTrace = Map.groupBy(messages, (f) => f.traceId);
    for (const [traceId, fs] of byTrace) {
      expect(fs.filter((f) => f.end).length).toBeLessThanOrEqual(1);
      const seqs = fs.filter((f) => !f.end).map((f) => f.seq!);
      expect(seqs).toEqual([...seqs].sort((x, y) => x - y));
      expect(new Set(seqs).size).toBe(seqs.length);
      const end = fs.find((f) => f.end);
      if (end && !end.message) expect(fs.map((f) => f.content).join("")).toBe(replies.find((m) => m.id === traceId)!.content);
    }
    expect(problems).toEqual([]);
  } finally {
    relay.stop();
  }
}

describe("pacing", () => {
  test("paced below the server's frame rate, every request is answered; unpaced, the refusals without a requestId still settle each request", async () => {
    const strict = await startTestServer({ RATE_LIMIT_FRAMES_PER_SECOND: "10" }); // a burst of 20
    try {
      const paced = createClient({ url: strict.wsUrl, framesPerSecond: 8 });
      const unpaced = createClient({ url: strict.wsUrl, framesPerSecond: 10_000, maxInFlight: 10_000 });
      clients.push(paced, unpaced);
      const answers = await within(
        Promise.all(Array.from({ length: 30 }, () => paced.request("GET_SETTINGS"))),
        10_000,
        "30 paced requests answered",
      );
      expect(answers.every((a) => a.type === "SETTINGS")).toBe(true);
      // 60 at once: the server refuses those past its burst before reading them (no requestId); the
      // client ties each refusal to its request (answers come in order), so none waits forever.
      const outcomes = await within(
        Promise.all(
          Array.from({ length: 60 }, () =>
            unpaced.request("GET_SETTINGS").then(
              (a) => a.type,
              (e) => e.code,
            ),
          ),
        ),
        10_000,
        "every unpaced request settled",
      );
      expect(outcomes.filter((o) => o === "SETTINGS").length).toBeGreaterThanOrEqual(20);
      expect(outcomes.filter((o) => o === "RATE_LIMITED").length).toBeGreaterThan(0);
      expect(outcomes.every((o) => o === "SETTINGS" || o === "RATE_LIMITED")).toBe(true);
    } finally {
      await strict.close();
    }
  }, 20_000);
});

describe("reconnecting", () => {
  test(
    "100 sends through 3 forced disconnects: each question stored and answered exactly once, in order; nothing shown twice",
    () => hundredSends(server),
    90_000,
  );

  test("the same on Cosmos DB (where two connections' handling of one question can really race)", async () => {
    const cosmos = await startCosmosServer();
    const store = await openTestCosmosStore(cosmos, "pichat-client");
    const srv = await startTestServer(serverEnv(), { store });
    try {
      await hundredSends(srv);
    } finally {
      await srv.close();
      await store.close();
      await cosmos.stop();
    }
  }, 120_000);

  test("a reply streaming through a cut is RESUMEd from the last seq seen: its text arrives whole, once", async () => {
    model.setScript({ tokens: Array.from({ length: 60 }, (_, i) => `t${i} `), delayMs: 15 });
    const relay = startSwitchRelay(Number(new URL(server.url).port));
    try {
      const { client, frames } = open(relay.url);
      const chat = (await client.request("CREATE_CHAT", {})).chat;
      await client.request("GET_CHAT_HISTORY", { chatId: chat.id });
      // Watched explicitly too: after the cut the WATCH is restored first, so live chunks race RESUME's catch-up.
      await client.request("WATCH", { chatIds: [chat.id] });
      const ended = new Promise<ServerFrame<"MESSAGE">>((resolve) => client.on("MESSAGE", (f) => f.end && resolve(f)));
      await client.send(chat.id, "stream please");
      await until(() => frames.filter((f) => f.type === "MESSAGE").length >= 5, "five chunks");
      const noticed = dropped(client);
      relay.cut();
      await within(noticed, 5000, "the client to notice the cut");
      const end = await within(ended, 15_000, "the reply's end");
      const text = frames
        .filter((f): f is ServerFrame<"MESSAGE"> => f.type === "MESSAGE" && f.traceId === end.traceId)
        .map((f) => f.content)
        .join("");
      const stored = (await server.store.pageMessages(chat.id, { limit: 10 })).items.find((m) => m.id === end.traceId)!;
      expect(text).toBe(stored.content);
      expect(text).toBe(Array.from({ length: 60 }, (_, i) => `t${i} `).join(""));
      expect(problems).toEqual([]);
    } finally {
      model.setScript({ tokens: ["a", "b", "c", "d", "e"], delayMs: 2 });
      relay.stop();
    }
  }, 30_000);

  test("after a reconnect the socket watches what it watched: WATCHed chats and the open one stream to it again", async () => {
    const relay = startSwitchRelay(Number(new URL(server.url).port));
    try {
      const { client, frames } = open(relay.url);
      const watched = (await client.request("CREATE_CHAT", { name: "watched" })).chat;
      const opened_ = (await client.request("CREATE_CHAT", { name: "open" })).chat;
      await client.request("WATCH", { chatIds: [watched.id] });
      await client.request("GET_CHAT_HISTORY", { chatId: opened_.id });
      const noticed = dropped(client);
      relay.cut();
      await within(noticed, 5000, "the client to notice the cut");
      await opened(client);
      // Another connection of the same user asks in both chats: its replies stream to the watchers.
      const other = await server.connect();
      const ends = new Set<string>();
      client.on("MESSAGE", (f) => f.end && ends.add(f.chatId));
      // The restore is on the wire before anything sent after the open: a request's answer means it was handled.
      await client.request("GET_SETTINGS");
      for (const chat of [watched, opened_]) other.send({ type: "SEND_MESSAGE", chatId: chat.id, content: `to ${chat.name}` });
      await until(() => ends.has(watched.id) && ends.has(opened_.id), "both replies streamed to the reconnected client");
      for (const chatId of [watched.id, opened_.id]) {
        const text = frames
          .filter((f): f is ServerFrame<"MESSAGE"> => f.type === "MESSAGE" && f.chatId === chatId)
          .map((f) => f.content)
          .join("");
        expect(text).toBe("abcde");
      }
      expect(frames.filter((f) => f.type === "FIRST_MESSAGE").length).toBe(2);
    } finally {
      relay.stop();
    }
  });

  test("a revoked token stops reconnecting, with the server's reason; unanswered requests fail", async () => {
    const user = await addUser(server.store);
    const { client } = open(server.wsUrl, user.token);
    await opened(client);
    const stopped = new Promise<{ code?: number; reason?: string }>((resolve) => client.onState((s, d) => s === "stopped" && resolve(d)));
    await server.store.revokeTokens(user.id);
    expect(await within(stopped, 5000, "the client to stop")).toEqual({ code: 1008, reason: "token revoked" });
    expect(client.state).toBe("stopped");
    expect(await client.request("GET_CHATS").catch((e) => e.code)).toBe("CLOSED");
    // Only the server's closes that a new connection would meet again are final for the client.
    expect(closes.map((c) => isFinalClose(c.code, c.reason))).toEqual(closes.map((c) => !c.reconnect));
  });

  test("a token refused at the upgrade (401) stops the client instead of retrying", async () => {
    const user = await addUser(server.store);
    await server.store.revokeTokens(user.id);
    const { client } = open(server.wsUrl, user.token);
    const stopped = new Promise<{ reason?: string }>((resolve) => client.onState((s, d) => s === "stopped" && resolve(d)));
    expect((await within(stopped, 5000, "the client to stop")).reason).toBeString();
  });
});
