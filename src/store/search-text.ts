import { createHash } from "node:crypto";
import * as v from "valibot";
import type { SearchHit } from "../records";
import { decodeCursor, encodeCursor } from "./cursor";
import { InvalidCursorError } from "./errors";

// What both stores share about search: how a query becomes terms, what counts as a match, the
// snippet with its highlight offsets, and the page cursor. The database only finds and ranks
// candidates; the text a client sees is marked here, identically on every store, as plain text
// plus offsets (no markup for a client to trust).

/** Terms past this many are ignored: a query's cost stays bounded whatever is typed. */
export const MAX_SEARCH_TERMS = 16;
/** Hits past this rank are not reachable by paging (each page re-ranks from the top). */
export const MAX_SEARCH_OFFSET = 1000;
/** Characters of a message shown around its first match. */
export const SNIPPET_CHARS = 160;

// A token is a run of letters, digits and private-use characters (SQLite's unicode61 default
// categories), marks kept so a decomposed accent stays inside its word. Everything else separates.
const TOKEN = /[\p{L}\p{N}\p{Co}\p{M}]+/gu;
/**
 * Lower case without diacritics: what a term and a token are compared as. The same folding as
 * unicode61's remove_diacritics 2 (é → e, ü → u, but ø, ł, ß stay: they have no decomposition).
 */
export const fold = (s: string): string => s.normalize("NFD").replace(/\p{M}/gu, "").toLowerCase();

/**
 * The search terms of what a person typed: its words, folded, each once, at most MAX_SEARCH_TERMS.
 * Nothing else survives (quotes, operators, `*`, `:`, parentheses are separators), so no query
 * syntax of any database ever reaches it. Empty when the query has no letter or digit.
 */
export function searchTerms(query: string): string[] {
  const terms: string[] = [];
  for (const m of query.matchAll(TOKEN)) {
    const t = fold(m[0]);
    if (t && !terms.includes(t)) terms.push(t);
    if (terms.length === MAX_SEARCH_TERMS) break;
  }
  return terms;
}

/** SQLite FTS5: every term a quoted prefix ("term"*), all required. Terms hold no quote, but one would be doubled. */
export const ftsQuery = (terms: string[]): string => terms.map((t) => `"${t.replaceAll('"', '""')}"*`).join(" ");

export type Marked = {
  /** How many tokens matched, per term (in terms' order). */
  counts: number[];
  /** Every matched token's [start, end) in the text (UTF-16 offsets). */
  spans: [number, number][];
  tokens: number;
};

/** A token matches a term when it starts with it, folded (the same rule as FTS5's "term"*). */
export function markTerms(text: string, terms: string[]): Marked {
  const counts = terms.map(() => 0);
  const spans: [number, number][] = [];
  let tokens = 0;
  for (const m of text.matchAll(TOKEN)) {
    tokens++;
    const t = fold(m[0]);
    let hit = false;
    terms.forEach((term, i) => {
      if (t.startsWith(term)) {
        counts[i]!++;
        hit = true;
      }
    });
    if (hit) spans.push([m.index, m.index + m[0].length]);
  }
  return { counts, spans, tokens };
}

export const matchesAll = (m: Marked) => m.counts.every((c) => c > 0);

/** Term-frequency score for stores that rank in memory: more matches score higher, long texts are damped. */
export const termScore = (m: Marked) => m.counts.reduce((s, c) => s + Math.min(c, 5), 0) / (1 + Math.log1p(m.tokens) / 4);

const isLow = (s: string, i: number) => i > 0 && i < s.length && s.charCodeAt(i) >= 0xdc00 && s.charCodeAt(i) <= 0xdfff;

/**
 * Up to SNIPPET_CHARS of the text around its first match (the whole text when short enough), "…"
 * where it was cut, and the matches inside as [start, end) offsets into the snippet.
 */
export function snippetOf(text: string, spans: [number, number][]): Pick<SearchHit, "snippet" | "highlights"> {
  if (text.length <= SNIPPET_CHARS) return { snippet: text, highlights: spans };
  const first = spans[0]?.[0] ?? 0;
  let start = Math.max(0, Math.min(first - 40, text.length - SNIPPET_CHARS));
  // Start at a word's beginning when one is near, and never inside a surrogate pair.
  const space = text.lastIndexOf(" ", start);
  if (space >= 0 && start - space < 20) start = space + 1;
  if (isLow(text, start)) start++;
  let end = Math.min(text.length, start + SNIPPET_CHARS);
  if (isLow(text, end)) end--;
  const head = start > 0 ? "…" : "";
  const shift = head.length - start;
  const highlights = spans.filter(([s, e]) => s >= start && e <= end).map(([s, e]) => [s + shift, e + shift] as [number, number]);
  return { snippet: head + text.slice(start, end) + (end < text.length ? "…" : ""), highlights };
}

// Cursors: the next page's offset, tied to the query's terms (a cursor from another query is refused).
const queryKey = (terms: string[]) => createHash("sha256").update(terms.join("\u0000")).digest("base64url").slice(0, 16);
const SearchCursor = v.tuple([v.literal("search"), v.string(), v.pipe(v.string(), v.regex(/^\d{1,4}$/))]);

export const encodeSearchCursor = (terms: string[], offset: number) => encodeCursor(["search", queryKey(terms), String(offset)]);

export function decodeSearchCursor(cursor: string | undefined, terms: string[]): number {
  if (cursor === undefined) return 0;
  const parsed = v.safeParse(SearchCursor, decodeCursor(cursor, 3));
  if (!parsed.success || parsed.output[1] !== queryKey(terms)) throw new InvalidCursorError();
  const offset = Number(parsed.output[2]);
  if (offset > MAX_SEARCH_OFFSET) throw new InvalidCursorError();
  return offset;
}

/** The page's cursor: there when more hits were found and paging may go on. */
export const nextSearchCursor = (terms: string[], offset: number, limit: number, found: number) =>
  found > limit && offset + limit < MAX_SEARCH_OFFSET ? { cursor: encodeSearchCursor(terms, offset + limit) } : {};
