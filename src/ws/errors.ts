import { CHAT_ERROR_CODES, ChatError, describeFailure, type ChatErrorCode } from "../chat/errors";

// Codes of the socket layer: about the frame itself or this socket's limits.
export const FRAME_ERROR_CODES = [
  "BAD_JSON",
  "UNKNOWN_TYPE",
  "INVALID_FRAME",
  "FRAME_TOO_LARGE",
  "MESSAGE_TOO_LONG",
  "RATE_LIMITED",
  "TOO_MANY_GENERATIONS",
  "TOO_MANY_WATCHES",
] as const;
export type FrameErrorCode = (typeof FRAME_ERROR_CODES)[number];
/** Every code an ERROR frame on the socket may carry. */
export const ERROR_CODES = [...new Set([...FRAME_ERROR_CODES, ...CHAT_ERROR_CODES])] as ErrorCode[];
export type ErrorCode = FrameErrorCode | ChatErrorCode;

export class FrameError extends Error {
  override name = "FrameError";
  constructor(
    readonly code: FrameErrorCode,
    message: string,
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
  }
}

/** What an ERROR frame says for a failed command; `internal` marks failures to log in full. */
export function errorFrameOf(e: unknown): { code: ErrorCode; message: string; details?: Record<string, unknown>; internal: boolean } {
  if (e instanceof FrameError) return { code: e.code, message: e.message, details: e.details, internal: false };
  const f = describeFailure(e, "something went wrong handling that frame");
  // A cursor we never issued is a bad frame to the client (as it always was); an argument the chat layer
  // refuses by its rules (a model not allowed, too many pins) is INVALID_ARGUMENT, with what it says.
  const code = f.code === "INVALID_ARGUMENT" && !(e instanceof ChatError) ? "INVALID_FRAME" : f.code;
  return { code, message: f.message, details: f.details, internal: f.code === "INTERNAL_ERROR" };
}
