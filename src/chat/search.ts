import type { SearchHit } from "../records";
import { searchTerms } from "../store/search-text";
import type { ChatContext } from "./context";

/** Hits per SEARCH page: the default, and the most a client may ask for. */
export const SEARCH_PAGE_SIZE = 20;
export const SEARCH_MAX_LIMIT = 50;

export type SearchQuery = { query: string; limit?: number; cursor?: string };
/** `hasMore`: the owner has older chats this search did not scan (Cosmos, past its cap on chats). */
export type SearchResults = { query: string; hits: SearchHit[]; cursor?: string; hasMore?: boolean };

/**
 * Whether a query has anything to search for (a letter or a digit): the SEARCH frame's schema refuses
 * one that has not, as INVALID_FRAME, before the chat service or the store are asked.
 */
export const hasSearchTerms = (query: string) => searchTerms(query).length > 0;

/** Full-text search over the caller's own chats: the owner is the signed-in user, never an argument. */
export function searchCommands(ctx: Pick<ChatContext, "store">) {
  return {
    async search(owner: string, o: SearchQuery): Promise<SearchResults> {
      // Refused at the frame already (hasSearchTerms); nothing to ask the store for.
      if (!hasSearchTerms(o.query)) return { query: o.query, hits: [] };
      const limit = Math.min(o.limit ?? SEARCH_PAGE_SIZE, SEARCH_MAX_LIMIT);
      const page = await ctx.store.searchChats(owner, o.query, { limit, cursor: o.cursor });
      return {
        query: o.query,
        hits: page.items,
        ...(page.cursor ? { cursor: page.cursor } : {}),
        ...(page.hasMore ? { hasMore: true } : {}),
      };
    },
  };
}
