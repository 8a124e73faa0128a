import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import type { Browser, Download, Page } from "playwright-core";
import { hashToken, newPersonalToken } from "../src/auth/tokens";
import { launchBrowser, openPage, screenshot } from "./support/browser";
import { startTestServer, type TestServer } from "./support/harness";
import { startSseModel, type Script, type SseModel } from "./support/sse-model";
import { until } from "./support/until";
import { addUser } from "./support/users";

// The page's features beyond chatting (issues 14 and 16), in a real Chromium against the real server
// (SQLite) and a local SSE model: who is signed in, regenerate and versions, edit and branches, search,
// export and import, a revoked token. One server and one browser; the tests run in order, as one
// person (a personal-token user) would use the page. Screenshots: test-artifacts/page/.

// The callbacks given to page.evaluate run in the browser; this project compiles without the DOM types.
declare const window: any, document: any;

const T = 30_000;
const LEGACY = "page-features-legacy-token-3d9a7c51";
const pieces = (text: string, n = 4) => Array.from({ length: Math.ceil(text.length / n) }, (_, i) => text.slice(i * n, i * n + n));

let model: SseModel;
let srv: TestServer;
let browser: Browser;
let page: Page;
let problems: string[] = [];
let alice: Awaited<ReturnType<typeof addUser>>;
let chatId = "";

/** What a page recorded that must not happen: page errors, console errors, dialogs, CSP violations. */
function watch(p: Page, into: string[]) {
  p.on("dialog", (d) => {
    into.push(`dialog: ${d.message()}`);
    void d.dismiss();
  });
  // A 401 the page asked for on purpose (who am I, with a refused token) is logged by Chromium; nothing else may be.
  p.on("console", (m) => m.type() === "error" && !/status of 401/.test(m.text()) && into.push(`console error: ${m.text()}`));
  return p.addInitScript(() => {
    document.addEventListener("securitypolicyviolation", (e: any) =>
      console.error(`CSP violation: ${e.violatedDirective} ${e.blockedURI}`),
    );
  });
}

const online = (p = page) => p.locator('#conn[data-state="online"]').waitFor();
const bubbles = (role: "user" | "assistant") => page.locator(`#messages > li.${role}`);
/** What the bubbles read (a reply's Markdown paragraphs less the whitespace around them; a question exactly). */
const texts = async (role: "user" | "assistant") =>
  (await bubbles(role).locator(":scope > .text").allTextContents()).map((t) => (role === "assistant" ? t.trim() : t));
/** The last reply, finished (not streaming) and reading `text`. */
const replyDone = (text: string, p = page) =>
  p.locator("#messages > li.assistant:last-child:not(.streaming) > .text", { hasText: text }).waitFor();

/** Sends `question` from the composer; the model answers `reply`. */
async function ask(question: string, reply: string, script: Partial<Script> = {}) {
  model.setScript({ tokens: pieces(reply), delayMs: 2, ...script });
  await page.fill("#input", question);
  await page.press("#input", "Enter");
  await replyDone(reply);
}

async function download(p: Page, item: string): Promise<{ name: string; body: string }> {
  await p.click("#chat-menu");
  const [file] = (await Promise.all([p.waitForEvent("download"), p.getByRole("menuitem", { name: item }).click()])) as [Download, unknown];
  return { name: file.suggestedFilename(), body: readFileSync((await file.path())!, "utf8") };
}

beforeAll(async () => {
  model = await startSseModel({ tokens: ["Hi"] });
  srv = await startTestServer({
    API_TOKEN: LEGACY,
    OPENAI_BASE_URL: `${model.url}/v1`,
    OPENAI_MODEL: "features-model",
    CHAT_TITLES: "false",
    AUTH_RECHECK_MS: "200", // a revoked token's socket closes within this
  });
  alice = await addUser(srv.store, "alice");
  await srv.store.setTokensPerDay(alice.id, 1_000_000); // the sidebar shows today's use against it
  browser = await launchBrowser();
  ({ page, problems } = await openPage(browser));
  await watch(page, problems);
  await page.goto(`${srv.url}/?token=${alice.token}`);
  await online();
}, T);

afterAll(async () => {
  await browser?.close();
  await srv?.close();
  model?.stop();
}, T);

describe("signing in", () => {
  test("?token= signs in a personal-token user, whose name and kind of sign-in the header shows; the token leaves the address bar", async () => {
    await page.locator("#who .user-name", { hasText: "alice" }).waitFor();
    expect(await page.locator("#who .user-kind").textContent()).toBe("personal token");
    expect(await page.isVisible("#sign-out")).toBe(true);
    expect(page.url()).not.toContain(alice.token);
    expect(await page.evaluate(() => window.sessionStorage.getItem("pichat.token"))).toBe(alice.token); // for this tab's reloads
    await screenshot(page, "f1-signed-in");
  });

  test(
    "without a token the page asks for one; a wrong one is refused; the legacy API_TOKEN is the user default, an API token",
    async () => {
      const other = await openPage(browser);
      const seen: string[] = [];
      await watch(other.page, seen);
      try {
        await other.page.goto(srv.url);
        await other.page.locator("#token-form", { hasText: "needs an API token" }).waitFor();
        expect(await other.page.getAttribute("#conn", "data-state")).toBe("offline");
        await screenshot(other.page, "8-token-prompt");
        await other.page.fill("#token", "wrong-token");
        await other.page.press("#token", "Enter");
        await other.page.locator("#token-form", { hasText: "That token was refused" }).waitFor();
        expect(await other.page.isHidden("#who")).toBe(true);
        await other.page.fill("#token", LEGACY);
        await other.page.press("#token", "Enter");
        await online(other.page);
        expect(await other.page.isHidden("#token-form")).toBe(true);
        await other.page.locator("#who .user-name", { hasText: "default" }).waitFor();
        expect(await other.page.locator("#who .user-kind").textContent()).toBe("API token");
        // The legacy user's list is its own: alice's chats are not in it (nor is there any yet).
        expect(await other.page.locator("#chats li").count()).toBe(0);
        expect([...seen, ...other.problems]).toEqual([]);
      } finally {
        await other.context.close();
      }
    },
    T,
  );
});

describe("versions and branches", () => {
  test(
    "Regenerate streams a new version in place; ‹ › switch between the versions both ways; a reload shows the selected one",
    async () => {
      await page.click("#new-chat");
      const item = page.locator("#chats li.current");
      await item.waitFor();
      chatId = (await item.getAttribute("data-id"))!;
      await ask("What is the answer?", "First answer.");

      model.setScript({ tokens: ["Second", " answer", "."], delayMs: 2, holdAfter: 1 });
      await bubbles("assistant").last().getByRole("button", { name: "Regenerate" }).click();
      await model.waitHeld();
      // In place: the old reply made way for the new one, which streams where it was.
      const streamingReply = page.locator("#messages > li.assistant.streaming > .text", { hasText: "Second" });
      await streamingReply.waitFor();
      expect(await bubbles("assistant").count()).toBe(1);
      expect(await page.isVisible("#stop")).toBe(true);
      model.release();
      const counter = bubbles("assistant").last().locator(".count");
      await page.locator("#messages > li.assistant .count", { hasText: "2/2" }).waitFor();
      expect(await texts("assistant")).toEqual(["Second answer."]);
      expect(await texts("user")).toEqual(["What is the answer?"]);
      expect(await page.getByRole("group", { name: "version 2 of 2" }).count()).toBe(1); // what a screen reader hears
      await screenshot(page, "f2-regenerated");

      // The model was asked the same question again, and nothing after it.
      const last = model.requests.at(-1)!.body.messages;
      expect(last.at(-1)).toMatchObject({ role: "user", content: "What is the answer?" });
      expect(last.filter((m: any) => m.role === "assistant")).toEqual([]);

      await page.getByRole("button", { name: "Previous version" }).click();
      await page.locator("#messages > li.assistant .count", { hasText: "1/2" }).waitFor();
      expect(await texts("assistant")).toEqual(["First answer."]);
      // Keyboard: the focus stays on the switcher after the re-render (the previous one is now at its end).
      expect(await page.evaluate(() => document.activeElement?.getAttribute("aria-label"))).toBe("Next version");
      await page.keyboard.press("Enter");
      await page.locator("#messages > li.assistant .count", { hasText: "2/2" }).waitFor();
      expect(await texts("assistant")).toEqual(["Second answer."]);
      await page.getByRole("button", { name: "Previous version" }).click();
      await page.locator("#messages > li.assistant .count", { hasText: "1/2" }).waitFor();

      await page.reload();
      await online();
      await counter.filter({ hasText: "1/2" }).waitFor();
      expect(await texts("assistant")).toEqual(["First answer."]);
      expect(problems).toEqual([]);
    },
    T,
  );

  test(
    "Edit asks the edited question on a new branch; switching back shows the old branch intact; another tab follows",
    async () => {
      // A second tab on the same chat: it hears BRANCH_SELECTED and reloads the history.
      const tab = await openPage(browser);
      const seen: string[] = [];
      await watch(tab.page, seen);
      try {
        await tab.page.goto(`${srv.url}/?token=${alice.token}#${chatId}`);
        await online(tab.page);
        await tab.page.locator("#messages > li.assistant > .text", { hasText: "First answer." }).waitFor();

        await bubbles("user").getByRole("button", { name: "Edit" }).click();
        const editor = page.getByRole("textbox", { name: "Edit your message" });
        expect(await editor.inputValue()).toBe("What is the answer?");
        expect(await editor.evaluate((e) => e === document.activeElement)).toBe(true);
        await editor.fill("What is the question?");
        model.setScript({ tokens: pieces("Nobody knows."), delayMs: 2 });
        await editor.press("Enter");
        await replyDone("Nobody knows.");
        await page.locator("#messages > li.user .count", { hasText: "2/2" }).waitFor();
        expect(await texts("user")).toEqual(["What is the question?"]);
        expect(await texts("assistant")).toEqual(["Nobody knows."]);
        expect(model.requests.at(-1)!.body.messages.at(-1)).toMatchObject({ role: "user", content: "What is the question?" });
        await tab.page.locator("#messages > li.assistant > .text", { hasText: "Nobody knows." }).waitFor();
        await screenshot(page, "f3-edited");

        await page.getByRole("button", { name: "Previous branch" }).click();
        await page.locator("#messages > li.user .count", { hasText: "1/2" }).waitFor();
        expect(await texts("user")).toEqual(["What is the answer?"]);
        // The old branch is as it was: its reply with both of its versions (a branch opens on its newest).
        expect(await texts("assistant")).toEqual(["Second answer."]);
        expect(await bubbles("assistant").locator(".count").textContent()).toBe("2/2");
        await tab.page.locator("#messages > li.user > .text", { hasText: "What is the answer?" }).waitFor();
        await page.getByRole("button", { name: "Previous version" }).click();
        await page.locator("#messages > li.assistant .count", { hasText: "1/2" }).waitFor();
        expect(await texts("assistant")).toEqual(["First answer."]);
        expect(await texts("user")).toEqual(["What is the answer?"]);

        await page.getByRole("button", { name: "Next branch" }).click();
        await page.locator("#messages > li.user .count", { hasText: "2/2" }).waitFor();
        expect(await texts("assistant")).toEqual(["Nobody knows."]);
        await tab.page.locator("#messages > li.assistant > .text", { hasText: "Nobody knows." }).waitFor();
        expect([...seen, ...tab.problems, ...problems]).toEqual([]);
      } finally {
        await tab.context.close();
      }
    },
    T,
  );
});

describe("search", () => {
  const XSS = "<img src=x onerror=alert(1)>";
  let zanzibar = "";

  test(
    "finds a word in a chat name and in old messages; highlights are <mark>; markup in a message is text; more results page on",
    async () => {
      const chat = await srv.chat.createChat({ owner: alice.id, name: "Zanzibar plans" });
      zanzibar = chat.id;
      await page.locator(`#chats li[data-id="${zanzibar}"]`).click();
      await ask(`Try ${XSS} with the quokka`, "Quokkas live on Rottnest.");
      // Older messages enough for two pages of hits (20 a page), written straight to the store.
      const t0 = Date.parse("2024-01-01T00:00:00.000Z");
      for (let i = 0; i < 22; i++) {
        await srv.store.addMessage({
          id: `old-${i}`,
          chat_id: zanzibar,
          role: "user",
          content: `old note ${i} about a quokka`,
          created_at: new Date(t0 + i * 1000).toISOString(),
        });
      }

      await page.fill("#search", "zanzibar");
      const nameHit = page.locator("#hits .hit", { hasText: "Chat name" });
      await nameHit.waitFor();
      expect(await nameHit.locator("mark").allTextContents()).toEqual(["Zanzibar"]);
      expect(await page.isHidden("#chats")).toBe(true);

      await page.fill("#search", "quokka");
      const hits = page.locator("#hits > li");
      await until(async () => (await hits.count()) === 20, "the first page of hits");
      await page.locator("#results-status", { hasText: "20 results so far" }).waitFor();
      await page.getByRole("button", { name: "More results" }).click();
      await until(async () => (await hits.count()) === 24, "the second page of hits (22 old notes, the question, the reply)");
      expect(await page.isHidden("#more-results")).toBe(true);
      expect(new Set(await hits.allTextContents()).size).toBe(24); // every hit once

      const xss = page.locator("#hits .hit", { hasText: "onerror" });
      expect(await xss.locator(".snippet").textContent()).toBe(`Try ${XSS} with the quokka`);
      expect(await xss.locator("mark").allTextContents()).toEqual(["quokka"]);
      expect(await page.locator("#results img").count()).toBe(0);
      for (const marked of await page.locator("#hits mark").allTextContents()) expect(marked.toLowerCase()).toStartWith("quokka");
      await xss.scrollIntoViewIfNeeded();
      await screenshot(page, "f4-search");
      expect(problems).toEqual([]);
    },
    T,
  );

  test(
    "a hit opens its chat and shows the message; Escape brings the chat list back",
    async () => {
      await page.fill("#search", "nobody");
      const hit = page.locator("#hits .hit", { hasText: "Nobody knows" });
      await hit.click();
      await page.locator(`#chats li.current[data-id="${chatId}"]`).waitFor({ state: "attached" });
      const found = page.locator("#messages > li.found");
      await found.waitFor();
      expect((await found.locator(".text").textContent())!.trim()).toBe("Nobody knows.");
      await page.press("#search", "Escape");
      await page.locator("#chats").waitFor();
      expect(await page.isHidden("#results")).toBe(true);
      expect(problems).toEqual([]);
    },
    T,
  );
});

describe("export and import", () => {
  let json = "";

  test(
    "Export as Markdown and as JSON download files that hold the whole chat",
    async () => {
      const stored = await srv.store.listMessages(chatId, { limit: 100 });
      expect(stored.length).toBe(5); // a question, two versions of its answer, the edit and its answer

      const md = await download(page, "Export as Markdown");
      expect(md.name).toBe("New Chat.md");
      expect(md.body).toStartWith("# New Chat\n");
      for (const m of stored) expect(md.body).toContain(`\n${m.content}\n`);

      const file = await download(page, "Export as JSON");
      expect(file.name).toBe("New Chat.json");
      const parsed = JSON.parse(file.body);
      expect(parsed).toMatchObject({ format: "pichat.chat", version: 1, chat: { id: chatId, name: "New Chat" } });
      expect(parsed.messages.map((m: any) => [m.id, m.role, m.content])).toEqual(stored.map((m) => [m.id, m.role, m.content]));
      json = file.body;
      expect(problems).toEqual([]);
    },
    T,
  );

  test(
    "Import of that file makes a second chat with the same messages, opened on the same branch",
    async () => {
      const path = `${import.meta.dir}/../test-artifacts/page/exported.json`;
      await Bun.write(path, json);
      const [chooser] = await Promise.all([
        page.waitForEvent("filechooser"),
        page.getByRole("button", { name: "Import a chat from a JSON export" }).click(),
      ]);
      await chooser.setFiles(path);
      const copy = page.locator("#chats li.current:not([data-id='" + chatId + "'])");
      await copy.waitFor();
      const copyId = (await copy.getAttribute("data-id"))!;
      expect(await copy.textContent()).toBe("New Chat");
      const original = await srv.store.listMessages(chatId, { limit: 100 });
      const imported = await srv.store.listMessages(copyId, { limit: 100 });
      expect(imported.map((m) => [m.role, m.content])).toEqual(original.map((m) => [m.role, m.content]));
      await replyDone("Nobody knows.");
      expect(await texts("user")).toEqual(["What is the question?"]);
      expect(await page.locator("#chats li").count()).toBe(3);
      expect(problems).toEqual([]);
    },
    T,
  );
});

describe("today's use", () => {
  test(
    "the sidebar shows today's tokens against the budget, as recorded, and again after a reply",
    async () => {
      const used = () => srv.store.tokensUsedSince(alice.id, `${new Date().toISOString().slice(0, 10)}T00:00:00.000Z`);
      await ask("Count me", "Counted.");
      const after = await until(async () => {
        const n = await used();
        const shown = await page.textContent("#usage span");
        return n > 0 && shown === `Today: ${n.toLocaleString("en-US")} of 1,000,000 tokens` && n;
      }, "the usage line to show the recorded total");
      expect(await page.getAttribute("#usage meter", "max")).toBe("1000000");
      expect(Number(await page.getAttribute("#usage meter", "value"))).toBe(after);
      await screenshot(page, "f-usage");
      expect(problems).toEqual([]);
    },
    T,
  );
});

describe("signing out", () => {
  test(
    "a revoked token closes the socket: the page says so and asks for a token, without reconnecting; a new token signs in again",
    async () => {
      // A reconnect would ask who the token is, then open a socket (or ask /ws why it was refused).
      const upgrades: string[] = [];
      page.on("websocket", (ws) => upgrades.push(ws.url()));
      page.on("request", (r) => ["/ws", "/api/me"].includes(new URL(r.url()).pathname) && upgrades.push(r.url()));
      expect(await srv.store.revokeTokens(alice.id)).toBe(1);
      await page.locator("#token-form", { hasText: "token revoked" }).waitFor();
      expect(await page.getAttribute("#conn", "data-state")).toBe("offline");
      expect(await page.isHidden("#who")).toBe(true);
      expect(await page.locator("#chats li").count()).toBe(0);
      expect(await page.evaluate(() => window.sessionStorage.getItem("pichat.token"))).toBeNull();
      await screenshot(page, "f5-revoked");
      // No reconnect loop: the first retry would come within 0.75 s; nothing tries in twice that.
      await Bun.sleep(1500);
      expect(upgrades).toEqual([]);

      const fresh = newPersonalToken();
      await srv.store.addToken(alice.id, hashToken(fresh));
      await page.fill("#token", fresh);
      await page.press("#token", "Enter");
      await online();
      await page.locator("#who .user-name", { hasText: "alice" }).waitFor();
      await page.locator(`#chats li[data-id="${chatId}"]`).waitFor();

      await page.getByRole("button", { name: "Sign out" }).click();
      await page.locator("#token-form", { hasText: "Signed out" }).waitFor();
      await until(() => srv.conns.all().length === 0, "the page's socket to close");
      expect(await page.evaluate(() => window.sessionStorage.getItem("pichat.token"))).toBeNull();
      expect(problems).toEqual([]);
    },
    T,
  );
});
