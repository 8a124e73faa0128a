import { ModelError } from "../model/model";
import { InvalidCursorError, isStoreUnavailable } from "../store/errors";

// Codes of the chat layer, which a client can switch on; the text beside them is for people.
// Frame-level codes (BAD_JSON, FRAME_TOO_LARGE, ...) belong to src/ws.
export const CHAT_ERROR_CODES = [
  "CHAT_NOT_FOUND",
  "NO_GENERATION",
  "GENERATION_NOT_FOUND",
  "QUEUE_FULL",
  "TOO_MANY_GENERATIONS",
  "INVALID_ARGUMENT",
  "STORE_UNAVAILABLE",
  "MODEL_ERROR",
  "MODEL_TIMEOUT",
  "SHUTTING_DOWN",
  "INTERNAL_ERROR",
  // A question that does not fit the model's context window even alone (details: tokens, limit).
  "CONTEXT_TOO_LARGE",
  // Branches (src/chat/branches.ts): no such message in the chat; a message that is not a question.
  "MESSAGE_NOT_FOUND",
  "NOT_A_QUESTION",
  // The user's tokens for today are spent (details: resetsAt, budget, used); src/chat/usage.ts.
  "BUDGET_EXCEEDED",
  // Voice devices (src/chat/devices.ts): not the caller's, or unknown (the same answer); no IoT Hub here;
  // the hub refused or could not be reached.
  "DEVICE_NOT_FOUND",
  "DEVICES_DISABLED",
  "DEVICE_UNREACHABLE",
  // Organising and sharing (src/chat/organise.ts, src/chat/shares.ts): another user's ids answer exactly like missing ones.
  "FOLDER_NOT_FOUND",
  "SHARE_NOT_FOUND",
] as const;
export type ChatErrorCode = (typeof CHAT_ERROR_CODES)[number];

/** An error whose message is safe to send to a client as is. */
export class ChatError extends Error {
  override name = "ChatError";
  constructor(
    readonly code: ChatErrorCode,
    message: string,
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
  }
}

export const chatNotFound = (chatId: string) => new ChatError("CHAT_NOT_FOUND", `there is no chat with id ${chatId}`, { chatId });

export type Failure = { code: ChatErrorCode; message: string; details?: Record<string, unknown> };

/**
 * The one place a failure from the chat layer, the store or the model becomes a code and a text
 * safe to show. Anything unrecognised is INTERNAL_ERROR with a generic text (the caller logs it).
 */
export function describeFailure(e: unknown, internal = "something went wrong"): Failure {
  if (e instanceof ChatError) return { code: e.code, message: e.message, details: e.details };
  if (isStoreUnavailable(e))
    return { code: "STORE_UNAVAILABLE", message: "the store is unavailable; try again shortly", details: { retryAfterMs: 2000 } };
  if (e instanceof ModelError) return { code: e.code, message: e.message };
  if (e instanceof InvalidCursorError) return { code: "INVALID_ARGUMENT", message: e.message };
  return { code: "INTERNAL_ERROR", message: internal };
}
