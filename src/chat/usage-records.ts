import type { Logger } from "../log";
import type { UsageRecord } from "../records";
import type { Store } from "../store/store";

// The usage records waiting for the store (src/chat/usage.ts makes them): written one after
// another in the order they were made, retried with backoff through an outage, never dropped unless
// MAX_WAITING of them pile up.

/** Retries of a record the store refused, backing off up to this. */
const MAX_RETRY_MS = 30_000;
/** Records waiting for the store at most (beyond, the oldest is logged and dropped). */
const MAX_WAITING = 10_000;

export function usageRecords({ store, log, onRecorded }: { store: Store; log: Logger; onRecorded?: (r: UsageRecord) => void }) {
  /** Records to write, in order, each with what to do once it is stored (give its reservation back). */
  const waiting: { r: UsageRecord; replace: boolean; stored: () => void }[] = [];
  let writing: Promise<void> | undefined;

  /** Writes waiting records in order; a failure waits and tries again (records are never dropped for an outage). */
  function flush() {
    writing ??= (async () => {
      let delay = 250;
      while (waiting.length > 0) {
        const { r, replace, stored } = waiting[0]!;
        try {
          if (replace) await store.putUsage(r);
          else await store.addUsage(r);
          waiting.shift();
          stored();
          delay = 250;
        } catch (e) {
          log.warn("could not store a usage record; retrying", { id: r.id, error: e });
          await Bun.sleep(delay);
          delay = Math.min(MAX_RETRY_MS, delay * 2);
        }
      }
    })().finally(() => (writing = undefined));
    return writing;
  }

  /** Queues the record; `stored` runs once the store has it (a reservation is given back only then, so the tokens are never in neither). */
  function record(r: UsageRecord, stored: () => void, o: { replace: boolean; final: boolean }) {
    if (o.final) onRecorded?.(r);
    if (waiting.length >= MAX_WAITING) {
      const dropped = waiting.shift();
      dropped?.stored();
      log.error("usage records are not being stored; dropping the oldest", { id: dropped?.r.id });
    }
    waiting.push({ r, replace: o.replace, stored });
    void flush();
  }

  return {
    record,
    /** Resolves once every record so far is stored (shutdown, tests). */
    drained: async () => {
      while (writing) await writing;
    },
  };
}
