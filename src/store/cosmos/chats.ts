import type { PatchOperation, SqlQuerySpec } from "@azure/cosmos";
import type { Chat } from "../../records";
import { decodeChatCursor, encodeChatCursor } from "../cursor";
import { StoreUnavailableError } from "../errors";
import { DEVICE_LIST_MAX, type Store } from "../store";
import { status } from "./failures";
import { type Cosmos, ETAG_ATTEMPTS, matchEtag, query, read, strip, tolerate } from "./requests";

type ChatOps = Pick<
  Store,
  "listChats" | "getChat" | "getChats" | "createChat" | "patchChat" | "touchChat" | "deleteChat" | "findDeviceChat" | "listDeviceChats"
>;

const toChat = (doc: Record<string, unknown>) => strip<Chat>(doc, ["owner"]);
const chatDoc = (owner: string, chat: Chat) => ({ ...chat, owner });

const CHAT_ORDER = "ORDER BY c.updated_at DESC, c.created_at DESC, c.id DESC";

type ChatDoc = Chat & Record<string, unknown>;

export function chatOps(k: Cosmos): ChatOps {
  const { c, o } = k;

  const listChats = async (owner: string, { limit, cursor }: { limit: number; cursor?: string }) => {
    // A keyset cursor (as in SQLite) rather than continuation tokens: TOP + WHERE on the sort
    // keys behaves the same on the test server and real Cosmos, and pages are never short.
    const after = cursor === undefined ? undefined : decodeChatCursor(cursor);
    const parameters = [
      { name: "@n", value: limit + 1 },
      { name: "@owner", value: owner },
    ];
    const spec: SqlQuerySpec = after
      ? {
          // (u, c, id) < cursor, spelled flat: the nested form means the same, but the test server's
          // parser takes seconds over it (3.2 s against 0.1 s measured).
          query: `SELECT TOP @n * FROM c WHERE c.owner = @owner AND (c.updated_at < @u
            OR (c.updated_at = @u AND c.created_at < @c) OR (c.updated_at = @u AND c.created_at = @c AND c.id < @id)) ${CHAT_ORDER}`,
          parameters: [
            ...parameters,
            { name: "@u", value: after.updated_at },
            { name: "@c", value: after.created_at },
            { name: "@id", value: after.id },
          ],
        }
      : { query: `SELECT TOP @n * FROM c WHERE c.owner = @owner ${CHAT_ORDER}`, parameters };
    const rows = await query<Record<string, unknown>>(k, c.chats, spec, owner);
    const items = rows.slice(0, limit).map(toChat);
    const last = items.at(-1);
    return rows.length > limit && last ? { items, cursor: encodeChatCursor(last) } : { items };
  };

  /**
   * A partial update guarded by the etag of what we read: only the named fields are set (a rename
   * and an activity update racing both land), and updated_at is set only when it moves forward.
   * A conditional patch with a filter predicate would save the read, but it cannot take parameters.
   */
  const patchChat = async (owner: string, id: string, patch: { name?: string; updated_at?: string; selected?: string }) => {
    for (let attempt = 0; attempt < ETAG_ATTEMPTS; attempt++) {
      const doc = await read<ChatDoc>(k, c.chats, id, owner);
      if (!doc) return undefined;
      const ops: PatchOperation[] = [];
      if (patch.name !== undefined && patch.name !== doc.name) ops.push({ op: "set", path: "/name", value: patch.name });
      if (patch.updated_at !== undefined && patch.updated_at > doc.updated_at)
        ops.push({ op: "set", path: "/updated_at", value: patch.updated_at });
      if (patch.selected !== undefined && patch.selected !== doc.selected)
        ops.push({ op: "set", path: "/selected", value: patch.selected });
      if (ops.length === 0) return toChat(doc);
      try {
        const res = await c.chats.item(id, owner).patch<ChatDoc>(ops, { ...o(), ...matchEtag(String(doc._etag)) });
        return res.resource ? toChat(res.resource) : undefined;
      } catch (e) {
        if (status(e) === 404) return undefined;
        if (status(e) !== 412) throw e;
      }
    }
    throw new StoreUnavailableError("Cosmos DB: the chat changed on every attempt to update it; try again");
  };

  const deleteChat = async (owner: string, id: string) => {
    // The chat first: a writer that checks for the chat after storing a message sees it gone and
    // removes its own message. Its messages are swept even when the chat was already gone, so a
    // retry after a half-done delete finishes the job; but never those of a chat that another
    // owner still has (one cross-partition count, on this rare path only).
    const existed = await tolerate(async () => (await c.chats.item(id, owner).delete(o()), true), [404], false);
    if (!existed) {
      const [held] = await query<number>(k, c.chats, {
        query: "SELECT VALUE COUNT(1) FROM c WHERE c.id = @id",
        parameters: [{ name: "@id", value: id }],
      });
      if (held) return false;
    }
    const ids = await query<{ id: string }>(
      k,
      c.messages,
      {
        query: "SELECT c.id FROM c WHERE c.chat_id = @chat",
        parameters: [{ name: "@chat", value: id }],
      },
      id,
    );
    for (let i = 0; i < ids.length; i += 20) {
      await Promise.all(ids.slice(i, i + 20).map((m) => tolerate(() => c.messages.item(m.id, id).delete(o()), [404], undefined)));
    }
    return existed;
  };

  return {
    listChats,
    getChat: async (owner, id) => {
      const doc = await read<Chat>(k, c.chats, id, owner);
      return doc ? toChat(doc) : undefined;
    },
    // One query in the owner's partition, however many ids.
    getChats: async (owner, ids) =>
      ids.length === 0
        ? []
        : (
            await query<Record<string, unknown>>(
              k,
              c.chats,
              {
                query: "SELECT * FROM c WHERE c.owner = @owner AND ARRAY_CONTAINS(@ids, c.id)",
                parameters: [
                  { name: "@owner", value: owner },
                  { name: "@ids", value: ids },
                ],
              },
              owner,
            )
          ).map(toChat),
    createChat: async (owner, chat) => void (await c.chats.items.create(chatDoc(owner, chat), o())),
    patchChat,
    // One request: no read, no etag. A missing chat (deleted meanwhile) answers 404.
    touchChat: (owner, id, at) =>
      tolerate(async () => (await c.chats.item(id, owner).patch([{ op: "set", path: "/updated_at", value: at }], o()), true), [404], false),
    deleteChat,
    listDeviceChats: async (owner) =>
      (
        await query<Record<string, unknown>>(
          k,
          c.chats,
          {
            query: `SELECT TOP @n * FROM c WHERE c.owner = @owner AND IS_DEFINED(c.device_id) AND c.active = true ${CHAT_ORDER}`,
            parameters: [
              { name: "@n", value: DEVICE_LIST_MAX },
              { name: "@owner", value: owner },
            ],
          },
          owner,
        )
      ).map(toChat),
    findDeviceChat: async (owner, deviceId) => {
      const [doc] = await query<Record<string, unknown>>(
        k,
        c.chats,
        {
          query: "SELECT TOP 1 * FROM c WHERE c.owner = @owner AND c.device_id = @device AND c.active = true ORDER BY c.updated_at DESC",
          parameters: [
            { name: "@owner", value: owner },
            { name: "@device", value: deviceId },
          ],
        },
        owner,
      );
      return doc ? toChat(doc) : undefined;
    },
  };
}
