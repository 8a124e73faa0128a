import type { Server } from "bun";
import { Hono } from "hono";
import type { Registry } from "prom-client";
import { chosenProtocol, originAllowed, presentedToken, tokensMatch } from "./http/auth";
import { connectionRefusal, type ConnectionCaps, type ConnectionLoad } from "./http/caps";
import { healthReport, type HealthSources } from "./http/health";
import { registerPage } from "./http/page";
import type { ConnData } from "./ws/connections";

export type AppOptions = {
  health: HealthSources;
  apiToken?: string;
  allowedOrigins: readonly string[];
  production: boolean;
  /** The data each accepted socket starts with; `address` is the peer's IP. */
  newConnection: (address: string) => ConnData;
  /** Sockets open now, and the caps an upgrade is checked against (src/http/caps.ts). */
  connections: ConnectionLoad & ConnectionCaps;
  /** False once shutdown has begun: no new sockets. */
  accepting: () => boolean;
  /** Prometheus registry for /metrics, and the token guarding it (none: open). */
  metrics: { registry: Registry; token?: string };
  devicesEnabled: boolean;
};

type Env = { Bindings: { server: Server<ConnData> } };

/** HTTP routes only; what happens on a socket lives in src/ws. */
export function createApp(o: AppOptions) {
  const app = new Hono<Env>();
  registerPage(app); // the chat page at /

  app.get("/api", (c) =>
    c.json({
      name: "PiChat backend",
      about: "Real-time AI chat for browsers (WebSocket /ws) and Raspberry Pi voice devices (Azure IoT Hub).",
      websocket: "/ws",
      health: "/health",
      protocol: "docs/protocol.md in the source repository",
      version: o.health.version,
    }),
  );

  app.get("/health", async (c) => {
    const { status, body } = await healthReport(o.health);
    return c.json(body, status);
  });

  // For orchestrators: live = the process answers; ready = it can serve (store reachable, and the
  // device consumer running when enabled). /health stays the human-readable summary.
  app.get("/health/live", (c) => c.json({ status: "ok" }));
  app.get("/health/ready", async (c) => {
    const { body } = await healthReport(o.health);
    const iot = body.services.iot_hub.status;
    const ready = body.services.store.ok && (!o.devicesEnabled || iot === "running");
    return c.json({ ready, store: body.services.store.ok, iot_hub: iot }, ready ? 200 : 503);
  });

  app.get("/metrics", async (c) => {
    if (o.metrics.token && !tokensMatch(presentedToken(c.req.raw).token, o.metrics.token)) {
      return c.json({ error: "a valid token is required", code: "UNAUTHORIZED" }, 401, { "WWW-Authenticate": "Bearer" });
    }
    return c.body(await o.metrics.registry.metrics(), 200, { "Content-Type": o.metrics.registry.contentType });
  });

  app.get("/ws", (c) => {
    if (!o.accepting()) return c.json({ error: "the server is shutting down; reconnect shortly", code: "SHUTTING_DOWN" }, 503, { "Retry-After": "2" });
    // Caps first: the cheapest check, and nothing else is done for a client that would be refused.
    // Counting is exact: Bun runs the socket's open (which counts it) inside upgrade() below, and
    // nothing between here and there awaits. `Connection: close` frees the refused one's descriptor.
    const address = c.env.server.requestIP(c.req.raw)?.address ?? "unknown";
    const refusal = connectionRefusal(o.connections, address, o.connections);
    if (refusal) {
      return c.json({ error: refusal.error, code: refusal.code }, refusal.status, { "Retry-After": String(refusal.retryAfterS), Connection: "close" });
    }
    const { token, protocols } = presentedToken(c.req.raw);
    if (o.apiToken && !tokensMatch(token, o.apiToken)) {
      return c.json({ error: "a valid API token is required", code: "UNAUTHORIZED" }, 401, { "WWW-Authenticate": "Bearer" });
    }
    if (!originAllowed(c.req.raw, { allowed: o.allowedOrigins, production: o.production })) {
      return c.json({ error: "this origin may not open a socket here", code: "ORIGIN_NOT_ALLOWED" }, 403);
    }
    if (c.req.header("upgrade")?.toLowerCase() !== "websocket") {
      return c.json({ error: "expected a WebSocket upgrade", code: "UPGRADE_REQUIRED" }, 426);
    }
    const protocol = chosenProtocol(protocols);
    const upgraded = c.env.server.upgrade(c.req.raw, {
      data: o.newConnection(address),
      headers: protocol ? { "Sec-WebSocket-Protocol": protocol } : undefined,
    });
    return upgraded ? new Response(null) : c.json({ error: "WebSocket upgrade failed", code: "UPGRADE_FAILED" }, 400);
  });

  app.notFound((c) => c.json({ error: "not found", code: "NOT_FOUND" }, 404));
  return app;
}
