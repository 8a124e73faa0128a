import type { Store } from "../store/store";

/** What /health shows of the IoT Hub bridge (src/devices reports a status of this shape). */
export type HubHealth =
  | { status: "disabled" }
  | { status: "connecting" }
  | { status: "running"; partitions: string[]; last_event_at?: string }
  | { status: "error"; reason: string };

export type HealthSources = {
  store: Store;
  model: { kind: string; name: string; health(): { ok: boolean; lastError?: string; lastErrorAt?: string } };
  iotHub: () => HubHealth;
  /** How each Azure dependency signs in: "key", "azure-identity" or "none". */
  auth: { store: string; model: string; iotHub: string };
  version: string;
  startedAt: number;
  /** This replica's id (several replicas share one store). */
  replica: string;
  /** The shared bus (Redis), when several replicas are on. */
  /** `connected`: the bus subscribed once since start-up (a later outage is only "degraded"). */
  redis?: () => Promise<{ ok: boolean; mode: string; connected: boolean; latency_ms?: number }>;
  storeTimeoutMs?: number;
  /** The operator's MCP servers (src/tools/mcp.ts): one not connected leaves its tools out of replies. */
  mcp?: () => { name: string; state: string; tools: number; error?: string }[];
};

/**
 * The /health body and status: 503 when the store cannot be reached, or (several replicas) while the
 * shared bus has not connected once since start-up ("starting"): until then this replica cannot
 * deliver other replicas' events. A later Redis outage is "degraded" (each replica serves its own).
 */
export async function healthReport(s: HealthSources) {
  const [storeOk, redis] = await Promise.all([pingWithin(s.store, s.storeTimeoutMs ?? 3000), s.redis?.()]);
  const model = s.model.health();
  const iot = s.iotHub();
  // Without Redis each replica still serves its own sockets: degraded, not down.
  const mcp = s.mcp?.();
  const mcpDown = mcp?.some((m) => m.state !== "ready") ?? false;
  const degraded = !model.ok || iot.status === "error" || !storeOk || (redis !== undefined && !redis.ok) || mcpDown;
  const starting = redis !== undefined && !redis.connected;
  const body = {
    status: starting ? "starting" : degraded ? "degraded" : "ok",
    services: {
      store: { kind: s.store.kind, ok: storeOk, auth: s.auth.store },
      model: {
        kind: s.model.kind,
        name: s.model.name,
        ok: model.ok,
        auth: s.auth.model,
        ...(model.lastError ? { last_error: model.lastError, last_error_at: model.lastErrorAt } : {}),
      },
      iot_hub: iot.status === "disabled" ? iot : { ...iot, auth: s.auth.iotHub },
      redis: redis ?? { status: "disabled" },
      mcp: mcp ? { ok: !mcpDown, servers: mcp } : { status: "disabled" },
    },
    replica: s.replica,
    version: s.version,
    uptime_s: Math.round((Date.now() - s.startedAt) / 1000),
  };
  return { status: storeOk && !starting ? 200 : 503, body } as const;
}

async function pingWithin(store: Store, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  try {
    return await Promise.race([
      store.ping().then(
        () => true,
        () => false,
      ),
      timeout,
    ]);
  } finally {
    clearTimeout(timer);
  }
}
