import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { startIotHubPeer, type C2DMessage, type IotHubPeer } from "./support/amqp-peer";
import { startCosmosServer, type CosmosTestServer } from "./support/cosmos-server";
import { startDeviceServer } from "./support/device-server";
import type { TestServer } from "./support/harness";
import { startRedis, type RedisServer } from "./support/redis-server";
import { startReplicas, type Replicas } from "./support/replicas";
import { lastUserTurn, startSseModel, type SseModel } from "./support/sse-model";
import { makeLocalhostCert, type LocalhostCert } from "./support/tls-cert";
import { until } from "./support/until";

// IoT Hub's C2D budget (IOT_HUB_C2D_PER_MINUTE): when short, a reply's parts merge and its last part
// still arrives; with several replicas it is one budget for the hub, shared through Redis.

setDefaultTimeout(60_000);

let cert: LocalhostCert;
let model: SseModel;
let cosmos: CosmosTestServer;
let redis: RedisServer;
beforeAll(async () => {
  [cert, model, cosmos, redis] = await Promise.all([
    makeLocalhostCert(),
    startSseModel({ tokens: ["ok"] }),
    startCosmosServer(),
    startRedis(),
  ]);
});
afterAll(async () => {
  model?.stop();
  await cosmos?.stop();
  await redis?.stop();
});

const correlationOf = (m: C2DMessage) => String((m.raw as { correlation_id?: unknown }).correlation_id ?? "");
const STORY = ["Once upon a time. ", ...Array.from({ length: 40 }, (_, i) => `Sentence number ${i} goes on a while. `), "The end."];

describe("one server, a budget nearly used up", () => {
  let peer: IotHubPeer;
  let srv: TestServer;
  beforeAll(async () => {
    peer = await startIotHubPeer({ tls: cert });
    srv = await startDeviceServer({
      peer,
      cert,
      env: {
        OPENAI_BASE_URL: `${model.url}/v1`,
        OPENAI_MODEL: "m",
        CHAT_TITLES: "false",
        // A burst of 4, then one every 15 s; a message waits at most until the device stops waiting.
        IOT_HUB_C2D_PER_MINUTE: "4",
        DEVICE_REPLY_MAX_AGE_S: "4",
      },
    });
  });
  afterAll(async () => {
    await srv?.close();
    await peer?.stop();
  });

  test("the parts merge into what the budget allows; the last part still arrives; joined they are the stored reply", async () => {
    model.setScript((req) => (lastUserTurn(req) === "a story" ? { tokens: STORY, delayMs: 20 } : { tokens: ["ok"] }));
    // Three of the four sends go to other devices first.
    const others = ["a", "b", "c"].map((d) => {
      const messageId = `q-${d}-${crypto.randomUUID()}`;
      peer.sendTelemetry({ deviceId: `pi-other-${d}`, body: { message: "hi" }, messageId, contentType: "application/json" });
      return messageId;
    });
    for (const id of others) await peer.waitForC2D((m) => correlationOf(m) === id, 10_000);
    const id = `q-story-${crypto.randomUUID()}`;
    peer.sendTelemetry({
      deviceId: "pi-story",
      body: { message: "a story", reply_in_parts: true },
      messageId: id,
      contentType: "application/json",
    });
    await peer.waitForC2D((m) => correlationOf(m) === id && (m.body as { last?: boolean }).last === true, 15_000);
    const parts = peer.c2d.filter((m) => correlationOf(m) === id).map((m) => m.body as { response: string; part: number; last: boolean });
    // Unbudgeted, this reply takes 4 messages; with one send left, the first part, then the rest as the last.
    expect(parts.map((p) => [p.part, p.last])).toEqual([
      [0, false],
      [1, true],
    ]);
    expect(parts[0]!.response).toBe("Once upon a time.");
    expect(parts.map((p) => p.response).join("")).toBe(STORY.join(""));
    const metrics = await (await fetch(`${srv.url}/metrics`)).text();
    expect(Number(/pichat_c2d_throttles_total\{kind="budget"\} (\d+)/.exec(metrics)?.[1])).toBeGreaterThan(0);
  });
});

describe("two replicas", () => {
  let peer: IotHubPeer;
  let r: Replicas;
  beforeAll(async () => {
    peer = await startIotHubPeer({ partitions: 2, tls: cert });
    r = await startReplicas({
      n: 2,
      redis,
      cosmos,
      env: {
        OPENAI_BASE_URL: `${model.url}/v1`,
        OPENAI_MODEL: "m",
        CHAT_TITLES: "false",
        IOT_HUB_ENABLE: "true",
        EVENT_HUB_COMPATIBLE_CONN_STR: peer.eventHubConnectionString,
        IOT_HUB_CONNECTION_STRING: peer.iotHubConnectionString,
        NODE_EXTRA_CA_CERTS: cert.certPath,
        IOT_HUB_LOAD_BALANCING: "balanced",
        IOT_HUB_LOAD_BALANCING_INTERVAL_MS: "300",
        IOT_HUB_PARTITION_EXPIRY_MS: "3000",
        DEVICE_DEFAULT_OWNER: "default",
        IOT_HUB_C2D_PER_MINUTE: "4",
        DEVICE_REPLY_MAX_AGE_S: "5",
      },
    });
  });
  afterAll(async () => {
    await r?.stop();
    await peer?.stop();
  });

  test("share one budget: of eight questions at once, four answers go at once, the rest only when their time is up", async () => {
    const owned = async (i: number) =>
      ((await (await fetch(`${r.replicas[i]!.httpUrl}/health`)).json()) as { services: { iot_hub: { partitions?: string[] } } }).services
        .iot_hub.partitions ?? [];
    await until(
      async () => {
        const [a, b] = await Promise.all([owned(0), owned(1)]);
        return a.length === 1 && b.length === 1 && a[0] !== b[0];
      },
      "one partition each",
      30_000,
    );
    model.setScript({ tokens: ["ok"] });
    const ids = Array.from({ length: 8 }, (_, i) => {
      const messageId = `q-shared-${i}-${crypto.randomUUID()}`;
      peer.sendTelemetry({
        deviceId: `pi-shared-${i}`,
        body: { message: `question ${i}` },
        messageId,
        contentType: "application/json",
        partitionId: String(i % 2),
      });
      return messageId;
    });
    for (const id of ids) await peer.waitForC2D((m) => correlationOf(m) === id, 20_000);
    const arrivals = peer.c2d
      .filter((m) => ids.includes(correlationOf(m)))
      .map((m) => m.at)
      .sort((a, b) => a - b);
    console.log(`arrivals (ms after the first): ${arrivals.map((t) => Math.round(t - arrivals[0]!)).join(", ")}`);
    // Both replicas answered some: each read its own partition.
    await until(
      () => r.replicas.every((p) => p.lines.some((l) => l.includes("device message handled") && l.includes("q-shared-"))),
      "both replicas to have handled some",
    );
    // Four went at once; the fifth waited for the shared budget (each replica alone would have had four of its own).
    expect(arrivals[3]! - arrivals[0]!).toBeLessThan(2_000);
    expect(arrivals[4]! - arrivals[3]!).toBeGreaterThan(2_000);
  });
});
