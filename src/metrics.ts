// What the server counts, and the two wrappers that count it: the store timed, the model observed.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { Model } from "./model/model";
import type { Store } from "./store/store";

/** Every metric the server exports at /metrics, on a registry of its own (tests build many servers). */
/** `processMetrics: false`: no process metrics (their event-loop and GC monitors cannot be stopped; the warm-up's throwaway server wants none). */
export function createMetrics({ processMetrics = true } = {}) {
  const registry = new Registry();
  if (processMetrics) collectDefaultMetrics({ register: registry, prefix: "pichat_" });
  const registers = [registry];
  const fast = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];
  return {
    registry,
    connections: new Gauge({ name: "pichat_ws_connections", help: "WebSocket connections open", registers }),
    commands: new Counter({
      name: "pichat_ws_commands_total",
      help: "WebSocket commands by type and outcome (ok or an error code)",
      labelNames: ["type", "outcome"],
      registers,
    }),
    commandSeconds: new Histogram({
      name: "pichat_ws_command_duration_seconds",
      help: "Time to handle a WebSocket command",
      labelNames: ["type"],
      buckets: fast,
      registers,
    }),
    firstToken: new Histogram({
      name: "pichat_model_time_to_first_token_seconds",
      help: "Model request to first streamed token",
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30],
      registers,
    }),
    tokens: new Counter({ name: "pichat_model_tokens_streamed_total", help: "Text deltas streamed from the model", registers }),
    modelRequests: new Counter({
      name: "pichat_model_requests_total",
      help: "Model requests by outcome",
      labelNames: ["outcome"],
      registers,
    }),
    deviceMessages: new Counter({
      name: "pichat_device_messages_total",
      help: "Device messages by outcome (answered, duplicate, stale, refused, c2d_failed, model_failed, invalid, failed)",
      labelNames: ["outcome"],
      registers,
    }),
    deviceFirstC2D: new Histogram({
      name: "pichat_device_first_c2d_seconds",
      help: "From a device message's enqueued time to the first C2D message sent for it, by reply mode (parts, one)",
      labelNames: ["mode"],
      buckets: [0.25, 0.5, 1, 1.5, 2, 3, 5, 10, 20, 30],
      registers,
    }),
    deviceLastC2D: new Histogram({
      name: "pichat_device_last_c2d_seconds",
      help: "From a device message's enqueued time to the last C2D message sent for it, by reply mode",
      labelNames: ["mode"],
      buckets: [0.5, 1, 2, 5, 10, 15, 20, 30, 60],
      registers,
    }),
    deviceC2DPerReply: new Histogram({
      name: "pichat_device_c2d_messages_per_reply",
      help: "C2D messages sent for one device reply, by reply mode",
      labelNames: ["mode"],
      buckets: [1, 2, 3, 4, 5, 6, 8, 12, 20],
      registers,
    }),
    c2dThrottles: new Counter({
      name: "pichat_c2d_throttles_total",
      help: "C2D sends held back: the hub answered 429 (throttled) or 403004 (queue_full), or our own budget was short (budget)",
      labelNames: ["kind"],
      registers,
    }),
    feedback: new Counter({
      name: "pichat_feedback_total",
      help: "Ratings of replies given here, by the model that wrote the reply and the rating (a changed rating counts again)",
      labelNames: ["model", "rating"],
      registers,
    }),
    busMessages: new Counter({
      name: "pichat_bus_messages_total",
      help: "Chat events on the shared bus (Redis) by direction: published, received, failed",
      labelNames: ["direction"],
      registers,
    }),
    busLag: new Histogram({
      name: "pichat_bus_lag_seconds",
      help: "From an event's publication on another replica to its arrival here",
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1],
      registers,
    }),
    usageTokens: new Counter({
      name: "pichat_model_usage_tokens_total",
      help: "Tokens of model calls by kind (reply, regeneration, title, device), model, and part (prompt, completion); estimated ones included",
      labelNames: ["kind", "model", "part"],
      registers,
    }),
    budgetRefusals: new Counter({
      name: "pichat_budget_refusals_total",
      help: "Questions and model calls refused because their user's tokens for the day were spent",
      registers,
    }),
    throttledSignIns: new Counter({
      name: "pichat_sign_ins_throttled_total",
      help: "Sign-ins refused unread because their address failed too often",
      registers,
    }),
    storeSeconds: new Histogram({
      name: "pichat_store_operation_duration_seconds",
      help: "Store operations by name and outcome",
      labelNames: ["op", "outcome"],
      buckets: fast,
      registers,
    }),
  };
}
export type Metrics = ReturnType<typeof createMetrics>;

/** The same store, timing every operation. */
export function instrumentStore(store: Store, m: Metrics): Store {
  const timed = {} as Record<string, unknown>;
  for (const [key, value] of Object.entries(store)) {
    if (typeof value !== "function" || key === "close") {
      timed[key] = value;
      continue;
    }
    timed[key] = async (...args: unknown[]) => {
      const end = m.storeSeconds.startTimer({ op: key });
      try {
        const result = await (value as (...a: unknown[]) => Promise<unknown>).apply(store, args);
        end({ outcome: "ok" });
        return result;
      } catch (e) {
        end({ outcome: "error" });
        throw e;
      }
    };
  }
  return timed as Store;
}

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
