import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Browser, Page } from "playwright-core";
import { LEGACY_USER_ID as OWNER } from "../src/auth/identity";
import { launchBrowser, openPage, screenshot } from "./support/browser";
import { startTestServer, type TestServer } from "./support/harness";
import { startSseModel, type SseModel } from "./support/sse-model";
import { until } from "./support/until";

// The built-in chat page at /, in a real Chromium, against the real server and a local SSE model.
// The tests run in order on one page, like a person would use it. Screenshots: test-artifacts/page/.

const T = 30_000;
const words = (n: number) => Array.from({ length: n }, (_, i) => `w${i} `);

let model: SseModel;
let srv: TestServer;
let browser: Browser;
let page: Page;
let problems: string[] = [];
let chatId = "";

/**
 * Waits until the last bubble is a finished reply, and checks it reads exactly `text`. A reply is rendered
 * as Markdown: plain words become one paragraph, whose text is theirs less the whitespace at either end.
 */
async function replyDone(text: string) {
  const last = page.locator("#messages > li.assistant:last-child:not(.streaming) > .text", { hasText: text.trim() });
  await last.waitFor();
  expect((await last.textContent())!.trim()).toBe(text.trim());
}
const online = () => page.locator('#conn[data-state="online"]').waitFor();
const watching = (id: string) => until(() => srv.conns.all().some((ws) => ws.data.watching.has(id)), `the page to watch chat ${id}`);

beforeAll(async () => {
  model = await startSseModel({ tokens: ["Hello", " from", " the", " local", " model", "."], delayMs: 100 });
  srv = await startTestServer({ OPENAI_BASE_URL: `${model.url}/v1`, OPENAI_MODEL: "page-model", CHAT_TITLES: "false" });
  browser = await launchBrowser();
  ({ page, problems } = await openPage(browser));
}, T);

afterAll(async () => {
  await browser?.close();
  await srv?.close();
  model?.stop();
}, T);

describe("the chat page", () => {
  test("/ is the page with a strict CSP and no inline script; /api keeps the JSON description", async () => {
    const res = await fetch(`${srv.url}/`);
    expect(res.headers.get("content-type")).toStartWith("text/html");
    const csp = res.headers.get("content-security-policy") ?? "";
    expect(csp).toContain("default-src 'self'");
    const host = new URL(srv.url).host;
    expect(csp).toContain(`connect-src 'self' ws://${host} wss://${host};`); // its own host only (page-signin.test.ts)
    expect(csp).not.toContain("unsafe");
    const html = await res.text();
    expect(html).not.toMatch(/<script(?![^>]*\bsrc=)/);
    expect(html).not.toMatch(/\son\w+=/);
    for (const js of ["app.js", "client.js", "search.js", "signin.js", "transfer.js"])
      expect((await fetch(`${srv.url}/page/${js}`)).headers.get("content-type")).toStartWith("text/javascript");
    expect((await fetch(`${srv.url}/page/style.css`)).headers.get("content-type")).toStartWith("text/css");
    const api: any = await (await fetch(`${srv.url}/api`)).json();
    expect(api).toMatchObject({ name: "PiChat backend", websocket: "/ws", health: "/health" });
  });

  test(
    "goes online, creates a chat, and streams the reply in",
    async () => {
      await page.goto(srv.url);
      await online();
      // An open server (development, no token configured): everyone is the user default, nothing to sign out of.
      await page.locator("#who .user-name", { hasText: "default" }).waitFor();
      expect(await page.locator("#who .user-kind").textContent()).toBe("no sign-in needed");
      expect(await page.isHidden("#sign-out")).toBe(true);
      await page.click("#new-chat");
      const current = page.locator("#chats li.current");
      await current.waitFor();
      chatId = (await current.getAttribute("data-id"))!;
      expect(await srv.store.getChat(OWNER, chatId)).toMatchObject({ id: chatId, name: "New Chat" });

      await page.fill("#input", "Hi there");
      await page.press("#input", "Enter");
      await page.locator("#messages .msg.user", { hasText: "Hi there" }).waitFor();
      // Part of the reply is on screen while the rest is still coming: the bubble is marked
      // streaming until its end frame, so this only matches a partial reply.
      await page.locator("#messages .msg.assistant.streaming .text", { hasText: "Hello" }).waitFor();
      expect(await page.isVisible("#stop")).toBe(true);
      await screenshot(page, "1-streaming");
      await replyDone("Hello from the local model.");
      expect(await page.isVisible("#send")).toBe(true);
      await until(async () => (await srv.store.listMessages(chatId, { limit: 10 })).length === 2, "both messages to be stored");
      await screenshot(page, "2-reply");
    },
    T,
  );

  test(
    "a reload shows the same chat and its history",
    async () => {
      await page.reload();
      await online();
      await page.locator(`#chats li.current[data-id="${chatId}"]`).waitFor();
      await page.locator("#messages .msg.user", { hasText: "Hi there" }).waitFor();
      await replyDone("Hello from the local model.");
    },
    T,
  );

  test(
    "Stop ends a long generation; the partial reply is stored as stopped",
    async () => {
      model.setScript({ tokens: words(400), delayMs: 15 });
      const upstream = model.requests.length;
      await page.fill("#input", "Talk for a long time");
      await page.click("#send");
      await page.locator("#messages .msg.assistant.streaming .text", { hasText: "w3 " }).waitFor();
      await page.click("#stop");
      const status = page.locator("#messages .msg.assistant").last().locator(".status");
      await status.waitFor();
      expect(await status.textContent()).toBe("stopped");
      expect(await page.isVisible("#send")).toBe(true);
      expect(await page.isHidden("#stop")).toBe(true);
      await until(() => model.requests[upstream]?.aborted, "the model request to be aborted");
      const stored = await until(
        async () => (await srv.store.listMessages(chatId, { limit: 10 })).find((m) => m.status === "stopped"),
        "a stopped reply in the store",
      );
      const shown = await page.locator("#messages .msg.assistant").last().locator(".text").textContent();
      expect(shown!.trim()).toBe(stored.content.trim());
      expect(shown!.length).toBeLessThan(words(400).join("").length);
      await screenshot(page, "3-stopped");
    },
    T,
  );

  test(
    "the socket drops mid-reply: the page shows it, reconnects by itself, and the reply continues",
    async () => {
      model.setScript({ tokens: words(60), delayMs: 25 });
      await page.fill("#input", "Keep going through a reconnect");
      await page.click("#send");
      await page.locator("#messages .msg.assistant.streaming .text", { hasText: "w4 " }).waitFor();
      for (const ws of srv.conns.all()) ws.close(1001, "test: server going away");
      await page.locator('#conn[data-state="offline"], #conn[data-state="connecting"]').waitFor();
      await online();
      // The history brought back the partial reply (streaming:true); the live deltas continue it exactly.
      await replyDone(words(60).join(""));
      const stored = (await srv.store.listMessages(chatId, { limit: 10 })).at(-1)!;
      expect(stored.content).toBe(words(60).join(""));
    },
    T,
  );

  test(
    "renaming from the title shows the new name, as text",
    async () => {
      const name = "<b>Renamed</b> & tested";
      await page.fill("#title", name);
      await page.press("#title", "Enter");
      await page.locator(`#chats li[data-id="${chatId}"] .name`, { hasText: name }).waitFor();
      expect(await page.locator("#chats b").count()).toBe(0);
      expect((await srv.store.getChat(OWNER, chatId))?.name).toBe(name);
    },
    T,
  );

  test(
    "a device conversation appears live, with a device badge",
    async () => {
      model.setScript({ tokens: ["Sunny", " and", " mild", "."], delayMs: 30 });
      const device = await srv.chat.createChat({ owner: OWNER, name: "pi-1", deviceId: "pi-1" });
      const item = page.locator(`#chats li[data-id="${device.id}"]`);
      await item.locator(".badge", { hasText: "device" }).waitFor();
      await item.locator("button").click();
      await watching(device.id);
      const sent = await srv.chat.send({ owner: OWNER, chatId: device.id, content: "What's the weather like?", deviceId: "pi-1" });
      await page.locator("#messages .msg.user", { hasText: "What's the weather like?" }).locator(".badge", { hasText: "pi-1" }).waitFor();
      await replyDone("Sunny and mild.");
      if (!sent.duplicate) await sent.reply;
      await screenshot(page, "4-device");
    },
    T,
  );

  test(
    "on a phone the sidebar folds away behind the menu button",
    async () => {
      await page.setViewportSize({ width: 390, height: 780 });
      const sidebar = page.locator("#sidebar");
      await until(
        async () => ((await sidebar.boundingBox())?.x ?? 0) + ((await sidebar.boundingBox())?.width ?? 0) <= 0,
        "the sidebar to be off screen",
      );
      await screenshot(page, "5-phone");
      await page.click("#menu");
      await until(async () => (await sidebar.boundingBox())?.x === 0, "the sidebar to slide in");
      await screenshot(page, "6-phone-menu");
      await page.locator(`#chats li[data-id="${chatId}"] button`).click();
      await until(async () => ((await sidebar.boundingBox())?.x ?? 0) < 0, "the sidebar to fold away after choosing a chat");
      await page.locator("#messages .msg.user", { hasText: "Hi there" }).waitFor();
      await page.setViewportSize({ width: 1100, height: 720 });
    },
    T,
  );

  test(
    "deleting the chat removes it from the sidebar and the store",
    async () => {
      await page.locator(`#chats li.current[data-id="${chatId}"]`).waitFor();
      page.once("dialog", (d) => d.accept());
      await page.click("#delete");
      await page.locator(`#chats li[data-id="${chatId}"]`).waitFor({ state: "detached" });
      expect(await srv.store.getChat(OWNER, chatId)).toBeFalsy();
      await screenshot(page, "7-deleted");
      expect(problems).toEqual([]);
    },
    T,
  );
});

// Signing in with a token (the prompt, a refused token, ?token=, who is signed in): page-features.test.ts.
