import { afterAll, beforeAll, expect, setDefaultTimeout, test } from "bun:test";
import type { Browser, Page } from "playwright-core";
import { startIotHubPeer, type IotHubPeer } from "./support/amqp-peer";
import { launchBrowser, openPage, screenshot } from "./support/browser";
import { startDeviceServer } from "./support/device-server";
import type { TestServer } from "./support/harness";
import { startSseModel, type SseModel } from "./support/sse-model";
import { makeLocalhostCert } from "./support/tls-cert";
import { addUser } from "./support/users";

// The page's Devices panel in a real Chromium: the signed-in person's devices, updated live, and a box
// that says something through one (a real C2D message on the local AMQP peer). SQLite.

setDefaultTimeout(30_000);

let model: SseModel;
let peer: IotHubPeer;
let srv: TestServer;
let browser: Browser;
let page: Page;
let problems: string[] = [];
const PI = "pi-page-kitchen";

beforeAll(async () => {
  const cert = await makeLocalhostCert();
  [model, peer] = await Promise.all([startSseModel({ tokens: ["It is seven."] }), startIotHubPeer({ tls: cert })]);
  srv = await startDeviceServer({
    peer,
    cert,
    env: { OPENAI_BASE_URL: `${model.url}/v1`, OPENAI_MODEL: "m", CHAT_TITLES: "false", DEVICE_DEFAULT_OWNER: "none" },
  });
  const alice = await addUser(srv.store, "alice-page");
  await srv.store.assignDevice(PI, alice.id);
  browser = await launchBrowser();
  ({ page, problems } = await openPage(browser));
  await page.goto(`${srv.url}/?token=${alice.token}`);
  await page.locator('#conn[data-state="online"]').waitFor();
});
afterAll(async () => {
  await browser?.close();
  await srv?.close();
  await peer?.stop();
  model?.stop();
});

test("the Devices panel lists the person's device, shows its question live, opens its chat, and says something through it", async () => {
  await page.locator("#devices summary", { hasText: "Devices (1)" }).waitFor();
  await page.click("#devices summary");
  expect(await page.locator(".device .device-state").textContent()).toBe("never asked anything");

  peer.sendTelemetry({ deviceId: PI, body: { message: "what time is it?" }, messageId: "q-page-1", contentType: "application/json" });
  await page.locator(".device .device-question", { hasText: "“what time is it?”" }).waitFor();
  expect(await page.locator(".device .device-state").textContent()).toMatch(/^asked /);

  peer.sendTelemetry({ deviceId: PI, body: { sequenceNumber: "1" }, properties: { opType: "deviceConnected" } });
  await page.locator(".device .device-state.on", { hasText: "online" }).waitFor();

  await page.click(".device button:has-text('Open chat')");
  await page.locator("#messages > li.user", { hasText: "what time is it?" }).waitFor();

  await page.fill(".device-say input", "Dinner is ready!");
  await page.click(".device-say button");
  await page.locator(".device-status", { hasText: "sent" }).waitFor();
  const c2d = await peer.waitForC2D((m) => (m.body as { announcement?: boolean }).announcement === true, 10_000);
  expect(c2d).toMatchObject({ deviceId: PI, body: { response: "Dinner is ready!" } });
  await screenshot(page, "devices-panel");
  expect(problems).toEqual([]);
});
