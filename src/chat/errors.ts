// Stable codes a client can switch on; the text beside them is for people.
export type ErrorCode =
  | "BAD_JSON" | "UNKNOWN_TYPE" | "INVALID_FRAME" | "FRAME_TOO_LARGE" | "MESSAGE_TOO_LONG"
  | "CHAT_NOT_FOUND" | "NO_GENERATION" | "GENERATION_NOT_FOUND" | "RATE_LIMITED" | "GENERATION_IN_PROGRESS" | "TOO_MANY_GENERATIONS"
  | "STORE_UNAVAILABLE" | "MODEL_ERROR" | "MODEL_TIMEOUT" | "SHUTTING_DOWN" | "INTERNAL_ERROR";

/** An error whose message is safe to send to a client as is. */
export class AppError extends Error {
  override name = "AppError";
  constructor(readonly code: ErrorCode, message: string, readonly details?: Record<string, unknown>) {
    super(message);
  }
}
