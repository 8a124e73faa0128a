import * as v from "valibot";
import type { StreamingMessage } from "../chat/chats";
import type { BranchInfo } from "../chat/branches";
import type { ChatEvent } from "../chat/events";
import type { Resumed } from "../chat/reply";
import { hasSearchTerms, type SearchResults } from "../chat/search";
import { SettingsPatchSchema, type Settings } from "../chat/settings";
import { IsoTime, type Chat, type Message } from "../records";

// Every frame of /ws, in and out. docs/protocol.md describes the same frames with examples.

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
const Limit = v.nullish(
  v.pipe(
    v.number("limit must be a number"),
    v.integer("limit must be a whole number"),
    v.minValue(1, "limit must be at least 1"),
    v.maxValue(1000, "limit must be at most 1000"),
  ),
);
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

export const inbound = {
  GET_CHATS: v.object({ limit: Limit, cursor: v.nullish(v.string("cursor must be a string")) }),
  CREATE_CHAT: v.object({ name: OptionalName }),
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
    limit: v.nullish(
      v.pipe(
        v.number("limit must be a number"),
        v.integer("limit must be a whole number"),
        v.minValue(1, "limit must be at least 1"),
        v.maxValue(50, "limit must be at most 50"),
      ),
    ),
    cursor: v.nullish(v.string("cursor must be a string")),
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

// Outbound frames.
const catchUp = (r: { chatId: string; traceId: string; content: string; seq: number }) => ({
  type: "MESSAGE",
  chatId: r.chatId,
  content: r.content,
  traceId: r.traceId,
  end: false,
  seq: r.seq,
});
// A reply's lease (which process writes it, until when) is the server's business: never in a frame.
const publicMessage = <M extends Message>({ lease: _lease, ...m }: M): Omit<M, "lease"> => m;
const finished = (message: Message, seq?: number) => ({
  type: "MESSAGE",
  chatId: message.chat_id,
  content: "",
  traceId: message.id,
  end: true,
  ...(seq === undefined ? {} : { seq }),
  ...(message.status ? { reason: message.status === "incomplete" ? "error" : message.status } : {}),
  message: publicMessage(message),
});

export const frames = {
  chatList: (page: { items: Chat[]; cursor?: string }) => ({
    type: "CHAT_LIST",
    chats: page.items,
    ...(page.cursor ? { cursor: page.cursor } : {}),
  }),
  newChat: (chat: Chat) => ({ type: "NEW_CHAT", chat }),
  chatCreated: (chat: Chat) => ({ type: "CHAT_CREATED", chat }),
  chatUpdated: (chat: Chat) => ({ type: "CHAT_UPDATED", chat }),
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
  // content "" on the last frame: the web UI appends whatever arrives.
  end: (e: Extract<ChatEvent, { type: "reply_end" }>) => ({
    type: "MESSAGE",
    chatId: e.chatId,
    content: "",
    traceId: e.traceId,
    end: true,
    seq: e.seq,
    ...(e.status ? { reason: e.status === "incomplete" ? "error" : e.status } : {}),
  }),
  /** RESUME's answer: the rest of a live reply so far, or the finished one. */
  resumed: (r: Resumed) => (r.live ? catchUp(r) : finished(r.message)),
  catchUp,
  finished,
  generationStopped: (g: { chatId: string; traceId: string }) => ({ type: "GENERATION_STOPPED", chatId: g.chatId, traceId: g.traceId }),
  settings: (settings: Settings, defaults: { systemPrompt: string; model: string }) => ({ type: "SETTINGS", settings, defaults }),
  messageAccepted: (chatId: string, r: { duplicate: boolean; message: Message; traceId?: string; queued?: boolean }) => ({
    type: "MESSAGE_ACCEPTED",
    chatId,
    messageId: r.message.id,
    ...(r.traceId ? { traceId: r.traceId } : {}),
    duplicate: r.duplicate,
    ...(r.duplicate ? {} : { queued: !!r.queued }),
  }),
  error: (code: string, error: string, extra?: Record<string, unknown>) => ({ type: "ERROR", error, code, ...extra }),
  /** Live frames may have been missed (the shared bus was down): reload the chat list and the open chat. */
  resync: (reason: string) => ({ type: "RESYNC", reason }),
  searchResults: (r: SearchResults) => ({
    type: "SEARCH_RESULTS",
    query: r.query,
    hits: r.hits,
    ...(r.cursor ? { cursor: r.cursor } : {}),
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
} as const;
