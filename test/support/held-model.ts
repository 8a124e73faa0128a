import type { Model, ModelTurn as Turn } from "../../src/model/model";

// A deterministic hold on a reply in flight, for tests that need "the reply is still streaming"
// to be a fact rather than a bet on the model's pacing. Wraps any model: a held stream pauses after
// its n-th delta (the server has published it by then: a generator resumes from `yield` only when
// the consumer asks for the next delta) until the test releases it, or until the request is aborted
// (a stop, a delete, a shutdown), so aborts behave exactly as with a live model.

export type Hold = {
  /** Resolves once the held stream has published its n-th delta and is waiting. */
  reached: Promise<void>;
  /** Lets the stream go on (also forgets the hold if no stream matched yet). */
  release(): void;
  /** Resolves once the held stream has ended (its consumer has the last delta, or stopped reading). */
  ended: Promise<void>;
};

type Pending = { match: (turns: Turn[]) => boolean; afterDeltas: number; reached: () => void; ended: () => void; gate: Promise<void> };

export function createHolds() {
  const pending: Pending[] = [];

  function wrap(inner: Model): Model {
    return {
      kind: inner.kind,
      name: inner.name,
      async *stream(turns, options) {
        // One hold serves one stream: the first whose turns match takes it.
        const i = pending.findIndex((h) => h.match(turns));
        const hold = i >= 0 ? pending.splice(i, 1)[0] : undefined;
        const aborted = new Promise<void>((resolve) => {
          if (options.signal.aborted) resolve();
          else options.signal.addEventListener("abort", () => resolve(), { once: true });
        });
        let n = 0;
        try {
          for await (const delta of inner.stream(turns, options)) {
            yield delta;
            if (hold && ++n === hold.afterDeltas) {
              hold.reached();
              await Promise.race([hold.gate, aborted]);
            }
          }
        } finally {
          hold?.ended();
        }
      },
    };
  }

  /**
   * Holds the next reply whose last turn is `question` (or whose turns `match`) after its
   * `afterDeltas`-th delta. Matching by content keeps chat titling, which asks the same model, apart.
   */
  function hold(o: { question?: string; match?: (turns: Turn[]) => boolean; afterDeltas?: number }): Hold {
    const match = o.match ?? ((turns: Turn[]) => turns.at(-1)?.content === o.question);
    const reached = Promise.withResolvers<void>();
    const ended = Promise.withResolvers<void>();
    let release!: () => void;
    const h: Pending = {
      match,
      afterDeltas: o.afterDeltas ?? 1,
      reached: reached.resolve,
      ended: ended.resolve,
      gate: new Promise<void>((r) => (release = r)),
    };
    pending.push(h);
    return {
      reached: reached.promise,
      ended: ended.promise,
      release() {
        const i = pending.indexOf(h);
        if (i >= 0) pending.splice(i, 1);
        release();
      },
    };
  }

  return { wrap, hold };
}
export type Holds = ReturnType<typeof createHolds>;
