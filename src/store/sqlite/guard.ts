import { StoreUnavailableError } from "../errors";

// bun:sqlite is synchronous; the async signatures keep the contract the same as Cosmos.
// A closed or broken database file is the embedded equivalent of an unreachable server.
export const guard =
  <A extends unknown[], R>(fn: (...a: A) => R) =>
  async (...a: A): Promise<Awaited<R>> => {
    try {
      return await fn(...a);
    } catch (e) {
      if (e instanceof Error && /closed|SQLITE_(IOERR|CANTOPEN|BUSY|LOCKED)/i.test(`${e.message} ${(e as { code?: string }).code ?? ""}`)) {
        throw new StoreUnavailableError("the SQLite database is unavailable", { cause: e });
      }
      throw e;
    }
  };

/** The store's error mapping, applied to every operation of each part of the store (organise.ts, usage.ts, users.ts). */
export type Guard = typeof guard;
