import { afterAll, beforeAll, expect, test } from "bun:test";
import { startRedis, type RedisServer } from "./support/redis-server";
import { startReplicas, type Replicas } from "./support/replicas";
import { addUser } from "./support/users";
import { connect, type Frame, type TestClient } from "./support/ws-client";

// Two replicas (real server processes on one Cosmos database and one Redis): a pin, a move and a
// folder made through one replica reach the owner's socket on the other live (the bus), never another
// user's; a link revoked, or its chat deleted, through one replica is gone on the other at once.

let redis: RedisServer;
let r: Replicas;
const clients: TestClient[] = [];
let A: { id: string; token: string };
let B: { id: string; token: string };

beforeAll(async () => {
  redis = await startRedis();
  r = await startReplicas({
    n: 2,
    redis,
    env: { API_TOKEN: "legacy-token-sharing-replicas-5e7a9c1b", CHAT_TITLES: "false", OFFLINE_MODEL_DELAY_MS: "0" },
  });
  [A, B] = await Promise.all([addUser(r.store), addUser(r.store)]);
}, 120_000);
afterAll(async () => {
  for (const c of clients) c.close();
  await r?.stop();
  await redis?.stop();
});

async function on(i: number, who: { token: string }) {
  const c = await connect(r.replicas[i]!.wsUrl, { token: who.token });
  clients.push(c);
  return c;
}
const view = (i: number, id: string, token: string) =>
  fetch(`${r.replicas[i]!.httpUrl}/api/shares/${id}`, { headers: { Authorization: `Bearer ${token}` } });

test("a pin, a move and a folder through replica 0 reach the owner's socket on replica 1 live, and nobody else's", async () => {
  const a0 = await on(0, A);
  const a1 = await on(1, A);
  const b1 = await on(1, B);
  const chat = (await a0.request({ type: "CREATE_CHAT", name: "across" }, "NEW_CHAT", 30_000)).chat as Frame;
  await a1.next((f) => f.type === "CHAT_CREATED" && f.chat.id === chat.id, 15_000);

  await a0.request({ type: "PIN_CHAT", chatId: chat.id }, "CHAT_UPDATED", 30_000);
  const pinned = await a1.next((f) => f.type === "CHAT_UPDATED" && f.chat.id === chat.id, 15_000);
  expect(pinned.chat).toMatchObject({ pinned: true, folderId: null, name: "across" });

  const made = await a0.request({ type: "CREATE_FOLDER", name: "Shared work" }, "FOLDERS", 30_000);
  const folder = made.folder as Frame;
  expect((await a1.next("FOLDERS", 15_000)).folders).toEqual([folder]);
  await a0.request({ type: "MOVE_CHAT", chatId: chat.id, folderId: folder.id }, "CHAT_UPDATED", 30_000);
  const moved = await a1.next((f) => f.type === "CHAT_UPDATED" && f.chat.id === chat.id, 15_000);
  expect(moved.chat).toMatchObject({ pinned: true, folderId: folder.id });
  // Replica 1 lists it as replica 0 left it.
  const listed = await a1.request({ type: "GET_CHATS", folderId: folder.id }, "CHAT_LIST", 30_000);
  expect((listed.chats as Frame[]).map((c) => c.id)).toEqual([chat.id]);

  // B, on the same replica as A's second socket, heard none of it.
  await b1.request({ type: "GET_FOLDERS" }, "FOLDERS", 30_000);
  expect(
    b1.frames.filter((f) => f.type === "CHAT_UPDATED" || f.type === "CHAT_CREATED" || (f.type === "FOLDERS" && f.folders.length)),
  ).toEqual([]);
}, 90_000);

test("a link revoked through one replica, or its chat deleted through the other, is gone on both at once", async () => {
  const a0 = await on(0, A);
  const a1 = await on(1, A);
  const chat = (await a0.request({ type: "CREATE_CHAT", name: "to share" }, "NEW_CHAT", 30_000)).chat as Frame;
  a0.send({ type: "SEND_MESSAGE", chatId: chat.id, content: "hello across" });
  await a0.reply(chat.id, 30_000);
  const first = (await a0.request({ type: "SHARE_CHAT", chatId: chat.id }, "SHARE", 30_000)).share;
  const second = (await a1.request({ type: "SHARE_CHAT", chatId: chat.id }, "SHARE", 30_000)).share;
  for (const i of [0, 1]) for (const s of [first, second]) expect((await view(i, s.id, B.token)).status).toBe(200);

  // Revoked through replica 1: the very next read through replica 0 is 404 (no cache anywhere to wait out).
  await a1.request({ type: "REVOKE_SHARE", shareId: first.id }, "SHARE_REVOKED", 30_000);
  expect((await view(0, first.id, B.token)).status).toBe(404);
  expect((await view(1, first.id, B.token)).status).toBe(404);
  expect((await view(0, second.id, B.token)).status).toBe(200);

  // The chat deleted through replica 0: its other link is gone through replica 1 at once.
  await a0.request({ type: "DELETE_CHAT", chatId: chat.id }, "CHAT_DELETED", 30_000);
  expect((await view(1, second.id, B.token)).status).toBe(404);
  expect((await view(0, second.id, B.token)).status).toBe(404);
}, 90_000);

test("a temporary chat stays while its owner has a socket on either replica, and goes once the last one closes", async () => {
  // A user of its own: the earlier tests' sockets of A are still open.
  const C = await addUser(r.store);
  const a0 = await on(0, C);
  const a1 = await on(1, C);
  const chat = (await a0.request({ type: "CREATE_CHAT", temporary: true }, "NEW_CHAT", 30_000)).chat as Frame;
  expect(chat.temporary).toBe(true);
  // The other replica's socket of the same user is not told (the original web UI never sees one).
  await a1.request({ type: "GET_FOLDERS" }, "FOLDERS", 30_000);
  expect(a1.frames.some((f) => (f.type === "CHAT_CREATED" || f.type === "CHAT_UPDATED") && f.chat.id === chat.id)).toBe(false);
  a0.close();
  // Past replica 0's leave grace and a sweep: replica 1 still holds a socket of A's, so it renewed.
  await Bun.sleep(7_000);
  expect(await r.store.getChat(C.id, chat.id)).toBeDefined();
  a1.close();
  const deadline = Date.now() + 20_000;
  while ((await r.store.getChat(C.id, chat.id)) !== undefined) {
    if (Date.now() > deadline) throw new Error("the temporary chat outlived its owner's last socket by 20 s");
    await Bun.sleep(200);
  }
}, 60_000);
