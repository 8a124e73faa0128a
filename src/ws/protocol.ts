import * as v from "valibot";
import type { StreamingMessage } from "../chat/history";
import type { BranchInfo } from "../chat/branches";
import type { ChatEvent, ToolCallEvent } from "../chat/events";
import type { Resumed } from "../chat/pipeline";
import { hasSearchTerms, type SearchResults } from "../chat/search";
import type { UsageReport } from "../chat/usage";
import { SettingsPatchSchema, SettingsSchema, type Settings } from "../chat/settings";
import { DeviceInfoSchema, SAY_MAX_BYTES, sayBytes, type DeviceInfo } from "../chat/devices";
import {
  ChatSchema,
  IsoTime,
  MessageSchema,
  RoleSchema,
  SearchHitSchema,
  ToolCallRecordSchema,
  type Chat,
  type Folder,
  type Message,
} from "../records";
import type { ListedChat } from "../chat/organise";
import type { PublicFeedback } from "../chat/feedback";
import type { ShareInfo } from "../chat/shares";
import { ERROR_CODES, type ErrorCode } from "./errors";

// Every frame of /ws, in and out: `inbound` (what a client sends), `outbound` (what the server sends) and
// `answers` (which frame answers which request). docs/protocol.md describes them with examples;
// `bun run protocol` turns them into docs/asyncapi.yaml (src/ws/asyncapi.ts), and client/ takes its types from here.

const ChatId = v.pipe(v.string("chatId must be a string"), v.uuid("chatId must be a UUID"));
const ChatIds = v.array(ChatId, "chatIds must be an array of chat ids");
// Client-chosen message ids become database ids: keep them short and free of path characters.
const MessageId = v.pipe(
  v.string("message id must be a string"),
  v.regex(/^[^/\\?#\s]{1,128}$/, "message id must be 1 to 128 characters without / \\ ? # or spaces"),
);
// A stored message named by a client (any stored id: a device's too). Unknown ids are MESSAGE_NOT_FOUND.
const MessageRef = v.pipe(
  v.string("messageId must be a string"),
  v.minLength(1, "messageId must not be empty"),
  v.maxLength(255, "messageId must be at most 255 characters"),
);
/** A whole number from 1 to `max`; `name` is the field's, for its errors. */
const count = (name: string, max: number) =>
  v.pipe(
    v.number(`${name} must be a number`),
    v.integer(`${name} must be a whole number`),
    v.minValue(1, `${name} must be at least 1`),
    v.maxValue(max, `${name} must be at most ${max}`),
  );
const Limit = v.nullish(count("limit", 1000));
// Names and message content are kept exactly as sent: leading spaces, tabs, newlines and all (an
// indented code block must survive a reload). Only a value that is empty or all whitespace is
// refused, or for CREATE_CHAT's name means "the default".
const blank = (s: string) => s.trim().length === 0;
const Name = v.pipe(
  v.string("name must be a string"),
  v.check((s) => !blank(s), "name must not be empty or only whitespace"),
  v.maxLength(200, "name must be at most 200 characters"),
);
// The UI may send an empty or null name; that means "use the default", not an error.
const OptionalName = v.pipe(
  v.nullish(v.pipe(v.string("name must be a string"), v.maxLength(200, "name must be at most 200 characters"))),
  v.transform((s) => (s && !blank(s) ? s : undefined)),
);

const FolderId = v.pipe(v.string("folderId must be a string"), v.uuid("folderId must be a UUID"));

export const inbound = {
  // `folderId`: only that folder's chats; `pinned`: only pinned (true) or unpinned (false) chats. Pinned come first.
  GET_CHATS: v.object({
    limit: Limit,
    cursor: v.nullish(v.string("cursor must be a string")),
    folderId: v.nullish(FolderId),
    pinned: v.nullish(v.boolean("pinned must be true or false")),
    // true: only the caller's temporary chats (never listed otherwise).
    temporary: v.nullish(v.boolean("temporary must be true or false")),
  }),
  // `temporary`: gone when the user's last socket closes or after TEMPORARY_CHAT_TTL_S, unless kept (KEEP_CHAT).
  CREATE_CHAT: v.object({ name: OptionalName, temporary: v.nullish(v.boolean("temporary must be true or false")) }),
  // `cursor` (from the previous CHAT_HISTORY) pages back exactly; `before` (a created_at) is the older way. cursor wins.
  GET_CHAT_HISTORY: v.object({
    chatId: ChatId,
    limit: Limit,
    before: v.nullish(IsoTime),
    cursor: v.nullish(v.string("cursor must be a string")),
  }),
  DELETE_CHAT: v.object({ chatId: ChatId }),
  RENAME_CHAT: v.object({ chatId: ChatId, name: Name }),
  // Two spellings in the wild: {chatId, content} and {chatId, message: {content, id}}.
  SEND_MESSAGE: v.pipe(
    v.object({
      chatId: ChatId,
      content: v.nullish(v.string("content must be a string")),
      message: v.nullish(v.object({ content: v.nullish(v.string("message.content must be a string")), id: v.nullish(MessageId) })),
      messageId: v.nullish(MessageId),
    }),
    v.transform(({ chatId, content, message, messageId }) => ({
      chatId,
      content: message?.content ?? content ?? "",
      messageId: message?.id ?? messageId ?? undefined,
    })),
    v.check((a) => !blank(a.content), "content must not be empty or only whitespace"),
  ),
  STOP_GENERATION: v.pipe(
    v.object({
      chatId: v.nullish(ChatId),
      traceId: v.nullish(v.pipe(v.string("traceId must be a string"), v.uuid("traceId must be a UUID"))),
    }),
    v.check((a) => !!(a.chatId || a.traceId), "chatId or traceId is required"),
  ),
  RESUME: v.object({
    chatId: ChatId,
    traceId: v.pipe(v.string("traceId must be a string"), v.uuid("traceId must be a UUID")),
    fromSeq: v.optional(
      v.pipe(
        v.number("fromSeq must be a number"),
        v.integer("fromSeq must be a whole number"),
        v.minValue(0, "fromSeq must be at least 0"),
      ),
      0,
    ),
  }),
  GET_SETTINGS: v.object({}),
  GET_TOOLS: v.object({}),
  // The caller's own model usage: the last `days` UTC days (today included), and today's budget.
  GET_USAGE: v.object({
    days: v.nullish(count("days", 90)),
  }),
  UPDATE_SETTINGS: SettingsPatchSchema,
  // More than the one chat a socket follows implicitly (its focus); an empty list just asks what is watched.
  WATCH: v.object({ chatIds: ChatIds }, "chatIds is required: an array of chat ids"),
  UNWATCH: v.object({ chatIds: ChatIds }, "chatIds is required: an array of chat ids"),
  // Branches (src/chat/branches.ts). REGENERATE without questionId: the last question on the current branch.
  REGENERATE: v.object({
    chatId: ChatId,
    questionId: v.nullish(
      v.pipe(
        v.string("questionId must be a string"),
        v.minLength(1, "questionId must not be empty"),
        v.maxLength(255, "questionId must be at most 255 characters"),
      ),
    ),
  }),
  // `messageId` is the question edited; the new question's own id, if the client picks it, is `message.id` (as in SEND_MESSAGE).
  EDIT_MESSAGE: v.pipe(
    v.object({
      chatId: ChatId,
      messageId: MessageRef,
      content: v.nullish(v.string("content must be a string")),
      message: v.nullish(v.object({ content: v.nullish(v.string("message.content must be a string")), id: v.nullish(MessageId) })),
    }),
    v.transform(({ chatId, messageId, content, message }) => ({
      chatId,
      editOf: messageId,
      content: message?.content ?? content ?? "",
      messageId: message?.id ?? undefined,
    })),
    v.check((a) => !blank(a.content), "content must not be empty or only whitespace"),
  ),
  GET_BRANCHES: v.object({ chatId: ChatId, messageId: MessageRef }),
  SELECT_BRANCH: v.object({ chatId: ChatId, messageId: MessageRef }),
  // The caller's own chats only. Its words are all required, and nothing else in a query is syntax:
  // one without a letter or digit (punctuation alone) has nothing to search for.
  SEARCH: v.object({
    query: v.pipe(
      v.string("query must be a string"),
      v.check((s) => !blank(s), "query must not be empty or only whitespace"),
      v.maxLength(200, "query must be at most 200 characters"),
      v.check(hasSearchTerms, "query: must contain a letter or a digit"),
    ),
    limit: v.nullish(count("limit", 50)),
    cursor: v.nullish(v.string("cursor must be a string")),
    // Only chats in that folder.
    folderId: v.nullish(FolderId),
  }),
  // Pins and folders (src/chat/organise.ts): answered with the chat as listed, the owner's other sockets told.
  PIN_CHAT: v.object({ chatId: ChatId, pinned: v.optional(v.boolean("pinned must be true or false"), true) }),
  // folderId null: out of any folder.
  MOVE_CHAT: v.object({ chatId: ChatId, folderId: v.nullable(FolderId) }),
  GET_FOLDERS: v.object({}),
  // A temporary chat becomes a normal one.
  KEEP_CHAT: v.object({ chatId: ChatId }),
  CREATE_FOLDER: v.object({ name: Name }),
  RENAME_FOLDER: v.object({ folderId: FolderId, name: Name }),
  // Its chats stay, in no folder.
  DELETE_FOLDER: v.object({ folderId: FolderId }),
  // A read-only snapshot of the chat's current branch (up to `upTo`) at /s/<id>; `public` only where the operator allows it.
  SHARE_CHAT: v.object({
    chatId: ChatId,
    upTo: v.nullish(MessageRef),
    public: v.nullish(v.boolean("public must be true or false")),
  }),
  // The caller's links (one chat's with chatId), newest first.
  GET_SHARES: v.object({ chatId: v.nullish(ChatId) }),
  REVOKE_SHARE: v.object({
    shareId: v.pipe(
      v.string("shareId must be a string"),
      v.minLength(1, "shareId must not be empty"),
      v.maxLength(64, "shareId must be at most 64 characters"),
    ),
  }),
  // Thumbs up or down on a reply (null: take the rating back), with an optional comment.
  RATE_REPLY: v.object({
    chatId: ChatId,
    messageId: MessageRef,
    rating: v.nullable(v.picklist(["up", "down"], 'rating is required: "up", "down" or null')),
    comment: v.nullish(v.pipe(v.string("comment must be a string"), v.maxLength(2000, "comment must be at most 2000 characters"))),
  }),
  // Voice devices (src/chat/devices.ts): the caller's own only.
  GET_DEVICES: v.object({}),
  SEND_TO_DEVICE: v.object({
    deviceId: v.pipe(
      v.string("deviceId must be a string"),
      v.minLength(1, "deviceId must not be empty"),
      v.maxLength(128, "deviceId must be at most 128 characters"),
    ),
    text: v.pipe(
      v.string("text must be a string"),
      v.check((s) => !blank(s), "text must not be empty or only whitespace"),
      v.check(
        (s) => sayBytes(s) <= SAY_MAX_BYTES,
        `text is too long for one device message: at most ${SAY_MAX_BYTES} bytes as JSON (IoT Hub's C2D limit is 64 KB)`,
      ),
    ),
  }),
} as const;

export type InboundType = keyof typeof inbound;
export type Args<T extends InboundType> = v.InferOutput<(typeof inbound)[T]>;

export const Envelope = v.object({
  type: v.string("type must be a string"),
  requestId: v.nullish(v.unknown()),
  payload: v.nullish(v.record(v.string(), v.unknown(), "payload must be an object")),
});

/** Arguments may sit at the top level or in `payload`; where both have one, `payload` wins. */
export function mergedArgs(frame: Record<string, unknown>): Record<string, unknown> {
  const { type: _t, requestId: _r, payload, ...top } = frame;
  return { ...top, ...(payload as Record<string, unknown> | null | undefined) };
}

// Outbound frames: the schema of each (the contract, in docs/asyncapi.yaml), then the functions that build them.
const RequestId = v.optional(
  v.pipe(v.string(), v.maxLength(200), v.description("the requestId of the frame this answers, when it had one")),
);
const Uuid = v.pipe(v.string(), v.uuid());
const FeedbackSchema = v.object({
  rating: v.picklist(["up", "down"]),
  comment: v.optional(v.string()),
  updated_at: IsoTime,
});
/** A chat as the chat list shows it: its record, and (additive) its owner's pin and folder. */
const ListedChatSchema = v.object({
  ...ChatSchema.entries,
  pinned: v.optional(v.pipe(v.boolean(), v.description("pinned chats come first in CHAT_LIST"))),
  folderId: v.optional(v.pipe(v.nullable(Uuid), v.description("the folder it is in (null: none)"))),
  temporary: v.optional(v.pipe(v.boolean(), v.description("a temporary chat (CREATE_CHAT {temporary: true})"))),
  expiresAt: v.optional(v.pipe(IsoTime, v.description("a temporary chat: when it goes at the latest"))),
});
const FolderFrameSchema = v.object({ id: Uuid, name: v.string(), created_at: IsoTime });
const ShareFrameSchema = v.object({
  id: v.pipe(v.string(), v.description("the link's id: 32 base64url characters (192 random bits)")),
  url: v.pipe(v.string(), v.description("/s/<id>, on this server")),
  chatId: Uuid,
  name: v.pipe(v.string(), v.description("the chat's name when shared")),
  public: v.pipe(v.boolean(), v.description("readable without signing in (only with ALLOW_PUBLIC_SHARES)")),
  upTo: v.optional(v.string()),
  messages: v.optional(v.pipe(v.number(), v.integer(), v.description("SHARE only: messages in the snapshot"))),
  created_at: IsoTime,
});
/** A message as frames show it: never its lease; in history, maybe still streaming and maybe one of several siblings. */
export const PublicMessageSchema = v.object({
  ...v.omit(MessageSchema, ["lease"]).entries,
  streaming: v.optional(
    v.pipe(v.literal(true), v.description("history only: the reply is still being generated; `seq` is its last chunk")),
  ),
  seq: v.optional(v.pipe(v.number(), v.integer())),
  siblings: v.optional(
    v.pipe(v.number(), v.integer(), v.description("history of a branched chat: how many messages share this one's place")),
  ),
  sibling: v.optional(v.pipe(v.number(), v.integer(), v.description("which of them this is, 1-based, oldest first"))),
  feedback: v.optional(v.pipe(FeedbackSchema, v.description("history of a rated reply: the user's own rating"))),
});
const Reason = v.pipe(v.picklist(["error", "stopped", "interrupted"]), v.description("why a reply ended early; absent when it completed"));
const Cursor = v.optional(v.pipe(v.string(), v.description("present when more follow: pass it back to get the next page")));
const frame = <T extends string, E extends v.ObjectEntries>(type: T, entries: E, description: string) =>
  v.pipe(v.object({ type: v.literal(type), requestId: RequestId, ...entries }), v.description(description));

export const outbound = {
  CHAT_LIST: frame(
    "CHAT_LIST",
    { chats: v.array(ListedChatSchema), cursor: Cursor },
    "GET_CHATS' answer: a page of the user's chats, pinned first, then newest first.",
  ),
  NEW_CHAT: frame(
    "NEW_CHAT",
    { chat: ListedChatSchema },
    "CREATE_CHAT's answer, to the creator only (a temporary chat with `temporary` and `expiresAt`).",
  ),
  CHAT_CREATED: frame("CHAT_CREATED", { chat: ChatSchema }, "A chat was created by another connection of the user, or for a device."),
  CHAT_UPDATED: frame(
    "CHAT_UPDATED",
    { chat: ListedChatSchema },
    "RENAME_CHAT's, PIN_CHAT's and MOVE_CHAT's answer; to the user's other connections on a rename, an automatic title, a pin or a move (`pinned` and `folderId` present after a pin or a move).",
  ),
  CHAT_DELETED: frame("CHAT_DELETED", { chatId: Uuid }, "DELETE_CHAT's answer; to the user's other connections."),
  CHAT_HISTORY: frame(
    "CHAT_HISTORY",
    { chatId: Uuid, messages: v.array(PublicMessageSchema), hasMore: v.boolean(), cursor: Cursor },
    "GET_CHAT_HISTORY's and SELECT_BRANCH's answer: a page of messages, oldest first, maybe ending with a reply still streaming.",
  ),
  FIRST_MESSAGE: frame(
    "FIRST_MESSAGE",
    { chatId: Uuid, content: v.string(), message: PublicMessageSchema },
    "A new question in a watched chat, sent by another connection or a device.",
  ),
  MESSAGE: frame(
    "MESSAGE",
    {
      chatId: Uuid,
      content: v.pipe(v.string(), v.description('the chunk\'s text ("" on an end frame): append it')),
      traceId: v.pipe(v.string(), v.description("the reply's id (its stored message id)")),
      end: v.boolean(),
      seq: v.optional(
        v.pipe(
          v.number(),
          v.integer(),
          v.description("the last chunk this frame holds; an end frame: chunks + 1; absent on RESUME's finished answer"),
        ),
      ),
      reason: v.optional(Reason),
      message: v.optional(v.pipe(PublicMessageSchema, v.description("RESUME of a finished reply: the stored reply"))),
      toolCalls: v.optional(
        v.pipe(
          v.array(
            v.object({
              ...ToolCallRecordSchema.entries,
              ok: v.optional(v.boolean()),
              result: v.optional(v.string()),
              ms: v.optional(v.number()),
            }),
          ),
          v.description("RESUME of a live reply: its tool calls so far (a running one has no ok yet)"),
        ),
      ),
    },
    "A reply streaming to the chat's watchers: deltas (end false), then one end frame (end true); RESUME's answer.",
  ),
  TOOL_CALL_START: frame(
    "TOOL_CALL_START",
    {
      chatId: Uuid,
      traceId: v.pipe(v.string(), v.description("the reply making the call")),
      seq: v.pipe(v.number(), v.integer(), v.description("its place among the reply's MESSAGE deltas (it adds no text)")),
      call: v.object({
        id: v.string(),
        name: v.pipe(v.string(), v.description("the tool: a built-in, or <server>__<tool> for an MCP server's")),
        arguments: v.pipe(v.string(), v.description("the model's arguments, as JSON text")),
      }),
    },
    "A reply's tool call started, to the chat's watchers, in seq order with the reply's deltas.",
  ),
  TOOL_CALL_END: frame(
    "TOOL_CALL_END",
    {
      chatId: Uuid,
      traceId: v.string(),
      seq: v.pipe(v.number(), v.integer()),
      call: v.object({
        ...ToolCallRecordSchema.entries,
        result: v.pipe(v.string(), v.description("what came back, shortened for display (1 000 characters)")),
        error: v.optional(
          v.pipe(
            v.string(),
            v.description(
              "unknown_tool, invalid_arguments, timeout, failed, unavailable or cancelled; the model saw the error as the result",
            ),
          ),
        ),
      }),
    },
    "A reply's tool call finished (ok or not), to the chat's watchers, in seq order with the reply's deltas.",
  ),
  MESSAGE_ACCEPTED: frame(
    "MESSAGE_ACCEPTED",
    {
      chatId: Uuid,
      messageId: v.string(),
      traceId: v.optional(v.pipe(v.string(), v.description("the reply's id; new questions only"))),
      duplicate: v.pipe(v.boolean(), v.description("the message id was already stored: nothing new was stored or answered")),
      queued: v.optional(v.pipe(v.boolean(), v.description("new questions only: other replies in the chat come first"))),
    },
    "SEND_MESSAGE's answer (always with a requestId, for a duplicate, or for a queued question) and EDIT_MESSAGE's.",
  ),
  GENERATION_STOPPED: frame("GENERATION_STOPPED", { chatId: Uuid, traceId: v.string() }, "STOP_GENERATION's answer."),
  SETTINGS: frame(
    "SETTINGS",
    {
      settings: SettingsSchema,
      defaults: v.object({ systemPrompt: v.string(), model: v.string(), deviceSystemPrompt: v.optional(v.string()) }),
    },
    "GET_SETTINGS' and UPDATE_SETTINGS' answer.",
  ),
  USAGE: frame(
    "USAGE",
    {
      days: v.array(
        v.object({
          date: v.string(),
          model: v.string(),
          promptTokens: v.number(),
          completionTokens: v.number(),
          calls: v.number(),
          estimated: v.number(),
        }),
      ),
      today: v.object({ date: v.string(), used: v.number(), budget: v.nullable(v.number()), resetsAt: v.string() }),
    },
    "GET_USAGE's answer: tokens per UTC day and model, newest first (`estimated`: calls counted by the tokenizer), and today's use against the budget (null: none).",
  ),
  TOOLS: frame(
    "TOOLS",
    {
      tools: v.array(
        v.object({
          name: v.pipe(v.string(), v.description("what the model calls it: a built-in, or <server>__<tool>")),
          description: v.string(),
          source: v.pipe(v.string(), v.description('"builtin" or the MCP server\'s name')),
          off: v.pipe(v.boolean(), v.description("turned off in this user's settings (the tool or its server in toolsOff)")),
        }),
      ),
      servers: v.array(
        v.object({
          name: v.string(),
          state: v.picklist(["connecting", "ready", "down"]),
          tools: v.number(),
          off: v.boolean(),
        }),
      ),
    },
    "GET_TOOLS' answer: every tool a reply may call now, and every MCP server with its state.",
  ),
  REGENERATING: frame(
    "REGENERATING",
    { chatId: Uuid, questionId: v.string(), traceId: v.string(), queued: v.boolean() },
    "REGENERATE's answer: the question answered again and the new reply's traceId.",
  ),
  BRANCHES: frame(
    "BRANCHES",
    {
      chatId: Uuid,
      messageId: v.string(),
      siblings: v.array(v.object({ id: v.string(), role: RoleSchema, created_at: IsoTime, preview: v.string() })),
      current: v.nullable(v.string()),
    },
    "GET_BRANCHES' answer: a message and its siblings, oldest first.",
  ),
  BRANCH_SELECTED: frame(
    "BRANCH_SELECTED",
    { chatId: Uuid, messageId: v.string() },
    "To the user's other connections watching the chat: its current branch changed; reload its history.",
  ),
  WATCHING: frame(
    "WATCHING",
    { chatIds: v.array(Uuid), focus: v.nullable(Uuid) },
    "WATCH's and UNWATCH's answer: every chat the connection watches, and its focus.",
  ),
  SEARCH_RESULTS: frame(
    "SEARCH_RESULTS",
    { query: v.string(), hits: v.array(SearchHitSchema), cursor: Cursor, hasMore: v.optional(v.literal(true)) },
    "SEARCH's answer, best first; `hasMore`: older chats were not searched (Cosmos DB scans the 1 000 most recently active).",
  ),
  DEVICES: frame(
    "DEVICES",
    { devices: v.array(DeviceInfoSchema) },
    "GET_DEVICES' answer: the user's devices (assigned to them, or answered under them), most recently active first.",
  ),
  DEVICE_UPDATED: frame(
    "DEVICE_UPDATED",
    { device: DeviceInfoSchema },
    "To the owner's connections: one of their devices asked something, or IoT Hub reported it (dis)connected. Merge by id: absent fields did not change.",
  ),
  DEVICE_MESSAGE_SENT: frame(
    "DEVICE_MESSAGE_SENT",
    {
      deviceId: v.string(),
      chatId: Uuid,
      messageId: v.pipe(v.string(), v.description("the announcement as stored in the device's chat")),
      expiresAt: v.pipe(v.string(), v.description("IoT Hub keeps it for the device until then")),
      queued: v.pipe(
        v.boolean(),
        v.description("the device is not known to be connected: it hears it when it connects, if before expiresAt"),
      ),
      online: v.optional(v.boolean()),
    },
    "SEND_TO_DEVICE's answer: IoT Hub accepted the message for the device.",
  ),
  FOLDERS: frame(
    "FOLDERS",
    { folders: v.array(FolderFrameSchema), folder: v.optional(v.pipe(FolderFrameSchema, v.description("the one created or renamed"))) },
    "GET_FOLDERS', CREATE_FOLDER's, RENAME_FOLDER's and DELETE_FOLDER's answer: the user's folders, oldest first; to the user's other connections when they change.",
  ),
  FEEDBACK: frame(
    "FEEDBACK",
    { chatId: Uuid, messageId: v.string(), feedback: v.nullable(FeedbackSchema) },
    "RATE_REPLY's answer: the user's rating of the reply as stored (null: none).",
  ),
  SHARE: frame(
    "SHARE",
    { share: ShareFrameSchema },
    "SHARE_CHAT's answer: the new link (`url` is a path on this server) and how many messages its snapshot holds.",
  ),
  SHARES: frame("SHARES", { shares: v.array(ShareFrameSchema) }, "GET_SHARES' answer: the user's links, newest first."),
  SHARE_REVOKED: frame(
    "SHARE_REVOKED",
    { shareId: v.string() },
    "REVOKE_SHARE's answer: the link answers 404 from now on, on every replica.",
  ),
  RESYNC: frame(
    "RESYNC",
    { reason: v.string() },
    "Live frames may have been missed (the replicas' shared bus was down): reload the chat list and the open chat.",
  ),
  ERROR: v.pipe(
    v.looseObject({
      type: v.literal("ERROR"),
      requestId: RequestId,
      error: v.pipe(v.string(), v.description("for people; may change")),
      code: v.pipe(v.picklist(ERROR_CODES), v.description("switch on this")),
      retryAfterMs: v.optional(v.number()),
      limit: v.optional(v.number()),
      chatId: v.optional(v.string()),
      traceId: v.optional(v.string()),
      messageId: v.optional(v.string()),
    }),
    v.description(
      "A request failed (with its requestId), or a reply failed after its end frame (to every watcher). Never closes the socket.",
    ),
  ),
} as const;

export type OutboundType = keyof typeof outbound;
export type Outbound<T extends OutboundType = OutboundType> = v.InferOutput<(typeof outbound)[T]>;

/** Which server frame answers each request (or ERROR, with the same requestId). The typed client resolves on it. */
export const answers = {
  GET_CHATS: "CHAT_LIST",
  CREATE_CHAT: "NEW_CHAT",
  GET_CHAT_HISTORY: "CHAT_HISTORY",
  DELETE_CHAT: "CHAT_DELETED",
  RENAME_CHAT: "CHAT_UPDATED",
  SEND_MESSAGE: "MESSAGE_ACCEPTED",
  STOP_GENERATION: "GENERATION_STOPPED",
  RESUME: "MESSAGE",
  GET_SETTINGS: "SETTINGS",
  GET_TOOLS: "TOOLS",
  GET_USAGE: "USAGE",
  UPDATE_SETTINGS: "SETTINGS",
  WATCH: "WATCHING",
  UNWATCH: "WATCHING",
  SEARCH: "SEARCH_RESULTS",
  REGENERATE: "REGENERATING",
  EDIT_MESSAGE: "MESSAGE_ACCEPTED",
  GET_BRANCHES: "BRANCHES",
  SELECT_BRANCH: "CHAT_HISTORY",
  GET_DEVICES: "DEVICES",
  SEND_TO_DEVICE: "DEVICE_MESSAGE_SENT",
  PIN_CHAT: "CHAT_UPDATED",
  KEEP_CHAT: "CHAT_UPDATED",
  MOVE_CHAT: "CHAT_UPDATED",
  GET_FOLDERS: "FOLDERS",
  CREATE_FOLDER: "FOLDERS",
  RENAME_FOLDER: "FOLDERS",
  DELETE_FOLDER: "FOLDERS",
  RATE_REPLY: "FEEDBACK",
  SHARE_CHAT: "SHARE",
  GET_SHARES: "SHARES",
  REVOKE_SHARE: "SHARE_REVOKED",
} as const satisfies { [T in InboundType]: OutboundType };

const catchUp = (r: {
  chatId: string;
  traceId: string;
  content: string;
  seq: number;
  toolCalls?: ToolCallEvent[];
}): Outbound<"MESSAGE"> => ({
  type: "MESSAGE",
  chatId: r.chatId,
  content: r.content,
  traceId: r.traceId,
  end: false,
  seq: r.seq,
  ...(r.toolCalls?.length ? { toolCalls: r.toolCalls } : {}),
});
/** A reply's stored status as an end frame's reason ("streaming" is no ending: none). */
const reasonOf = (status?: Message["status"]) =>
  status === "incomplete" ? ("error" as const) : status === "streaming" || !status ? undefined : status;
// A reply's lease (which process writes it, until when) is the server's business: never in a frame.
const publicMessage = <M extends Message>({ lease: _lease, ...m }: M): Omit<M, "lease"> => m;
const finished = (message: Message, seq?: number): Outbound<"MESSAGE"> => ({
  type: "MESSAGE",
  chatId: message.chat_id,
  content: "",
  traceId: message.id,
  end: true,
  ...(seq === undefined ? {} : { seq }),
  ...(reasonOf(message.status) ? { reason: reasonOf(message.status) } : {}),
  message: publicMessage(message),
});

export const frames = {
  chatList: (page: { items: ListedChat[]; cursor?: string }) => ({
    type: "CHAT_LIST",
    chats: page.items,
    ...(page.cursor ? { cursor: page.cursor } : {}),
  }),
  newChat: (chat: Chat | ListedChat) => ({ type: "NEW_CHAT", chat }),
  chatCreated: (chat: Chat) => ({ type: "CHAT_CREATED", chat }),
  chatUpdated: (chat: Chat | ListedChat) => ({ type: "CHAT_UPDATED", chat }),
  folders: (folders: Folder[], folder?: Folder) => ({ type: "FOLDERS", folders, ...(folder ? { folder } : {}) }),
  share: (share: ShareInfo) => ({ type: "SHARE", share: { ...share, url: `/s/${share.id}` } }),
  shares: (shares: ShareInfo[]) => ({ type: "SHARES", shares: shares.map((s) => ({ ...s, url: `/s/${s.id}` })) }),
  shareRevoked: (shareId: string) => ({ type: "SHARE_REVOKED", shareId }),
  feedback: (f: { chatId: string; messageId: string; feedback: PublicFeedback | null }) => ({
    type: "FEEDBACK",
    chatId: f.chatId,
    messageId: f.messageId,
    feedback: f.feedback,
  }),
  chatDeleted: (chatId: string) => ({ type: "CHAT_DELETED", chatId }),
  chatHistory: (h: { chatId: string; messages: (Message | StreamingMessage)[]; hasMore: boolean; cursor?: string }) => ({
    type: "CHAT_HISTORY",
    chatId: h.chatId,
    messages: h.messages.map(publicMessage),
    hasMore: h.hasMore,
    ...(h.cursor ? { cursor: h.cursor } : {}),
  }),
  firstMessage: (message: Message) => ({
    type: "FIRST_MESSAGE",
    chatId: message.chat_id,
    content: message.content,
    message: publicMessage(message),
  }),
  delta: (e: Extract<ChatEvent, { type: "reply_delta" }>) => ({
    type: "MESSAGE",
    chatId: e.chatId,
    content: e.content,
    traceId: e.traceId,
    end: false,
    seq: e.seq,
  }),
  /** A tool call's start (no `ok` yet) or end. The original web UI ignores both: it knows neither type. */
  toolCall: (e: Extract<ChatEvent, { type: "reply_tool" }>): Outbound<"TOOL_CALL_START"> | Outbound<"TOOL_CALL_END"> =>
    e.call.ok === undefined
      ? {
          type: "TOOL_CALL_START",
          chatId: e.chatId,
          traceId: e.traceId,
          seq: e.seq,
          call: { id: e.call.id, name: e.call.name, arguments: e.call.arguments },
        }
      : {
          type: "TOOL_CALL_END",
          chatId: e.chatId,
          traceId: e.traceId,
          seq: e.seq,
          call: { ...e.call, ok: e.call.ok, result: e.call.result ?? "", ms: e.call.ms ?? 0 },
        },
  // content "" on the last frame: the web UI appends whatever arrives.
  end: (e: Extract<ChatEvent, { type: "reply_end" }>) => ({
    type: "MESSAGE",
    chatId: e.chatId,
    content: "",
    traceId: e.traceId,
    end: true,
    seq: e.seq,
    ...(reasonOf(e.status) ? { reason: reasonOf(e.status) } : {}),
  }),
  /** RESUME's answer: the rest of a live reply so far, or the finished one. */
  resumed: (r: Resumed) => (r.live ? catchUp(r) : finished(r.message)),
  catchUp,
  finished,
  toolList: (t: Omit<Outbound<"TOOLS">, "type" | "requestId">): Outbound<"TOOLS"> => ({
    type: "TOOLS",
    tools: t.tools,
    servers: t.servers,
  }),
  generationStopped: (g: { chatId: string; traceId: string }) => ({ type: "GENERATION_STOPPED", chatId: g.chatId, traceId: g.traceId }),
  settings: (settings: Settings, defaults: { systemPrompt: string; model: string; deviceSystemPrompt?: string }) => ({
    type: "SETTINGS",
    settings,
    defaults,
  }),
  devices: (devices: DeviceInfo[]) => ({ type: "DEVICES", devices }),
  deviceUpdated: (device: DeviceInfo) => ({ type: "DEVICE_UPDATED", device }),
  deviceMessageSent: (r: {
    deviceId: string;
    chatId: string;
    messageId: string;
    expiresAt: string;
    queued: boolean;
    online?: boolean;
  }) => ({
    type: "DEVICE_MESSAGE_SENT",
    ...r,
  }),
  usage: (r: UsageReport): Outbound<"USAGE"> => ({ type: "USAGE", days: r.days, today: r.today }),
  messageAccepted: (chatId: string, r: { duplicate: boolean; message: Message; traceId?: string; queued?: boolean }) => ({
    type: "MESSAGE_ACCEPTED",
    chatId,
    messageId: r.message.id,
    ...(r.traceId ? { traceId: r.traceId } : {}),
    duplicate: r.duplicate,
    ...(r.duplicate ? {} : { queued: !!r.queued }),
  }),
  error: (code: ErrorCode, error: string, extra?: Record<string, unknown>): Outbound<"ERROR"> => ({ ...extra, type: "ERROR", error, code }),
  /** Live frames may have been missed (the shared bus was down): reload the chat list and the open chat. */
  resync: (reason: string) => ({ type: "RESYNC", reason }),
  searchResults: (r: SearchResults) => ({
    type: "SEARCH_RESULTS",
    query: r.query,
    hits: r.hits,
    ...(r.cursor ? { cursor: r.cursor } : {}),
    ...(r.hasMore ? { hasMore: true } : {}),
  }),
  /** REGENERATE's answer: which question is answered again, under which traceId; `queued` when other replies come first. */
  regenerating: (r: { chatId: string; questionId: string; traceId: string; queued: boolean }) => ({
    type: "REGENERATING",
    chatId: r.chatId,
    questionId: r.questionId,
    traceId: r.traceId,
    queued: r.queued,
  }),
  branches: (b: BranchInfo) => ({ type: "BRANCHES", chatId: b.chatId, messageId: b.messageId, siblings: b.siblings, current: b.current }),
  /** To the owner's other sockets watching the chat: its current branch changed; reload its history. */
  branchSelected: (chatId: string, messageId: string) => ({ type: "BRANCH_SELECTED", chatId, messageId }),
  /** WATCH / UNWATCH's answer: every chat the socket now watches, and which of them is its focus. */
  watching: (w: { chatIds: string[]; focus: string | null }) => ({ type: "WATCHING", chatIds: w.chatIds, focus: w.focus }),
} as const satisfies Record<string, (...args: never[]) => Outbound>;

/**
 * What the original React web UI relies on (docs/protocol.md §8 is its session): the frames it sends
 * (arguments in `payload`, no requestId), the frames it handles (it ignores every other type and field),
 * and the rules it needs kept. In docs/asyncapi.yaml as x-original-web-ui; test/asyncapi.test.ts plays its session.
 */
export const originalWebUi = {
  sends: ["GET_CHATS", "CREATE_CHAT", "GET_CHAT_HISTORY", "SEND_MESSAGE", "DELETE_CHAT"],
  handles: ["CHAT_LIST", "NEW_CHAT", "CHAT_CREATED", "CHAT_UPDATED", "CHAT_DELETED", "CHAT_HISTORY", "FIRST_MESSAGE", "MESSAGE", "ERROR"],
  rules: [
    'MESSAGE: the UI appends whatever `content` arrives, so an end frame (end: true) has content ""',
    "MESSAGE and FIRST_MESSAGE: the UI ignores `chatId`; it ignores most ERROR frames, and every frame type and field it does not know",
    "ERROR: `type` is always the uppercase ERROR (a lowercase `error` frame freezes the UI); an ERROR about a reply comes after its end frame",
    "NEW_CHAT answers CREATE_CHAT (the creator only); CHAT_CREATED goes to the user's other connections",
    "Arguments inside `payload`; SEND_MESSAGE as {chatId, message: {content, id}}; no requestId",
  ],
} as const satisfies { sends: readonly InboundType[]; handles: readonly OutboundType[]; rules: readonly string[] };

/**
 * How the server closes a socket on purpose (src/auth/revocation.ts, src/ws/connections.ts, src/server.ts).
 * `reconnect: false`: connecting again with the same token is refused, so a client stops and reports the reason.
 */
export const closes = [
  { code: 1001, reason: "server shutting down", reconnect: true, when: "graceful stop, after replies in flight end" },
  { code: 1008, reason: "client too slow", reconnect: true, when: "more than SEND_BUFFER_LIMIT_BYTES waits for the client" },
  { code: 1008, reason: "token revoked", reconnect: false, when: "the personal token this socket signed in with was revoked" },
  { code: 1008, reason: "token expired", reconnect: false, when: "the JWT this socket signed in with expired" },
  { code: 1009, reason: "Received too big message", reconnect: true, when: "a frame larger than 4 × MAX_FRAME_BYTES" },
] as const;
