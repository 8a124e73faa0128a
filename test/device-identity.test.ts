import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Store } from "../src/store/store";
import { startIotHubPeer, type IotHubPeer } from "./support/amqp-peer";
import { openCosmosStoreAt, startCosmosServer, type CosmosTestServer } from "./support/cosmos-server";
import { startDeviceServer } from "./support/device-server";
import type { TestServer } from "./support/harness";
import { startSseModel, type SseModel } from "./support/sse-model";
import { makeLocalhostCert, type LocalhostCert } from "./support/tls-cert";
import { until } from "./support/until";

// Who a device message is from, and what makes it "the same message": the real Event Hubs and IoT Hub
// SDKs against the local AMQP peer, the real server, on SQLite and on the Cosmos test server.

let cert: LocalhostCert;
let model: SseModel;
let cosmos: CosmosTestServer;
const ANSWER = ["Answered", "."];

beforeAll(async () => {
  [cert, model, cosmos] = await Promise.all([makeLocalhostCert(), startSseModel({ tokens: ANSWER }), startCosmosServer()]);
});
afterAll(async () => {
  model?.stop();
  await cosmos?.stop();
});

const env = () => ({ OPENAI_BASE_URL: `${model.url}/v1`, OPENAI_MODEL: "m", CHAT_TITLES: "false" });
const newId = (prefix: string) => `${prefix}-${crypto.randomUUID().slice(0, 8)}`;

const cosmosStore = () => openCosmosStoreAt(cosmos, `identity-${crypto.randomUUID().slice(0, 8)}`);

for (const kind of ["sqlite", "cosmos"] as const) {
  describe(`claims are the device's own (${kind})`, () => {
    let peer: IotHubPeer;
    let srv: TestServer;
    let store: Store | undefined;
    beforeAll(async () => {
      peer = await startIotHubPeer({ tls: cert });
      store = kind === "cosmos" ? await cosmosStore() : undefined;
      srv = await startDeviceServer({ peer, cert, env: env(), store });
    });
    afterAll(async () => {
      await srv?.close();
      await store?.close();
      await peer?.stop();
    });

    const answered = (deviceId: string) => peer.waitForC2D((m) => m.deviceId === deviceId, 10_000);

    test("two devices sending the same message id are both answered, each in its own chat", async () => {
      const [a, b] = [newId("pi-a"), newId("pi-b")];
      const messageId = crypto.randomUUID();
      // One partition each, so they are handled at the same time.
      peer.sendTelemetry({ deviceId: a, partitionId: "0", messageId, body: { message: "same id, device a" } });
      peer.sendTelemetry({ deviceId: b, partitionId: "1", messageId, body: { message: "same id, device b" } });
      const [ca, cb] = await Promise.all([answered(a), answered(b)]);
      expect((ca.body as { response: string }).response).toBe(ANSWER.join(""));
      expect((cb.body as { response: string }).response).toBe(ANSWER.join(""));
      for (const [deviceId, text] of [
        [a, "same id, device a"],
        [b, "same id, device b"],
      ] as const) {
        const chat = (await srv.store.findDeviceChat("default", deviceId))!;
        const stored = await srv.store.listMessages(chat.id, { limit: 10 });
        expect(stored.map((m) => [m.role, m.content])).toEqual([
          ["user", text],
          ["assistant", ANSWER.join("")],
        ]);
      }
      expect(srv.log.lines.filter((l) => l.includes("already handled") || l.includes("handled elsewhere"))).toEqual([]);
    });

    test("messages without an id, at the same position of two partitions (event-<seq>-<offset>), are both answered", async () => {
      const [c, d] = [newId("pi-c"), newId("pi-d")];
      const body = { message: "no message id here" };
      const one = peer.sendTelemetry({ deviceId: c, partitionId: "0", body });
      const two = peer.sendTelemetry({ deviceId: d, partitionId: "1", body });
      // The fallback ids really are equal: the same sequence number and offset in both partitions.
      expect([one.sequenceNumber, one.offset]).toEqual([two.sequenceNumber, two.offset]);
      await Promise.all([answered(c), answered(d)]);
      for (const deviceId of [c, d]) {
        const chat = (await srv.store.findDeviceChat("default", deviceId))!;
        expect((await srv.store.listMessages(chat.id, { limit: 10 })).map((m) => m.id)).toContain(
          `event-${one.sequenceNumber}-${one.offset}`,
        );
      }
    });

    test("one device's redelivered message is still answered once", async () => {
      const deviceId = newId("pi-e");
      const messageId = crypto.randomUUID();
      peer.sendTelemetry({ deviceId, partitionId: "0", messageId, body: { message: "once" } });
      peer.sendTelemetry({ deviceId, partitionId: "0", messageId, body: { message: "once" } });
      peer.sendTelemetry({ deviceId, partitionId: "0", body: { message: "then this" } });
      await until(() => peer.c2d.filter((m) => m.deviceId === deviceId).length >= 2, "both distinct messages answered");
      const chat = (await srv.store.findDeviceChat("default", deviceId))!;
      const stored = await srv.store.listMessages(chat.id, { limit: 10 });
      expect(stored.filter((m) => m.id === messageId)).toHaveLength(1);
      expect(peer.c2d.filter((m) => m.deviceId === deviceId)).toHaveLength(2);
    });
  });
}

describe("a device's identity", () => {
  let peer: IotHubPeer;
  let srv: TestServer;
  beforeAll(async () => {
    peer = await startIotHubPeer({ tls: cert });
    srv = await startDeviceServer({ peer, cert, env: env() });
  });
  afterAll(async () => {
    await srv?.close();
    await peer?.stop();
  });

  test("comes only from IoT Hub's property: a message without it naming a device in its body is refused, logged, not answered", async () => {
    const victim = newId("pi-victim");
    // Posted straight to the Event Hub: no iothub-connection-device-id, the body claims to be the victim.
    peer.sendTelemetry({
      deviceId: victim,
      noDeviceProperty: true,
      messageId: crypto.randomUUID(),
      body: { message: "I am you", device_id: victim },
    });
    // The next real message on the same partition shows the forged one was read (and skipped) first.
    const real = newId("pi-real");
    const { partitionId } = peer.sendTelemetry({ deviceId: victim, noDeviceProperty: true, body: { message: "probe" } });
    peer.sendTelemetry({ deviceId: real, partitionId, messageId: crypto.randomUUID(), body: { message: "a real device" } });
    await peer.waitForC2D((m) => m.deviceId === real, 10_000);
    await until(
      () => srv.log.lines.filter((l) => l.includes("not valid telemetry") && l.includes("iothub-connection-device-id")).length >= 2,
      "both messages without the property skipped",
    );
    expect(await srv.store.findDeviceChat("default", victim)).toBeUndefined();
    expect(peer.c2d.filter((m) => m.deviceId === victim)).toHaveLength(0);
  });

  test("a body's device_id never overrides IoT Hub's property", async () => {
    const [deviceId, other] = [newId("pi-own"), newId("pi-other")];
    peer.sendTelemetry({ deviceId, messageId: crypto.randomUUID(), body: { message: "who am I", device_id: other } });
    await peer.waitForC2D((m) => m.deviceId === deviceId, 10_000);
    expect(await srv.store.findDeviceChat("default", deviceId)).toBeDefined();
    expect(await srv.store.findDeviceChat("default", other)).toBeUndefined();
  });
});

describe("DEVICE_ID_FROM_BODY=true", () => {
  test("takes the body's device_id when the property is missing, and says so at start-up", async () => {
    const peer = await startIotHubPeer({ tls: cert });
    const srv = await startDeviceServer({ peer, cert, env: { ...env(), DEVICE_ID_FROM_BODY: "true" } });
    try {
      expect(srv.log.lines.some((l) => l.includes("DEVICE_ID_FROM_BODY=true") && JSON.parse(l).level === "warn")).toBe(true);
      const deviceId = newId("pi-body");
      peer.sendTelemetry({
        deviceId,
        noDeviceProperty: true,
        messageId: crypto.randomUUID(),
        body: { message: "hello", device_id: deviceId },
      });
      const c2d = await peer.waitForC2D((m) => m.deviceId === deviceId, 10_000);
      expect((c2d.body as { response: string }).response).toBe(ANSWER.join(""));
      expect(await srv.store.findDeviceChat("default", deviceId)).toBeDefined();
    } finally {
      await srv.close();
      await peer.stop();
    }
  });
});
