import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Store } from "../src/store/store";
import { openTestCosmosStore, startCosmosServer, type CosmosTestServer } from "./support/cosmos-server";
import { startTestServer, type TestServer } from "./support/harness";
import { addUser } from "./support/users";
import type { Frame, TestClient } from "./support/ws-client";

// Shared links over real sockets and HTTP on both stores: a snapshot that does not move when the
// chat goes on, signed-in readers only unless the operator allows public links and the owner asks,
// revocation and deletion ending the link at once, and nothing told to anyone who should not know.

const LEGACY = "legacy-token-2b4d6f8a0c1e3a5b7d9f";

let cosmos: CosmosTestServer;
beforeAll(async () => {
  cosmos = await startCosmosServer();
});
afterAll(async () => {
  await cosmos?.stop();
});

for (const kind of ["sqlite", "cosmos"] as const) {
  describe(`shared links on ${kind}`, () => {
    let store: Store | undefined;
    let srv: TestServer;
    beforeAll(async () => {
      if (kind === "cosmos") store = await openTestCosmosStore(cosmos, "pichat-shares");
      srv = await startTestServer({ API_TOKEN: LEGACY, CHAT_TITLES: "false" }, store ? { store } : {});
    });
    afterAll(async () => {
      await srv?.close();
      await store?.close();
    });

    const person = async () => {
      const u = await addUser(srv.store);
      return { ...u, c: await srv.connect({ token: u.token }) };
    };
    const view = (id: string, token?: string) =>
      fetch(`${srv.url}/api/shares/${id}`, { headers: token ? { Authorization: `Bearer ${token}` } : {} });
    async function chatWithExchanges(c: TestClient, n: number) {
      const chat = (await c.request({ type: "CREATE_CHAT", name: "Lisbon" }, "NEW_CHAT")).chat as Frame;
      const replies: string[] = [];
      for (let i = 0; i < n; i++) {
        c.send({ type: "SEND_MESSAGE", chatId: chat.id, content: `question ${i}` });
        replies.push((await c.reply(chat.id)).traceId);
      }
      return { chat, replies };
    }

    test("a snapshot for signed-in users: unguessable id, readable by another user, unchanged when the chat goes on", async () => {
      const owner = await person();
      const reader = await person();
      const { chat, replies } = await chatWithExchanges(owner.c, 2);
      const made = await owner.c.request({ type: "SHARE_CHAT", requestId: "s1", chatId: chat.id }, "SHARE");
      expect(made).toMatchObject({
        type: "SHARE",
        requestId: "s1",
        share: { chatId: chat.id, name: "Lisbon", public: false, messages: 4 },
      });
      const { id, url } = made.share;
      expect(id).toMatch(/^[A-Za-z0-9_-]{32}$/); // 24 random bytes
      expect(url).toBe(`/s/${id}`);

      const read = await view(id, reader.token);
      expect(read.status).toBe(200);
      expect(read.headers.get("cache-control")).toBe("no-store");
      const body = (await read.json()) as Frame;
      expect(body.share.name).toBe("Lisbon");
      expect((body.share.messages as Frame[]).map((m) => m.content)).toEqual([
        "question 0",
        expect.any(String),
        "question 1",
        expect.any(String),
      ]);
      expect((body.share.messages as Frame[])[3]!.id).toBe(replies[1]);
      // Nothing about the owner or the chat beyond what a reader needs.
      expect(JSON.stringify(body)).not.toContain(owner.id);
      expect(JSON.stringify(body)).not.toContain(chat.id);

      // The chat goes on and is renamed: the snapshot does not move.
      owner.c.send({ type: "SEND_MESSAGE", chatId: chat.id, content: "question 2" });
      await owner.c.reply(chat.id);
      await owner.c.request({ type: "RENAME_CHAT", chatId: chat.id, name: "Porto" }, "CHAT_UPDATED");
      expect(await (await view(id, reader.token)).json()).toEqual(body);

      // The page itself: the static shell under the page's CSP.
      const page = await fetch(`${srv.url}${url}`);
      expect(page.status).toBe(200);
      expect(page.headers.get("content-security-policy")).toContain("require-trusted-types-for 'script'");
      expect(await page.text()).toContain('src="/page/share.js"');
    });

    test("up to a message: the current branch cut there; an unknown message is MESSAGE_NOT_FOUND", async () => {
      const owner = await person();
      const { chat, replies } = await chatWithExchanges(owner.c, 2);
      // A second version of the last reply: the snapshot follows the current branch.
      const regen = await owner.c.request({ type: "REGENERATE", chatId: chat.id }, "REGENERATING");
      await owner.c.reply(chat.id);
      const all = await owner.c.request({ type: "SHARE_CHAT", chatId: chat.id }, "SHARE");
      const whole = ((await (await view(all.share.id, owner.token)).json()) as Frame).share.messages as Frame[];
      expect(whole.map((m) => m.id)).not.toContain(replies[1]);
      expect(whole.at(-1)!.id).toBe(regen.traceId);
      const cut = await owner.c.request({ type: "SHARE_CHAT", chatId: chat.id, upTo: replies[0] }, "SHARE");
      expect(cut.share).toMatchObject({ upTo: replies[0], messages: 2 });
      const part = ((await (await view(cut.share.id, owner.token)).json()) as Frame).share.messages as Frame[];
      expect(part.map((m) => m.id).at(-1)).toBe(replies[0]);
      expect(await owner.c.request({ type: "SHARE_CHAT", chatId: chat.id, upTo: "nope" }, "SHARE")).toMatchObject({
        type: "ERROR",
        code: "MESSAGE_NOT_FOUND",
      });
      // Listed newest first, one chat's or all.
      const listed = await owner.c.request({ type: "GET_SHARES", chatId: chat.id }, "SHARES");
      expect((listed.shares as Frame[]).map((s) => s.id)).toEqual([cut.share.id, all.share.id]);
      expect((listed.shares as Frame[])[0]).toMatchObject({ url: `/s/${cut.share.id}`, chatId: chat.id, public: false });
    });

    test("no sign-in: refused alike for a private share and a made-up id; public refused while the operator does not allow it", async () => {
      const owner = await person();
      const { chat } = await chatWithExchanges(owner.c, 1);
      const { share } = await owner.c.request({ type: "SHARE_CHAT", chatId: chat.id }, "SHARE");
      const made = await view(share.id);
      const invented = await view("A".repeat(32));
      expect(made.status).toBe(401);
      expect(invented.status).toBe(401);
      expect(await made.text()).toBe(await invented.text());
      expect(await owner.c.request({ type: "SHARE_CHAT", chatId: chat.id, public: true }, "SHARE")).toMatchObject({
        type: "ERROR",
        code: "INVALID_ARGUMENT",
      });
      // A bad token is a bad token, here as everywhere.
      expect((await view(share.id, "pc_not-a-real-token")).status).toBe(401);
    });

    test("revoking ends the link at once; deleting the chat ends its links; another user's share ids answer like missing ones", async () => {
      const owner = await person();
      const other = await person();
      const { chat } = await chatWithExchanges(owner.c, 1);
      const first = (await owner.c.request({ type: "SHARE_CHAT", chatId: chat.id }, "SHARE")).share;
      const second = (await owner.c.request({ type: "SHARE_CHAT", chatId: chat.id }, "SHARE")).share;

      // Another user cannot revoke, list or re-share it: the same answers as for ids that do not exist.
      const foreign = await other.c.request({ type: "REVOKE_SHARE", shareId: first.id }, "SHARE_REVOKED");
      const missing = await other.c.request({ type: "REVOKE_SHARE", shareId: "B".repeat(32) }, "SHARE_REVOKED");
      expect(foreign).toMatchObject({ type: "ERROR", code: "SHARE_NOT_FOUND" });
      expect({ ...foreign, shareId: undefined }).toEqual({ ...missing, shareId: undefined });
      expect((await other.c.request({ type: "GET_SHARES" }, "SHARES")).shares).toEqual([]);
      expect(await other.c.request({ type: "SHARE_CHAT", chatId: chat.id }, "SHARE")).toMatchObject({ code: "CHAT_NOT_FOUND" });
      expect((await view(first.id, other.token)).status).toBe(200);

      expect(await owner.c.request({ type: "REVOKE_SHARE", requestId: "r1", shareId: first.id }, "SHARE_REVOKED")).toEqual({
        type: "SHARE_REVOKED",
        requestId: "r1",
        shareId: first.id,
      });
      const gone = await view(first.id, other.token);
      expect(gone.status).toBe(404);
      const never = await view("C".repeat(32), other.token);
      expect(await gone.text()).toBe(await never.text());
      expect((await view(second.id, other.token)).status).toBe(200);

      await owner.c.request({ type: "DELETE_CHAT", chatId: chat.id }, "CHAT_DELETED");
      expect((await view(second.id, other.token)).status).toBe(404);
      expect((await owner.c.request({ type: "GET_SHARES" }, "SHARES")).shares).toEqual([]);
    });
  });
}

describe("public links, where the operator allows them", () => {
  let srv: TestServer;
  beforeAll(async () => {
    srv = await startTestServer({ API_TOKEN: LEGACY, CHAT_TITLES: "false", ALLOW_PUBLIC_SHARES: "true" });
  });
  afterAll(async () => srv?.close());

  test("readable without signing in only when the owner asked; a private one still needs a sign-in", async () => {
    const u = await addUser(srv.store);
    const c = await srv.connect({ token: u.token });
    const chat = (await c.request({ type: "CREATE_CHAT", name: "Open" }, "NEW_CHAT")).chat as Frame;
    c.send({ type: "SEND_MESSAGE", chatId: chat.id, content: "hello" });
    await c.reply(chat.id);
    const open = (await c.request({ type: "SHARE_CHAT", chatId: chat.id, public: true }, "SHARE")).share;
    const closed = (await c.request({ type: "SHARE_CHAT", chatId: chat.id }, "SHARE")).share;
    expect(open.public).toBe(true);
    const refusals = () => srv.log.lines.filter((l) => l.includes("sign-in refused")).length;
    const before = refusals();
    const anon = await fetch(`${srv.url}/api/shares/${open.id}`);
    expect(anon.status).toBe(200);
    expect(((await anon.json()) as Frame).share).toMatchObject({ name: "Open", public: true });
    // A reader without a token is no refused sign-in: a popular link writes no log line per view.
    expect(refusals()).toBe(before);
    expect((await fetch(`${srv.url}/api/shares/${closed.id}`)).status).toBe(401);
    await c.request({ type: "REVOKE_SHARE", shareId: open.id }, "SHARE_REVOKED");
    // Revoked: a stranger hears what a stranger hears of any id.
    expect((await fetch(`${srv.url}/api/shares/${open.id}`)).status).toBe(401);
  });
});
