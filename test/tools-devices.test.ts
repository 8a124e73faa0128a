import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { startIotHubPeer, type IotHubPeer } from "./support/amqp-peer";
import { startDeviceServer } from "./support/device-server";
import type { TestServer } from "./support/harness";
import { startSseModel, type SseModel } from "./support/sse-model";
import { makeLocalhostCert, type LocalhostCert } from "./support/tls-cert";
import type { TestClient } from "./support/ws-client";

// A voice device asks what time it is: the same tools answer it, in its owner's time zone, and the
// device gets only the final text (one C2D message, no tool frames or results).

let cert: LocalhostCert;
let peer: IotHubPeer;
let model: SseModel;
let srv: TestServer;
let owner: TestClient;

beforeAll(async () => {
  cert = await makeLocalhostCert();
  peer = await startIotHubPeer({ tls: cert });
  model = await startSseModel();
  model.setScript((r) => {
    const tool = (r.body.messages as { role: string; content: string }[]).find((m) => m.role === "tool");
    if (!tool) return { tokens: [], toolCalls: [{ id: "t1", name: "current_time", arguments: "{}" }] };
    const now = JSON.parse(tool.content);
    return { tokens: ["It is ", now.time.slice(0, 5), " in ", now.timeZone, "."] };
  });
  srv = await startDeviceServer({ peer, cert, env: { OPENAI_BASE_URL: `${model.url}/v1`, OPENAI_MODEL: "m", CHAT_TITLES: "false" } });
  owner = await srv.connect();
});
afterAll(async () => {
  owner?.close();
  await srv?.close();
  await peer?.stop();
  model?.stop();
});

describe("a device question that needs a tool", () => {
  test("is answered with the tool's result in the owner's time zone; the device gets the final text only", async () => {
    // The device's chats belong to the default owner (DEVICE_DEFAULT_OWNER), whose settings apply.
    await owner.request({ type: "UPDATE_SETTINGS", timeZone: "America/New_York" }, "SETTINGS");
    const deviceId = `pi-${crypto.randomUUID().slice(0, 8)}`;
    peer.sendTelemetry({
      deviceId,
      body: { message: "What time is it?", timestamp: Date.now() / 1000 },
      messageId: crypto.randomUUID(),
      contentType: "application/json",
    });
    const c2d = await peer.waitForC2D((m) => m.deviceId === deviceId, 10_000);
    const response = (c2d.body as { response: string }).response;
    const ny = new Intl.DateTimeFormat("en-GB", { timeZone: "America/New_York", hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
    expect(response).toMatch(/^It is \d\d:\d\d in America\/New_York\.$/);
    const said = response.slice(6, 11);
    const nowThere = ny.format(new Date());
    // The minute may turn between the call and this check.
    expect([nowThere, ny.format(new Date(Date.now() - 60_000))]).toContain(said);
    const chatId = (c2d.body as { conversation_id: string }).conversation_id;
    const stored = await srv.store.listMessages(chatId, { limit: 10 });
    expect(stored.at(-1)).toMatchObject({
      role: "assistant",
      content: response,
      tool_calls: [{ id: "t1", name: "current_time", ok: true }],
    });
    // One C2D message went to the device: the reply is stored, nothing more is on its way.
    expect(peer.c2d.filter((m) => m.deviceId === deviceId).length).toBe(1);
  });
});
