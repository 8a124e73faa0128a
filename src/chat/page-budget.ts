// One CHAT_HISTORY page is one WebSocket frame, and a frame larger than what may wait for a client
// (SEND_BUFFER_LIMIT_BYTES) closes it as too slow; a client that never reads would pin all of it.
// So a page is cut to a byte budget as well as a count: the newest messages that fit are kept, and
// the older ones come with the next page (hasMore). Pure, so it is tested without a store.

/** Bytes a message adds to a CHAT_HISTORY frame: its JSON and the comma after it. */
export const messageBytes = (m: object): number => Buffer.byteLength(JSON.stringify(m)) + 1;

/**
 * The newest messages of `messages` (oldest first) whose JSON fits in `maxBytes`, still oldest
 * first, and how many older ones were cut. The newest is kept whatever its size, so a page is
 * never empty and paging back with the oldest kept message always makes progress.
 */
export function fitPage<T extends object>(
  messages: readonly T[],
  maxBytes: number,
  size: (m: T) => number = messageBytes,
): { messages: T[]; trimmed: number } {
  // Most pages are far under the budget: a bound that needs no serialising settles them.
  if (size === messageBytes && boundBytes(messages) <= maxBytes) return { messages: [...messages], trimmed: 0 };
  let used = 0;
  let start = messages.length;
  while (start > 0) {
    const next = used + size(messages[start - 1]!);
    if (next > maxBytes && start < messages.length) break;
    used = next;
    start -= 1;
  }
  return { messages: start === 0 ? [...messages] : messages.slice(start), trimmed: start };
}

/**
 * An upper bound on the page's JSON bytes without serialising it: every string field at the worst
 * JSON escape (6 bytes per UTF-16 unit, "\u0000"), plus the field names and punctuation.
 */
function boundBytes(messages: readonly object[]): number {
  let total = 0;
  for (const m of messages) {
    total += 256;
    for (const value of Object.values(m)) {
      if (typeof value === "string") total += 6 * value.length + 2;
      else if (typeof value === "object" && value !== null) total += 6 * JSON.stringify(value).length;
      else total += 24;
    }
  }
  return total;
}
