import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Store } from "../src/store/store";
import { MAX_WATCHED_CHATS } from "../src/ws/connections";
import { openTestCosmosStore, startCosmosServer, type CosmosTestServer } from "./support/cosmos-server";
import { startTestServer, type TestServer } from "./support/harness";
import { startSseModel, type SseModel } from "./support/sse-model";
import type { Frame, TestClient } from "./support/ws-client";

// Which chats' live frames a socket gets. By default one: the chat it last opened (GET_CHAT_HISTORY,
// RESUME) or sent to, so a web UI that ignores `chatId` never shows one chat's stream in another.
// WATCH / UNWATCH keep more. Real sockets, a real SSE model (held in flight where a test needs a
// reply running), on SQLite and, for the two-tab bug and its races, on the Cosmos test server.

const TOKENS = ["one", " two", " three", " four"];
const words = (n: number) => Array.from({ length: n }, (_, i) => ` w${i}`);
// Generous frame and message rates: the race loop sends many frames in a short time on one socket.
const ENV = { CHAT_TITLES: "false", RATE_LIMIT_FRAMES_PER_SECOND: "2000", RATE_LIMIT_MESSAGES_PER_MINUTE: "2000" };

const live = (f: Frame) => f.type === "MESSAGE" || f.type === "FIRST_MESSAGE" || (f.type === "ERROR" && !!f.traceId);
/** The live frames of `chatId` that `c` received from index `from` on. */
const liveOf = (c: TestClient, chatId: string, from = 0) => c.frames.slice(from).filter((f) => live(f) && f.chatId === chatId);
/**
 * A round trip on `c`: once it answers, every frame the server sent `c` before has arrived.
 * Used after another client saw a reply's end, which is fanned out to every watcher at once.
 */
const barrier = (c: TestClient) => c.request({ type: "GET_CHATS", limit: 1 }, "CHAT_LIST");
const newChat = async (c: TestClient, name?: string) =>
  (await c.request({ type: "CREATE_CHAT", ...(name ? { name } : {}) }, "NEW_CHAT")).chat as { id: string };
const open = async (c: TestClient, chatId: string) => {
  const h = await c.request({ type: "GET_CHAT_HISTORY", chatId }, "CHAT_HISTORY");
  expect(h).toMatchObject({ type: "CHAT_HISTORY", chatId });
  return h;
};
const watchReq = (c: TestClient, chatIds: string[]) => c.request({ type: "WATCH", chatIds }, "WATCHING");
const unwatchReq = (c: TestClient, chatIds: string[]) => c.request({ type: "UNWATCH", chatIds }, "WATCHING");
const sorted = (ids: string[]) => [...ids].sort();

type Env = { srv: TestServer; model: SseModel };

for (const kind of ["sqlite", "cosmos"] as const) {
  describe(`on ${kind}`, () => {
    let cosmos: CosmosTestServer | undefined;
    let store: Store | undefined;
    const env = {} as Env;

    beforeAll(async () => {
      env.model = await startSseModel({ tokens: TOKENS });
      if (kind === "cosmos") {
        cosmos = await startCosmosServer();
        store = await openTestCosmosStore(cosmos, "pichat-watch");
      }
      env.srv = await startTestServer(
        { OPENAI_BASE_URL: `${env.model.url}/v1`, OPENAI_MODEL: "m", OPENAI_API_KEY: "sk-test", ...ENV },
        store ? { store } : {},
      );
    });
    afterAll(async () => {
      env.model?.release();
      await env.srv?.close();
      await store?.close();
      await cosmos?.stop();
      env.model?.stop();
    });

    test("two tabs: B opened chat 1, then chat 2; chat 1's new reply shows nothing in B, chat 2's does; chat list frames still reach B", async () => {
      const { srv, model } = env;
      model.setScript({ tokens: TOKENS });
      const a = await srv.connect();
      const b = await srv.connect();
      const chat1 = await newChat(a, "one");
      const chat2 = await newChat(a, "two");
      await open(b, chat1.id);
      await open(b, chat2.id);

      a.send({ type: "SEND_MESSAGE", chatId: chat1.id, content: "only for chat 1" });
      expect((await a.reply(chat1.id)).text).toBe(TOKENS.join(""));
      await barrier(b);
      expect(liveOf(b, chat1.id)).toEqual([]);

      // The chat it has open streams as before.
      a.send({ type: "SEND_MESSAGE", chatId: chat2.id, content: "for chat 2" });
      const mine = await a.reply(chat2.id);
      expect((await b.next((f) => f.type === "FIRST_MESSAGE" && f.chatId === chat2.id)).content).toBe("for chat 2");
      const seen = await b.reply(chat2.id);
      expect([seen.text, seen.traceId]).toEqual([mine.text, mine.traceId]);

      // The list frames reach every connection, whatever it watches.
      const chat3 = await newChat(a, "three");
      await b.next((f) => f.type === "CHAT_CREATED" && f.chat.id === chat3.id);
      await a.request({ type: "RENAME_CHAT", chatId: chat1.id, name: "renamed" }, "CHAT_UPDATED");
      expect((await b.next((f) => f.type === "CHAT_UPDATED" && f.chat.id === chat1.id)).chat.name).toBe("renamed");
      await a.request({ type: "DELETE_CHAT", chatId: chat1.id }, "CHAT_DELETED");
      await b.next((f) => f.type === "CHAT_DELETED" && f.chatId === chat1.id);
      expect(liveOf(b, chat1.id)).toEqual([]);
    });

    test("B's own reply in chat 1 is in flight when it opens chat 2: after CHAT_HISTORY of chat 2 no frame of chat 1 reaches it; with WATCH on chat 1, all of it does", async () => {
      const { srv, model } = env;
      for (const watchFirst of [false, true]) {
        model.setScript({ tokens: TOKENS, holdAfter: 2 });
        const b = await srv.connect();
        const observer = await srv.connect();
        const chat1 = await newChat(b);
        const chat2 = await newChat(b);
        await watchReq(observer, [chat1.id]);
        if (watchFirst) expect((await watchReq(b, [chat1.id])).chatIds).toEqual([chat1.id]);

        b.send({ type: "SEND_MESSAGE", chatId: chat1.id, content: "a long answer" });
        await b.next((f) => f.type === "MESSAGE" && f.chatId === chat1.id && f.seq === 2);
        await model.waitHeld(1);
        const hist = await open(b, chat2.id);
        const switchedAt = b.frames.indexOf(hist);
        model.release();
        const whole = await observer.reply(chat1.id);
        expect(whole.text).toBe(TOKENS.join(""));
        await barrier(b);

        const after = liveOf(b, chat1.id, switchedAt + 1);
        if (watchFirst) {
          // No gap: the two chunks before the switch, then the rest and the end, each once.
          expect(liveOf(b, chat1.id).map((f) => f.seq)).toEqual([1, 2, 3, 4, 5]);
          expect(after.at(-1)).toMatchObject({ end: true, traceId: whole.traceId });
        } else {
          expect(after).toEqual([]);
        }
        b.close();
        observer.close();
      }
    });

    test("race, 20 trials: SEND_MESSAGE on chat 1 then GET_CHAT_HISTORY of chat 2 (pipelined, or after 1-3 chunks) while the reply streams", async () => {
      const { srv, model } = env;
      model.setScript({ tokens: words(12), delayMs: 2 });
      const b = await srv.connect();
      const observer = await srv.connect();
      let inFlight = 0;
      for (let trial = 0; trial < 20; trial++) {
        const chat1 = await newChat(b);
        const chat2 = await newChat(b);
        await open(b, chat1.id);
        await watchReq(observer, [chat1.id]);
        b.send({ type: "SEND_MESSAGE", chatId: chat1.id, content: `trial ${trial}` });
        const chunksFirst = trial % 4;
        if (chunksFirst > 0) await b.next((f) => f.type === "MESSAGE" && f.chatId === chat1.id && f.seq === chunksFirst);
        b.send({ type: "GET_CHAT_HISTORY", chatId: chat2.id });
        const hist = await b.next((f) => f.type === "CHAT_HISTORY" && f.chatId === chat2.id);
        if (!observer.frames.some((f) => f.type === "MESSAGE" && f.chatId === chat1.id && f.end)) inFlight++;
        const switchedAt = b.frames.indexOf(hist);
        const whole = await observer.reply(chat1.id);
        expect(whole.text).toBe(words(12).join(""));
        await barrier(b);
        expect(liveOf(b, chat1.id, switchedAt + 1)).toEqual([]);
        await unwatchReq(observer, [chat1.id]);
      }
      console.log(`${kind}: 20 switches, ${inFlight} while the reply was still streaming to the observer`);
      expect(inFlight).toBeGreaterThan(0);
    }, 30_000);

    if (kind !== "sqlite") return;

    test("SEND_MESSAGE to chat 2 moves the focus there; so does RESUME", async () => {
      const { srv, model } = env;
      model.setScript({ tokens: TOKENS });
      const a = await srv.connect();
      const b = await srv.connect();
      const chat1 = await newChat(a);
      const chat2 = await newChat(a);
      await open(b, chat1.id);
      b.send({ type: "SEND_MESSAGE", chatId: chat2.id, content: "from b" });
      const own = await b.reply(chat2.id);
      expect((await watchReq(b, [])).focus).toBe(chat2.id);

      a.send({ type: "SEND_MESSAGE", chatId: chat1.id, content: "not for b" });
      const r1 = await a.reply(chat1.id);
      a.send({ type: "SEND_MESSAGE", chatId: chat2.id, content: "for b" });
      await a.reply(chat2.id);
      await b.next((f) => f.type === "FIRST_MESSAGE" && f.chatId === chat2.id);
      await b.reply(chat2.id);
      expect(liveOf(b, chat1.id)).toEqual([]);

      // RESUME is about one chat's reply: it focuses that chat.
      const resumed = await b.request({ type: "RESUME", chatId: chat1.id, traceId: r1.traceId, fromSeq: 0 }, "MESSAGE");
      expect(resumed).toMatchObject({ end: true, traceId: r1.traceId });
      expect(await watchReq(b, [])).toEqual(expect.objectContaining({ chatIds: [chat1.id], focus: chat1.id }));
      a.send({ type: "SEND_MESSAGE", chatId: chat2.id, content: "b left" });
      await a.reply(chat2.id);
      await barrier(b);
      expect(liveOf(b, chat2.id).filter((f) => f.content === "b left")).toEqual([]);
      expect(own.text).toBe(TOKENS.join(""));

      // A send to a chat that does not exist changes nothing.
      const missing = await b.request(
        { type: "SEND_MESSAGE", requestId: "x", chatId: crypto.randomUUID(), content: "lost" },
        "MESSAGE_ACCEPTED",
      );
      expect(missing.code).toBe("CHAT_NOT_FOUND");
      expect(await watchReq(b, [])).toMatchObject({ chatIds: [chat1.id], focus: chat1.id });
    });

    test("WATCH keeps several chats while the focus moves; WATCHING lists them all", async () => {
      const { srv, model } = env;
      model.setScript({ tokens: TOKENS });
      const a = await srv.connect();
      const b = await srv.connect();
      const [c1, c2, c3, c4] = [await newChat(a), await newChat(a), await newChat(a), await newChat(a)];
      const w = await b.request({ type: "WATCH", requestId: "w1", payload: { chatIds: [c1!.id, c2!.id, c1!.id] } }, "WATCHING");
      expect(w).toEqual({ type: "WATCHING", chatIds: [c1!.id, c2!.id], focus: null, requestId: "w1" });
      await open(b, c3!.id);
      await open(b, c4!.id); // moves the focus from c3; c1 and c2 stay
      expect(await watchReq(b, [])).toMatchObject({ focus: c4!.id });
      expect(sorted((await watchReq(b, [])).chatIds)).toEqual(sorted([c1!.id, c2!.id, c4!.id]));

      for (const c of [c1!, c2!, c3!, c4!]) {
        a.send({ type: "SEND_MESSAGE", chatId: c.id, content: `in ${c.id}` });
        await a.reply(c.id);
      }
      await barrier(b);
      for (const c of [c1!, c2!, c4!]) {
        expect(liveOf(b, c.id).map((f) => f.type)).toEqual(["FIRST_MESSAGE", ...TOKENS.map(() => "MESSAGE"), "MESSAGE"]);
      }
      expect(liveOf(b, c3!.id)).toEqual([]);

      // WATCH of the focus makes it stay when the focus moves on.
      await watchReq(b, [c4!.id]);
      await open(b, c3!.id);
      expect(sorted((await watchReq(b, [])).chatIds)).toEqual(sorted([c1!.id, c2!.id, c3!.id, c4!.id]));
      expect(srv.conns.all().find((ws) => ws.data.focus === c3!.id)?.data.explicit.size).toBe(3);
    });

    test("UNWATCH stops a chat's frames, whether watched explicitly or the focus; unknown ids are ignored", async () => {
      const { srv, model } = env;
      model.setScript({ tokens: TOKENS });
      const a = await srv.connect();
      const b = await srv.connect();
      const [c1, c2, c3] = [await newChat(a), await newChat(a), await newChat(a)];
      await watchReq(b, [c1!.id, c2!.id]);
      await open(b, c3!.id);
      const u = await unwatchReq(b, [c1!.id, c3!.id, crypto.randomUUID()]);
      expect(u).toMatchObject({ type: "WATCHING", chatIds: [c2!.id], focus: null });

      for (const c of [c1!, c2!, c3!]) {
        a.send({ type: "SEND_MESSAGE", chatId: c.id, content: "hello" });
        await a.reply(c.id);
      }
      await barrier(b);
      expect(liveOf(b, c1!.id)).toEqual([]);
      expect(liveOf(b, c3!.id)).toEqual([]);
      expect(liveOf(b, c2!.id).at(-1)).toMatchObject({ end: true });
      expect(await unwatchReq(b, [c2!.id])).toMatchObject({ chatIds: [], focus: null });
    });

    test("WATCH of an unknown chat: CHAT_NOT_FOUND naming it, and nothing changes; bad lists are INVALID_FRAME", async () => {
      const { srv } = env;
      const a = await srv.connect();
      const known = await newChat(a);
      const unknown = crypto.randomUUID();
      const err = await a.request({ type: "WATCH", requestId: "w", chatIds: [known.id, unknown] }, "WATCHING");
      expect(err).toMatchObject({ type: "ERROR", code: "CHAT_NOT_FOUND", chatId: unknown, requestId: "w" });
      expect(await watchReq(a, [])).toEqual({ type: "WATCHING", chatIds: [], focus: null });
      for (const chatIds of [undefined, "x", [12], ["not-a-uuid"]]) {
        expect((await a.request({ type: "WATCH", chatIds }, "WATCHING")).code).toBe("INVALID_FRAME");
        expect((await a.request({ type: "UNWATCH", chatIds }, "WATCHING")).code).toBe("INVALID_FRAME");
      }
      expect(await watchReq(a, [known.id])).toMatchObject({ chatIds: [known.id] });
    });

    test("deleting a chat removes it from every socket's watches, explicit or focus, also mid-reply", async () => {
      const { srv, model } = env;
      model.setScript({ tokens: TOKENS, holdAfter: 1 });
      const a = await srv.connect();
      const b = await srv.connect();
      const c = await srv.connect();
      const [c1, c2] = [await newChat(a), await newChat(a)];
      await watchReq(b, [c1!.id, c2!.id]);
      await open(c, c1!.id);
      a.send({ type: "SEND_MESSAGE", chatId: c1!.id, content: "cut short" });
      await b.next((f) => f.type === "MESSAGE" && f.chatId === c1!.id && f.seq === 1);
      await model.waitHeld(1);
      const gone = await a.request({ type: "DELETE_CHAT", chatId: c1!.id }, "CHAT_DELETED");
      model.release();
      expect(gone.type).toBe("CHAT_DELETED");
      // Watchers saw the reply end (stopped), then the deletion.
      const end = await b.next((f) => f.type === "MESSAGE" && f.chatId === c1!.id && f.end);
      expect(end.reason).toBe("stopped");
      await b.next((f) => f.type === "CHAT_DELETED" && f.chatId === c1!.id);
      await c.next((f) => f.type === "CHAT_DELETED" && f.chatId === c1!.id);
      expect(await watchReq(b, [])).toMatchObject({ chatIds: [c2!.id], focus: null });
      expect(await watchReq(c, [])).toMatchObject({ chatIds: [], focus: null });
      expect(srv.conns.all().some((ws) => ws.data.watching.has(c1!.id) || ws.data.explicit.has(c1!.id) || ws.data.focus === c1!.id)).toBe(
        false,
      );
      expect((await a.request({ type: "WATCH", chatIds: [c1!.id] }, "WATCHING")).code).toBe("CHAT_NOT_FOUND");
    });

    test(`at most ${MAX_WATCHED_CHATS} chats watched with WATCH: TOO_MANY_WATCHES and nothing changes; the focus does not count`, async () => {
      const { srv } = env;
      const chats: string[] = [];
      for (let i = 0; i <= MAX_WATCHED_CHATS + 1; i++) chats.push((await srv.chat.createChat({ owner: "default", name: `many ${i}` })).id);
      const b = await srv.connect();
      const all = chats.slice(0, MAX_WATCHED_CHATS + 1);
      const over = await b.request({ type: "WATCH", requestId: "all", chatIds: all }, "WATCHING");
      expect(over).toMatchObject({ type: "ERROR", code: "TOO_MANY_WATCHES", limit: MAX_WATCHED_CHATS, requestId: "all" });
      expect(over.error).toContain(String(MAX_WATCHED_CHATS));
      expect((await watchReq(b, [])).chatIds).toEqual([]);

      expect((await watchReq(b, all.slice(0, MAX_WATCHED_CHATS))).chatIds).toHaveLength(MAX_WATCHED_CHATS);
      expect((await watchReq(b, [all[0]!])).chatIds).toHaveLength(MAX_WATCHED_CHATS); // already watched: no change
      const one = await b.request({ type: "WATCH", chatIds: [all[MAX_WATCHED_CHATS]!] }, "WATCHING");
      expect(one).toMatchObject({ type: "ERROR", code: "TOO_MANY_WATCHES" });
      // The focus is not counted: opening another chat still works and watches it.
      await open(b, chats.at(-1)!);
      expect(await watchReq(b, [])).toMatchObject({ focus: chats.at(-1) });
      expect((await watchReq(b, [])).chatIds).toHaveLength(MAX_WATCHED_CHATS + 1);
      await unwatchReq(b, [all[0]!]);
      expect((await watchReq(b, [all[MAX_WATCHED_CHATS]!])).chatIds).toHaveLength(MAX_WATCHED_CHATS + 1);
    });
  });
}
