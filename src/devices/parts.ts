// Where a spoken reply is cut into C2D messages. Pure functions: text in, indexes out.

/** IoT Hub's limit on one cloud-to-device message (body and properties). */
export const C2D_MAX_BYTES = 64 * 1024;
/** What the `response` string may take of it, JSON-escaped: the rest is the envelope's ids and our properties. */
export const RESPONSE_MAX_BYTES = C2D_MAX_BYTES - 2048;

/** The first part goes at the first sentence end, or at a word once this much is waiting without one. */
export const FIRST_PART_MAX_CHARS = 240;
/** …or once the first words have waited this long for a sentence end. */
export const FIRST_PART_MAX_MS = 1500;
/** Later parts grow: at least 200, then 600, 1,800… characters, so a typical reply takes at most 4 messages. */
const NEXT_PART_CHARS = 200;
const GROWTH = 3;

// A sentence ends at its punctuation (and any closing quotes) before whitespace; CJK full stops need none.
const SENTENCE_END = /[.!?…]["'”’)\]]*(?=\s)|[。！？]["'”’)\]]*/g;

/** Indexes just after each sentence end in `text` that lie after `from`. */
export function sentenceEnds(text: string, from = 0): number[] {
  const ends: number[] = [];
  SENTENCE_END.lastIndex = from;
  for (let m = SENTENCE_END.exec(text); m; m = SENTENCE_END.exec(text)) {
    const end = m.index + m[0].length;
    if (end > from) ends.push(end);
  }
  // A line end is a boundary too (list items, headings).
  for (let i = text.indexOf("\n", from + 1); i > 0; i = text.indexOf("\n", i + 1)) ends.push(i);
  return [...new Set(ends)].sort((a, b) => a - b);
}

/** The JSON-escaped UTF-8 size of `s` as a string value. */
export const jsonBytes = (s: string) => Buffer.byteLength(JSON.stringify(s));

/** Unicode code points: what `offset` counts, as Python's len() does on the device. */
export const codePoints = (s: string) => {
  let n = 0;
  for (const _ of s) n++;
  return n;
};

/**
 * The longest cut of `text` after `from` whose piece fits `maxBytes`: at a sentence end if one
 * fits, else at a space, else at a code point. Undefined when all of it fits.
 */
export function fitCut(text: string, from: number, maxBytes = RESPONSE_MAX_BYTES): number | undefined {
  if (jsonBytes(text.slice(from)) <= maxBytes) return undefined;
  // Binary search for the longest piece that fits, on UTF-16 indexes that split no surrogate pair.
  let lo = from;
  let hi = text.length;
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (jsonBytes(text.slice(from, mid)) <= maxBytes) lo = mid;
    else hi = mid - 1;
  }
  let limit = lo;
  if (limit > from && isLowSurrogate(text.charCodeAt(limit))) limit--;
  const ends = sentenceEnds(text.slice(0, limit), from).filter((e) => e <= limit);
  // Not a sliver: a sentence end in the last half of what fits, else a space, else the hard limit.
  const half = from + (limit - from) / 2;
  const end = ends.at(-1);
  if (end !== undefined && end > half) return end;
  const space = text.lastIndexOf(" ", limit - 1);
  if (space > half) return space;
  return Math.max(limit, from + 1);
}

const isLowSurrogate = (c: number) => c >= 0xdc00 && c <= 0xdfff;

/**
 * The next part to send of a reply still being written: the end index of the piece after `sent`,
 * or undefined to wait for more. `index` is the part's number (0 first); `waitedMs` how long the
 * first words have waited.
 */
export function nextCut(spoken: string, sent: number, index: number, waitedMs: number): number | undefined {
  const fit = fitCut(spoken, sent);
  if (fit !== undefined) return fit;
  const ends = sentenceEnds(spoken, sent);
  if (index === 0) {
    if (ends.length > 0) return ends[0];
    // The first part is what the person waits for: a word's full stop at the very end counts at once,
    // without waiting for the next token's space ("3." or "e." may still go on, so not after a digit
    // or a lone letter).
    if (/\p{L}{2}[.!?…]["'”’)\]]*$/u.test(spoken.slice(sent))) return spoken.length;
    const pending = spoken.length - sent;
    if (pending >= FIRST_PART_MAX_CHARS || (waitedMs >= FIRST_PART_MAX_MS && pending > 0)) {
      const space = spoken.lastIndexOf(" ");
      return space > sent ? space : undefined;
    }
    return undefined;
  }
  const want = NEXT_PART_CHARS * GROWTH ** (index - 1);
  const last = ends.at(-1);
  return last !== undefined && last - sent >= want ? last : undefined;
}

/** The rest of a finished reply, from `sent`, as pieces that each fit one message. */
export function finalPieces(spoken: string, sent: number): string[] {
  const pieces: string[] = [];
  let at = sent;
  for (let cut = fitCut(spoken, at); cut !== undefined; cut = fitCut(spoken, at)) {
    pieces.push(spoken.slice(at, cut));
    at = cut;
  }
  pieces.push(spoken.slice(at));
  return pieces;
}
