import type { SqlQuerySpec } from "@azure/cosmos";
import type { Role, SearchHit } from "../../records";
import {
  decodeSearchCursor,
  fold,
  type Marked,
  markTerms,
  matchesAll,
  MAX_SEARCH_OFFSET,
  nextSearchCursor,
  searchTerms,
  snippetOf,
  termScore,
} from "../search-text";
import type { Store } from "../store";
import { status, toUnavailable } from "./failures";
import { type Cosmos, query } from "./requests";

// Search on Cosmos DB. Chat names: the owner's newest SEARCH_MAX_CHATS chats are one partition
// query (needed anyway, for the ids), matched in memory. Messages are partitioned by chat, so they are queried across the
// owner's chats (ARRAY_CONTAINS of their ids) in one of two ways:
//
// - "fulltext": the account's full-text search (FullTextContainsAll, ranked by ORDER BY RANK
//   FullTextScore, BM25) where the account has the feature and the container its full-text index;
// - "scan": a bounded, parameterised query (one RegexMatch per term, each letter a class of its
//   accented and cased forms, so no query text is spliced in) over the newest matching messages,
//   then matched word by word and ranked in memory by term counts, exactly as SQLite's rule says.
//
// COSMOS_FULL_TEXT_SEARCH picks: "on", "off" ("scan"), or "auto": one probe on the first search
// tries the full-text query and falls back to the scan if the account refuses it (400).

export type FullTextMode = "auto" | "on" | "off";

/** Newest matching messages the scan ranks; anything older is not found by the fallback. */
export const SCAN_CANDIDATES = 500;
/** Chat ids per query (the ARRAY_CONTAINS parameter): an owner with more chats costs more queries. */
const CHATS_PER_QUERY = 1000;

type ChatRow = { id: string; name: string; created_at: string };
type MessageRow = { id: string; chat_id: string; role: Role; content: string; created_at: string; status?: string; tool_text?: string };

/** What a message is found by in a scan: its text, then its tool calls' names and results (`tool_text`, as on SQLite). */
const searchText = (m: MessageRow) => (m.tool_text ? `${m.content} ${m.tool_text}` : m.content);
type Ranked = { hit: SearchHit; score: number };

// Every form of a folded character that folds back to it (é, É, è, ... for e), for the scan's
// patterns; the Latin, Greek and Cyrillic blocks are where such forms live.
let variants: Map<string, Set<string>> | undefined;
function variantsOf(c: string): Set<string> {
  if (!variants) {
    variants = new Map();
    for (const [lo, hi] of [
      [0x20, 0x52f],
      [0x1e00, 0x1fff],
    ] as const) {
      for (let cp = lo; cp <= hi; cp++) {
        const x = String.fromCodePoint(cp);
        const f = fold(x);
        if (f.length !== 1 || !/[\p{L}\p{N}]/u.test(x)) continue;
        const set = variants.get(f) ?? new Set([f]);
        set.add(x);
        variants.set(f, set);
      }
    }
  }
  const set = new Set(variants.get(c) ?? [c]);
  for (const x of [...set]) {
    const up = x.toUpperCase();
    if (up.length === 1) set.add(up);
  }
  return set;
}

// Terms hold only letters, digits and private-use characters (searchTerms); anything else is escaped all the same.
const escapeTerm = (x: string) => (/[\\^$.|?*+()[\]{}-]/.test(x) ? `\\${x}` : x);

/** A regular expression matching the term anywhere, in any case and with any accents. */
export function termPattern(term: string): string {
  return [...term]
    .map((c) => {
      const set = variantsOf(c);
      return set.size === 1 ? escapeTerm(c) : `[${[...set].map(escapeTerm).join("")}]`;
    })
    .join("");
}

/** Chats one search scans at most (its newest by activity): one query of their messages. */
export const SEARCH_MAX_CHATS = 1000;

export function searchOps(k: Cosmos, mode: FullTextMode, maxChats = SEARCH_MAX_CHATS): Pick<Store, "searchChats"> {
  const { c } = k;
  let fullText: Promise<boolean> | undefined = mode === "auto" ? undefined : Promise.resolve(mode === "on");

  const fullTextSpec = (chats: string[], terms: string[], n: number): SqlQuerySpec => {
    const names = terms.map((_, i) => `@t${i}`).join(", ");
    return {
      query: `SELECT TOP @n c.id, c.chat_id, c.role, c.content, c.created_at, c.status FROM c
        WHERE ARRAY_CONTAINS(@chats, c.chat_id) AND FullTextContainsAll(c.content, ${names})
        ORDER BY RANK FullTextScore(c.content, ${names})`,
      parameters: [{ name: "@n", value: n }, { name: "@chats", value: chats }, ...terms.map((t, i) => ({ name: `@t${i}`, value: t }))],
    };
  };

  /** Whether this account answers full-text queries: asked once, with the query shape searches use. */
  const useFullText = () => {
    fullText ??= query(k, c.messages, fullTextSpec([], ["probe"], 1)).then(
      () => true,
      (e: unknown) => {
        if (toUnavailable(e)) {
          fullText = undefined; // not an answer: ask again next time
          throw toUnavailable(e);
        }
        if (status(e) === 400) return false;
        throw e;
      },
    );
    return fullText;
  };

  const scanSpec = (chats: string[], terms: string[]): SqlQuerySpec => ({
    query: `SELECT TOP @n c.id, c.chat_id, c.role, c.content, c.created_at, c.tool_text FROM c
      WHERE ARRAY_CONTAINS(@chats, c.chat_id) AND (NOT IS_DEFINED(c.status) OR c.status != @streaming)
      AND ${terms.map((_, i) => `(RegexMatch(c.content, @p${i}) OR RegexMatch(c.tool_text, @p${i}))`).join(" AND ")} ORDER BY c.created_at DESC`,
    parameters: [
      { name: "@n", value: SCAN_CANDIDATES },
      { name: "@chats", value: chats },
      { name: "@streaming", value: "streaming" },
      ...terms.map((t, i) => ({ name: `@p${i}`, value: termPattern(t) })),
    ],
  });

  const hitOf = (chat: ChatRow, text: string, marked: Marked, m?: MessageRow): SearchHit => ({
    chatId: chat.id,
    chatName: chat.name,
    ...(m ? { messageId: m.id, role: m.role } : {}),
    created_at: m ? m.created_at : chat.created_at,
    ...snippetOf(text, marked.spans),
  });

  const byRank = (a: Ranked, b: Ranked) =>
    b.score - a.score ||
    (a.hit.created_at < b.hit.created_at ? 1 : a.hit.created_at > b.hit.created_at ? -1 : 0) ||
    (a.hit.chatId < b.hit.chatId ? -1 : a.hit.chatId > b.hit.chatId ? 1 : 0) ||
    ((a.hit.messageId ?? "") < (b.hit.messageId ?? "") ? -1 : (a.hit.messageId ?? "") > (b.hit.messageId ?? "") ? 1 : 0);

  async function searchChats(owner: string, text: string, { limit, cursor }: { limit: number; cursor?: string }) {
    const terms = searchTerms(text);
    const offset = decodeSearchCursor(cursor, terms);
    if (terms.length === 0 || limit <= 0) return { items: [] };
    // The owner's most recently active chats, at most `maxChats` of them: a search costs the same
    // whoever asks. Older chats are not searched, and the page says so (`hasMore`).
    const listed = await query<ChatRow>(
      k,
      c.chats,
      {
        query: "SELECT TOP @n c.id, c.name, c.created_at FROM c WHERE c.owner = @owner ORDER BY c.updated_at DESC",
        parameters: [
          { name: "@owner", value: owner },
          { name: "@n", value: maxChats + 1 },
        ],
      },
      owner,
    );
    const hasMore = listed.length > maxChats;
    const chats = hasMore ? listed.slice(0, maxChats) : listed;
    const byId = new Map(chats.map((ch) => [ch.id, ch] as const));

    // A name hit counts double, as on SQLite.
    const names: Ranked[] = [];
    for (const ch of chats) {
      const marked = markTerms(ch.name, terms);
      if (matchesAll(marked)) names.push({ hit: hitOf(ch, ch.name, marked), score: 2 * termScore(marked) });
    }

    const ids = [...byId.keys()];
    const chunks: string[][] = [];
    for (let i = 0; i < ids.length; i += CHATS_PER_QUERY) chunks.push(ids.slice(i, i + CHATS_PER_QUERY));
    const ranked: Ranked[] = [...names];
    if (chunks.length > 0 && (await useFullText())) {
      // Cosmos ranks (BM25, its own stemming): kept in its order, after the name hits.
      const want = Math.min(offset + limit + 1, MAX_SEARCH_OFFSET + 1);
      let position = 0;
      for (const chunk of chunks) {
        for (const m of await query<MessageRow>(k, c.messages, fullTextSpec(chunk, terms, want))) {
          const chat = byId.get(m.chat_id);
          if (!chat || m.status === "streaming") continue;
          ranked.push({ hit: hitOf(chat, m.content, markTerms(m.content, terms), m), score: -1 - position++ / 1e6 });
        }
      }
    } else {
      for (const chunk of chunks) {
        for (const m of await query<MessageRow>(k, c.messages, scanSpec(chunk, terms))) {
          const chat = byId.get(m.chat_id);
          const text = searchText(m);
          const marked = markTerms(text, terms);
          // The pattern matched anywhere; a hit needs each term at the start of a word.
          if (chat && matchesAll(marked)) ranked.push({ hit: hitOf(chat, text, marked, m), score: termScore(marked) });
        }
      }
    }
    ranked.sort(byRank);
    const page = ranked.slice(offset, offset + limit + 1);
    return {
      items: page.slice(0, limit).map((r) => r.hit),
      ...nextSearchCursor(terms, offset, limit, page.length),
      ...(hasMore ? { hasMore: true } : {}),
    };
  }

  return { searchChats };
}
