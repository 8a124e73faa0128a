import type { Database } from "bun:sqlite";
import { StoreUnavailableError } from "../errors";

// bun:sqlite is synchronous; the async signatures keep the contract the same as Cosmos.
// A closed or broken database file is the embedded equivalent of an unreachable server.
const mapped = (e: unknown) =>
  e instanceof Error && /closed|SQLITE_(IOERR|CANTOPEN|BUSY|LOCKED)/i.test(`${e.message} ${(e as { code?: string }).code ?? ""}`)
    ? new StoreUnavailableError("the SQLite database is unavailable", { cause: e })
    : e;

type Op = <A extends unknown[], R>(fn: (...a: A) => R) => (...a: A) => Promise<Awaited<R>>;

/**
 * `guard(fn)`: an operation run at once. `guard.write(fn)`: a write committed with every other
 * write of the same event-loop turn, in one transaction (group commit). A commit is most of a small
 * write's cost here (the WAL append), and a send makes four writes, ten replies at once forty.
 * Each write runs in its own savepoint, so one that throws is undone alone and rejects alone; its
 * promise settles only after the commit, so "stored" still means on disk. Any other operation
 * commits the waiting writes first: every read sees every write issued before it, as without batching.
 */
export type Guard = Op & { write: Op; flush(): void };

export function guardFor(db: Database): Guard {
  type Waiting = { run: () => unknown; resolve: (v: unknown) => void; reject: (e: unknown) => void };
  let waiting: Waiting[] = [];
  const inSavepoint = db.transaction((run: () => unknown) => run());

  function flush() {
    if (waiting.length === 0) return;
    const batch = waiting;
    waiting = [];
    const results: { ok: boolean; value: unknown }[] = new Array(batch.length);
    try {
      db.exec("BEGIN IMMEDIATE");
      for (let i = 0; i < batch.length; i++) {
        try {
          results[i] = { ok: true, value: inSavepoint(batch[i]!.run) };
        } catch (e) {
          // An error that ended the whole transaction (I/O, a full disk) ends the batch: what
          // follows would otherwise commit on its own and then be reported failed with the rest.
          if (!db.inTransaction) throw e;
          results[i] = { ok: false, value: e };
        }
      }
      db.exec("COMMIT");
    } catch (e) {
      try {
        if (db.inTransaction) db.exec("ROLLBACK");
      } catch {
        // Closed or broken: nothing was committed either way.
      }
      for (const w of batch) w.reject(mapped(e));
      return;
    }
    for (let i = 0; i < batch.length; i++) {
      const r = results[i]!;
      if (r.ok) batch[i]!.resolve(r.value);
      else batch[i]!.reject(mapped(r.value));
    }
  }

  const guard = (<A extends unknown[], R>(fn: (...a: A) => R) =>
    async (...a: A): Promise<Awaited<R>> => {
      try {
        flush();
        return await fn(...a);
      } catch (e) {
        throw mapped(e);
      }
    }) as Guard;
  guard.write =
    <A extends unknown[], R>(fn: (...a: A) => R) =>
    (...a: A) =>
      new Promise<Awaited<R>>((resolve, reject) => {
        if (waiting.length === 0) setImmediate(flush);
        waiting.push({ run: () => fn(...a), resolve: resolve as (v: unknown) => void, reject });
      });
  guard.flush = flush;
  return guard;
}
