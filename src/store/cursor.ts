import { InvalidCursorError } from "./errors";

// Opaque page cursors: a client hands back what it was given and never parses it.
export const encodeCursor = (parts: readonly string[]): string =>
  Buffer.from(JSON.stringify(parts)).toString("base64url");

/** The parts of a cursor we issued; anything else throws InvalidCursorError. */
export function decodeCursor(cursor: string, size: number, field = "cursor"): string[] {
  try {
    const parts: unknown = JSON.parse(Buffer.from(cursor, "base64url").toString());
    if (Array.isArray(parts) && parts.length === size && parts.every((p) => typeof p === "string")) return parts;
  } catch {}
  throw new InvalidCursorError(field);
}
