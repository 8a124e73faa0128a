import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Browser } from "playwright-core";
import { launchBrowser, openPage, screenshot } from "./support/browser";
import { startTestServer, type TestServer } from "./support/harness";
import { startSseModel, type SseModel } from "./support/sse-model";
import { addUser } from "./support/users";
import type { Frame } from "./support/ws-client";

// The shared-chat page (/s/<id>) and the organise UI of the built-in page, in a real Chromium against
// the real server: a reply's Markdown rendered through the same sanitiser under the same CSP (nothing
// injected runs), the sign-in a private link asks for, a revoked link, and 👍 on a reply and a pin.

// The callbacks given to page.evaluate run in the browser; this project compiles without the DOM types.
declare const window: any, document: any;

const T = 30_000;
const HOSTILE = [
  "**bold** and `code`\n\n",
  "<img src=x onerror=\"window.pwned.push('img')\">\n\n",
  "[click](javascript:window.pwned.push('link'))\n\n",
  "<script>window.pwned.push('script')</script>\n\n",
  "| a | b |\n|---|---|\n| 1 | 2 |\n",
];

let model: SseModel;
let srv: TestServer;
let browser: Browser;
let user: { id: string; token: string };
let shareId = "";
let chatId = "";

beforeAll(async () => {
  model = await startSseModel({ tokens: HOSTILE });
  srv = await startTestServer({
    API_TOKEN: "legacy-token-page-share-1a3c5e7b9d",
    OPENAI_BASE_URL: `${model.url}/v1`,
    OPENAI_MODEL: "share-model",
    CHAT_TITLES: "false",
  });
  browser = await launchBrowser();
  user = await addUser(srv.store);
  const c = await srv.connect({ token: user.token });
  const chat = (await c.request({ type: "CREATE_CHAT", name: "Shared <b>name</b>" }, "NEW_CHAT")).chat as Frame;
  chatId = chat.id;
  c.send({ type: "SEND_MESSAGE", chatId, content: "<i>my question</i>" });
  await c.reply(chatId);
  shareId = (await c.request({ type: "SHARE_CHAT", chatId }, "SHARE")).share.id;
  c.close();
}, T);
afterAll(async () => {
  await browser?.close();
  await srv?.close();
  model?.stop();
});

async function sharePage(path: string) {
  const { page, context, problems } = await openPage(browser);
  page.on("dialog", (d) => {
    problems.push(`dialog: ${d.message()}`);
    void d.dismiss();
  });
  await page.addInitScript(() => {
    (window as any).pwned = [];
    document.addEventListener("securitypolicyviolation", (e: any) => (window as any).pwned.push(`CSP: ${e.violatedDirective}`));
  });
  await page.goto(`${srv.url}${path}`);
  return { page, context, problems };
}

describe("the shared-chat page", () => {
  test(
    "asks a signed-out reader to sign in, then renders the snapshot: Markdown formatted, nothing injected runs",
    async () => {
      const { page, context, problems } = await sharePage(`/s/${shareId}`);
      await page.locator("#token-form:not([hidden])").waitFor();
      await page.fill("#token", user.token);
      await page.click("#token-form button[type=submit]");
      const reply = page.locator("#messages > li.assistant .text");
      await reply.waitFor();
      // The name and the question are text, never markup.
      expect(await page.locator("#share-title").textContent()).toBe("Shared <b>name</b>");
      expect(await page.locator("#messages > li.user .text").textContent()).toBe("<i>my question</i>");
      expect(await page.locator("#messages > li.user i").count()).toBe(0);
      // The reply: formatted, sanitised.
      expect(await reply.locator("strong").textContent()).toBe("bold");
      expect(await reply.locator("code").first().textContent()).toBe("code");
      expect(await reply.locator("table td").count()).toBe(2);
      expect(await reply.locator("img, script").count()).toBe(0);
      expect(await reply.textContent()).toContain('<img src=x onerror="window.pwned');
      const hrefs = await reply.locator("a").evaluateAll((as: any[]) => as.map((a) => a.getAttribute("href")));
      for (const h of hrefs) expect(String(h)).not.toMatch(/^javascript:/i);
      await page.waitForTimeout(0);
      expect(await page.evaluate(() => (window as any).pwned)).toEqual([]);
      expect(problems).toEqual([]);
      await screenshot(page, "share-page");
      await context.close();
    },
    T,
  );

  test(
    "a ?token= link signs in by itself; a revoked link says it is gone",
    async () => {
      const { page, context } = await sharePage(`/s/${shareId}?token=${user.token}`);
      await page.locator("#messages > li.assistant").waitFor();
      expect(page.url()).not.toContain(user.token);
      const c = await srv.connect({ token: user.token });
      await c.request({ type: "REVOKE_SHARE", shareId }, "SHARE_REVOKED");
      await page.reload();
      await page.locator("#notice:not([hidden])").waitFor();
      expect(await page.locator("#notice").textContent()).toContain("revoked");
      expect(await page.locator("#messages > li").count()).toBe(0);
      await context.close();
      c.close();
    },
    T,
  );
});

describe("organising on the chat page", () => {
  test(
    "👍 on a reply is stored and shown pressed after a reload; Pin from the chat menu marks the chat",
    async () => {
      const { page, context, problems } = await sharePage(`/?token=${user.token}#${chatId}`);
      await page.locator('#conn[data-state="online"]').waitFor();
      const up = page.locator('#messages > li.assistant [data-rating="up"]');
      await up.waitFor();
      await up.click();
      await page.locator('#messages > li.assistant [data-rating="up"][aria-pressed="true"]').waitFor();
      const c = await srv.connect({ token: user.token });
      const history = await c.request({ type: "GET_CHAT_HISTORY", chatId }, "CHAT_HISTORY");
      expect((history.messages as Frame[]).find((m) => m.role === "assistant")!.feedback.rating).toBe("up");
      await page.click("#chat-menu");
      await page.click('#chat-menu-items [data-organise="pin"]');
      await page.locator("#chats li.current .pin").waitFor();
      expect((await c.request({ type: "GET_CHATS", pinned: true }, "CHAT_LIST")).chats.map((x: Frame) => x.id)).toEqual([chatId]);
      await page.reload();
      await page.locator('#messages > li.assistant [data-rating="up"][aria-pressed="true"]').waitFor();
      await page.locator("#chats li.current .pin").waitFor();
      expect(problems.filter((p) => !p.startsWith("dialog"))).toEqual([]);
      await context.close();
      c.close();
    },
    T,
  );

  test(
    "⏳ makes a temporary chat marked in the list, not listed by the server; Keep this chat makes it a normal one",
    async () => {
      const { page, context } = await sharePage(`/?token=${user.token}`);
      await page.locator('#conn[data-state="online"]').waitFor();
      await page.click('.folders button[aria-label="New temporary chat"]');
      const badge = page.locator("#chats li.current .badge.temporary");
      await badge.waitFor();
      const id = await page.locator("#chats li.current").getAttribute("data-id");
      const c = await srv.connect({ token: user.token });
      expect((await c.request({ type: "GET_CHATS" }, "CHAT_LIST")).chats.map((x: Frame) => x.id)).not.toContain(id);
      await page.click("#chat-menu");
      await page.click('#chat-menu-items [data-organise="keep"]');
      await badge.waitFor({ state: "detached" });
      expect((await c.request({ type: "GET_CHATS" }, "CHAT_LIST")).chats.map((x: Frame) => x.id)).toContain(id);
      await context.close();
      c.close();
    },
    T,
  );
});
