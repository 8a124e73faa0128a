import * as v from "valibot";

// One schema over the environment. Every variable here is in .env.example with a comment.
// A wrong value stops start-up with one line naming the variable; secret values are never echoed.

const str = (fallback: string) => v.optional(v.pipe(v.string(), v.trim(), v.minLength(1)), fallback);
const optionalStr = v.optional(v.pipe(v.string(), v.trim(), v.minLength(1)));
const url = v.optional(v.pipe(v.string(), v.trim(), v.url("must be a URL")));
const int = (fallback: number, min: number, max: number) =>
  v.optional(
    v.pipe(
      v.string(),
      v.regex(/^\d+$/, `must be a whole number from ${min} to ${max}`),
      v.transform(Number),
      v.minValue(min, `must be a whole number from ${min} to ${max}`),
      v.maxValue(max, `must be a whole number from ${min} to ${max}`),
    ),
    String(fallback),
  );
const bool = (fallback: boolean) =>
  v.optional(
    v.pipe(
      v.string(),
      v.toLowerCase(),
      v.picklist(["true", "false", "1", "0", "yes", "no"], "must be true or false"),
      v.transform((s) => s === "true" || s === "1" || s === "yes"),
    ),
    String(fallback),
  );
const list = v.optional(
  v.pipe(
    v.string(),
    v.transform((s) =>
      s
        .split(",")
        .map((x) => x.trim())
        .filter(Boolean),
    ),
  ),
  "",
);

export const SECRET_VARS = [
  "API_TOKEN",
  "METRICS_TOKEN",
  "COSMOS_KEY",
  "AZURE_OPENAI_KEY",
  "OPENAI_API_KEY",
  "EVENT_HUB_COMPATIBLE_CONN_STR",
  "IOT_HUB_CONNECTION_STRING",
  "REDIS_URL",
] as const;
/** Values never echoed in a config error (secrets, and MCP_SERVERS whose headers may hold tokens). */
const NOT_ECHOED: readonly string[] = [...SECRET_VARS, "MCP_SERVERS"];

// MCP_SERVERS: a JSON object of server names to a URL, or to { url, headers } (a bearer token...).
const McpServerName = v.pipe(v.string(), v.regex(/^[a-z0-9][a-z0-9-]{0,23}$/, "server names are 1-24 lowercase letters, digits or dashes"));
const McpUrl = v.pipe(v.string(), v.url("each server needs an http(s) URL"), v.regex(/^https?:\/\//i, "each server needs an http(s) URL"));
const McpServersSchema = v.record(
  McpServerName,
  v.union(
    [McpUrl, v.object({ url: McpUrl, headers: v.optional(v.record(v.string(), v.string())) })],
    "each server is a URL or { url, headers }",
  ),
);
/** Header values of MCP servers: redacted from logs like the secret variables. */
export const mcpSecrets = (servers: readonly McpServerConfig[]) => servers.flatMap((s) => Object.values(s.headers));
export type McpServerConfig = { name: string; url: string; headers: Record<string, string> };
const mcpServers = v.optional(
  v.pipe(
    v.string(),
    v.trim(),
    v.rawTransform(({ dataset, addIssue, NEVER }) => {
      if (dataset.value === "") return {};
      try {
        return JSON.parse(dataset.value) as unknown;
      } catch {
        addIssue({ message: 'must be a JSON object such as {"home":"https://mcp.example/mcp"}' });
        return NEVER;
      }
    }),
    McpServersSchema,
    v.transform((o): McpServerConfig[] =>
      Object.entries(o).map(([name, s]) =>
        typeof s === "string" ? { name, url: s, headers: {} } : { name, url: s.url, headers: s.headers ?? {} },
      ),
    ),
  ),
  "{}",
);

const EnvSchema = v.object({
  ENVIRONMENT: v.optional(v.picklist(["development", "production", "test"], "must be development, production or test"), "development"),
  SERVER_PORT: int(8080, 0, 65535),
  HOST: str("0.0.0.0"),
  LOG_LEVEL: v.optional(v.picklist(["debug", "info", "warn", "error"], "must be debug, info, warn or error"), "info"),
  API_TOKEN: optionalStr,
  ALLOWED_ORIGINS: list,
  METRICS_TOKEN: optionalStr,
  // Sign-in with OpenID Connect access tokens (src/auth/jwt.ts): Entra ID by tenant, or any issuer by JWKS URL.
  AUTH_ENTRA_TENANT_ID: v.optional(
    v.pipe(
      v.string(),
      v.trim(),
      v.regex(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i, "must be the tenant's id (a GUID), not its domain name"),
    ),
  ),
  AUTH_JWKS_URL: url,
  AUTH_ISSUER: optionalStr,
  AUTH_AUDIENCE: list,
  AUTH_CLOCK_SKEW_S: int(60, 0, 600),
  AUTH_JWKS_COOLDOWN_S: int(30, 1, 3_600),
  AUTH_RECHECK_MS: int(2_000, 100, 600_000),

  SQLITE_PATH: str("./data/pichat.db"),
  COSMOS_ENDPOINT: url,
  COSMOS_KEY: optionalStr,
  COSMOS_DATABASE: str("pichat"),
  COSMOS_CONTAINER_CHATS: str("chats"),
  COSMOS_CONTAINER_MESSAGES: str("messages"),
  COSMOS_CONTAINER_USERS: str("users"),
  COSMOS_CONTAINER_SETTINGS: str("settings"),
  COSMOS_CONTAINER_PROCESSED_MESSAGES: str("processed_messages"),
  COSMOS_CONTAINER_CHECKPOINTS: str("checkpoints"),
  COSMOS_CONTAINER_USAGE: str("usage"),
  COSMOS_ALLOW_SELF_SIGNED_CERT: bool(false),
  // SEARCH on Cosmos: the account's full-text search ("on"), a parameterised scan ("off"), or whichever the account answers ("auto").
  COSMOS_FULL_TEXT_SEARCH: v.optional(v.picklist(["auto", "on", "off"], "must be auto, on or off"), "auto"),

  REDIS_URL: v.optional(
    v.pipe(
      v.string(),
      v.trim(),
      v.regex(
        /^rediss?:\/\/[^\s,]+(,\s*rediss?:\/\/[^\s,]+)*$/,
        "must be a redis:// or rediss:// URL (a cluster may list several, comma-separated)",
      ),
    ),
  ),
  REDIS_CLUSTER: bool(false),
  REPLICA_ID: v.optional(
    v.pipe(v.string(), v.trim(), v.regex(/^[\w.-]{1,64}$/, "must be 1 to 64 letters, digits, dots, dashes or underscores")),
  ),
  MODEL_CALLS_PER_MINUTE: int(0, 0, 1_000_000),
  // Replies one user may have generating at once, across replicas (0: no per-user share).
  MAX_GENERATIONS_PER_USER: int(0, 0, 100_000),
  // Tokens (prompt + completion) one user may use per UTC day; empty or "none": no budget. `bun run users limit` overrides it per user.
  USER_TOKENS_PER_DAY: v.optional(
    v.pipe(
      v.string(),
      v.trim(),
      v.regex(/^(none|\d{1,12})$/i, "must be a whole number of tokens or none"),
      v.transform((s) => (s.toLowerCase() === "none" ? null : Number(s))),
    ),
    "none",
  ),
  // Model names a user may pick in UPDATE_SETTINGS, comma-separated; empty: only the configured model.
  MODEL_ALLOWED: list,
  // Record every model call's tokens (GET_USAGE, `bun run users usage`, budgets need it).
  USAGE_RECORDS: bool(true),

  // Tools in replies (src/tools/, docs/tools.md).
  TOOLS_ENABLED: bool(true),
  TOOL_TIMEOUT_MS: int(15_000, 10, 600_000),
  TOOL_MAX_ROUNDS: int(5, 0, 50),
  TOOL_RESULT_MAX_CHARS: int(20_000, 100, 10_000_000),
  MCP_SERVERS: mcpServers,

  AZURE_OPENAI_ENDPOINT: url,
  AZURE_OPENAI_KEY: optionalStr,
  AZURE_OPENAI_API_VERSION: str("2024-10-21"),
  AZURE_OPENAI_DEPLOYMENT_NAME: optionalStr,
  OPENAI_BASE_URL: url,
  OPENAI_API_KEY: optionalStr,
  OPENAI_MODEL: optionalStr,
  SYSTEM_PROMPT: str("You are PiChat, a helpful voice and chat assistant. Answer clearly and concisely."),
  MODEL_CONTEXT_TOKENS: int(128_000, 64, 100_000_000),
  MODEL_REPLY_RESERVE_TOKENS: int(4_096, 0, 10_000_000),
  MODEL_TIMEOUT_MS: int(60_000, 100, 600_000),
  OFFLINE_MODEL_DELAY_MS: int(15, 0, 5_000),
  CHAT_TITLES: bool(true),
  // Sharing (src/chat/shares.ts): whether an owner may make a link readable without signing in.
  ALLOW_PUBLIC_SHARES: bool(false),
  // Temporary chats (src/chat/temporary.ts): the longest one lives, in seconds.
  TEMPORARY_CHAT_TTL_S: int(3_600, 2, 7 * 86_400),

  IOT_HUB_ENABLE: bool(false),
  IOT_HUB_NAME: optionalStr,
  IOT_HUB_HOST_NAME: optionalStr,
  IOT_HUB_CONSUMER_GROUP: str("$Default"),
  IOT_HUB_LOAD_BALANCING: v.optional(v.picklist(["balanced", "greedy"], "must be balanced or greedy"), "balanced"),
  IOT_HUB_LOAD_BALANCING_INTERVAL_MS: int(5_000, 50, 600_000),
  IOT_HUB_PARTITION_EXPIRY_MS: int(20_000, 200, 3_600_000),
  EVENT_HUB_COMPATIBLE_CONN_STR: optionalStr,
  EVENT_HUB_FULLY_QUALIFIED_NAMESPACE: optionalStr,
  EVENT_HUB_NAME: optionalStr,
  IOT_HUB_CONNECTION_STRING: optionalStr,
  DEVICE_REPLY_MAX_AGE_S: int(30, 1, 86_400),
  PROCESSED_MESSAGE_TTL_DAYS: int(7, 1, 365),
  DEVICE_CLAIM_LEASE_S: int(30, 1, 3_600),
  // IoT Hub's C2D send budget for the whole hub (one S1 unit: 100/min), shared by replicas through Redis.
  IOT_HUB_C2D_PER_MINUTE: int(100, 1, 10_000_000),
  // A one-message device (the original Pi client waits 30 s) hears what is ready by then, and that the rest is in the app.
  DEVICE_REPLY_DEADLINE_S: int(25, 1, 3_600),
  DEVICE_SYSTEM_PROMPT: str(
    "You are PiChat, a voice assistant heard through a small speaker. Answer in a few short spoken sentences. " +
      "Use plain words only: no Markdown, no lists, no headings, no tables, no code blocks, no emoji.",
  ),
  // Unassigned devices' chats: "default" (the API_TOKEN user), "none" (stored, not answered) or a user's name.
  // Production with IoT Hub on needs it set explicitly (problems() below): "default" answers any device on the hub at the operator's cost.
  DEVICE_DEFAULT_OWNER: v.optional(
    v.pipe(v.string(), v.trim(), v.regex(/^[\w.@-]{1,64}$/, "must be default, none or a user's name")),
    "default",
  ),
  // Telemetry without IoT Hub's iothub-connection-device-id property is refused unless this allows the body's device_id.
  DEVICE_ID_FROM_BODY: bool(false),

  // 100,000 characters of any script fit one frame: 4 UTF-8 bytes each at most, plus the JSON around them.
  MAX_FRAME_BYTES: int(524_288, 1_024, 16_777_216),
  MAX_MESSAGE_CHARS: int(100_000, 1, 1_000_000),
  HISTORY_MAX_MESSAGES: int(500, 1, 10_000),
  HISTORY_CACHE_MB: int(64, 0, 100_000),
  RATE_LIMIT_MESSAGES_PER_MINUTE: int(40, 1, 100_000),
  RATE_LIMIT_FRAMES_PER_SECOND: int(50, 1, 100_000),
  MAX_GENERATIONS_PER_CONNECTION: int(2, 1, 1_000),
  MAX_GENERATIONS: int(64, 1, 100_000),
  CHAT_QUEUE_LIMIT: int(10, 0, 1_000),
  REPLY_CHECKPOINT_MS: int(1_000, 50, 60_000),
  REPLY_LEASE_MS: int(10_000, 500, 300_000),
  SEND_BUFFER_LIMIT_BYTES: int(1_048_576, 16_384, 1_073_741_824),
  // One socket's frames waiting to be handled (a slow store): past either, ERROR RATE_LIMITED and dropped.
  INBOUND_QUEUE_MAX_FRAMES: int(128, 1, 100_000),
  INBOUND_QUEUE_MAX_BYTES: int(1_048_576, 1_024, 1_073_741_824),
  // Unset: derived from the process's open-file limit (src/http/caps.ts).
  MAX_CONNECTIONS: v.optional(
    v.pipe(
      v.string(),
      v.regex(/^\d+$/, "must be a whole number from 1 to 10000000"),
      v.transform(Number),
      v.minValue(1, "must be a whole number from 1 to 10000000"),
      v.maxValue(10_000_000, "must be a whole number from 1 to 10000000"),
    ),
  ),
  MAX_CONNECTIONS_PER_ADDRESS: int(256, 0, 10_000_000),
  // Failed sign-ins one address may make per minute (a burst of as many); past it, 429 without a store read.
  SIGN_IN_FAILURES_PER_MINUTE: int(20, 1, 100_000),
  // Exports and imports one user may start per minute (one at a time whatever this says).
  TRANSFERS_PER_MINUTE: int(10, 1, 100_000),
  HISTORY_PAGE_MAX_BYTES: int(262_144, 1_024, 1_073_741_824),
  WS_IDLE_TIMEOUT_S: int(120, 0, 960),
  SHUTDOWN_TIMEOUT_MS: int(10_000, 0, 600_000),
});

export type Config = Readonly<v.InferOutput<typeof EnvSchema>>;

export class ConfigError extends Error {
  override name = "ConfigError";
}

// Values copied from .env.example or left as an obvious stand-in must not guard a server.
const PLACEHOLDER_TOKEN = /change[-_ ]?me|placeholder|your[-_]|example|^x+$|^secret$|^token$/i;

export const isPlaceholderToken = (t: string) => t.length < 16 || PLACEHOLDER_TOKEN.test(t);

// A token set but too weak is refused in every environment: someone who set it believes they are
// protected. Open mode is only ever the variable's absence.
const TOKEN_RULE = "must be at least 16 characters and not a placeholder; generate one with `openssl rand -hex 32`";

/** Cross-variable rules: returns the first problem as "VAR: reason". `given` is what the environment set (before defaults). */
function problems(c: Config, given: Record<string, string | undefined>): string | undefined {
  if (c.API_TOKEN && isPlaceholderToken(c.API_TOKEN))
    return `API_TOKEN: ${TOKEN_RULE}, or leave it unset for an open server (development only)`;
  if (c.METRICS_TOKEN && isPlaceholderToken(c.METRICS_TOKEN)) return `METRICS_TOKEN: ${TOKEN_RULE}`;
  // A missing key is not an error: Cosmos DB, Azure OpenAI and the hub then use Azure identity.
  if (c.AZURE_OPENAI_ENDPOINT && !c.AZURE_OPENAI_DEPLOYMENT_NAME) {
    return "AZURE_OPENAI_DEPLOYMENT_NAME: must be set when AZURE_OPENAI_ENDPOINT is set";
  }
  if (c.OPENAI_BASE_URL && !c.OPENAI_MODEL) return "OPENAI_MODEL: must be set when OPENAI_BASE_URL is set";
  if (c.MODEL_REPLY_RESERVE_TOKENS >= c.MODEL_CONTEXT_TOKENS) {
    return `MODEL_REPLY_RESERVE_TOKENS: must be less than MODEL_CONTEXT_TOKENS (${c.MODEL_CONTEXT_TOKENS}), or nothing is left for the prompt`;
  }
  if (c.IOT_HUB_ENABLE) {
    if (!c.EVENT_HUB_COMPATIBLE_CONN_STR && !(c.EVENT_HUB_FULLY_QUALIFIED_NAMESPACE && c.EVENT_HUB_NAME)) {
      return "EVENT_HUB_COMPATIBLE_CONN_STR: must be set when IOT_HUB_ENABLE=true (or, keyless, EVENT_HUB_FULLY_QUALIFIED_NAMESPACE and EVENT_HUB_NAME)";
    }
    if (!c.IOT_HUB_CONNECTION_STRING && !c.IOT_HUB_HOST_NAME) {
      return "IOT_HUB_CONNECTION_STRING: must be set when IOT_HUB_ENABLE=true (or, keyless, IOT_HUB_HOST_NAME)";
    }
  }
  if (c.REDIS_URL && !c.COSMOS_ENDPOINT) {
    return "REDIS_URL: several replicas need the shared Cosmos DB store: set COSMOS_ENDPOINT too (the embedded SQLite file is one replica's)";
  }
  if (c.REDIS_CLUSTER && !c.REDIS_URL) return "REDIS_CLUSTER: needs REDIS_URL (any node of the cluster)";
  const jwt = c.AUTH_ENTRA_TENANT_ID || c.AUTH_JWKS_URL;
  if (c.AUTH_ENTRA_TENANT_ID && c.AUTH_JWKS_URL)
    return "AUTH_JWKS_URL: set either AUTH_ENTRA_TENANT_ID (Entra ID) or AUTH_JWKS_URL, not both";
  if (c.AUTH_JWKS_URL && !c.AUTH_ISSUER) return "AUTH_ISSUER: must be set when AUTH_JWKS_URL is set (the iss every token must carry)";
  if (c.AUTH_ISSUER && !c.AUTH_JWKS_URL) return "AUTH_ISSUER: needs AUTH_JWKS_URL (with AUTH_ENTRA_TENANT_ID the issuer is the tenant's)";
  if (jwt && c.AUTH_AUDIENCE.length === 0)
    return "AUTH_AUDIENCE: must be set when AUTH_ENTRA_TENANT_ID or AUTH_JWKS_URL is set (the aud every token must carry)";
  if (!jwt && c.AUTH_AUDIENCE.length > 0) return "AUTH_AUDIENCE: needs AUTH_ENTRA_TENANT_ID or AUTH_JWKS_URL";
  if (c.ENVIRONMENT === "production") {
    // With sign-in by JWT the legacy token is optional (a weak one was refused above, in any environment).
    if (!c.API_TOKEN && !jwt) {
      return "API_TOKEN: production needs a real token of at least 16 characters (not the .env.example placeholder); generate one with `openssl rand -hex 32`";
    }
    if (!c.API_TOKEN && !c.METRICS_TOKEN) return "METRICS_TOKEN: production without API_TOKEN needs it, or /metrics would be open";
    if (c.AUTH_JWKS_URL && !c.AUTH_JWKS_URL.startsWith("https://")) return "AUTH_JWKS_URL: production needs an https:// URL";
    if (c.IOT_HUB_ENABLE && given.DEVICE_DEFAULT_OWNER === undefined) {
      return "DEVICE_DEFAULT_OWNER: production with IOT_HUB_ENABLE=true needs it set explicitly: none (unassigned devices are not answered), a user's name, or default (the API_TOKEN user answers every device on the hub)";
    }
  }
  return undefined;
}

/** Reads and validates the environment; throws ConfigError with one line naming the variable. */
export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  // An empty assignment in .env (`COSMOS_ENDPOINT=`) means "not set".
  const input = Object.fromEntries(Object.entries(env).filter(([, val]) => val !== undefined && val.trim() !== ""));
  const result = v.safeParse(EnvSchema, input);
  if (!result.success) {
    const issue = result.issues[0];
    const key = String(issue.path?.[0]?.key ?? "environment");
    const shown = NOT_ECHOED.includes(key) ? "" : ` (got ${JSON.stringify(input[key])})`;
    throw new ConfigError(`${key}: ${issue.message}${shown}`);
  }
  const problem = problems(result.output, input);
  if (problem) throw new ConfigError(problem);
  return Object.freeze(result.output);
}
