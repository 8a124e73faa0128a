import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { VENDOR } from "../src/http/page";
import { startIotHubPeer, type IotHubPeer } from "./support/amqp-peer";
import { openCosmosStoreAt, startCosmosServer, type CosmosTestServer } from "./support/cosmos-server";
import { bytesUnder, filesUnder, playDockerfile, type Stage } from "./support/dockerfile";
import { reapOnExit, removeOnExit } from "./support/reaper";
import { startRedis, type RedisServer } from "./support/redis-server";
import { startSseModel, type SseModel } from "./support/sse-model";
import { startRelay } from "./support/tcp-relay";
import { makeLocalhostCert, type LocalhostCert } from "./support/tls-cert";
import { until } from "./support/until";
import { connect } from "./support/ws-client";

// No Docker engine runs here, so this test plays the Dockerfile (support/dockerfile.ts): the build stage
// installs and bundles, and the runtime stage's CMD runs with its ENV, from a directory that holds only what
// that stage copied. The Dockerfile and this test cannot drift apart: the player fails on an instruction it
// does not know. The servers started from the bundle are then checked against the local peers: Cosmos DB,
// an OpenAI-compatible model, the IoT Hub bridge, and keyless Azure OpenAI.

const REPO = join(import.meta.dir, "..");
const MB = 1_000_000;
const LAYER_BUDGET = 30 * MB;
/** Per test: generous, because a loaded CI machine is slow to start processes; each wait inside has its own deadline. */
const TEST_MS = 20_000;
const TOKEN = "f3c9a7d5e2b4c1a8f6e0d9b7c";

// ---------------------------------------------------------------------------------------------------
// A server started from the bundle, as the container would: the runtime stage's CMD and ENV, nothing else.

type Running = ReturnType<typeof runCmd> & { url: string };

const children = new Set<Bun.Subprocess>();

function runCmd(runtime: Stage, env: Record<string, string>, extraArgs: string[] = []) {
  const [bin, ...args] = runtime.cmd!;
  expect(bin).toBe("bun");
  const proc = Bun.spawn([process.execPath, ...extraArgs, ...args], {
    cwd: join(runtime.root, runtime.workdir),
    // Only the image's ENV and ours: nothing from this machine's environment (no AZURE_*, no .env).
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", ...runtime.env, ...env },
    stdout: "pipe",
    stderr: "pipe",
  });
  children.add(proc);
  reapOnExit(proc);
  const lines: string[] = [];
  const waiters = new Set<() => void>();
  let exited = false;
  const pump = async (stream: ReadableStream<Uint8Array>) => {
    const decoder = new TextDecoder();
    let buf = "";
    for await (const chunk of stream) {
      buf += decoder.decode(chunk, { stream: true });
      for (let i = buf.indexOf("\n"); i >= 0; i = buf.indexOf("\n")) {
        lines.push(buf.slice(0, i));
        buf = buf.slice(i + 1);
        for (const w of waiters) w();
      }
    }
    if (buf) lines.push(buf);
  };
  const pumped = Promise.all([pump(proc.stdout), pump(proc.stderr)]);
  void proc.exited.then(async () => {
    await pumped;
    exited = true;
    for (const w of waiters) w();
  });
  /** Resolves with the first truthy value of probe(lines), checked on every new line; fails on exit or at the deadline. */
  const waitFor = <T>(probe: (lines: string[]) => T | undefined | false, what: string, timeoutMs = 15_000) =>
    new Promise<T>((resolve, reject) => {
      const timer = setTimeout(
        () => finish(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; output:\n${lines.join("\n")}`))),
        timeoutMs,
      );
      const finish = (f: () => void) => (clearTimeout(timer), waiters.delete(check), f());
      const check = () => {
        const hit = probe(lines);
        if (hit) return finish(() => resolve(hit));
        if (exited) finish(() => reject(new Error(`the server exited (${proc.exitCode}) before ${what}; output:\n${lines.join("\n")}`)));
      };
      waiters.add(check);
      check();
    });
  const waitForLine = (pred: (line: string) => boolean, what: string, timeoutMs?: number) =>
    waitFor((ls) => ls.find(pred), what, timeoutMs);
  const stop = async () => {
    proc.kill("SIGTERM");
    const code = await Promise.race([proc.exited, Bun.sleep(10_000).then(() => "deadline" as const)]);
    if (code === "deadline") throw new Error(`no exit within 10 s of SIGTERM; output:\n${lines.join("\n")}`);
    await pumped;
    children.delete(proc);
    return code;
  };
  return { proc, lines, waitFor, waitForLine, stop };
}

async function startFromBundle(runtime: Stage, env: Record<string, string>): Promise<Running> {
  const sqlite = join(runtime.root, runtime.env.SQLITE_PATH!); // the image's /data, in the runtime stage's directory
  const run = runCmd(runtime, { HOST: "127.0.0.1", SERVER_PORT: "0", API_TOKEN: TOKEN, SQLITE_PATH: sqlite, ...env });
  const listening = await run.waitForLine((l) => l.includes('"msg":"PiChat backend listening"'), "the server to listen");
  return { ...run, url: JSON.parse(listening).url.replace(/\/$/, "") };
}

const health = async (r: Running) => (await fetch(`${r.url}/health`)).json() as Promise<any>;
const wsUrl = (r: Running) => `${r.url.replace(/^http/, "ws")}/ws?token=${TOKEN}`;

// ---------------------------------------------------------------------------------------------------

const work = mkdtempSync(join(tmpdir(), "pichat-image-"));
removeOnExit(work);
let stages: Stage[];
let runtime: Stage;
let appDir: string;
/** The runtime stage's file system as the Dockerfile left it, before any server ran in it. */
let image: { files: string[]; bytes: number };
let cert: LocalhostCert;
let cosmos: CosmosTestServer;
let peer: IotHubPeer;
let model: SseModel;
let redis: RedisServer;
let identityEndpoint: ReturnType<typeof Bun.serve>;
let relay: ReturnType<typeof startRelay>;
const tokenRequests: { resource: string | null; secret: string | null }[] = [];
const TOKENS = ["Bundled", " and", " still", " streaming", "."];
const COSMOS_DATABASE = `image-${crypto.randomUUID()}`;
/** Cosmos DB, Redis (the replicas' bus), the OpenAI-compatible model, the device bridge; all with keys. */
let full: Running;
/** The image's default SQLite path, and Azure OpenAI signed in through a (local) managed identity. */
let keyless: Running;

beforeAll(async () => {
  [cert, cosmos, model, redis] = await Promise.all([
    makeLocalhostCert(),
    startCosmosServer(),
    startSseModel({ tokens: TOKENS }),
    startRedis(),
  ]);
  peer = await startIotHubPeer({ tls: cert, partitions: 1 });
  relay = startRelay(peer.iotHubPort);
  // App Service's managed identity endpoint (IDENTITY_ENDPOINT + IDENTITY_HEADER), which DefaultAzureCredential uses.
  identityEndpoint = Bun.serve({
    port: 0,
    hostname: "127.0.0.1",
    fetch(req) {
      const u = new URL(req.url);
      tokenRequests.push({ resource: u.searchParams.get("resource"), secret: req.headers.get("x-identity-header") });
      return Response.json({
        access_token: "token-from-managed-identity",
        token_type: "Bearer",
        resource: u.searchParams.get("resource"),
        expires_on: String(Math.floor(Date.now() / 1000) + 3600),
      });
    },
  });

  stages = playDockerfile(REPO, work);
  runtime = stages.at(-1)!;
  appDir = join(runtime.root, runtime.workdir);
  image = { files: filesUnder(runtime.root), bytes: bytesUnder(runtime.root) };

  [full, keyless] = await Promise.all([
    startFromBundle(runtime, {
      COSMOS_ENDPOINT: cosmos.endpoint,
      COSMOS_KEY: cosmos.key,
      COSMOS_DATABASE,
      COSMOS_ALLOW_SELF_SIGNED_CERT: "true",
      REDIS_URL: redis.url,
      OPENAI_BASE_URL: `${model.url}/v1`,
      OPENAI_MODEL: "m",
      IOT_HUB_ENABLE: "true",
      // Production (the image's default) with IoT Hub on needs it said who answers unassigned devices.
      DEVICE_DEFAULT_OWNER: "default",
      EVENT_HUB_COMPATIBLE_CONN_STR: peer.eventHubConnectionString,
      IOT_HUB_CONNECTION_STRING: peer.iotHubConnectionString.replace(/localhost:\d+/, `localhost:${relay.port}`),
      // The IoT Hub service endpoint's TLS certificate is the test's own; trusted the way a process can be from outside.
      NODE_EXTRA_CA_CERTS: cert.certPath,
    }),
    startFromBundle(runtime, {
      AZURE_OPENAI_ENDPOINT: model.url,
      AZURE_OPENAI_DEPLOYMENT_NAME: "dep",
      IDENTITY_ENDPOINT: `http://127.0.0.1:${identityEndpoint.port}/msi/token`,
      IDENTITY_HEADER: "identity-header-secret",
    }),
  ]);
}, 60_000);

afterAll(async () => {
  for (const p of children) p.kill("SIGKILL");
  await Promise.allSettled([...children].map((p) => p.exited));
  relay?.stop();
  await Promise.allSettled([peer?.stop(), cosmos?.stop(), redis?.stop()]);
  model?.stop();
  identityEndpoint?.stop(true);
  rmSync(work, { recursive: true, force: true });
});

describe("the image's recipe", () => {
  test(
    "the runtime stage is the Bun runtime and dist/: the bundle, its source map and the page; nothing else",
    () => {
      const build = stages[0]!;
      expect(build.image).toBe("oven/bun:1.4.5-slim");
      expect(runtime.image).toBe("oven/bun:1.4.5-distroless");
      expect(runtime.cmd).toEqual(["bun", "--no-install", "dist/index.js"]);
      expect(runtime.env.ENVIRONMENT).toBe("production");
      expect(runtime.user).not.toMatch(/^(0|root)(:|$)/);
      expect(runtime.expose).toEqual(["8080"]);
      expect(runtime.healthcheck?.[0]).toBe("bun");

      // Only what the runtime stage copied: no node_modules, no sources, not even package.json.
      expect(runtime.copied.sort()).toEqual(["/app/dist", "/data"]);
      const page = [
        ...readdirSync(join(REPO, "src", "http", "page")).map((f) => `app/dist/page/${f}`),
        ...Object.keys(VENDOR).map((f) => `app/dist/page/vendor/${f}`), // the page's libraries, from node_modules
      ];
      expect(image.files).toEqual(["app/dist/index.js", "app/dist/index.js.map", ...page].sort());
      expect(statSync(join(runtime.root, "data")).isDirectory()).toBe(true);

      const bundle = readFileSync(join(appDir, "dist", "index.js"), "utf8");
      expect(bundle.startsWith("// @bun\n")).toBe(true);
      expect(bundle.trimEnd().endsWith("//# sourceMappingURL=index.js.map")).toBe(true);
      // The crash guard's createRequire was turned into a bundled require (see scripts/build.ts).
      expect(bundle).not.toMatch(/createRequire\(import\.meta\.url\)\(/);
      const map = JSON.parse(readFileSync(join(appDir, "dist", "index.js.map"), "utf8"));
      expect(map.sources).toContain("../src/devices/c2d.ts");
      expect(map.sourcesContent.every((c: unknown) => c === null)).toBe(true);

      const js = statSync(join(appDir, "dist", "index.js")).size;
      console.log(
        `our layer (everything the runtime stage copies): ${image.bytes} B = ${(image.bytes / MB).toFixed(2)} MB; bundle ${(js / MB).toFixed(2)} MB`,
      );
      expect(image.bytes).toBeLessThanOrEqual(LAYER_BUDGET);
    },
    TEST_MS,
  );

  test(
    "the source map resolves stack frames to src/ from the runtime directory",
    async () => {
      // A start-up failure (SQLite under a file, not a directory); the probe prints the stack the handler would drop.
      const blocker = join(work, "not-a-directory");
      writeFileSync(blocker, "");
      const probe = join(work, "print-stack.js");
      writeFileSync(probe, `process.prependListener("uncaughtException", (e) => console.error("STACK " + e.stack));\n`);
      const run = runCmd(runtime, { SQLITE_PATH: join(blocker, "db", "pichat.db"), API_TOKEN: TOKEN }, ["--preload", probe]);
      await run.waitForLine((l) => /\/app\/src\/\S+\.ts:\d+:\d+/.test(l), "a stack frame in src/");
      await run.stop();
      expect(run.lines.join("\n")).not.toContain("Could not decode sourcemap");
    },
    TEST_MS,
  );

  test(
    "the HEALTHCHECK command passes against the running server",
    async () => {
      const port = new URL(full.url).port;
      const [bin, ...args] = runtime.healthcheck!.map((a) => a.replace("127.0.0.1:8080", `127.0.0.1:${port}`));
      expect(bin).toBe("bun");
      const check = Bun.spawnSync([process.execPath, ...args], { cwd: appDir, env: { PATH: process.env.PATH ?? "" } });
      expect(check.exitCode).toBe(0);
    },
    TEST_MS,
  );
});

describe("from the bundle: Cosmos DB, Redis, an OpenAI-compatible model, the IoT Hub bridge, metrics, the page", () => {
  test(
    "/health: the Cosmos store and Redis reachable, the model configured, the device consumer running",
    async () => {
      // A load balancer waits for ready: until its bus has connected once a replica says "starting" (503).
      await until(async () => (await fetch(`${full.url}/health/ready`)).status === 200, "the replica to be ready", 15_000);
      expect(await health(full)).toMatchObject({
        status: "ok",
        services: {
          store: { kind: "cosmos", ok: true, auth: "key" },
          redis: { ok: true },
          model: { kind: "openai-compatible", name: "m", ok: true },
        },
      });
      const iot = await until(
        async () => {
          const h = await health(full);
          return h.services.iot_hub.status === "running" && h.services.iot_hub;
        },
        "the device consumer to own its partition",
        15_000,
      );
      expect(iot.partitions).toEqual(["0"]);
    },
    TEST_MS,
  );

  test(
    "a reply streams token by token and both turns are stored in Cosmos DB",
    async () => {
      const client = await connect(wsUrl(full));
      try {
        const { chat } = await client.request({ type: "CREATE_CHAT", name: "from the bundle" }, "NEW_CHAT");
        client.send({ type: "SEND_MESSAGE", chatId: chat.id, content: "Are you bundled?" });
        const reply = await client.reply(chat.id);
        expect(reply.text).toBe(TOKENS.join(""));
        expect(reply.chunks.length).toBe(TOKENS.length);
        // Read back with our own Cosmos store from this process: the bundle wrote to the test server.
        const store = await openCosmosStoreAt(cosmos, COSMOS_DATABASE);
        try {
          const stored = await until(async () => {
            const m = await store.listMessages(chat.id, { limit: 10 });
            return m.length === 2 && m;
          }, "both turns in Cosmos DB");
          expect(stored.map((m) => [m.role, m.content])).toEqual([
            ["user", "Are you bundled?"],
            ["assistant", TOKENS.join("")],
          ]);
        } finally {
          await store.close();
        }
      } finally {
        client.close();
      }
    },
    TEST_MS,
  );

  test("a device question is answered by C2D; a C2D send cut mid-flight is retried, not a crash", async () => {
    const ask = (message: string) =>
      peer.sendTelemetry({ deviceId: "pi-image", body: { message }, messageId: crypto.randomUUID(), contentType: "application/json" });
    const answers = () => peer.c2d.filter((m) => m.deviceId === "pi-image");
    const handled = (n: number) =>
      full.waitFor(
        (lines) => lines.filter((l) => l.includes('"msg":"device message handled"')).length >= n,
        `${n} device messages handled`,
      );
    ask("What is in the box?");
    const first = await peer.waitForC2D((m) => m.deviceId === "pi-image", 10_000);
    expect(first.body).toMatchObject({ response: TOKENS.join(""), conversation_id: expect.any(String) });
    await handled(1); // the hub's acknowledgement is back: nothing is in flight on the C2D connection

    // A connection lost while a C2D send waits for the hub: unguarded, azure-iothub's translateError returns an
    // error whose amqpError is itself and its logging recurses until the stack overflows. src/devices/c2d.ts
    // patches translateError; from the bundle that only works if it patched the copy the bundled SDK calls.
    const cut = relay.cutNextWrite();
    ask("And now?");
    await cut;
    await peer.waitForC2D(() => answers().length === 2, 10_000);
    await handled(2);

    // Every AMQP connection dropped (consumer and C2D): both reconnect.
    peer.dropConnections();
    ask("Still there?");
    await peer.waitForC2D(() => answers().length === 3, 20_000);
    await handled(3);
    expect(new Set(answers().map((m) => (m.body as any).message_id)).size).toBe(3);
    expect(full.lines.filter((l) => l.includes('"msg":"device message handled"')).every((l) => l.includes('"outcome":"answered"'))).toBe(
      true,
    );
    const output = full.lines.join("\n");
    expect(output).not.toContain("Maximum call stack");
    expect(output).not.toContain("uncaught exception");
  }, 30_000);

  test(
    "/metrics: Prometheus text behind the token, with the device and model counters",
    async () => {
      expect((await fetch(`${full.url}/metrics`)).status).toBe(401);
      const res = await fetch(`${full.url}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } });
      expect(res.status).toBe(200);
      const samples = (await res.text())
        .split("\n")
        .filter((l) => /^pichat_(device_messages_total|model_tokens_streamed_total|process_resident_memory_bytes)\b/.test(l));
      expect(samples).toContain('pichat_device_messages_total{outcome="answered"} 3');
      expect(samples).toContain(`pichat_model_tokens_streamed_total ${TOKENS.length * 4}`); // one chat reply, three device replies
      expect(samples.some((l) => l.startsWith("pichat_process_resident_memory_bytes "))).toBe(true);
    },
    TEST_MS,
  );

  test(
    "the built-in page is served",
    async () => {
      const vendor = Object.keys(VENDOR).map((f) => [`/page/vendor/${f}`, "text/javascript"] as const);
      for (const [path, type] of [
        ["/", "text/html"],
        ["/page/app.js", "text/javascript"],
        ["/page/markdown.js", "text/javascript"],
        ["/page/style.css", "text/css"],
        ...vendor,
      ] as const) {
        const res = await fetch(`${full.url}${path}`);
        expect(res.status).toBe(200);
        expect(res.headers.get("content-type")).toStartWith(type);
        expect((await res.text()).length).toBeGreaterThan(100);
      }
    },
    TEST_MS,
  );

  test(
    "SIGTERM stops it cleanly; every line it wrote is one JSON object",
    async () => {
      expect(await full.stop()).toBe(0);
      expect(full.lines.length).toBeGreaterThan(3);
      for (const line of full.lines) expect(JSON.parse(line).level).toMatch(/^(debug|info|warn|error)$/);
    },
    TEST_MS,
  );
});

describe("from the bundle: keyless Azure OpenAI, the image's default SQLite path", () => {
  test(
    "the reply is signed with a managed identity token; chats go to /data/pichat.db",
    async () => {
      const client = await connect(wsUrl(keyless));
      try {
        const { chat } = await client.request({ type: "CREATE_CHAT", name: "keyless" }, "NEW_CHAT");
        client.send({ type: "SEND_MESSAGE", chatId: chat.id, content: "Who signed this?" });
        expect((await client.reply(chat.id)).text).toBe(TOKENS.join(""));
      } finally {
        client.close();
      }
      const request = model.requests.find((r) => r.path === "/openai/deployments/dep/chat/completions")!;
      expect(request.headers.authorization).toBe("Bearer token-from-managed-identity");
      expect(request.headers["api-key"]).toBeUndefined();
      expect(tokenRequests[0]).toEqual({ resource: "https://cognitiveservices.azure.com", secret: "identity-header-secret" });
      expect(await health(keyless)).toMatchObject({
        services: { store: { kind: "sqlite", ok: true }, model: { kind: "azure-openai", auth: "azure-identity" } },
      });
      expect(existsSync(join(runtime.root, "data", "pichat.db"))).toBe(true);
      expect(await keyless.stop()).toBe(0);
    },
    TEST_MS,
  );
});
