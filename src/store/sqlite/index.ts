import type { Message } from "../../records";
import { decodeChatCursor, decodeMessageCursor, encodeChatCursor, encodeMessageCursor } from "../cursor";
import { mergeSettings } from "../merge";
import { DEVICE_LIST_MAX, type Checkpoint, type Ownership, type Page, type Store } from "../store";
import { chatParams, type MessageRow, messageParams, toChat, toMessage } from "./rows";
import { openDatabase } from "./schema";
import { INDEX_EVERY_MS, indexQueued, searchOps } from "./search";
import { prepareStatements } from "./statements";
import { guardFor } from "./guard";
import { organiseOps } from "./organise";
import { usageOps } from "./usage";
import { userOps } from "./users";

/** `path` ":memory:" gives a private in-memory database (tests of pure logic only). */
export function openSqliteStore(path: string): Store {
  const db = openDatabase(path);
  const guard = guardFor(db);
  const q = prepareStatements(db);
  // Messages waiting for the search index go in now and then even when nobody searches (search.ts).
  const indexQueue = indexQueued(db);
  const indexer = setInterval(() => {
    try {
      indexQueue();
    } catch {
      // Busy or closing: the next search or tick does it.
    }
  }, INDEX_EVERY_MS);
  indexer.unref?.();

  // The chat first, then its messages (the foreign key cascade, and an explicit sweep for rows an
  // older file may hold without one), in one transaction.
  // Another owner's chat is left alone, messages included.
  const deleteChatTx = db.transaction((owner: string, id: string) => {
    const existed = q.deleteChat.all({ $owner: owner, $id: id }).length > 0;
    if (existed) q.deleteMessages.run({ $id: id });
    return existed;
  });

  // One commit for the question and its chat's activity time (each commit is a WAL write: ~50 µs here).
  const addQuestionTx = db.transaction((owner: string, m: Message): "added" | "exists" | "gone" => {
    if (q.hasMessage.get({ $chat_id: m.chat_id, $id: m.id })) return "exists";
    if (!q.touchChat.get({ $owner: owner, $id: m.chat_id, $u: m.created_at })) return "gone";
    q.addMessage.run(messageParams(m));
    return "added";
  });

  const claimTx = db.transaction((id: string, owner: string, leaseMs: number): "claimed" | "held" | "done" => {
    const now = Date.now();
    if (q.claimMessage.run({ $id: id, $owner: owner, $until: now + leaseMs, $now: now }).changes > 0) return "claimed";
    return q.getClaim.get({ $id: id })?.done === 1 ? "done" : "held";
  });

  const rewriteMessageTx = db.transaction((chatId: string, id: string, next: (m: Message | undefined) => Message | undefined) => {
    const row = q.getMessage.get({ $chat_id: chatId, $id: id });
    const m = next(row ? toMessage(row) : undefined);
    if (m) q.putMessage.run(messageParams(m));
    return m;
  });
  const patchSettingsTx = db.transaction((owner: string, patch: Record<string, unknown>) => {
    const row = q.getSettings.get({ $owner: owner });
    const next = mergeSettings(row ? (JSON.parse(row.value) as Record<string, unknown>) : {}, patch);
    q.putSettings.run({ $owner: owner, $value: JSON.stringify(next) });
    return next;
  });

  /** Newest `limit` rows (fetched one extra to learn whether older ones exist), returned oldest first. */
  const page = (rows: MessageRow[], limit: number, chatId: string): Page<Message> => {
    const n = Math.min(rows.length, limit);
    const items: Message[] = new Array(n);
    for (let i = 0; i < n; i++) items[i] = toMessage(rows[n - 1 - i]!);
    const oldest = items[0];
    return rows.length > limit && oldest ? { items, cursor: encodeMessageCursor(chatId, oldest) } : { items };
  };

  const byPosition = (a: Message, b: Message) =>
    a.created_at < b.created_at ? -1 : a.created_at > b.created_at ? 1 : a.id < b.id ? -1 : a.id > b.id ? 1 : 0;

  return {
    kind: "sqlite",
    ping: guard(() => void db.query("SELECT 1").get()),
    close: async () => {
      clearInterval(indexer);
      guard.flush();
      db.close();
    },

    listChats: guard((owner, { limit, cursor }) => {
      const after = cursor === undefined ? undefined : decodeChatCursor(cursor);
      const rows = after
        ? q.listChatsAfter.all({ $owner: owner, $limit: limit + 1, $u: after.updated_at, $c: after.created_at, $id: after.id })
        : q.listChats.all({ $owner: owner, $limit: limit + 1 });
      const items = rows.slice(0, limit).map(toChat);
      const last = items.at(-1);
      return rows.length > limit && last ? { items, cursor: encodeChatCursor(last) } : { items };
    }),
    getChat: guard((owner, id) => {
      const row = q.getChat.get({ $owner: owner, $id: id });
      return row ? toChat(row) : undefined;
    }),
    getChats: guard((owner, ids) => q.getChats.all({ $owner: owner, $ids: JSON.stringify(ids) }).map(toChat)),
    createChat: guard.write((owner, chat) => void q.insertChat.run(chatParams(owner, chat))),
    patchChat: guard.write((owner, id, patch) => {
      const row = q.patchChat.get({
        $owner: owner,
        $id: id,
        $name: patch.name ?? null,
        $u: patch.updated_at ?? null,
        $selected: patch.selected ?? null,
      });
      return row ? toChat(row) : undefined;
    }),
    touchChat: guard.write((owner, id, at) => q.patchChat.get({ $owner: owner, $id: id, $name: null, $u: at, $selected: null }) !== null),
    deleteChat: guard((owner, id) => deleteChatTx(owner, id)),
    listDeviceChats: guard((owner) => q.deviceChats.all({ $owner: owner, $limit: DEVICE_LIST_MAX }).map(toChat)),
    findDeviceChat: guard((owner, deviceId) => {
      const row = q.deviceChat.get({ $owner: owner, $device_id: deviceId });
      return row ? toChat(row) : undefined;
    }),

    addMessage: guard.write((m) => q.addMessage.run(messageParams(m)).changes > 0),
    addQuestion: guard.write((owner, m) => addQuestionTx.immediate(owner, m)),
    putMessage: guard.write((m) => void q.putMessage.run(messageParams(m))),
    listMessages: guard((chatId, { limit, before }) => {
      if (limit <= 0) return [];
      const rows =
        before === undefined
          ? q.pageMessages.all({ $chat_id: chatId, $limit: limit })
          : q.pageMessagesBefore.all({ $chat_id: chatId, $limit: limit, $before: before });
      return page(rows, limit, chatId).items;
    }),
    pageMessages: guard((chatId, { limit, cursor, before }) => {
      // Checked before anything else: a bad cursor is the caller's error even on an empty chat.
      const after = cursor === undefined ? undefined : decodeMessageCursor(cursor, chatId);
      if (limit <= 0) return { items: [] };
      const rows = after
        ? q.pageMessagesAfter.all({ $chat_id: chatId, $limit: limit + 1, $t: after.created_at, $id: after.id })
        : before === undefined
          ? q.pageMessages.all({ $chat_id: chatId, $limit: limit + 1 })
          : q.pageMessagesBefore.all({ $chat_id: chatId, $limit: limit + 1, $before: before });
      return page(rows, limit, chatId);
    }),
    findReply: guard((chatId, questionId) => {
      const row = q.findReply.get({ $chat_id: chatId, $parent_id: questionId });
      return row ? toMessage(row) : undefined;
    }),
    finalizeStale: guard((now, chatId) => {
      const rows = chatId === undefined ? q.finalizeStale.all({ $now: now }) : q.finalizeStaleIn.all({ $now: now, $chat_id: chatId });
      return rows.map(toMessage).sort(byPosition);
    }),

    rewriteMessage: guard.write((chatId, id, next) => rewriteMessageTx.immediate(chatId, id, next)),

    claimProcessed: guard((id, ttlSeconds) => {
      const now = Date.now();
      return q.claimProcessed.run({ $id: id, $expires_at: now + ttlSeconds * 1000, $now: now }).changes > 0;
    }),
    claimMessage: guard((id, owner, leaseMs) => claimTx.immediate(id, owner, leaseMs)),
    renewClaim: guard((id, owner, leaseMs) => {
      const until = Date.now() + leaseMs;
      return q.renewClaim.run({ $id: id, $owner: owner, $until: until }).changes > 0;
    }),
    completeClaim: guard(
      (id, owner, ttlSeconds) => void q.completeClaim.run({ $id: id, $owner: owner, $expires_at: Date.now() + ttlSeconds * 1000 }),
    ),
    purgeProcessed: guard(() => q.purgeProcessed.run({ $now: Date.now() }).changes),

    listOwnership: guard((scope) =>
      q.listOwnership.all({ $scope: scope }).map((r) => ({
        partitionId: r.partition_id,
        ownerId: r.owner_id,
        etag: r.etag,
        lastModifiedTimeInMs: r.modified_ms,
      })),
    ),
    claimOwnership: guard((scope, partitionId, ownerId, etag): Ownership | undefined => {
      const next = { $scope: scope, $pid: partitionId, $owner: ownerId, $etag: crypto.randomUUID(), $ms: Date.now() };
      const changed = etag === undefined ? q.claimNew.run(next).changes : q.claimExisting.run({ ...next, $expected: etag }).changes;
      return changed > 0 ? { partitionId, ownerId, etag: next.$etag, lastModifiedTimeInMs: next.$ms } : undefined;
    }),
    listCheckpoints: guard((scope): Checkpoint[] =>
      q.listCheckpoints.all({ $scope: scope }).map((r) => ({
        partitionId: r.partition_id,
        sequenceNumber: r.sequence_number,
        offset: r.offset,
      })),
    ),
    putCheckpoint: guard(
      (scope, cp) => void q.putCheckpoint.run({ $scope: scope, $pid: cp.partitionId, $seq: cp.sequenceNumber, $offset: cp.offset }),
    ),

    getSettings: guard((owner) => {
      const row = q.getSettings.get({ $owner: owner });
      return row ? (JSON.parse(row.value) as Record<string, unknown>) : undefined;
    }),
    putSettings: guard((owner, settings) => void q.putSettings.run({ $owner: owner, $value: JSON.stringify(settings) })),
    patchSettings: guard((owner, patch) => patchSettingsTx.immediate(owner, patch)),

    ...userOps(db, guard),
    ...usageOps(db, guard),
    ...organiseOps(db, guard),
    ...searchOps(db, guard),
  };
}
