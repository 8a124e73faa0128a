import * as v from "valibot";

// Records as they are stored and as they go over the wire: one shape for both, so a Chat
// read from either store can be sent to a browser unchanged.

export const IsoTime = v.pipe(v.string(), v.isoTimestamp());

export const ChatSchema = v.object({
  id: v.pipe(v.string(), v.uuid()),
  name: v.string(),
  active: v.boolean(),
  created_at: IsoTime,
  updated_at: IsoTime,
  device_id: v.optional(v.string()),
  /**
   * Only on a chat that was ever branched (REGENERATE, EDIT_MESSAGE, SELECT_BRANCH): the message its
   * current branch passes through (src/chat/branches.ts). Never set on a chat that was not.
   */
  selected: v.optional(v.string()),
});
export type Chat = v.InferOutput<typeof ChatSchema>;

/** A person with personal API tokens (`bun run users add`). JWT users and the legacy token's user have no record. */
export const UserSchema = v.object({
  id: v.string(),
  name: v.string(),
  created_at: IsoTime,
});
export type User = v.InferOutput<typeof UserSchema>;

/**
 * One model call's tokens (src/chat/usage.ts): a reply, a regeneration, a device's answer, a
 * chat's title; a reply with tool rounds has one per call (`id` numbers them). `estimated`: the
 * model service sent no count, so the tokenizer counted. `id` is the same wherever the call is
 * recorded, so a record is stored once whichever replica writes it, however often.
 */
export const UsageRecordSchema = v.object({
  id: v.string(),
  user_id: v.string(),
  chat_id: v.string(),
  message_id: v.string(),
  model: v.string(),
  kind: v.picklist(["reply", "regeneration", "title", "device"]),
  prompt_tokens: v.number(),
  completion_tokens: v.number(),
  estimated: v.boolean(),
  created_at: IsoTime,
});
export type UsageRecord = v.InferOutput<typeof UsageRecordSchema>;

export const RoleSchema = v.picklist(["user", "assistant", "system"]);
export type Role = v.InferOutput<typeof RoleSchema>;

// Absent means complete. A reply cut short keeps its text and says why. "streaming" is stored only
// while a process is generating the reply (a checkpoint, with its lease); clients see it as
// `streaming: true` in history, never as a finished status.
export const MessageStatusSchema = v.picklist(["incomplete", "stopped", "interrupted", "streaming"]);
export type MessageStatus = v.InferOutput<typeof MessageStatusSchema>;

/**
 * One tool call a reply made (src/tools/): what the model asked for and what came back. `result`
 * is shortened for display (the model saw up to TOOL_RESULT_MAX_CHARS); `error` says why a call
 * failed: unknown_tool, invalid_arguments, timeout, failed, unavailable or cancelled.
 */
export const ToolCallRecordSchema = v.object({
  id: v.string(),
  name: v.string(),
  arguments: v.string(),
  ok: v.boolean(),
  result: v.string(),
  error: v.optional(v.string()),
  ms: v.number(),
});
export type ToolCallRecord = v.InferOutput<typeof ToolCallRecordSchema>;

export const MessageSchema = v.object({
  id: v.string(),
  chat_id: v.pipe(v.string(), v.uuid()),
  role: RoleSchema,
  content: v.string(),
  created_at: IsoTime,
  status: v.optional(MessageStatusSchema),
  device_id: v.optional(v.string()),
  /**
   * On an assistant reply: the id of the question it answers. On a question asked in a branched
   * chat (or an edit): the message it follows, "" for the chat's first message. Absent on
   * questions of a chat that was never branched: they follow the message before them.
   */
  parent_id: v.optional(v.string()),
  /** Only while status is "streaming": which process generates it, until when (epoch ms) its lease holds, and chunks so far. */
  lease: v.optional(v.object({ owner: v.string(), until: v.number(), seq: v.number() })),
  /** On a reply that used tools: its calls in the order they were made. */
  tool_calls: v.optional(v.array(ToolCallRecordSchema)),
});
export type Message = v.InferOutput<typeof MessageSchema>;

/**
 * One search result (SEARCH): a chat whose name matched (no messageId) or one of its messages.
 * The snippet is plain text; `highlights` are the matched words as [start, end) UTF-16 offsets
 * into it, so a client marks them itself and never has to trust markup.
 */
export const SearchHitSchema = v.object({
  chatId: v.pipe(v.string(), v.uuid()),
  chatName: v.string(),
  messageId: v.optional(v.string()),
  role: v.optional(RoleSchema),
  /** The message's; for a name hit, the chat's. */
  created_at: IsoTime,
  snippet: v.string(),
  highlights: v.array(v.tuple([v.number(), v.number()])),
});
export type SearchHit = v.InferOutput<typeof SearchHitSchema>;

// Organising chats (src/chat/organise.ts): a user's folders (one level) and, per chat, a pin and the
// folder it is in. They are the owner's own records beside the chat, never fields of the chat record.
export const FolderSchema = v.object({
  id: v.pipe(v.string(), v.uuid()),
  name: v.string(),
  created_at: IsoTime,
});
export type Folder = v.InferOutput<typeof FolderSchema>;
/** One chat's marks: pinned, the folder it is in (none: absent), and for a temporary chat when it goes at the latest. */
export type ChatMark = { chat_id: string; pinned: boolean; folder_id?: string; expires_at?: string };

/**
 * A user's rating of one reply version (an assistant message: each regeneration is a message of its
 * own), changeable; one per user and message. `model`: the model that wrote the reply, as known when rated.
 */
export const FeedbackSchema = v.object({
  user_id: v.string(),
  chat_id: v.pipe(v.string(), v.uuid()),
  message_id: v.string(),
  rating: v.picklist(["up", "down"]),
  comment: v.optional(v.string()),
  model: v.string(),
  created_at: IsoTime,
  updated_at: IsoTime,
});
export type Feedback = v.InferOutput<typeof FeedbackSchema>;

/**
 * A read-only snapshot of a chat's current branch up to a message (src/chat/shares.ts), reached by
 * its unguessable id. `public`: readable without signing in (only where the operator allows it).
 */
export type Share = {
  id: string;
  owner: string;
  chat_id: string;
  name: string;
  public: boolean;
  up_to?: string;
  messages: Omit<Message, "lease">[];
  created_at: string;
};
