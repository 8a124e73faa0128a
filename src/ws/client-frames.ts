import * as v from "valibot";
import { hasSearchTerms } from "../chat/search";
import { SettingsPatchSchema } from "../chat/settings";
import { SAY_MAX_BYTES, sayBytes } from "../chat/devices";
import { FEEDBACK_COMMENT_MAX } from "../chat/feedback";
import { IsoTime } from "../records";

// What a client sends on /ws: each frame type's arguments (`inbound`), the envelope, and where arguments sit.

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
    comment: v.nullish(
      v.pipe(
        v.string("comment must be a string"),
        v.maxLength(FEEDBACK_COMMENT_MAX, `comment must be at most ${FEEDBACK_COMMENT_MAX} characters`),
      ),
    ),
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
