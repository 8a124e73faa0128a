import type { Server } from "bun";
import { Hono } from "hono";
import { HTTPException } from "hono/http-exception";
import type { Registry } from "prom-client";
import type { Authenticator } from "./auth/authenticate";
import { chosenProtocol, originAllowed, presentedToken, tokensMatch } from "./http/auth";
import { connectionRefusal, type ConnectionCaps, type ConnectionLoad } from "./http/caps";
import { healthReport, type HealthSources } from "./http/health";
import { registerChatRoutes, type ChatRoutes } from "./http/chats";
import type { Logger } from "./log";
import { registerPage } from "./http/page";
import { registerShareRoutes, type ShareRoutes } from "./http/shares";
import type { SignInThrottle, TransferGate } from "./http/throttle";
import { StoreUnavailableError } from "./store/errors";
import type { ConnData } from "./ws/connections";
import type { Identity } from "./auth/identity";

export type AppOptions = {
  health: HealthSources;
  /** Who a presented token belongs to (src/auth): the legacy API_TOKEN, a personal token, a JWT. */
  auth: Authenticator;
  allowedOrigins: readonly string[];
  production: boolean;
  /** The data each accepted socket starts with; `address` is the peer's IP, `user` who signed in. */
  newConnection: (address: string, user: Identity) => ConnData;
  /** Sockets open now, and the caps an upgrade is checked against (src/http/caps.ts). */
  connections: ConnectionLoad & ConnectionCaps;
  /** False once shutdown has begun: no new sockets. */
  accepting: () => boolean;
  /** False until what the first send would load on first use is loaded (src/chat/warm-up.ts). */
  warmedUp?: () => boolean;
  /** Prometheus registry for /metrics, and the token guarding it (none: open). */
  metrics: { registry: Registry; token?: string };
  devicesEnabled: boolean;
  /** Export and import of chats (src/http/chats.ts), through the chat service. */
  chats: ChatRoutes["chats"];
  /** What /s/<id> shows (src/http/shares.ts), through the chat service. */
  shares: Pick<ShareRoutes, "view" | "describeFailure">;
  /** Failed sign-ins per address, and each user's exports and imports (src/http/throttle.ts). */
  throttle: { signIns: SignInThrottle; transfers: TransferGate };
  log: Logger;
};

type Env = { Bindings: { server: Server<ConnData> } };

const UNAUTHORIZED = { error: "a valid API token is required", code: "UNAUTHORIZED" } as const;
const THROTTLED = { error: "too many failed sign-ins from this address; wait and try again", code: "TOO_MANY_SIGN_INS" } as const;
const STORE_DOWN = { error: "signing in needs the database, which is unavailable; try again shortly", code: "STORE_UNAVAILABLE" } as const;

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

  // For orchestrators: live = the process answers; ready = it can serve (store reachable, the
  // device consumer running when enabled, start-up warm-up done, and with several replicas the
  // shared bus connected once: before that, the events of a socket sent here could not be
  // delivered). /health stays the human-readable summary.
  app.get("/health/live", (c) => c.json({ status: "ok" }));
  app.get("/health/ready", async (c) => {
    const { body } = await healthReport(o.health);
    const iot = body.services.iot_hub.status;
    const warm = o.warmedUp?.() ?? true;
    const redis = body.services.redis;
    const bus = "connected" in redis ? redis.connected : true;
    const ready = body.services.store.ok && (!o.devicesEnabled || iot === "running") && warm && bus;
    return c.json(
      { ready, store: body.services.store.ok, iot_hub: iot, warm, ...("connected" in redis ? { redis: bus } : {}) },
      ready ? 200 : 503,
    );
  });

  app.get("/metrics", async (c) => {
    if (o.metrics.token && !tokensMatch(presentedToken(c.req.raw).token, o.metrics.token)) {
      return c.json({ error: "a valid token is required", code: "UNAUTHORIZED" }, 401, { "WWW-Authenticate": "Bearer" });
    }
    return c.body(await o.metrics.registry.metrics(), 200, { "Content-Type": o.metrics.registry.contentType });
  });

  /** The identity behind the request's token (header, `bearer.<token>` subprotocol or ?token=), or the answer refusing it. */
  const signIn = async (req: Request, address: string): Promise<{ user: Identity } | { refuse: Response }> => {
    const { token } = presentedToken(req);
    // An address past its failed sign-ins is refused before its token is looked up (no store read).
    const wait = o.throttle.signIns.refused(address);
    if (wait !== undefined) return { refuse: Response.json(THROTTLED, { status: 429, headers: { "Retry-After": String(wait) } }) };
    try {
      const user = await o.auth.authenticate(token);
      if (user) return { user };
      o.throttle.signIns.failed(address);
      return { refuse: Response.json(UNAUTHORIZED, { status: 401, headers: { "WWW-Authenticate": "Bearer" } }) };
    } catch (e) {
      // A personal token could not be looked up: not the client's fault, so not a 401.
      if (e instanceof StoreUnavailableError)
        return { refuse: Response.json(STORE_DOWN, { status: 503, headers: { "Retry-After": "2" } }) };
      throw e;
    }
  };

  // Who the token signs in as; the page shows it. Nothing of the token itself (hash, expiry) leaves.
  const addressOf = (c: { env: Env["Bindings"]; req: { raw: Request } }) => c.env.server.requestIP(c.req.raw)?.address ?? "unknown";

  app.get("/api/me", async (c) => {
    const signed = await signIn(c.req.raw, addressOf(c));
    if ("refuse" in signed) return signed.refuse;
    const { userId: id, name, via } = signed.user;
    return c.json({ id, name, via }, 200, { "Cache-Control": "no-store" });
  });

  registerShareRoutes(app, {
    ...o.shares,
    signIn,
    anonymous: () => o.auth.anonymous(),
    addressOf: (c) => addressOf(c as { env: Env["Bindings"]; req: { raw: Request } }),
    log: o.log,
  });

  registerChatRoutes(app, {
    chats: o.chats,
    signIn,
    addressOf: (c) => addressOf(c as { env: Env["Bindings"]; req: { raw: Request } }),
    transfers: o.throttle.transfers,
    allowedOrigins: o.allowedOrigins,
    production: o.production,
    log: o.log,
  });

  app.get("/ws", async (c) => {
    const shuttingDown = () =>
      c.json({ error: "the server is shutting down; reconnect shortly", code: "SHUTTING_DOWN" }, 503, { "Retry-After": "2" });
    if (!o.accepting()) return shuttingDown();
    // Caps first: the cheapest check, and nothing else is done for a client that would be refused.
    // `Connection: close` frees the refused one's descriptor.
    const address = c.env.server.requestIP(c.req.raw)?.address ?? "unknown";
    const capped = () => {
      const refusal = connectionRefusal(o.connections, address, o.connections);
      return (
        refusal &&
        c.json({ error: refusal.error, code: refusal.code }, refusal.status, {
          "Retry-After": String(refusal.retryAfterS),
          Connection: "close",
        })
      );
    };
    const early = capped();
    if (early) return early;
    const { protocols } = presentedToken(c.req.raw);
    // Signing in may wait on the store or the identity provider's keys.
    const signed = await signIn(c.req.raw, address);
    if ("refuse" in signed) return signed.refuse;
    // Counted again after that wait, and exactly: Bun runs the socket's open (which counts it) inside
    // upgrade() below, and nothing from here to there awaits.
    if (!o.accepting()) return shuttingDown();
    const late = capped();
    if (late) return late;
    if (!originAllowed(c.req.raw, { allowed: o.allowedOrigins, production: o.production })) {
      return c.json({ error: "this origin may not open a socket here", code: "ORIGIN_NOT_ALLOWED" }, 403);
    }
    if (c.req.header("upgrade")?.toLowerCase() !== "websocket") {
      return c.json({ error: "expected a WebSocket upgrade", code: "UPGRADE_REQUIRED" }, 426);
    }
    const protocol = chosenProtocol(protocols);
    const upgraded = c.env.server.upgrade(c.req.raw, {
      data: o.newConnection(address, signed.user),
      headers: protocol ? { "Sec-WebSocket-Protocol": protocol } : undefined,
    });
    return upgraded ? new Response(null) : c.json({ error: "WebSocket upgrade failed", code: "UPGRADE_FAILED" }, 400);
  });

  app.notFound((c) => c.json({ error: "not found", code: "NOT_FOUND" }, 404));
  // Hono's default prints an uncaught error with console.error, past the log redactor, and answers with
  // its text. Here: one line through the logger (redacted; the path without its query, which may hold a
  // token), and a body that says nothing of the cause.
  app.onError((err, c) => {
    if (err instanceof HTTPException) return err.getResponse();
    o.log.error("request failed", {
      method: c.req.method,
      path: new URL(c.req.url).pathname,
      error: err,
      stack: err instanceof Error ? err.stack : undefined,
    });
    return c.json({ error: "internal error", code: "INTERNAL_ERROR" }, 500);
  });
  return app;
}
