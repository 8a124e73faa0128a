import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Browser, Page } from "playwright-core";
import { launchBrowser, openPage } from "./support/browser";
import { startTestServer, type TestServer } from "./support/harness";
import { startSseModel, type SseModel } from "./support/sse-model";

// The built-in page, in a real Chromium, with tool-call frames on: it knows neither TOOL_CALL_START
// nor TOOL_CALL_END, and the reply around them (whose seq numbers skip the tool frames' slots) must
// show exactly as without tools, with nothing reported on the console.

const T = 30_000;
let model: SseModel;
let srv: TestServer;
let browser: Browser;
let page: Page;
let problems: string[] = [];

beforeAll(async () => {
  model = await startSseModel();
  model.setScript((r) =>
    (r.body.messages as { role: string }[]).some((m) => m.role === "tool")
      ? { tokens: ["It is ", "a fine ", "time."], delayMs: 20 }
      : {
          tokens: ["Let me look. "],
          toolCalls: [
            { name: "current_time", arguments: "{}" },
            { name: "date_add", arguments: '{"days":1}' },
          ],
        },
  );
  srv = await startTestServer({ OPENAI_BASE_URL: `${model.url}/v1`, OPENAI_MODEL: "page-model", CHAT_TITLES: "false" });
  browser = await launchBrowser();
  ({ page, problems } = await openPage(browser));
  page.on("websocket", (ws) => ws.on("framereceived", (f) => received.push(String(f.payload))));
}, T);
const received: string[] = [];
afterAll(async () => {
  await browser?.close();
  await srv?.close();
  model?.stop();
}, T);

describe("the page with tool-call frames", () => {
  test(
    "a reply that calls two tools reads exactly its text, live and after a reload",
    async () => {
      await page.goto(srv.url);
      await page.locator('#conn[data-state="online"]').waitFor();
      await page.click("#new-chat");
      await page.locator("#chats li.current").waitFor();
      await page.fill("#input", "what time is it?");
      await page.press("#input", "Enter");
      const done = page.locator("#messages > li.assistant:last-child:not(.streaming) > .text", { hasText: "fine time" });
      await done.waitFor();
      expect((await done.textContent())!.trim()).toBe("Let me look. It is a fine time.");
      // The frames did reach the page: two starts, two ends.
      const types = received.map((f) => JSON.parse(f).type);
      expect(types.filter((t) => t === "TOOL_CALL_START").length).toBe(2);
      expect(types.filter((t) => t === "TOOL_CALL_END").length).toBe(2);
      await page.reload();
      await page.locator('#conn[data-state="online"]').waitFor();
      await page.locator("#chats li").first().click();
      const again = page.locator("#messages > li.assistant:last-child > .text", { hasText: "fine time" });
      await again.waitFor();
      expect((await again.textContent())!.trim()).toBe("Let me look. It is a fine time.");
      expect(problems).toEqual([]);
    },
    T,
  );
});
