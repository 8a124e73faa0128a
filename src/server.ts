import { createApp } from "./app";
import { createAuthenticator } from "./auth/authenticate";
import { createJwtVerifier, jwtSettings } from "./auth/jwt";
import { watchRevocations } from "./auth/revocation";
import { authModes } from "./azure-auth";
import type { Config } from "./config";
import { localBus, type Bus } from "./chat/events";
import { describeFailure } from "./chat/errors";
import { chatOptionsOf } from "./chat/context";
import { createChatService, type ChatService } from "./chat/service";
import { createUsage } from "./chat/usage";
import { localReservations } from "./chat/reservations";
import { localUserGenerations } from "./chat/user-generations";
import { jsonExport, markdownExport } from "./chat/transfer-format";
import { warmUp } from "./chat/warm-up";
import { warmOnce, warmThroughSocket } from "./warm-up";
import { sweepEvery } from "./chat/lease";
import type { DeviceBridge } from "./devices/bridge";
import { signInThrottle, transferGate } from "./http/throttle";
import type { HubBudget } from "./devices/budget";
import type { Logger } from "./log";
import type { Model } from "./model/model";
import { createMetrics, instrumentStore, observedModel, type Metrics } from "./metrics";
import type { Store } from "./store/store";
import { startSharedMode } from "./redis";
import { showEventsOnSockets } from "./ws/fanout";
import { localUserSends, socketLimitsOf } from "./ws/limits";
import { newConnData, socketHandlers } from "./ws/socket";
import { defaultMaxConnections, openFileLimit } from "./http/caps";
import { builtinTools } from "./tools/builtin";
import { connectMcpServers } from "./tools/mcp";
import { createToolbox } from "./tools/toolbox";
import pkg from "../package.json";

/** The hub-wide C2D bucket's key in the shared user-sends buckets: user ids never start with "~". */
const C2D_BUDGET_KEY = "~iothub-c2d";

export type ServerParts = {
  config: Config;
  store: Store;
  model: Model;
  log: Logger;
  bus?: Bus;
  /** Starts the IoT Hub bridge on the chat service; without it /health says "disabled". */
  startDevices?: (parts: { chat: ChatService; store: Store; log: Logger; metrics: Metrics; hubBudget?: HubBudget }) => DeviceBridge;
  /** false: no warm-up (the throwaway server that src/warm-up.ts starts is itself the warm-up). */
  warm?: false;
};

export const CLOSE_GOING_AWAY = 1001;

// The only module that knows every layer: it builds the chat service once and hands it to the
// socket and device adapters.

/** Builds the chat service, the app and the socket handlers, and listens. */
export function startServer(parts: ServerParts) {
  const { config: c, log } = parts;
  const metrics = createMetrics({ processMetrics: parts.warm !== false });
  const store = instrumentStore(parts.store, metrics);
  const model = observedModel(parts.model, metrics);
  // This process, as the owner of the leases it takes; a restarted process is a new owner.
  const instanceId = crypto.randomUUID();
  const replicaId = c.REPLICA_ID ?? instanceId;
  // Several replicas: live traffic, lanes and service-wide limits through Redis.
  const shared = c.REDIS_URL
    ? startSharedMode(
        {
          url: c.REDIS_URL,
          cluster: c.REDIS_CLUSTER,
          replicaId,
          leaseMs: c.REPLY_LEASE_MS,
          queueLimit: c.CHAT_QUEUE_LIMIT,
          maxActive: c.MAX_GENERATIONS,
          modelCallsPerMinute: c.MODEL_CALLS_PER_MINUTE,
        },
        log,
        metrics,
      )
    : undefined;
  const bus = parts.bus ?? shared?.bus ?? localBus((e) => log.error("event listener failed", { error: e }));
  // Usage records and budgets (src/chat/usage.ts): every model call tagged with its user.
  const usage = c.USAGE_RECORDS
    ? createUsage({
        store,
        log,
        options: { enabled: true, tokensPerDay: c.USER_TOKENS_PER_DAY, replyReserveTokens: c.MODEL_REPLY_RESERVE_TOKENS },
        // Admitted and unrecorded tokens: seen by every replica with Redis, by this one alone otherwise.
        reservations: shared ? shared.reservations(localReservations()) : localReservations(),
        onRecorded: (r) => {
          metrics.usageTokens.inc({ kind: r.kind, model: r.model, part: "prompt" }, r.prompt_tokens);
          metrics.usageTokens.inc({ kind: r.kind, model: r.model, part: "completion" }, r.completion_tokens);
        },
        onRefused: () => metrics.budgetRefusals.inc(),
      })
    : undefined;
  // Exports and imports: one at a time per user and a rate; across replicas too when Redis is on.
  const ownTransfers = transferGate({ concurrent: 1, perMinute: c.TRANSFERS_PER_MINUTE });
  // A user's sends per minute, across their sockets; across replicas too when Redis is on.
  const ownSends = localUserSends(c.RATE_LIMIT_MESSAGES_PER_MINUTE);
  const userSends = shared ? shared.userSends(c.RATE_LIMIT_MESSAGES_PER_MINUTE, ownSends) : ownSends;
  // Tools in replies: the built-ins, and the operator's MCP servers, connected in the background.
  const mcp = c.TOOLS_ENABLED && c.MCP_SERVERS.length > 0 ? connectMcpServers({ servers: c.MCP_SERVERS, log }) : undefined;
  const tools = c.TOOLS_ENABLED
    ? {
        toolbox: createToolbox({
          builtins: builtinTools(),
          mcp,
          log,
          timeoutMs: c.TOOL_TIMEOUT_MS,
          resultMaxChars: c.TOOL_RESULT_MAX_CHARS,
        }),
        maxRounds: c.TOOL_MAX_ROUNDS,
        // Every model request after a tool round is one more of the user's sends.
        userRound: async (owner: string) => (await userSends(owner)).ok,
      }
    : undefined;
  // MAX_GENERATIONS_PER_USER: counted across replicas with Redis, in this process otherwise (or while Redis is down).
  const ownGenerations = c.MAX_GENERATIONS_PER_USER > 0 ? localUserGenerations(c.MAX_GENERATIONS_PER_USER) : undefined;
  const userGenerations = ownGenerations && (shared ? shared.userGenerations(c.MAX_GENERATIONS_PER_USER, ownGenerations) : ownGenerations);
  const chatOptions = chatOptionsOf(c, { instanceId, shared: !!shared });

  const chat = createChatService({
    tools,
    store,
    model,
    usage,
    userGenerations,
    onFeedback: (f) => metrics.feedback.inc({ model: f.model, rating: f.rating }),
    bus,
    log,
    sharedLanes: shared?.sharedLanes,
    backfill: shared?.backfill,
    options: chatOptions,
  });
  const limits = socketLimitsOf(c);

  // What the first send would load on first use, loaded now: until it is, /health/ready says not ready.
  let warm = false;
  const warmStarted = performance.now();
  const warmed = (
    parts.warm === false
      ? Promise.resolve()
      : warmOnce(() =>
          warmUp(model, c.AZURE_OPENAI_ENDPOINT ?? c.OPENAI_BASE_URL).then(() => warmThroughSocket(startServer, c, model.name)),
        )
  )
    .then(() => log.info("warmed up", { ms: Math.round(performance.now() - warmStarted) }))
    .catch((e) => log.warn("could not warm up; the first send loads what is missing", { error: e }))
    .finally(() => (warm = true));
  const { websocket, conns, load } = socketHandlers(chat, limits, { log, metrics, userSends });
  const unsubscribe = showEventsOnSockets(bus, conns, chat.isTemporary);
  // Temporary chats live while their owner has a socket somewhere (src/chat/temporary.ts).
  chat.attachPresence(() => conns.all().map((ws) => ws.data.user.userId));
  // IoT Hub's C2D budget is the hub's, not a replica's: one bucket in Redis when replicas share one
  // (the user-sends bucket under a key no user id can take), else this process's own.
  const sharedC2D = shared?.userSends(c.IOT_HUB_C2D_PER_MINUTE, localUserSends(c.IOT_HUB_C2D_PER_MINUTE));
  const hubBudget: HubBudget | undefined = sharedC2D && (() => sharedC2D(C2D_BUDGET_KEY));
  const devices = parts.startDevices?.({ chat, store, log, metrics, hubBudget });
  if (devices) chat.devices.connect(devices.say);
  // Replies left "streaming" by a process that died, and (several replicas) questions waiting in
  // a lane nobody holds: at start-up, then every half lease.
  const sweep = () => {
    void chat.sweepOrphans().catch((e) => log.warn("could not sweep orphaned replies", { error: e }));
    void shared?.sweep().catch((e) => log.debug("could not sweep shared lanes", { error: e }));
  };
  sweep();
  const sweeper = setInterval(sweep, sweepEvery(c.REPLY_LEASE_MS));
  // Handled device message ids past their TTL: maintenance, hourly (on Cosmos a cross-partition query).
  const purger = setInterval(
    () => void chat.claims.purge().catch((e) => log.warn("could not purge handled device messages", { error: e })),
    3_600_000,
  );
  let accepting = true;
  // Sign-in: the legacy token, personal tokens (in the store), and JWTs when an issuer is configured.
  const jwt = jwtSettings(c);
  const auth = createAuthenticator({
    apiToken: c.API_TOKEN,
    jwt: jwt && createJwtVerifier(jwt),
    store,
    production: c.ENVIRONMENT === "production",
    log,
  });
  // Revoked personal tokens and expired JWTs: their open sockets are closed.
  const stopRevocations = watchRevocations({ everyMs: c.AUTH_RECHECK_MS, sockets: () => conns.all(), stillValid: auth.stillValid, log });

  const app = createApp({
    health: {
      store,
      model,
      iotHub: devices ? devices.status : () => ({ status: "disabled" }),
      auth: authModes(c),
      version: pkg.version,
      startedAt: Date.now(),
      replica: replicaId,
      redis: shared?.health,
      mcp: mcp && (() => mcp.status()),
    },
    auth,
    metrics: { registry: metrics.registry, token: c.METRICS_TOKEN ?? c.API_TOKEN },
    devicesEnabled: !!devices,
    chats: {
      async exportChat(owner, chatId, format) {
        const exported = await chat.exportChat(owner, chatId);
        return { name: exported.chat.name, pieces: (format === "md" ? markdownExport : jsonExport)(exported) };
      },
      importChat: chat.importChat,
      describeFailure,
    },
    shares: { view: chat.viewShare, describeFailure },
    throttle: {
      signIns: signInThrottle({
        burst: c.SIGN_IN_FAILURES_PER_MINUTE,
        everyS: 60 / c.SIGN_IN_FAILURES_PER_MINUTE,
        onThrottled: () => metrics.throttledSignIns.inc(),
        log: (w) => log.warn("failed sign-ins throttled (one line a minute)", { address: w.address, previousMinute: w.previous }),
      }),
      transfers: shared ? shared.transfers(c.TRANSFERS_PER_MINUTE, ownTransfers) : ownTransfers,
    },
    log,
    allowedOrigins: c.ALLOWED_ORIGINS,
    production: c.ENVIRONMENT === "production",
    newConnection: (address, user) => newConnData(limits, address, user),
    connections: {
      ...load,
      maxConnections: c.MAX_CONNECTIONS ?? defaultMaxConnections(openFileLimit()),
      maxPerAddress: c.MAX_CONNECTIONS_PER_ADDRESS,
    },
    accepting: () => accepting,
    warmedUp: () => warm,
  });

  const server = Bun.serve({
    port: c.SERVER_PORT,
    hostname: c.HOST,
    fetch: (req, srv) => app.fetch(req, { server: srv }),
    websocket,
  });

  /**
   * Graceful stop: refuse new sockets, give replies in flight until the deadline to finish,
   * then store what they have as interrupted; only then close sockets (1001) and the listener.
   */
  async function stop(deadlineMs = c.SHUTDOWN_TIMEOUT_MS) {
    accepting = false;
    stopRevocations();
    clearInterval(sweeper);
    clearInterval(purger);
    // No new device work; the consumer has checkpointed every batch it finished.
    await devices?.stop().catch((e) => log.error("device bridge did not stop cleanly", { error: e }));
    chat.replies.close();
    const idle = chat.replies.idle();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<"late">((resolve) => (timer = setTimeout(() => resolve("late"), deadlineMs)));
    if ((await Promise.race([idle, late])) === "late") {
      chat.replies.interruptAll({ stop: "interrupted" });
      await idle;
    }
    clearTimeout(timer);
    // The usage records of the replies that just ended, while the store is still open (bounded by the deadline).
    await Promise.race([usage?.drained(), Bun.sleep(Math.min(deadlineMs, 2_000))]);
    for (const ws of conns.all()) ws.close(CLOSE_GOING_AWAY, "server shutting down");
    unsubscribe();
    chat.close();
    await server.stop(true);
    await shared?.close();
    await mcp?.close();
  }

  return {
    server,
    devices,
    metrics,
    chat,
    usage,
    conns,
    stop,
    /** Settles once what the first send would load is loaded (the server is ready from then on). */
    warmed,
    replicaId,
    url: `http://${c.HOST === "0.0.0.0" ? "127.0.0.1" : c.HOST}:${server.port}`,
  };
}
export type RunningServer = ReturnType<typeof startServer>;
