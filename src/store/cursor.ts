import * as v from "valibot";
import { IsoTime } from "../records";
import { InvalidCursorError } from "./errors";

// Opaque page cursors: a client hands back what it was given and never parses it. Each kind carries
// a tag, so a chat-list cursor is not accepted as a history cursor (or one chat's history cursor in
// another chat), and every part must have the shape we issue: anything else is InvalidCursorError.

export const encodeCursor = (parts: readonly string[]): string => Buffer.from(JSON.stringify(parts)).toString("base64url");

/** The parts of a cursor we issued; anything else throws InvalidCursorError. */
export function decodeCursor(cursor: string, size: number, field = "cursor"): string[] {
  try {
    const parts: unknown = JSON.parse(Buffer.from(cursor, "base64url").toString());
    if (Array.isArray(parts) && parts.length === size && parts.every((p) => typeof p === "string")) return parts;
  } catch {}
  throw new InvalidCursorError(field);
}

/**
 * What a stored message id can be: Cosmos DB's id rules (1 to 255 characters, none of / \ ? #),
 * and no control characters. Client ids are stricter still (src/ws/protocol.ts); device ids fit.
 */
export const StoredMessageId = v.pipe(v.string(), v.regex(/^[^/\\?#\u0000-\u001f\u007f]{1,255}$/u));

const ChatCursor = v.tuple([v.literal("chats"), IsoTime, IsoTime, v.pipe(v.string(), v.uuid())]);
const MessageCursor = v.tuple([v.literal("messages"), v.pipe(v.string(), v.uuid()), IsoTime, StoredMessageId]);

/** A chat-list position: (updated_at, created_at, id) of the last chat returned. */
export type ChatPosition = { updated_at: string; created_at: string; id: string };
/** A history position: (created_at, id) of the oldest message returned. */
export type MessagePosition = { created_at: string; id: string };

export const encodeChatCursor = (c: ChatPosition): string => encodeCursor(["chats", c.updated_at, c.created_at, c.id]);

export function decodeChatCursor(cursor: string, field = "cursor"): ChatPosition {
  const parsed = v.safeParse(ChatCursor, decodeCursor(cursor, 4, field));
  if (!parsed.success) throw new InvalidCursorError(field);
  const [, updated_at, created_at, id] = parsed.output;
  return { updated_at, created_at, id };
}

export const encodeMessageCursor = (chatId: string, m: MessagePosition): string => encodeCursor(["messages", chatId, m.created_at, m.id]);

/** A history cursor issued for `chatId`; one from another chat is not accepted. */
export function decodeMessageCursor(cursor: string, chatId: string, field = "cursor"): MessagePosition {
  const parsed = v.safeParse(MessageCursor, decodeCursor(cursor, 4, field));
  if (!parsed.success || parsed.output[1] !== chatId) throw new InvalidCursorError(field);
  const [, , created_at, id] = parsed.output;
  return { created_at, id };
}
