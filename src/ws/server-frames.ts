import * as v from "valibot";
import { SettingsSchema } from "../chat/settings";
import { DeviceInfoSchema } from "../chat/devices";
import { ChatSchema, IsoTime, MessageSchema, RoleSchema, SearchHitSchema, ToolCallRecordSchema } from "../records";
import { ERROR_CODES } from "./errors";
import type { InboundType } from "./client-frames";

// What the server sends on /ws: the schema of each frame (the contract, in docs/asyncapi.yaml) and `answers`
// (which frame answers which request). The functions that build them are in ./frame-builders.ts.
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
