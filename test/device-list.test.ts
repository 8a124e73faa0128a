import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Store } from "../src/store/store";
import { startIotHubPeer, type C2DMessage, type IotHubPeer } from "./support/amqp-peer";
import { openTestCosmosStore, startCosmosServer, type CosmosTestServer } from "./support/cosmos-server";
import { startDeviceServer } from "./support/device-server";
import type { TestServer } from "./support/harness";
import { startSseModel, type SseModel } from "./support/sse-model";
import { makeLocalhostCert, type LocalhostCert } from "./support/tls-cert";
import { addUser } from "./support/users";
import type { TestClient } from "./support/ws-client";

// GET_DEVICES, DEVICE_UPDATED and SEND_TO_DEVICE across two users: each sees and speaks to their own
// devices only. The real server, IoT Hub SDKs on the local AMQP peer, SQLite and Cosmos.

setDefaultTimeout(30_000);

let cert: LocalhostCert;
let model: SseModel;
let cosmos: CosmosTestServer;
beforeAll(async () => {
  [cert, model, cosmos] = await Promise.all([makeLocalhostCert(), startSseModel({ tokens: ["Sure."] }), startCosmosServer()]);
});
afterAll(async () => {
  model?.stop();
  await cosmos?.stop();
});

// A UUID-shaped correlation id travels as an AMQP uuid: 16 raw bytes.
const correlationOf = (m: C2DMessage) => {
  const id = (m.raw as { correlation_id?: unknown }).correlation_id;
  if (!Buffer.isBuffer(id) || id.length !== 16) return String(id ?? "");
  const h = id.toString("hex");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
};

for (const kind of ["sqlite", "cosmos"] as const) {
  describe(`a user's devices (${kind})`, () => {
    let peer: IotHubPeer;
    let srv: TestServer;
    let store: Store | undefined;
    let alice: TestClient;
    let bob: TestClient;
    const piA = `pi-alice-${kind}`;
    const piB = `pi-bob-${kind}`;
    beforeAll(async () => {
      peer = await startIotHubPeer({ tls: cert });
      store = kind === "cosmos" ? await openTestCosmosStore(cosmos, "pichat-devlist") : undefined;
      srv = await startDeviceServer({
        peer,
        cert,
        store,
        env: { OPENAI_BASE_URL: `${model.url}/v1`, OPENAI_MODEL: "m", CHAT_TITLES: "false", DEVICE_DEFAULT_OWNER: "none" },
      });
      const [a, b] = [await addUser(srv.store, `alice-${kind}`), await addUser(srv.store, `bob-${kind}`)];
      await srv.store.assignDevice(piA, a.id);
      await srv.store.assignDevice(piB, b.id);
      alice = await srv.connect({ token: a.token });
      bob = await srv.connect({ token: b.token });
    });
    afterAll(async () => {
      await srv?.close();
      await peer?.stop();
    });

    const ask = (deviceId: string, message: string) => {
      const messageId = `q-${crypto.randomUUID()}`;
      peer.sendTelemetry({ deviceId, body: { message }, messageId, contentType: "application/json" });
      return messageId;
    };

    test("a question shows on the owner's device list, live and in GET_DEVICES; the other user sees nothing of it", async () => {
      const before = await alice.request({ type: "GET_DEVICES" }, "DEVICES");
      expect(before.devices).toEqual([{ id: piA }]);
      const q = ask(piA, "what's for dinner?");
      const live = await alice.next((f) => f.type === "DEVICE_UPDATED" && f.device.id === piA);
      const { chatId, lastSeen } = live.device;
      expect(typeof chatId === "string" && typeof lastSeen === "string").toBe(true);
      expect(live.device).toMatchObject({ id: piA, label: piA, lastQuestion: "what's for dinner?" });
      await peer.waitForC2D((m) => correlationOf(m) === q, 10_000);
      // Bob's own device next: once his update arrives, Alice's would have too.
      ask(piB, "hello from bob's pi");
      await bob.next((f) => f.type === "DEVICE_UPDATED" && f.device.id === piB);
      expect(bob.frames.filter((f) => JSON.stringify(f).includes(piA))).toEqual([]);
      expect(alice.frames.filter((f) => JSON.stringify(f).includes(piB))).toEqual([]);

      const list = await alice.request({ type: "GET_DEVICES" }, "DEVICES");
      expect(list.devices).toEqual([
        {
          id: piA,
          label: piA,
          chatId,
          lastSeen,
          lastQuestion: "what's for dinner?",
        },
      ]);
      expect((await bob.request({ type: "GET_DEVICES" }, "DEVICES")).devices.map((d: { id: string }) => d.id)).toEqual([piB]);
    });

    test("IoT Hub's connection state events: the owner is told, GET_DEVICES shows it; nobody else hears", async () => {
      peer.sendTelemetry({ deviceId: piA, body: { sequenceNumber: "1" }, properties: { opType: "deviceDisconnected" } });
      const off = await alice.next((f) => f.type === "DEVICE_UPDATED" && f.device.id === piA && f.device.online === false);
      expect(off.device).toEqual({ id: piA, online: false, onlineAt: expect.any(String) });
      expect((await alice.request({ type: "GET_DEVICES" }, "DEVICES")).devices[0]).toMatchObject({ id: piA, online: false });
      // Not a question: nothing stored, nothing asked.
      expect(srv.log.lines.some((l) => l.includes("not valid telemetry") && l.includes(piA))).toBe(false);
      expect(bob.frames.filter((f) => JSON.stringify(f).includes(piA))).toEqual([]);
    });

    test("SEND_TO_DEVICE: the device gets one message in the one-message shape; it is stored as an announcement; offline means queued", async () => {
      const sent = await alice.request(
        { type: "SEND_TO_DEVICE", requestId: "s1", deviceId: piA, text: "Dinner is **ready**!" },
        "DEVICE_MESSAGE_SENT",
      );
      expect(typeof sent.chatId === "string" && typeof sent.messageId === "string").toBe(true);
      expect(sent).toMatchObject({ deviceId: piA, queued: true, online: false });
      const c2d = await peer.waitForC2D((m) => correlationOf(m) === sent.messageId, 10_000);
      expect(c2d.deviceId).toBe(piA);
      expect(c2d.body).toEqual({
        response: "Dinner is ready!",
        conversation_id: sent.chatId,
        message_id: sent.messageId,
        timestamp: expect.any(String),
        announcement: true,
      });
      const stored = await srv.store.listMessages(sent.chatId, { limit: 20 });
      expect(stored.find((m) => m.id === sent.messageId)).toMatchObject({
        role: "assistant",
        content: "Dinner is **ready**!",
        device_id: piA,
      });
      expect(stored.find((m) => m.id === sent.messageId)!.parent_id).toBeUndefined();

      peer.sendTelemetry({ deviceId: piA, body: { sequenceNumber: "2" }, properties: { opType: "deviceConnected" } });
      await alice.next((f) => f.type === "DEVICE_UPDATED" && f.device.id === piA && f.device.online === true);
      const again = await alice.request({ type: "SEND_TO_DEVICE", deviceId: piA, text: "Now you're on." }, "DEVICE_MESSAGE_SENT");
      expect(again).toMatchObject({ queued: false, online: true });
    });

    test("a foreign or unknown device is DEVICE_NOT_FOUND alike; empty or 70 KB text is a clear error; nothing is sent or stored", async () => {
      const c2dBefore = peer.c2d.length;
      const chatA = (await srv.store.findDeviceChat((await srv.store.deviceOwner(piA))!, piA))!;
      const storedBefore = (await srv.store.listMessages(chatA.id, { limit: 100 })).length;
      const foreign = await bob.request({ type: "SEND_TO_DEVICE", deviceId: piA, text: "hi" }, "DEVICE_MESSAGE_SENT");
      const unknown = await bob.request({ type: "SEND_TO_DEVICE", deviceId: "pi-nobody", text: "hi" }, "DEVICE_MESSAGE_SENT");
      expect(foreign).toMatchObject({ type: "ERROR", code: "DEVICE_NOT_FOUND", deviceId: piA });
      expect(unknown).toMatchObject({ type: "ERROR", code: "DEVICE_NOT_FOUND", deviceId: "pi-nobody" });
      expect(foreign.error.replace(piA, "X")).toBe(unknown.error.replace("pi-nobody", "X"));

      const empty = await alice.request({ type: "SEND_TO_DEVICE", deviceId: piA, text: "  " }, "DEVICE_MESSAGE_SENT");
      expect(empty).toMatchObject({ type: "ERROR", code: "INVALID_FRAME" });
      expect(empty.error).toMatch(/text must not be empty/);
      const huge = await alice.request({ type: "SEND_TO_DEVICE", deviceId: piA, text: "x".repeat(70 * 1024) }, "DEVICE_MESSAGE_SENT");
      expect(huge).toMatchObject({ type: "ERROR", code: "INVALID_FRAME" });
      expect(huge.error).toMatch(/too long for one device message/);

      // The connections are intact, and nothing reached the hub or the store.
      expect((await alice.request({ type: "GET_DEVICES" }, "DEVICES")).devices.map((d: { id: string }) => d.id)).toEqual([piA]);
      expect((await bob.request({ type: "GET_DEVICES" }, "DEVICES")).devices.map((d: { id: string }) => d.id)).toEqual([piB]);
      expect(peer.c2d.length).toBe(c2dBefore);
      expect((await srv.store.listMessages(chatA.id, { limit: 100 })).length).toBe(storedBefore);
    });

    if (kind === "sqlite") {
      test("bun run devices say <deviceId> <text>: one C2D message to the device, stored in its owner's device chat; an unknown device is refused", async () => {
        const run = async (...args: string[]) => {
          const proc = Bun.spawn([process.execPath, join(import.meta.dir, "..", "scripts", "devices.ts"), ...args], {
            cwd: tmpdir(),
            env: {
              PATH: process.env.PATH ?? "",
              HOME: process.env.HOME ?? tmpdir(),
              ENVIRONMENT: "test",
              SQLITE_PATH: srv.config.SQLITE_PATH,
              IOT_HUB_CONNECTION_STRING: peer.iotHubConnectionString,
              NODE_EXTRA_CA_CERTS: cert.certPath,
            },
            stdout: "pipe",
            stderr: "pipe",
          });
          const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
          return { out, err, code };
        };
        const said = await run("say", piB, "Time", "for", "bed.");
        expect(said.code).toBe(0);
        expect(said.out).toMatch(new RegExp(`^Sent to ${piB} \\(message [0-9a-f-]{36}\\)`));
        const messageId = /message ([0-9a-f-]{36})/.exec(said.out)![1]!;
        const c2d = await peer.waitForC2D((m) => correlationOf(m) === messageId, 10_000);
        expect(c2d).toMatchObject({ deviceId: piB, body: { response: "Time for bed.", announcement: true, message_id: messageId } });
        const chat = (await srv.store.findDeviceChat((await srv.store.deviceOwner(piB))!, piB))!;
        expect((await srv.store.listMessages(chat.id, { limit: 50 })).find((m) => m.id === messageId)).toMatchObject({
          role: "assistant",
          content: "Time for bed.",
        });
        const before = peer.c2d.length;
        const unknown = await run("say", "pi-nobody-at-all", "hello");
        expect(unknown.code).toBe(1);
        expect(unknown.err).toMatch(/no device "pi-nobody-at-all"/);
        expect(peer.c2d.length).toBe(before);
      });
    }
  });
}
