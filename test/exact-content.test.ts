import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Store } from "../src/store/store";
import { openTestCosmosStore, startCosmosServer, type CosmosTestServer } from "./support/cosmos-server";
import { startTestServer, type TestServer } from "./support/harness";
import { startSseModel, type ModelRequest, type SseModel } from "./support/sse-model";
import type { Frame, TestClient } from "./support/ws-client";

// What people send is kept exactly: message content and chat names are stored, echoed
// (FIRST_MESSAGE, NEW_CHAT, CHAT_UPDATED, CHAT_LIST), returned by history and sent to the model
// byte for byte, on SQLite and on Cosmos DB. Only empty or whitespace-only values are refused.

const TOKENS = ["Noted", "."];

// Everything the old schema's trim() changed, and more.
const SAMPLES: [string, string][] = [
  ["leading and trailing spaces", "  leading and trailing spaces  "],
  ["tabs", "\ttabs\tinside\t"],
  ["newlines around", "\n\nnewlines around\n\n"],
  ["an indented code block", "    def f(x):\n        return x + 1   \n\n    print(f(2))\n"],
  ["CRLF line ends", "line one\r\nline two\r\n"],
  ["emoji and CJK", " 😀 漢字かな 👩‍👩‍👧 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 "],
  ["no-break and ideographic spaces", "\u00a0nbsp\u3000ideographic\u00a0"],
  ["a zero-width joiner and a BOM", "\ufeffzero\u200bwidth\u200d"],
];

// A 100,000-character message in a 4-byte script: 99,998 emoji (4 UTF-8 bytes, 2 UTF-16 units
// each) between a leading space and a trailing newline. One o200k token per emoji, so it fits
// the default 128k window.
const LONG = ` ${"😀".repeat(99_998)}\n`;

for (const kind of ["sqlite", "cosmos"] as const) {
  describe(`exact content on ${kind}`, () => {
    let cosmos: CosmosTestServer | undefined;
    let store: Store | undefined;
    let model: SseModel;
    let srv: TestServer;

    beforeAll(async () => {
      model = await startSseModel({ tokens: TOKENS });
      if (kind === "cosmos") {
        cosmos = await startCosmosServer();
        store = await openTestCosmosStore(cosmos, "pichat-exact");
      }
      // No chat titles: the only model requests are the answers.
      srv = await startTestServer(
        { OPENAI_BASE_URL: `${model.url}/v1`, OPENAI_MODEL: "gpt-4o-mini", OPENAI_API_KEY: "sk-test", CHAT_TITLES: "false" },
        store ? { store } : {},
      );
    });
    afterAll(async () => {
      await srv?.close();
      await store?.close();
      await cosmos?.stop();
      model?.stop();
    });

    const newChat = async (c: TestClient, payload: Frame = {}) => {
      const f = await c.request({ type: "CREATE_CHAT", payload }, "NEW_CHAT");
      expect(f.type).toBe("NEW_CHAT");
      return f.chat;
    };
    /** Every message of a chat, oldest first, paging back by cursor (a long message may fill a page alone). */
    const fullHistory = async (c: TestClient, chatId: string) => {
      let messages: Frame[] = [];
      let cursor: string | undefined;
      for (;;) {
        const f = await c.request({ type: "GET_CHAT_HISTORY", chatId, ...(cursor ? { cursor } : {}) }, "CHAT_HISTORY");
        expect(f.type).toBe("CHAT_HISTORY");
        messages = [...f.messages, ...messages];
        if (!f.hasMore) return messages;
        cursor = f.cursor;
        expect(typeof cursor).toBe("string");
      }
    };
    const requestFor = (_chatId: string, content: string): ModelRequest | undefined =>
      model.requests.find((r) => r.body.messages.at(-1)?.content === content && r.body.messages.some((m: Frame) => m.content === content));

    /** Sends `content` from a new socket while another watches; checks the echo, the model's input and history. */
    async function roundTrip(content: string, expected = content) {
      const a = await srv.connect();
      const watcher = await srv.connect();
      const chat = await newChat(a);
      expect((await watcher.request({ type: "GET_CHAT_HISTORY", chatId: chat.id }, "CHAT_HISTORY")).messages).toEqual([]);
      a.send({ type: "SEND_MESSAGE", requestId: "s", payload: { chatId: chat.id, message: { content } } });
      const accepted = await a.next((f) => f.requestId === "s");
      expect(accepted.type).toBe("MESSAGE_ACCEPTED");
      const first = await watcher.next((f) => f.type === "FIRST_MESSAGE" && f.chatId === chat.id, 10_000);
      expect(first.content).toBe(expected);
      expect(first.message.content).toBe(expected);
      expect((await a.reply(chat.id, 20_000)).text).toBe(TOKENS.join(""));

      // The model got the question exactly, as the last turn after the system prompt.
      const req = requestFor(chat.id, expected);
      expect(req).toBeDefined();
      expect(req!.body.messages.map((m: Frame) => m.role)).toEqual(["system", "user"]);

      // A reload (a new connection) reads it back exactly, and so does the store itself.
      const reader = await srv.connect();
      const stored = await fullHistory(reader, chat.id);
      expect(stored.map((m) => [m.role, m.content])).toEqual([
        ["user", expected],
        ["assistant", TOKENS.join("")],
      ]);
      expect(stored[0]!.id).toBe(accepted.messageId);
      const [q] = await srv.store.listMessages(chat.id, { limit: 10 });
      expect(q!.content).toBe(expected);
      expect(Buffer.from(q!.content, "utf8").equals(Buffer.from(expected, "utf8"))).toBe(true);
    }

    for (const [what, content] of SAMPLES) {
      test(`content with ${what} is stored, echoed and sent to the model byte for byte`, async () => {
        await roundTrip(content);
      });
    }

    test("lone surrogates are stored as U+FFFD (the socket's well-formed rule), everything around them exactly", async () => {
      await roundTrip("  a\ud800b \udc00 \n", "  a\ufffdb \ufffd \n");
    });

    test("a 100,000-character message in a 4-byte script round-trips exactly (one frame, one message)", async () => {
      expect([...LONG].length).toBe(100_000);
      expect(
        Buffer.byteLength(JSON.stringify({ type: "SEND_MESSAGE", payload: { chatId: crypto.randomUUID(), message: { content: LONG } } })),
      ).toBeLessThanOrEqual(srv.config.MAX_FRAME_BYTES);
      await roundTrip(LONG);
    }, 60_000);

    test("one character more than MAX_MESSAGE_CHARS (counted in characters, not UTF-16 units) is MESSAGE_TOO_LONG", async () => {
      const a = await srv.connect();
      const chat = await newChat(a);
      const err = await a.request({ type: "SEND_MESSAGE", chatId: chat.id, content: `${LONG}😀` }, "MESSAGE_ACCEPTED");
      expect(err).toMatchObject({ type: "ERROR", code: "MESSAGE_TOO_LONG", limit: 100_000 });
      expect(await fullHistory(a, chat.id)).toEqual([]);
    });

    test("empty and whitespace-only content is refused with INVALID_FRAME and nothing is stored", async () => {
      const a = await srv.connect();
      const chat = await newChat(a);
      const before = model.requests.length;
      for (const content of ["", " ", "\n\t \r\n", "\u00a0\u3000\ufeff"]) {
        for (const payload of [
          { chatId: chat.id, content },
          { chatId: chat.id, message: { content, id: `blank-${content.length}` } },
        ]) {
          const err = await a.request({ type: "SEND_MESSAGE", payload }, "MESSAGE_ACCEPTED");
          expect(err).toMatchObject({ type: "ERROR", code: "INVALID_FRAME" });
          expect(err.error).toContain("content must not be empty or only whitespace");
        }
      }
      expect(await fullHistory(a, chat.id)).toEqual([]);
      expect(await srv.store.listMessages(chat.id, { limit: 10 })).toEqual([]);
      expect(model.requests.length).toBe(before);
    });

    test("chat names are kept exactly in NEW_CHAT, CHAT_CREATED, CHAT_UPDATED and CHAT_LIST; a blank CREATE_CHAT name is the default", async () => {
      const a = await srv.connect();
      const b = await srv.connect();
      for (const name of ["  Trip plans  ", "\tTabbed\t", " 漢字 😀 ", "two\r\nlines"]) {
        const chat = await newChat(a, { name });
        expect(chat.name).toBe(name);
        expect((await b.next((f) => f.type === "CHAT_CREATED" && f.chat.id === chat.id)).chat.name).toBe(name);
        expect((await srv.store.getChat("default", chat.id))!.name).toBe(name);

        const renamed = ` ${name} (renamed) `;
        const updated = await a.request({ type: "RENAME_CHAT", chatId: chat.id, name: renamed }, "CHAT_UPDATED");
        expect(updated.chat.name).toBe(renamed);
        expect((await b.next((f) => f.type === "CHAT_UPDATED" && f.chat.id === chat.id)).chat.name).toBe(renamed);
        const list = await b.request({ type: "GET_CHATS" }, "CHAT_LIST");
        expect(list.chats.find((c: Frame) => c.id === chat.id).name).toBe(renamed);
      }
      for (const name of ["", "   ", "\n\t", null]) expect((await newChat(a, { name })).name).toBe("New Chat");
    });

    test("a whitespace-only or empty RENAME_CHAT name is refused and the name stays", async () => {
      const a = await srv.connect();
      const chat = await newChat(a, { name: " keep me " });
      for (const name of ["", "  ", "\t\n"]) {
        const err = await a.request({ type: "RENAME_CHAT", chatId: chat.id, name }, "CHAT_UPDATED");
        expect(err).toMatchObject({ type: "ERROR", code: "INVALID_FRAME" });
        expect(err.error).toContain("name must not be empty or only whitespace");
      }
      expect((await srv.store.getChat("default", chat.id))!.name).toBe(" keep me ");
    });
  });
}
