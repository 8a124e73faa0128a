import type { Bus } from "../../src/chat/events";
import type { Model } from "../../src/model/model";
import type { Store } from "../../src/store/store";

// Hand-made stage counters for the server child (BENCH_STAGES=1): performance.now() around what a
// send crosses at the server's seams, with no change to the server's code. Each store method is
// timed from call to settle; the model from the request to its first delta (request set-up and
// the model's answer) and per delta; the bus from publish to the end of its listeners (the
// fan-out, frames and `ws.send` included) by event type; and the event loop's stalls over 5 ms,
// found by a 2 ms interval that comes late. The bench reads them over IPC (`stages`).

type Counter = { n: number; ms: number; max: number };
const counter = (): Counter => ({ n: 0, ms: 0, max: 0 });

export function stageCounters() {
  const counters = new Map<string, Counter>();
  const add = (name: string, ms: number) => {
    let c = counters.get(name);
    if (!c) counters.set(name, (c = counter()));
    c.n++;
    c.ms += ms;
    if (ms > c.max) c.max = ms;
  };
  const timed =
    <A extends unknown[], R>(name: string, fn: (...a: A) => R) =>
    (...a: A): R => {
      const t0 = performance.now();
      const r = fn(...a);
      if (r instanceof Promise) {
        const done = () => add(name, performance.now() - t0);
        r.then(done, done);
      } else add(name, performance.now() - t0);
      return r;
    };

  let last = performance.now();
  const lag = setInterval(() => {
    const t = performance.now();
    if (t - last - 2 > 5) add("event loop stalled (> 5 ms)", t - last - 2);
    last = t;
  }, 2);
  lag.unref();

  return {
    store(s: Store): Store {
      const out = { ...s } as Record<string, unknown>;
      for (const [k, v] of Object.entries(s)) if (typeof v === "function") out[k] = timed(`store ${k}`, (v as Function).bind(s));
      return out as Store;
    },
    model(m: Model): Model {
      return {
        ...m,
        async *stream(turns, options) {
          const t0 = performance.now();
          let prev = t0;
          let first = true;
          for await (const delta of m.stream(turns, options)) {
            const t = performance.now();
            add(first ? "model: request to first delta" : "model: between deltas", t - prev);
            first = false;
            yield delta;
            prev = performance.now();
          }
        },
      };
    },
    bus(b: Bus): Bus {
      return {
        publish: (e) => {
          const t0 = performance.now();
          b.publish(e);
          add(`bus ${e.type} (listeners: fan-out, mirror, caches)`, performance.now() - t0);
        },
        publishHere: (e) => {
          const t0 = performance.now();
          b.publishHere(e);
          add(`bus ${e.type} here (listeners)`, performance.now() - t0);
        },
        subscribe: (l) => b.subscribe(l),
      };
    },
    /** Every counter since the last read, then zeroed. */
    read() {
      const out = Object.fromEntries([...counters].map(([k, c]) => [k, { ...c }]));
      counters.clear();
      return out;
    },
  };
}
export type StageCounters = ReturnType<typeof stageCounters>;
