import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { Client as ServiceClient } from "azure-iothub";
import { Message as ServiceMessage } from "azure-iothub/dist/common-core/message.js";
import { Client as DeviceClient, type Message as DeviceMessage } from "azure-iot-device";
import { Amqp as DeviceAmqp } from "azure-iot-device-amqp";
import { amqpTrusting, startIotHubPeer, type IotHubPeer } from "./support/amqp-peer";
import { startDeviceServer } from "./support/device-server";
import type { TestServer } from "./support/harness";
import { startSseModel, type SseModel } from "./support/sse-model";
import { makeLocalhostCert, type LocalhostCert } from "./support/tls-cert";
import { until, within } from "./support/until";
import type { TestClient } from "./support/ws-client";

// scripts/device.ts end to end with no cloud: the simulator (azure-iot-device over AMQP, a separate
// process) talks to the peer's device endpoint; its telemetry reaches the real server's device bridge
// through the Event Hub-compatible endpoint, and the bridge's C2D reply comes back to it.

const ROOT = join(import.meta.dir, "..");
const TOKENS = ["It", " is", " sunny", " today", "."];

let cert: LocalhostCert;
let peer: IotHubPeer;
/** A peer no server reads from: telemetry sent to it is never answered. */
let unanswered: IotHubPeer;
let model: SseModel;
let srv: TestServer;
let browser: TestClient;
const running = new Set<Bun.Subprocess>();

beforeAll(async () => {
  cert = await makeLocalhostCert();
  [peer, unanswered, model] = await Promise.all([
    startIotHubPeer({ tls: cert }),
    startIotHubPeer({ tls: cert }),
    startSseModel({ tokens: TOKENS }),
  ]);
  srv = await startDeviceServer({ peer, cert, env: { OPENAI_BASE_URL: `${model.url}/v1`, OPENAI_MODEL: "m" } });
  browser = await srv.connect();
});
afterAll(async () => {
  for (const p of running) p.kill("SIGKILL");
  await Promise.allSettled([...running].map((p) => p.exited));
  browser?.close();
  await srv?.close();
  await Promise.allSettled([peer?.stop(), unanswered?.stop()]);
  model?.stop();
});

type Run = { code: number; stdout: string; stderr: string; ms: number };

/**
 * Runs the simulator as its own process, trusting the peer's certificate through NODE_EXTRA_CA_CERTS (read
 * at start-up), and waits for it to exit; past the deadline it is killed and the test fails with its output.
 */
async function simulate(args: string[], o: { connectionString?: string; deadlineMs?: number } = {}): Promise<Run> {
  const started = performance.now();
  const proc = Bun.spawn([process.execPath, "scripts/device.ts", ...args], {
    cwd: ROOT,
    env: {
      ...process.env,
      DEVICE_CONNECTION_STRING: o.connectionString ?? peer.deviceConnectionString("pi-sim"),
      NODE_EXTRA_CA_CERTS: cert.certPath,
      // Keeps any DEBUG=azure* from the caller's shell out of the output being asserted.
      DEBUG: "",
    },
    stdout: "pipe",
    stderr: "pipe",
  });
  running.add(proc);
  const output = Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text()]);
  const deadlineMs = o.deadlineMs ?? 15_000;
  const code = await within(proc.exited, deadlineMs, "device.ts to exit").catch(() => undefined);
  if (code === undefined) proc.kill("SIGKILL");
  const [stdout, stderr] = await output;
  await proc.exited;
  running.delete(proc);
  if (code === undefined) {
    throw new Error(`device.ts still running after ${deadlineMs} ms; stdout: ${stdout}\nstderr: ${stderr}`);
  }
  return { code, stdout, stderr, ms: performance.now() - started };
}

describe("bun run device", () => {
  test("asks as the device, prints exactly the reply; the server stored both turns and told browsers", async () => {
    const run = await simulate(["--device-id", "pi-sim", "What's the weather like?"]);
    console.log(`device.ts round trip (process start → exit, instant model): ${run.ms.toFixed(0)} ms`);
    expect({ code: run.code, stdout: run.stdout }).toEqual({ code: 0, stdout: `${TOKENS.join("")}\n` });

    const messageId = /sent as pi-sim \(message ([0-9a-f-]{36})\)/.exec(run.stderr)?.[1];
    expect(messageId).toBeDefined();
    // The telemetry went through the device endpoint as the Pi sends it.
    const sent = peer.d2c.find((m) => m.messageId === messageId)!;
    expect(sent).toMatchObject({ deviceId: "pi-sim", contentType: "application/json" });
    expect(JSON.parse(sent.body.toString())).toMatchObject({ message: "What's the weather like?", device_id: "pi-sim" });

    const created = await browser.next((f) => f.type === "CHAT_CREATED" && f.chat.device_id === "pi-sim");
    expect(created.chat).toMatchObject({ name: "pi-sim", device_id: "pi-sim" });
    const chat = (await srv.store.findDeviceChat("default", "pi-sim"))!;
    expect(chat.id).toBe(created.chat.id);
    const stored = await srv.store.listMessages(chat.id, { limit: 10 });
    expect(stored.map((m) => [m.role, m.content])).toEqual([
      ["user", "What's the weather like?"],
      ["assistant", TOKENS.join("")],
    ]);
    expect(stored[0]!.id).toBe(messageId!);
    expect(run.stderr).toContain(`(chat ${chat.id}, `);

    // The reply the bridge sent went to this device, and the simulator completed it: nothing left queued.
    const c2d = peer.c2d.filter((m) => m.deviceId === "pi-sim");
    expect(c2d.map((m) => (m.body as { message_id: string }).message_id)).toEqual([stored[1]!.id]);
    await until(() => peer.pendingC2D("pi-sim") === 0, "the simulator to complete the C2D message", 5000);
  });

  test("--parts asks for the reply in parts and prints each with its arrival time; stdout is the whole reply", async () => {
    const story = ["Once upon a time. ", "A fox lived in a wood. ", "It was ", "clever, ", "and ", "kind. ", "The end."];
    model.setScript((req) =>
      req.body.messages.at(-1)?.content === "a story please" ? { tokens: story, delayMs: 40 } : { tokens: TOKENS },
    );
    try {
      const run = await simulate(["--parts", "a story please"]);
      expect({ code: run.code, stdout: run.stdout }).toEqual({ code: 0, stdout: `${story.join("")}\n` });
      const parts = run.stderr.split("\n").filter((l) => /^\[\d+ ms\] part \d+/.test(l));
      expect(parts.length).toBeGreaterThanOrEqual(2);
      expect(parts[0]).toMatch(/part 0, offset 0$/);
      expect(parts.at(-1)).toMatch(/\(last\)/);
      const sent = peer.d2c.find((m) => JSON.parse(m.body.toString()).message === "a story please")!;
      expect(JSON.parse(sent.body.toString())).toMatchObject({ reply_in_parts: true });
    } finally {
      model.setScript({ tokens: TOKENS });
    }
  });

  test("--original is the original Pi client: it sends its conversation, and the first C2D message is its answer, whatever it answers", async () => {
    // A message queued for the device before it asks (an announcement, a late reply): the original client takes it.
    const service = ServiceClient.fromConnectionString(peer.iotHubConnectionString, amqpTrusting(cert.cert));
    try {
      const early = new ServiceMessage(JSON.stringify({ response: "Dinner is ready!", announcement: true }));
      early.messageId = crypto.randomUUID();
      await service.send("pi-orig", early);
    } finally {
      await service.close();
    }
    const run = await simulate(["--original", "what time is it?"], { connectionString: peer.deviceConnectionString("pi-orig") });
    expect({ code: run.code, stdout: run.stdout }).toEqual({ code: 0, stdout: "Dinner is ready!\n" });
    const sent = peer.d2c.find((m) => m.deviceId === "pi-orig")!;
    expect(JSON.parse(sent.body.toString())).toEqual({
      message: "what time is it?",
      conversation: [],
      timestamp: expect.any(Number),
      device_id: "pi-orig",
    });
    // Asked with nothing queued, it takes the reply itself.
    const again = await simulate(["--original", "and now?"], { connectionString: peer.deviceConnectionString("pi-orig") });
    expect(again.stdout).toBe(`${TOKENS.join("")}\n`);
  });

  test("a --device-id that does not match the connection string exits 2 and sends nothing", async () => {
    const before = peer.d2c.length;
    const run = await simulate(["--device-id", "pi-other", "hello?"]);
    expect(run.code).toBe(2);
    expect(run.stdout).toBe("");
    expect(run.stderr).toContain("--device-id pi-other does not match the connection string's DeviceId pi-sim");
    expect(peer.d2c.length).toBe(before);
  });

  test("no reply within --timeout exits 1 after sending the question", async () => {
    // The question reaches the hub, but no server reads this peer's telemetry, so no reply can come.
    const run = await simulate(["--timeout", "2", "anyone there?"], {
      connectionString: unanswered.deviceConnectionString("pi-unanswered"),
    });
    expect(run.code).toBe(1);
    expect(run.stdout).toBe("");
    expect(run.stderr).toContain("no reply within 2 s");
    expect(run.ms).toBeGreaterThanOrEqual(2000);
    const mine = <T extends { deviceId: string }>(list: readonly T[]) => list.filter((m) => m.deviceId === "pi-unanswered");
    expect(mine(unanswered.d2c).map((m) => JSON.parse(m.body.toString()).message)).toEqual(["anyone there?"]);
    expect(mine(unanswered.c2d)).toEqual([]);
  });
});

describe("the peer's device endpoint", () => {
  test("keeps C2D queued while the device is away, redelivers an abandoned message, drops a completed one", async () => {
    const service = ServiceClient.fromConnectionString(unanswered.iotHubConnectionString, amqpTrusting(cert.cert));
    const device = DeviceClient.fromConnectionString(unanswered.deviceConnectionString("pi-queue"), DeviceAmqp);
    try {
      const sent = new ServiceMessage(JSON.stringify({ response: "queued" }));
      sent.messageId = crypto.randomUUID();
      await service.send("pi-queue", sent);
      expect(unanswered.pendingC2D("pi-queue")).toBe(1);

      // In-process, the device SDK takes the CA through setOptions (NODE_EXTRA_CA_CERTS is read at start-up only).
      device.setOptions({ ca: cert.cert });
      const seen: string[] = [];
      const completed = new Promise<void>((resolve, reject) => {
        device.on("message", (msg: DeviceMessage) => {
          seen.push(`${msg.messageId} ${msg.getData().toString()}`);
          const settle = seen.length === 1 ? device.abandon(msg) : device.complete(msg).then(() => resolve());
          settle.catch(reject);
        });
      });
      await device.open();
      await within(completed, 5000, () => `the redelivered message to be completed; seen ${JSON.stringify(seen)}`);
      expect(seen).toEqual([`${sent.messageId} {"response":"queued"}`, `${sent.messageId} {"response":"queued"}`]);
      await until(() => unanswered.pendingC2D("pi-queue") === 0, "the completed message to leave the queue", 5000);
    } finally {
      await Promise.allSettled([device.close(), service.close()]);
    }
  });
});
