import type { SqlQuerySpec } from "@azure/cosmos";
import type { Message } from "../../records";
import { decodeMessageCursor, encodeMessageCursor } from "../cursor";
import type { Page, Store } from "../store";
import { StoreUnavailableError } from "../errors";
import { type Cosmos, ETAG_ATTEMPTS, matchEtag, query, read, strip, tolerate } from "./requests";

type MessageOps = Pick<
  Store,
  "addMessage" | "addQuestion" | "putMessage" | "listMessages" | "pageMessages" | "findReply" | "finalizeStale" | "rewriteMessage"
>;

const MESSAGE_ORDER = "ORDER BY c.created_at DESC, c.id DESC";

/**
 * A message as its document: a reply's tool calls' names and results also as one text field,
 * `tool_text`, which SEARCH's scan matches beside `content` (src/store/cosmos/search.ts). Never read
 * back: a message reads back exactly as it was written.
 */
const toDoc = (m: Message) => (m.tool_calls?.length ? { ...m, tool_text: m.tool_calls.map((t) => `${t.name} ${t.result}`).join(" ") } : m);
const fromDoc = (doc: Record<string, unknown>) => strip<Message>(doc, ["tool_text"]);

/** `touchChat` is the chat container's (chats.ts): a question's activity time is its one patch. */
export function messageOps(k: Cosmos, touchChat: Store["touchChat"]): MessageOps {
  const { c, o } = k;
  const addMessage = (m: Message) => tolerate(async () => (await c.messages.items.create(toDoc(m), o()), true), [409], false);

  /**
   * The newest `limit` messages (one extra fetched, to learn whether older ones exist) older than
   * the cursor's (created_at, id), or than `before`; oldest first. Same order as SQLite's.
   */
  const pageMessages = async (
    chatId: string,
    { limit, cursor, before }: { limit: number; cursor?: string; before?: string },
  ): Promise<Page<Message>> => {
    const after = cursor === undefined ? undefined : decodeMessageCursor(cursor, chatId);
    if (limit <= 0) return { items: [] };
    const parameters = [
      { name: "@n", value: limit + 1 },
      { name: "@chat", value: chatId },
    ];
    const spec: SqlQuerySpec = after
      ? {
          query: `SELECT TOP @n * FROM c WHERE c.chat_id = @chat AND (c.created_at < @t OR (c.created_at = @t AND c.id < @id)) ${MESSAGE_ORDER}`,
          parameters: [...parameters, { name: "@t", value: after.created_at }, { name: "@id", value: after.id }],
        }
      : before === undefined
        ? { query: `SELECT TOP @n * FROM c WHERE c.chat_id = @chat ${MESSAGE_ORDER}`, parameters }
        : {
            query: `SELECT TOP @n * FROM c WHERE c.chat_id = @chat AND c.created_at < @before ${MESSAGE_ORDER}`,
            parameters: [...parameters, { name: "@before", value: before }],
          };
    const rows = await query<Record<string, unknown>>(k, c.messages, spec, chatId);
    const items = rows
      .slice(0, limit)
      .reverse()
      .map((r) => fromDoc(r));
    const oldest = items[0];
    return rows.length > limit && oldest ? { items, cursor: encodeMessageCursor(chatId, oldest) } : { items };
  };

  const listMessages = async (chatId: string, o: { limit: number; before?: string }) => (await pageMessages(chatId, o)).items;

  const findReply = async (chatId: string, questionId: string) => {
    const [doc] = await query<Record<string, unknown>>(
      k,
      c.messages,
      {
        query: `SELECT TOP 1 * FROM c WHERE c.chat_id = @chat AND c.parent_id = @q AND c.role = @role ${MESSAGE_ORDER}`,
        parameters: [
          { name: "@chat", value: chatId },
          { name: "@q", value: questionId },
          { name: "@role", value: "assistant" },
        ],
      },
      chatId,
    );
    return doc ? fromDoc(doc) : undefined;
  };

  const finalizeStale = async (now: number, chatId?: string) => {
    // Without chatId this is maintenance: a cross-partition query. A "streaming" record with no
    // lease has nothing keeping it alive, so it counts as lapsed.
    const parameters = [
      { name: "@streaming", value: "streaming" },
      { name: "@now", value: now },
    ];
    const stale = await query<Record<string, unknown>>(
      k,
      c.messages,
      chatId === undefined
        ? { query: "SELECT * FROM c WHERE c.status = @streaming AND (NOT IS_DEFINED(c.lease) OR c.lease.until < @now)", parameters }
        : {
            query:
              "SELECT * FROM c WHERE c.chat_id = @chat AND c.status = @streaming AND (NOT IS_DEFINED(c.lease) OR c.lease.until < @now)",
            parameters: [...parameters, { name: "@chat", value: chatId }],
          },
      chatId,
    );
    const out: Message[] = [];
    for (const doc of stale) {
      const { lease: _lease, ...rest } = fromDoc(doc);
      const next: Message = { ...rest, status: "interrupted" };
      // Only if it is still the checkpoint we read: a live writer's newer checkpoint (412) wins.
      const res = await tolerate(
        () => c.messages.item(next.id, next.chat_id).replace(toDoc(next), { ...o(), ...matchEtag(String(doc._etag)) }),
        [404, 412],
        undefined,
      );
      if (res?.resource) out.push(fromDoc(res.resource as unknown as Record<string, unknown>));
    }
    return out.sort((a, b) =>
      a.created_at < b.created_at ? -1 : a.created_at > b.created_at ? 1 : a.id < b.id ? -1 : a.id > b.id ? 1 : 0,
    );
  };

  /** Read, decide, write if unchanged (create-if-absent or etag match); a lost race reads again. */
  const rewriteMessage: Store["rewriteMessage"] = async (chatId, id, next) => {
    for (let attempt = 0; attempt < ETAG_ATTEMPTS; attempt++) {
      const doc = await read<Message>(k, c.messages, id, chatId);
      const m = next(doc ? fromDoc(doc) : undefined);
      if (!m) return undefined;
      const won = await tolerate(
        async () => {
          if (doc) await c.messages.item(id, chatId).replace(toDoc(m), { ...o(), ...matchEtag(String(doc._etag)) });
          else await c.messages.items.create(toDoc(m), o());
          return true;
        },
        [404, 409, 412],
        false,
      );
      if (won) return m;
    }
    throw new StoreUnavailableError("Cosmos DB: the message changed on every attempt to rewrite it; try again");
  };

  return {
    addMessage,
    rewriteMessage,
    // Two requests (the message and the chat live in different containers). deleteChat removes the
    // chat record before its messages: a question written as the chat went may have missed its
    // sweep, so it is taken back here.
    addQuestion: async (owner, m) => {
      if (!(await addMessage(m))) return "exists";
      if (await touchChat(owner, m.chat_id, m.created_at)) return "added";
      await tolerate(async () => void (await c.messages.item(m.id, m.chat_id).delete(o())), [404], undefined);
      return "gone";
    },
    putMessage: async (m) => void (await c.messages.items.upsert(toDoc(m), o())),
    listMessages,
    pageMessages,
    findReply,
    finalizeStale,
  };
}
