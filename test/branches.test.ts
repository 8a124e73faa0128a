import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Message } from "../src/records";
import type { Store } from "../src/store/store";
import { openTestCosmosStore, startCosmosServer, type CosmosTestServer } from "./support/cosmos-server";
import { startTestServer, type TestServer } from "./support/harness";
import { lastUserTurn, startSseModel, type ModelRequest, type SseModel } from "./support/sse-model";
import { addUser } from "./support/users";
import { until, within } from "./support/until";
import type { Frame, TestClient } from "./support/ws-client";

// Regenerate, edit and branch (REGENERATE, EDIT_MESSAGE, GET_BRANCHES, SELECT_BRANCH) over real
// sockets against the real server, on SQLite and on the Cosmos test server, with a real SSE model
// whose every reply names the question it answers (so a history says which turn is which) and
// whose requests are kept (so a test reads the prompt the model was shown).

const ENV = { CHAT_TITLES: "false", RATE_LIMIT_FRAMES_PER_SECOND: "2000", RATE_LIMIT_MESSAGES_PER_MINUTE: "5000" };
let n = 0;
/** Every reply is "re:<question>" and a number, so two versions of one answer differ. */
const answering = (req: ModelRequest) => ({ tokens: [`re:${lastUserTurn(req)}`, ` #${++n}`] });

type Env = { srv: TestServer; model: SseModel; store: Store; calls: { method: string; args: unknown[] }[] };

/** The store, with every call recorded (what a history or a send costs). */
function counted(store: Store, calls: Env["calls"]): Store {
  return new Proxy(store, {
    get(target, key, receiver) {
      const v = Reflect.get(target, key, receiver);
      if (typeof v !== "function") return v;
      return (...args: unknown[]) => {
        calls.push({ method: String(key), args });
        return v.apply(target, args);
      };
    },
  });
}

const newChat = async (c: TestClient) => (await c.request({ type: "CREATE_CHAT" }, "NEW_CHAT")).chat.id as string;
const history = async (c: TestClient, chatId: string, extra: Frame = {}) => {
  const h = await c.request({ type: "GET_CHAT_HISTORY", chatId, ...extra }, "CHAT_HISTORY");
  expect(h.type).toBe("CHAT_HISTORY");
  return h;
};
/** A message as a test compares it: its turn, and which sibling it is when it has any. */
const turn = (m: Frame) => [m.role, m.content, ...(m.siblings ? [`${m.sibling}/${m.siblings}`] : [])];
const turns = (h: Frame) => (h.messages as Frame[]).map(turn);
/** Sends a question and waits for its whole reply; the question's id and the reply. */
async function ask(c: TestClient, chatId: string, content: string) {
  const accepted = await c.request({ type: "SEND_MESSAGE", requestId: crypto.randomUUID(), chatId, content }, "MESSAGE_ACCEPTED");
  expect(accepted.type).toBe("MESSAGE_ACCEPTED");
  const reply = await c.reply(chatId);
  return { questionId: accepted.messageId as string, ...reply };
}
const prompt = (req: ModelRequest) =>
  (req.body.messages as { role: string; content: string }[]).filter((m) => m.role !== "system").map((m) => [m.role, m.content]);
const requestFor = (model: SseModel, question: string) => model.requests.filter((r) => lastUserTurn(r) === question).at(-1)!;

for (const kind of ["sqlite", "cosmos"] as const) {
  describe(`branches on ${kind}`, () => {
    let cosmos: CosmosTestServer | undefined;
    let raw: Store | undefined;
    const env = { calls: [] } as unknown as Env;

    beforeAll(async () => {
      env.model = await startSseModel();
      env.model.setScript(answering);
      if (kind === "cosmos") {
        cosmos = await startCosmosServer();
        raw = await openTestCosmosStore(cosmos, "pichat-branches");
      } else {
        const { openSqliteStore } = await import("../src/store/sqlite");
        const { mkdtempSync } = await import("node:fs");
        const { join } = await import("node:path");
        const { tmpdir } = await import("node:os");
        raw = openSqliteStore(join(mkdtempSync(join(tmpdir(), "pichat-branches-")), "b.db"));
      }
      env.store = counted(raw, env.calls);
      env.srv = await startTestServer(
        { OPENAI_BASE_URL: `${env.model.url}/v1`, OPENAI_MODEL: "m", OPENAI_API_KEY: "sk-test", ...ENV },
        { store: env.store },
      );
    });
    afterAll(async () => {
      env.model?.release();
      await env.srv?.close();
      await raw?.close();
      await cosmos?.stop();
      env.model?.stop();
    });

    test("REGENERATE keeps both versions: history shows the new one as 2/2, SELECT_BRANCH back to version 1 shows it; the owner's other socket hears BRANCH_SELECTED", async () => {
      const { srv, model, store } = env;
      const a = await srv.connect();
      const other = await srv.connect();
      const chatId = await newChat(a);
      await ask(a, chatId, "Q1");
      const q2 = await ask(a, chatId, "Q2");
      await history(other, chatId);

      const r = await a.request({ type: "REGENERATE", requestId: "g-1", chatId }, "REGENERATING");
      expect(r).toEqual({
        type: "REGENERATING",
        chatId,
        questionId: q2.questionId,
        traceId: expect.any(String),
        queued: false,
        requestId: "g-1",
      });
      expect(r.traceId).not.toBe(q2.traceId);
      const again = await a.reply(chatId);
      expect(again.traceId).toBe(r.traceId);
      expect(again.text).toStartWith("re:Q2 #");
      expect(again.text).not.toBe(q2.text);
      // The model was shown the path to the question, nothing of the first answer.
      expect(prompt(requestFor(model, "Q2"))).toEqual([
        ["user", "Q1"],
        ["assistant", expect.stringMatching(/^re:Q1/)],
        ["user", "Q2"],
      ]);
      expect((await other.next((f) => f.type === "BRANCH_SELECTED")).messageId).toBe(q2.questionId);

      const h = await history(a, chatId);
      expect(turns(h)).toEqual([
        ["user", "Q1"],
        ["assistant", expect.stringMatching(/^re:Q1/)],
        ["user", "Q2"],
        ["assistant", again.text, "2/2"],
      ]);
      expect(h.messages[3]).toMatchObject({ id: again.traceId, parent_id: q2.questionId });
      // Both versions are stored.
      const replies = (await store.listMessages(chatId, { limit: 50 })).filter((m) => m.parent_id === q2.questionId);
      expect(replies.map((m) => m.content)).toEqual([q2.text, again.text]);

      const b = await a.request({ type: "GET_BRANCHES", chatId, messageId: again.traceId }, "BRANCHES");
      expect(b).toEqual({
        type: "BRANCHES",
        chatId,
        messageId: again.traceId,
        current: again.traceId,
        siblings: [
          { id: q2.traceId, role: "assistant", created_at: expect.any(String), preview: q2.text },
          { id: again.traceId, role: "assistant", created_at: expect.any(String), preview: again.text },
        ],
      });

      const back = await a.request({ type: "SELECT_BRANCH", requestId: "s-1", chatId, messageId: q2.traceId }, "CHAT_HISTORY");
      expect(back.requestId).toBe("s-1");
      expect(turns(back)).toEqual([
        ["user", "Q1"],
        ["assistant", expect.stringMatching(/^re:Q1/)],
        ["user", "Q2"],
        ["assistant", q2.text, "1/2"],
      ]);
      expect(turns(await history(a, chatId))).toEqual(turns(back));
      expect((await other.next((f) => f.type === "BRANCH_SELECTED")).messageId).toBe(q2.traceId);
      expect(a.frames.some((f) => f.type === "BRANCH_SELECTED")).toBe(false);
      expect((await a.request({ type: "GET_BRANCHES", chatId, messageId: q2.traceId }, "BRANCHES")).current).toBe(q2.traceId);
    });

    test("EDIT_MESSAGE makes a branch: the old question and its answer stay, the edit is answered with only its path as the prompt, history shows the new branch; switching and sending continues the selected branch", async () => {
      const { srv, model, store } = env;
      const a = await srv.connect();
      const chatId = await newChat(a);
      const q1 = await ask(a, chatId, "E1");
      const q2 = await ask(a, chatId, "E2");
      await ask(a, chatId, "E3");

      const acc = await a.request(
        { type: "EDIT_MESSAGE", chatId, messageId: q2.questionId, content: "E2 edited", message: { id: "edit-1" } },
        "MESSAGE_ACCEPTED",
      );
      expect(acc).toEqual({
        type: "MESSAGE_ACCEPTED",
        chatId,
        messageId: "edit-1",
        traceId: expect.any(String),
        duplicate: false,
        queued: false,
      });
      const edited = await a.reply(chatId);
      expect(edited.text).toStartWith("re:E2 edited");
      expect(prompt(requestFor(model, "E2 edited"))).toEqual([
        ["user", "E1"],
        ["assistant", q1.text],
        ["user", "E2 edited"],
      ]);

      const h = await history(a, chatId);
      expect(turns(h)).toEqual([
        ["user", "E1"],
        ["assistant", q1.text],
        ["user", "E2 edited", "2/2"],
        ["assistant", edited.text],
      ]);
      expect(h.messages[2]).toMatchObject({ id: "edit-1", parent_id: q1.traceId });
      // Nothing was deleted or rewritten.
      const all = await store.listMessages(chatId, { limit: 50 });
      expect(all.map((m) => m.content)).toEqual([
        "E1",
        q1.text,
        "E2",
        q2.text,
        "E3",
        expect.stringMatching(/^re:E3/),
        "E2 edited",
        edited.text,
      ]);
      expect(all.find((m) => m.id === q2.questionId)).not.toHaveProperty("parent_id");

      // A resend of the same edit is a duplicate, never a third branch.
      const dup = await a.request(
        { type: "EDIT_MESSAGE", chatId, messageId: q2.questionId, content: "E2 edited", message: { id: "edit-1" } },
        "MESSAGE_ACCEPTED",
      );
      expect(dup).toMatchObject({ messageId: "edit-1", duplicate: true });

      // Back to the first branch: the old question, its answer and what followed.
      const old = await a.request({ type: "SELECT_BRANCH", chatId, messageId: q2.questionId }, "CHAT_HISTORY");
      expect(turns(old)).toEqual([
        ["user", "E1"],
        ["assistant", q1.text],
        ["user", "E2", "1/2"],
        ["assistant", q2.text],
        ["user", "E3"],
        ["assistant", expect.stringMatching(/^re:E3/)],
      ]);
      const branches = await a.request({ type: "GET_BRANCHES", chatId, messageId: "edit-1" }, "BRANCHES");
      expect(branches.siblings.map((s: Frame) => [s.id, s.preview])).toEqual([
        [q2.questionId, "E2"],
        ["edit-1", "E2 edited"],
      ]);
      expect(branches.current).toBe(q2.questionId);

      // A question sent now follows the selected branch's leaf, and the model sees that branch only.
      const e4 = await ask(a, chatId, "E4");
      const stored = (await store.listMessages(chatId, { limit: 50 })).find((m) => m.id === e4.questionId)!;
      expect(stored.parent_id).toBe(old.messages.at(-1).id);
      expect(prompt(requestFor(model, "E4")).map(([, c]) => c)).toEqual([
        "E1",
        q1.text,
        "E2",
        q2.text,
        "E3",
        old.messages.at(-1).content,
        "E4",
      ]);
      expect(turns(await history(a, chatId)).map((t) => t[1])).toEqual([
        "E1",
        q1.text,
        "E2",
        q2.text,
        "E3",
        old.messages.at(-1).content,
        "E4",
        e4.text,
      ]);

      // And switching to the edit again: that branch, as it was.
      const back = await a.request({ type: "SELECT_BRANCH", chatId, messageId: "edit-1" }, "CHAT_HISTORY");
      expect(turns(back)).toEqual([
        ["user", "E1"],
        ["assistant", q1.text],
        ["user", "E2 edited", "2/2"],
        ["assistant", edited.text],
      ]);
    });

    test("editing the first question starts a branch from the top; only questions can be edited; unknown ids are MESSAGE_NOT_FOUND", async () => {
      const { srv } = env;
      const a = await srv.connect();
      const chatId = await newChat(a);
      const q1 = await ask(a, chatId, "F1");
      await ask(a, chatId, "F2");
      await a.request({ type: "EDIT_MESSAGE", chatId, messageId: q1.questionId, content: "F1 again" }, "MESSAGE_ACCEPTED");
      const r = await a.reply(chatId);
      expect(turns(await history(a, chatId))).toEqual([
        ["user", "F1 again", "2/2"],
        ["assistant", r.text],
      ]);

      const notQ = await a.request({ type: "EDIT_MESSAGE", chatId, messageId: q1.traceId, content: "x" }, "MESSAGE_ACCEPTED");
      expect(notQ).toMatchObject({ type: "ERROR", code: "NOT_A_QUESTION", chatId, messageId: q1.traceId });
      const regenAnswer = await a.request({ type: "REGENERATE", chatId, questionId: q1.traceId }, "REGENERATING");
      expect(regenAnswer).toMatchObject({ type: "ERROR", code: "NOT_A_QUESTION" });
      for (const frame of [
        { type: "EDIT_MESSAGE", chatId, messageId: "nope", content: "x" },
        { type: "REGENERATE", chatId, questionId: "nope" },
        { type: "GET_BRANCHES", chatId, messageId: "nope" },
        { type: "SELECT_BRANCH", chatId, messageId: "nope" },
      ]) {
        expect(await a.request(frame, "NEVER")).toMatchObject({ type: "ERROR", code: "MESSAGE_NOT_FOUND", chatId, messageId: "nope" });
      }
      const empty = await newChat(a);
      expect(await a.request({ type: "REGENERATE", chatId: empty }, "REGENERATING")).toMatchObject({
        type: "ERROR",
        code: "MESSAGE_NOT_FOUND",
        chatId: empty,
      });
      expect(await a.request({ type: "EDIT_MESSAGE", chatId, messageId: q1.questionId, content: "  " }, "MESSAGE_ACCEPTED")).toMatchObject({
        type: "ERROR",
        code: "INVALID_FRAME",
      });
      // Nothing of the refused frames was stored or answered.
      expect((await env.store.listMessages(empty, { limit: 10 })).length).toBe(0);
    });

    test("another user's chat is CHAT_NOT_FOUND for every new frame, exactly as a missing one", async () => {
      const { srv } = env;
      const a = await srv.connect();
      const chatId = await newChat(a);
      const q = await ask(a, chatId, "mine");
      const bob = await addUser(raw!);
      const b = await srv.connect({ token: bob.token });
      const missing = crypto.randomUUID();
      for (const id of [chatId, missing]) {
        for (const frame of [
          { type: "REGENERATE", chatId: id },
          { type: "EDIT_MESSAGE", chatId: id, messageId: q.questionId, content: "theirs" },
          { type: "GET_BRANCHES", chatId: id, messageId: q.questionId },
          { type: "SELECT_BRANCH", chatId: id, messageId: q.questionId },
        ]) {
          const e = await b.request({ ...frame, requestId: "x" }, "NEVER");
          expect(e).toEqual({ type: "ERROR", error: `there is no chat with id ${id}`, code: "CHAT_NOT_FOUND", chatId: id, requestId: "x" });
        }
      }
      // Nothing changed for the owner, and nothing reached them.
      expect(turns(await history(a, chatId))).toEqual([
        ["user", "mine"],
        ["assistant", q.text],
      ]);
      expect((await raw!.getChat("default", chatId))?.selected).toBeUndefined();
    });

    test("REGENERATE while a reply streams waits its turn (queued), then streams; STOP_GENERATION stops a regeneration; DELETE_CHAT removes every branch", async () => {
      const { srv, model, store } = env;
      const a = await srv.connect();
      const chatId = await newChat(a);
      const q1 = await ask(a, chatId, "H1");
      model.setScript((req) => (lastUserTurn(req) === "H2" ? { tokens: ["held", " H2"], holdAfter: 1 } : answering(req)));
      try {
        a.send({ type: "SEND_MESSAGE", chatId, content: "H2" });
        await model.waitHeld(1);
        const r = await a.request({ type: "REGENERATE", chatId, questionId: q1.questionId }, "REGENERATING");
        expect(r).toMatchObject({ questionId: q1.questionId, queued: true });
        model.release();
      } finally {
        model.setScript(answering);
      }
      // (H2's first chunk came before REGENERATING: the stream's end is what counts here.)
      const first = await a.reply(chatId);
      expect(first.end.reason).toBeUndefined();
      const regen = await a.reply(chatId);
      expect(regen.traceId).not.toBe(first.traceId);
      expect(regen.text).toStartWith("re:H1");
      // H1's new version is current: below it there is nothing yet (H2 followed the first version).
      expect(turns(await history(a, chatId))).toEqual([
        ["user", "H1"],
        ["assistant", regen.text, "2/2"],
      ]);
      const h2 = await a.request({ type: "SELECT_BRANCH", chatId, messageId: q1.traceId }, "CHAT_HISTORY");
      expect(turns(h2)).toEqual([
        ["user", "H1"],
        ["assistant", q1.text, "1/2"],
        ["user", "H2"],
        ["assistant", "held H2"],
      ]);

      // A regeneration stops like any reply.
      model.setScript({ tokens: ["stop", " me", " now"], holdAfter: 1 });
      try {
        const r = await a.request({ type: "REGENERATE", chatId }, "REGENERATING");
        await model.waitHeld(1);
        // Its first text has arrived (so there is something to keep as stopped).
        await until(() => a.frames.some((f) => f.traceId === r.traceId && f.content === "stop"), "the regeneration's first chunk");
        const stopped = await a.request({ type: "STOP_GENERATION", chatId }, "GENERATION_STOPPED");
        expect(stopped).toMatchObject({ traceId: r.traceId });
        // The end frame comes before GENERATION_STOPPED.
        expect(a.frames.find((f) => f.traceId === r.traceId && f.end)?.reason).toBe("stopped");
      } finally {
        model.release();
        model.setScript(answering);
      }
      expect((await history(a, chatId)).messages.at(-1)).toMatchObject({ content: "stop", status: "stopped", siblings: 2, sibling: 2 });

      await a.request({ type: "DELETE_CHAT", chatId }, "CHAT_DELETED");
      expect(await store.listMessages(chatId, { limit: 100 })).toEqual([]);
      expect(await a.request({ type: "GET_CHAT_HISTORY", chatId }, "NEVER")).toMatchObject({ code: "CHAT_NOT_FOUND" });
    });

    test("questions that were queued before the chat was branched keep their answers on the branch: each follows the answer of the question before it", async () => {
      const { srv, model } = env;
      const a = await srv.connect();
      const chatId = await newChat(a);
      model.setScript((req) => (lastUserTurn(req) === "K1" ? { tokens: ["re:K1", " held"], holdAfter: 1 } : answering(req)));
      try {
        a.send({ type: "SEND_MESSAGE", chatId, content: "K1" });
        await model.waitHeld(1);
        // Stored while K1's answer streams: K1, its answer, K2, K3, then K2's and K3's answers.
        for (const q of ["K2", "K3"])
          expect(await a.request({ type: "SEND_MESSAGE", chatId, content: q }, "MESSAGE_ACCEPTED")).toMatchObject({ queued: true });
        model.release();
      } finally {
        model.setScript(answering);
      }
      for (let i = 0; i < 3; i++) await a.reply(chatId);
      const linear = turns(await history(a, chatId)).map((t) => t[1]);
      expect(linear).toEqual(["K1", "re:K1 held", "K2", "K3", expect.stringMatching(/^re:K2/), expect.stringMatching(/^re:K3/)]);
      const r = await a.request({ type: "REGENERATE", chatId }, "REGENERATING");
      const again = await a.reply(chatId);
      expect(r.traceId).toBe(again.traceId);
      expect(turns(await history(a, chatId))).toEqual([
        ["user", "K1"],
        ["assistant", "re:K1 held"],
        ["user", "K2"],
        ["assistant", linear[4]],
        ["user", "K3"],
        ["assistant", again.text, "2/2"],
      ]);
      // The model was shown that conversation, K2's answer included.
      expect(prompt(requestFor(model, "K3")).map(([, c]) => c)).toEqual(["K1", "re:K1 held", "K2", linear[4], "K3"]);
    });

    test("a chat never branched reads exactly as before: each history frame is byte for byte the stored page, and costs no more store reads (no chat record, no whole-chat read)", async () => {
      const { srv, calls } = env;
      const a = await srv.connect();
      const chatId = await newChat(a);
      for (const q of ["U1", "U2", "U3"]) await ask(a, chatId, q);
      // A branched chat beside it changes nothing for this one.
      const other = await newChat(a);
      await ask(a, other, "elsewhere");
      await a.request({ type: "REGENERATE", chatId: other }, "REGENERATING");
      await a.reply(other);

      // Raw frames, as the socket delivers them.
      const ws = new WebSocket(srv.wsUrl);
      const texts: string[] = [];
      const arrived: (() => void)[] = [];
      ws.onmessage = (e) => (texts.push(String(e.data)), arrived.shift()?.());
      await new Promise((r) => (ws.onopen = r));
      const rawRequest = async (frame: object) => {
        const got = new Promise<void>((r) => arrived.push(r));
        ws.send(JSON.stringify(frame));
        await within(got, 5000, "a history frame");
        return texts.at(-1)!;
      };
      try {
        let cursor: string | undefined;
        let pages = 0;
        do {
          const before = calls.length;
          const text = await rawRequest({ type: "GET_CHAT_HISTORY", chatId, limit: 2, ...(cursor ? { cursor } : {}) });
          // (Calls about this chat only: the orphan sweep runs on its own clock.)
          const used = calls
            .slice(before)
            .filter((c) => c.args.includes(chatId))
            .map((c) => c.method);
          // At most the one page query it always cost (a cache may save even that): no chat record, no whole-chat read.
          expect(used.filter((m) => m !== "pageMessages")).toEqual([]);
          const page = await raw!.pageMessages(chatId, { limit: 2, ...(cursor ? { cursor } : {}) });
          // The frame the code before branches built from that page (src/ws/protocol.ts chatHistory).
          expect(text).toBe(
            JSON.stringify({
              type: "CHAT_HISTORY",
              chatId,
              messages: page.items,
              hasMore: page.cursor !== undefined,
              ...(page.cursor ? { cursor: page.cursor } : {}),
            }),
          );
          expect(text).not.toContain("siblings");
          cursor = page.cursor;
          pages++;
        } while (cursor);
        expect(pages).toBe(3);
      } finally {
        ws.close();
      }
      // A send there: no chat record read or written beyond the activity time, no whole-chat read, no parent on the question.
      const before = calls.length;
      const q = await ask(a, chatId, "U4");
      const used = calls.slice(before).filter((c) => c.args.includes(chatId));
      expect(used.map((c) => c.method).filter((m) => m === "getChat" || m === "patchChat")).toEqual([]);
      expect(
        used.filter((c) => c.method === "listMessages" && (c.args[1] as { limit: number }).limit > srv.config.HISTORY_MAX_MESSAGES),
      ).toEqual([]);
      expect((await raw!.listMessages(chatId, { limit: 50 })).find((m) => m.id === q.questionId)).not.toHaveProperty("parent_id");
    });

    test("history of a branched chat pages over its current branch with the same cursors: every message of the branch once, in order", async () => {
      const { srv } = env;
      const a = await srv.connect();
      const chatId = await newChat(a);
      const q1 = await ask(a, chatId, "P1");
      for (const q of ["P2", "P3"]) await ask(a, chatId, q);
      await a.request({ type: "EDIT_MESSAGE", chatId, messageId: q1.questionId, content: "P1b" }, "MESSAGE_ACCEPTED");
      await a.reply(chatId);
      for (const q of ["P4", "P5"]) await ask(a, chatId, q);
      const whole = turns(await history(a, chatId));
      expect(whole.map((t) => t[1]).filter((_c, i) => i % 2 === 0)).toEqual(["P1b", "P4", "P5"]);
      const seen: unknown[][] = [];
      let cursor: string | undefined;
      do {
        const h = await history(a, chatId, { limit: 4, ...(cursor ? { cursor } : {}) });
        seen.unshift(...turns(h));
        expect(h.hasMore).toBe(h.cursor !== undefined);
        cursor = h.cursor;
      } while (cursor);
      expect(seen).toEqual(whole);
      expect(await a.request({ type: "GET_CHAT_HISTORY", chatId, cursor: "WyJhIl0" }, "NEVER")).toMatchObject({ code: "INVALID_FRAME" });
    });

    // The race that matters is on Cosmos (no transactions; the chat record is patched under its etag).
    const trials = kind === "cosmos" ? 20 : 5;
    test(`two REGENERATEs at once on one question, from two sockets (${trials} trials): both stored, the newer current, none lost`, async () => {
      const { srv, store } = env;
      const a = await srv.connect();
      const b = await srv.connect();
      for (let trial = 0; trial < trials; trial++) {
        const chatId = await newChat(a);
        const q = await ask(a, chatId, `R${trial}`);
        await history(b, chatId);
        a.send({ type: "REGENERATE", chatId, requestId: "a" });
        b.send({ type: "REGENERATE", chatId, requestId: "b" });
        const [ra, rb] = await Promise.all([a.next((f) => f.requestId === "a"), b.next((f) => f.requestId === "b")]);
        expect([ra.type, rb.type]).toEqual(["REGENERATING", "REGENERATING"]);
        expect([ra.questionId, rb.questionId]).toEqual([q.questionId, q.questionId]);
        // Both stream to both sockets (each watches the chat), one after the other.
        const done = [await a.reply(chatId), await a.reply(chatId)];
        expect(new Set(done.map((d) => d.traceId))).toEqual(new Set([ra.traceId, rb.traceId]));
        const versions = (await store.listMessages(chatId, { limit: 20 })).filter((m: Message) => m.parent_id === q.questionId);
        expect(versions.map((m) => m.id).sort()).toEqual([q.traceId, ra.traceId, rb.traceId].sort());
        const h = await history(b, chatId);
        expect(h.messages.length).toBe(2);
        expect(h.messages[1]).toMatchObject({ id: versions.at(-1)!.id, siblings: 3, sibling: 3 });
      }
    }, 60_000);
  });
}
