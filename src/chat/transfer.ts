import * as v from "valibot";
import { MessageStatusSchema, RoleSchema, ToolCallRecordSchema, type Chat, type Message, type ToolCallRecord } from "../records";
import { StoredMessageId } from "../store/cursor";
import { DEFAULT_CHAT_NAME } from "./known-chats";
import { nowIso } from "./clock";
import type { ChatContext } from "./context";
import { ChatError } from "./errors";
import { lapsed } from "./lease";

// A chat as a file, and back: the JSON shape `pichat.chat` version 1 (docs/protocol.md, "Export and
// import"). The shape is a promise to people's files: fields may be added, never renamed or retyped;
// anything else is a new version. Only what a person wrote or read leaves: no owner, no lease.

export const TRANSFER_FORMAT = "pichat.chat";
export const TRANSFER_VERSION = 1;

/** Messages read per store page while exporting: at most two pages are held at once. */
export const EXPORT_PAGE_MESSAGES = 250;
/** Message writes in flight at once while importing. */
const IMPORT_WRITES_AT_ONCE = 8;
/** Bounds on one import besides its bytes (src/http/chats.ts): messages, and characters in one message. */
export const IMPORT_MAX_MESSAGES = 20_000;
export const IMPORT_MAX_CHARS = 400_000;

/** `selected`: on a branched chat only, the message its current branch passes through (src/chat/branches.ts). */
export type ExportedChat = { id: string; name: string; created_at: string; updated_at: string; device_id?: string; selected?: string };
export type ExportedMessage = {
  id: string;
  role: Message["role"];
  content: string;
  created_at: string;
  status?: NonNullable<Message["status"]>;
  parent_id?: string;
  device_id?: string;
  /** A reply's tool calls, in order (src/tools/). */
  tool_calls?: ToolCallRecord[];
  /** A reply the exporting user rated (src/chat/feedback.ts); an import ignores it. */
  feedback?: { rating: "up" | "down"; comment?: string; updated_at: string };
};
/** An export as it is produced: the chat, then its messages in pages, oldest first. */
export type ChatExport = { exportedAt: string; chat: ExportedChat; pages: AsyncIterable<ExportedMessage[]> };

const Timestamp = v.pipe(
  v.string("must be an ISO 8601 timestamp"),
  v.isoTimestamp("must be an ISO 8601 timestamp"),
  v.check((s) => !Number.isNaN(Date.parse(s)), "must be an ISO 8601 timestamp"),
  // Stored as the server writes them (UTC, milliseconds): both stores order history by the string.
  v.transform((s) => new Date(s).toISOString()),
);

const ImportedMessage = v.object({
  id: v.pipe(v.string("must be a string"), v.minLength(1, "must not be empty"), v.maxLength(255, "must be at most 255 characters")),
  role: v.picklist(RoleSchema.options, 'must be "user", "assistant" or "system"'),
  // Within one Cosmos DB item (2 MB) whatever the script: 4 bytes a character at most.
  content: v.pipe(v.string("must be a string"), v.maxLength(IMPORT_MAX_CHARS, `must be at most ${IMPORT_MAX_CHARS} characters`)),
  created_at: Timestamp,
  status: v.optional(v.picklist(MessageStatusSchema.options, 'must be "incomplete", "stopped", "interrupted" or "streaming"')),
  parent_id: v.optional(v.string("must be a string")),
  device_id: v.optional(v.pipe(v.string("must be a string"), v.maxLength(255, "must be at most 255 characters"))),
  tool_calls: v.optional(
    v.pipe(v.array(ToolCallRecordSchema, "must be an array of tool calls"), v.maxLength(100, "must hold at most 100 calls")),
  ),
});

/** What an import accepts: version 1 of the export. Unknown fields are ignored (later additions). */
export const ImportSchema = v.object(
  {
    format: v.literal(TRANSFER_FORMAT, `must be "${TRANSFER_FORMAT}"`),
    version: v.literal(TRANSFER_VERSION, `must be ${TRANSFER_VERSION} (the only version this server reads)`),
    exported_at: v.optional(Timestamp),
    chat: v.object(
      {
        id: v.optional(v.string("must be a string")),
        name: v.pipe(v.string("must be a string"), v.maxLength(200, "must be at most 200 characters")),
        created_at: Timestamp,
        updated_at: v.optional(Timestamp),
        device_id: v.optional(v.string("must be a string")),
        selected: v.optional(v.string("must be a string")),
      },
      "must be an object",
    ),
    messages: v.pipe(
      v.array(ImportedMessage, "must be an array"),
      v.maxLength(IMPORT_MAX_MESSAGES, `must hold at most ${IMPORT_MAX_MESSAGES} messages`),
    ),
  },
  "must be a JSON object",
);
export type ChatImport = v.InferOutput<typeof ImportSchema>;

/** The parent_id of a branched chat's first message(s) (src/chat/tree.ts TOP). */
const TOP = "";

/** A branched chat's current message; read loosely, as chats stored before branches have none. */
const selectedOf = (chat: Chat): string | undefined => (chat as { selected?: string }).selected;

const invalid = (message: string) => new ChatError("INVALID_ARGUMENT", message);

/** The first problem, as `path: text` (e.g. `messages.3.role: must be "user", ...`). */
function firstIssue(issues: [v.BaseIssue<unknown>, ...v.BaseIssue<unknown>[]]): string {
  const issue = issues[0];
  const path = v.getDotPath(issue);
  return path ? `${path}: ${issue.message}` : issue.message;
}

/**
 * What an export shows of a stored message. A reply another process is still generating is its
 * last checkpoint (at most REPLY_CHECKPOINT_MS behind) marked "streaming"; one whose lease lapsed
 * is "interrupted", as history shows it.
 */
function exportedMessage(m: Message, now: number): ExportedMessage {
  const status = lapsed(m, now) ? "interrupted" : m.status;
  return {
    id: m.id,
    role: m.role,
    content: m.content,
    created_at: m.created_at,
    ...(status ? { status } : {}),
    ...(m.parent_id !== undefined ? { parent_id: m.parent_id } : {}),
    ...(m.device_id !== undefined ? { device_id: m.device_id } : {}),
    ...(m.tool_calls?.length ? { tool_calls: m.tool_calls } : {}),
  };
}

export function transferCommands(
  ctx: ChatContext,
  requireChat: (owner: string, chatId: string) => Promise<Chat>,
  ratingsIn: (owner: string, chatId: string) => Promise<Map<string, NonNullable<ExportedMessage["feedback"]>>> = async () => new Map(),
) {
  const { store, bus, log } = ctx;

  /**
   * The owner's chat and all its messages (CHAT_NOT_FOUND for a missing or foreign id, before
   * anything is produced). The store pages backwards from the newest, so a first walk keeps only the
   * page cursors and the newest page; the pages are then read again oldest first as they are
   * consumed. Memory stays at two pages whatever the chat's length, and messages that arrive during
   * the export are not in it (it ends with the newest page of the first walk).
   */
  async function exportChat(owner: string, chatId: string): Promise<ChatExport> {
    const chat = await requireChat(owner, chatId);
    const exportedAt = nowIso();
    const ratings = await ratingsIn(owner, chatId);
    const exported = (m: Message, now: number): ExportedMessage => {
      const e = exportedMessage(m, now);
      const f = ratings.get(m.id);
      return f ? { ...e, feedback: f } : e;
    };
    const cursors: string[] = [];
    const newest = await store.pageMessages(chatId, { limit: EXPORT_PAGE_MESSAGES });
    for (let cursor = newest.cursor; cursor !== undefined; ) {
      cursors.push(cursor);
      cursor = (await store.pageMessages(chatId, { limit: EXPORT_PAGE_MESSAGES, cursor })).cursor;
    }
    async function* pages(): AsyncGenerator<ExportedMessage[]> {
      for (let i = cursors.length - 1; i >= 0; i--) {
        const page = await store.pageMessages(chatId, { limit: EXPORT_PAGE_MESSAGES, cursor: cursors[i] });
        // Messages are never removed one by one: an empty page means the chat was deleted meanwhile,
        // and a file that silently misses its start must not look complete.
        if (page.items.length === 0) throw new ChatError("CHAT_NOT_FOUND", "the chat was deleted during the export");
        yield page.items.map((m) => exported(m, Date.now()));
      }
      if (newest.items.length > 0) yield newest.items.map((m) => exported(m, Date.now()));
    }
    return {
      exportedAt,
      chat: {
        id: chat.id,
        name: chat.name,
        created_at: chat.created_at,
        updated_at: chat.updated_at,
        ...(chat.device_id !== undefined ? { device_id: chat.device_id } : {}),
        ...(selectedOf(chat) !== undefined ? { selected: selectedOf(chat) } : {}),
      },
      pages: pages(),
    };
  }

  /**
   * A NEW chat for `owner` from an export (validated here: INVALID_ARGUMENT names the first problem).
   * New chat and message ids, parent links remapped, timestamps kept, nothing sent to the model.
   * The chat record goes first (SQLite's messages reference it), then the messages; a failed write
   * deletes the chat with what was written, and the caller's sockets hear CHAT_CREATED only once
   * everything is stored.
   */
  async function importChat(owner: string, data: unknown): Promise<Chat> {
    const parsed = v.safeParse(ImportSchema, data);
    if (!parsed.success) throw invalid(firstIssue(parsed.issues));
    const { chat: source, messages: incoming } = parsed.output;

    const seen = new Set<string>();
    incoming.forEach((m, i) => {
      if (seen.has(m.id)) throw invalid(`messages.${i}.id: ${JSON.stringify(m.id.slice(0, 64))} appears twice`);
      seen.add(m.id);
    });
    incoming.forEach((m, i) => {
      // "" is the top of a branched chat (an edited first question): kept as it is.
      if (m.parent_id !== undefined && m.parent_id !== TOP && !seen.has(m.parent_id))
        throw invalid(`messages.${i}.parent_id: names no message of this export`);
      if (m.device_id !== undefined && !v.is(StoredMessageId, m.device_id)) throw invalid(`messages.${i}.device_id: not a device id`);
    });

    // Fresh random ids, handed out in sorted order: the store orders history by (created_at, id),
    // so messages that share a timestamp keep the order they have in the file.
    const ids = incoming.map(() => crypto.randomUUID()).sort();
    const newId = new Map(incoming.map((m, i) => [m.id, ids[i]!] as const));
    const chatId = crypto.randomUUID();
    const messages: Message[] = incoming.map((m) => ({
      id: newId.get(m.id)!,
      chat_id: chatId,
      role: m.role,
      content: m.content,
      created_at: m.created_at,
      // Nothing generates an imported reply: one exported mid-stream is cut short for good.
      ...(m.status ? { status: m.status === "streaming" ? ("interrupted" as const) : m.status } : {}),
      ...(m.parent_id !== undefined ? { parent_id: m.parent_id === TOP ? TOP : newId.get(m.parent_id)! } : {}),
      ...(m.device_id !== undefined ? { device_id: m.device_id } : {}),
      ...(m.tool_calls?.length ? { tool_calls: m.tool_calls } : {}),
    }));
    const last = messages.reduce((t, m) => (m.created_at > t ? m.created_at : t), source.created_at);
    // No device_id on the copy: a device's next question must go on landing in its own chat
    // (findDeviceChat), not in an imported one. The messages keep theirs.
    if (source.selected !== undefined && !seen.has(source.selected)) throw invalid("chat.selected: names no message of this export");
    // A branched chat stays branched, on the same branch.
    const selected = source.selected !== undefined ? { selected: newId.get(source.selected)! } : {};
    const chat: Chat = {
      id: chatId,
      name: source.name.trim() === "" ? DEFAULT_CHAT_NAME : source.name,
      active: true,
      created_at: source.created_at,
      updated_at: last,
      ...selected,
    };

    await store.createChat(owner, chat);
    try {
      for (let i = 0; i < messages.length; i += IMPORT_WRITES_AT_ONCE) {
        // Settled, not raced: a write still in flight after a failure would land after the delete.
        const written = await Promise.allSettled(messages.slice(i, i + IMPORT_WRITES_AT_ONCE).map((m) => store.addMessage(m)));
        const failed = written.find((r) => r.status === "rejected");
        if (failed) throw failed.reason;
        if (written.some((r) => r.status === "fulfilled" && !r.value)) throw new Error("an imported message id was already taken");
      }
    } catch (e) {
      await store
        .deleteChat(owner, chat.id)
        .catch((cleanup) => log.warn("could not delete a failed import; it stays unannounced", { chatId: chat.id, error: cleanup }));
      throw e;
    }
    // Written without an event per message: anything a replica kept of this chat while it filled
    // (it is listed from its first write) is read again.
    bus.publish({ type: "messages_changed", chatId: chat.id });
    bus.publish({ type: "chat_created", owner, chat });
    return chat;
  }

  return { exportChat, importChat };
}
