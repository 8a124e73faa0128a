import type { Metrics } from "../metrics";
import type { Model } from "./model";

export type ModelHealth = { ok: boolean; lastError?: string; lastErrorAt?: string };

/**
 * Wraps a model once for everything that watches it: whether its last request worked (for /health,
 * without probing it) and its metrics (requests, tokens, time to first token). One wrapper, because
 * each layer of async generator costs every streamed token a hop.
 */
export function observedModel(model: Model, metrics: Metrics): Model & { health(): ModelHealth } {
  let health: ModelHealth = { ok: true };
  return {
    kind: model.kind,
    name: model.name,
    health: () => health,
    async *stream(turns, options) {
      const firstToken = metrics.firstToken.startTimer();
      let first = true;
      try {
        for await (const delta of model.stream(turns, options)) {
          if (first) firstToken();
          first = false;
          metrics.tokens.inc();
          yield delta;
        }
        health = { ok: true };
        metrics.modelRequests.inc({ outcome: options.signal.aborted ? "aborted" : "ok" });
      } catch (e) {
        if (options.signal.aborted) {
          metrics.modelRequests.inc({ outcome: "aborted" });
        } else {
          health = { ok: false, lastError: e instanceof Error ? e.message : "model request failed", lastErrorAt: new Date().toISOString() };
          metrics.modelRequests.inc({ outcome: "error" });
        }
        throw e;
      }
    },
  };
}
