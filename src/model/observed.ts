import type { Model } from "./model";

export type ModelHealth = { ok: boolean; lastError?: string; lastErrorAt?: string };

/** Wraps a model to remember whether its last request worked, for /health, without probing it. */
export function observedModel(model: Model): Model & { health(): ModelHealth } {
  let health: ModelHealth = { ok: true };
  return {
    kind: model.kind,
    name: model.name,
    health: () => health,
    async *stream(turns, options) {
      try {
        yield* model.stream(turns, options);
        health = { ok: true };
      } catch (e) {
        if (!options.signal.aborted) {
          health = { ok: false, lastError: e instanceof Error ? e.message : "model request failed", lastErrorAt: new Date().toISOString() };
        }
        throw e;
      }
    },
  };
}
