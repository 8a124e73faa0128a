import { ConfigError, loadConfig, mcpSecrets, SECRET_VARS, type Config } from "./config";
import { createLogger } from "./log";
import { modelFromConfig } from "./model";
import { startDeviceBridge } from "./devices/bridge";
import { deviceBridgeOptions } from "./devices/options";
import { startServer } from "./server";
import { storeFromConfig } from "./store";

// Start-up only: read config, build dependencies, listen, and stop cleanly on a signal.

let config: Config;
try {
  config = loadConfig();
} catch (e) {
  if (e instanceof ConfigError) {
    console.error(`pichat: configuration error: ${e.message}`);
    process.exit(1);
  }
  throw e;
}

const log = createLogger({
  level: config.LOG_LEVEL,
  json: config.ENVIRONMENT === "production",
  secrets: [...SECRET_VARS.map((k) => config[k]), ...mcpSecrets(config.MCP_SERVERS)],
});

process.on("unhandledRejection", (reason) => log.error("unhandled rejection", { error: reason }));
process.on("uncaughtException", (error) => log.error("uncaught exception", { error }));

// A server that cannot start must say so with a failing exit code (a container restarts on it).
async function startUp() {
  const store = await storeFromConfig(config, undefined, (m) => log.warn(m));
  const model = await modelFromConfig(config);
  const bridgeOptions = config.IOT_HUB_ENABLE ? await deviceBridgeOptions(config) : undefined;
  const running = startServer({
    config,
    store,
    model,
    log,
    startDevices: config.IOT_HUB_ENABLE ? (parts) => startDeviceBridge(parts, bridgeOptions!) : undefined,
  });
  return { store, model, running };
}
let started: Awaited<ReturnType<typeof startUp>>;
try {
  started = await startUp();
} catch (error) {
  // The stack (source-mapped from a bundle) is what an operator needs here.
  log.error("could not start", { error, stack: error instanceof Error ? error.stack : undefined });
  process.exit(1);
}
const { store, model, running } = started;

log.info("PiChat backend listening", {
  url: `${running.url}/`,
  websocket: `${running.url.replace(/^http/, "ws")}/ws`,
  environment: config.ENVIRONMENT,
  store: store.kind,
  model: model.kind,
  model_name: model.name,
  iot_hub: config.IOT_HUB_ENABLE
    ? `on (${config.IOT_HUB_NAME ?? config.IOT_HUB_HOST_NAME ?? "hub"}, consumer group ${config.IOT_HUB_CONSUMER_GROUP})`
    : "off",
  auth: config.API_TOKEN ? "token required" : "open (no API_TOKEN)",
  ...(config.IOT_HUB_ENABLE ? { device_default_owner: config.DEVICE_DEFAULT_OWNER, device_id_from_body: config.DEVICE_ID_FROM_BODY } : {}),
});
if (model.kind === "offline") {
  log.warn("the model is OFFLINE: replies are canned; set AZURE_OPENAI_* or OPENAI_BASE_URL + OPENAI_MODEL for real answers");
}

let stopping = false;
async function shutdown(signal: string) {
  if (stopping) return;
  stopping = true;
  log.info("shutting down", { signal, inflight: running.chat.replies.size });
  await running.stop();
  await store.close();
  log.info("stopped");
  process.exit(0);
}
process.on("SIGTERM", () => void shutdown("SIGTERM"));
process.on("SIGINT", () => void shutdown("SIGINT"));
