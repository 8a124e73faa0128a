import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { Browser, BrowserContext, Locator, Page } from "playwright-core";
import { ARTIFACTS, launchBrowser, openPage } from "./support/browser";
import { startTestServer, type TestServer } from "./support/harness";
import { startSseModel, type Script, type SseModel } from "./support/sse-model";

// Replies rendered as Markdown on the built-in page (src/http/page/markdown.js), in a real Chromium,
// against the real server and a local SSE model that streams each reply in small pieces, so every
// half-written state of the Markdown is rendered too. The tests run in order in one chat.

// The callbacks given to page.evaluate run in the browser; this project compiles without the DOM types.
declare const window: any, document: any, navigator: any;

const T = 30_000;
const shot = (l: Locator, name: string) => l.screenshot({ path: join(ARTIFACTS, `${name}.png`) });
/** A reply cut into pieces of `n` characters: tags and links arrive split across deltas. */
const pieces = (text: string, n = 5) => Array.from({ length: Math.ceil(text.length / n) }, (_, i) => text.slice(i * n, i * n + n));

let model: SseModel;
let srv: TestServer;
let browser: Browser;
let context: BrowserContext;
let page: Page;
let problems: string[] = [];

/** Sends `question`; the model streams `reply`. Returns the new reply's bubble and a wait for its end. */
async function ask(question: string, reply: string, script: Partial<Script> = {}) {
  model.setScript({ tokens: pieces(reply), delayMs: 1, ...script });
  const before = await page.locator("#messages > li.assistant").count();
  await page.fill("#input", question);
  await page.press("#input", "Enter");
  const bubble = page.locator("#messages > li.assistant").nth(before);
  const done = () => page.locator("#messages > li.assistant:not(.streaming)").nth(before).waitFor();
  return { bubble, text: bubble.locator(".text"), done };
}

beforeAll(async () => {
  model = await startSseModel({ tokens: ["Hi"] });
  srv = await startTestServer({ OPENAI_BASE_URL: `${model.url}/v1`, OPENAI_MODEL: "md-model", CHAT_TITLES: "false" });
  browser = await launchBrowser();
  ({ page, context, problems } = await openPage(browser));
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: srv.url });
  // Anything that would show an injected script ran, or was only stopped by the CSP (the sanitiser failed).
  page.on("dialog", (d) => {
    problems.push(`dialog: ${d.message()}`);
    void d.dismiss();
  });
  page.on("console", (m) => m.type() === "error" && problems.push(`console error: ${m.text()}`));
  await page.addInitScript(() => {
    (window as any).pwned = [];
    document.addEventListener("securitypolicyviolation", (e: any) => (window as any).pwned.push(`CSP: ${e.violatedDirective}`));
  });
  await page.goto(srv.url);
  await page.locator('#conn[data-state="online"]').waitFor();
  await page.click("#new-chat");
  await page.locator("#chats li.current").waitFor();
}, T);

afterAll(async () => {
  await browser?.close();
  await srv?.close();
  model?.stop();
}, T);

/** What must never be in a rendered message (every `.text` that `texts` matches), whatever the Markdown said. */
async function assertInert(texts: Locator) {
  const found = await texts.evaluateAll((els) => {
    const all: any[] = els.flatMap((el) => [...el.querySelectorAll("*")]);
    return {
      elements: all
        .filter((e) => e.matches("script, style, img, iframe, object, embed, svg, math, form, details, video, audio, link, meta, base"))
        .map((e) => e.outerHTML),
      // No handlers, and no class or style but the page's own copy buttons.
      attributes: all.flatMap((e) =>
        e
          .getAttributeNames()
          .filter((a: string) => a.startsWith("on") || ((a === "style" || a === "class") && !e.matches("pre > button.copy"))),
      ),
      hrefs: all
        .filter((e) => e.matches("[href], [src], [action], [formaction], [xlink\\:href]"))
        .map((e) => e.getAttribute("href") ?? e.outerHTML),
    };
  });
  expect(found.elements).toEqual([]);
  expect(found.attributes).toEqual([]);
  for (const href of found.hrefs) expect(href).toMatch(/^(https?:|mailto:)/);
  expect(await page.evaluate(() => (window as any).pwned)).toEqual([]);
  expect(problems).toEqual([]);
}

describe("replies rendered as Markdown", () => {
  test("the libraries come from this origin, exactly as npm shipped them, under the same strict CSP", async () => {
    const csp = (await fetch(`${srv.url}/`)).headers.get("content-security-policy") ?? "";
    expect(csp).toContain("script-src 'self'");
    expect(csp).toContain("require-trusted-types-for 'script'");
    expect(csp).not.toContain("unsafe");
    for (const [url, file] of [
      ["marked.esm.js", "marked/lib/marked.esm.js"],
      ["purify.es.mjs", "dompurify/dist/purify.es.mjs"],
    ] as const) {
      const res = await fetch(`${srv.url}/page/vendor/${url}`);
      expect(res.status).toBe(200);
      expect(res.headers.get("content-type")).toStartWith("text/javascript");
      expect(res.headers.get("content-security-policy")).toBe(csp);
      const shipped = readFileSync(join(import.meta.dir, "..", "node_modules", file), "utf8");
      expect(await res.text()).toBe(shipped.replace(/\n\/\/# sourceMappingURL=\S+\s*$/, "\n"));
    }
    expect((await fetch(`${srv.url}/page/markdown.js`)).headers.get("content-type")).toStartWith("text/javascript");
  });

  test(
    "XSS in the Markdown renders inert: raw HTML shown as text, unsafe links without href, no image loads; the question stays plain text",
    async () => {
      const reply = [
        "# Try these",
        "",
        `<script>window.pwned.push("script")</script>`,
        "",
        `Inline <img src=x onerror="window.pwned.push('img')"> and <b onmouseover="alert(1)">bold</b>.`,
        "",
        `[js link](javascript:window.pwned.push('js')) [entity link](&#106;avascript:alert(1)) [data link](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==) [relative](/api)`,
        "",
        `<iframe src="javascript:alert(1)"></iframe>`,
        "",
        `<svg onload=alert(1)><a xlink:href="javascript:alert(1)">svg</a></svg>`,
        "",
        `![pixel](https://tracker.invalid/p.png?q=secret) ![data pixel](data:image/png;base64,iVBORw0KGgo=)`,
        "",
        `<a href="https://example.com" onclick="alert(1)">raw link</a> <details open ontoggle=alert(1)>x</details>`,
      ].join("\n");
      // The question is the person's own text: shown as typed, neither Markdown nor HTML.
      const typed = `**not bold** <img src=x onerror="window.pwned.push('mine')"> [x](javascript:alert(1))`;
      const r = await ask(typed, reply);
      await r.done();
      const mine = page.locator("#messages > li.user").last();
      expect(await mine.locator(".text").textContent()).toBe(typed);
      expect(await mine.locator("strong, img, a").count()).toBe(0);
      await assertInert(page.locator("#messages .text"));
      const shown = (await r.text.textContent())!;
      // Raw HTML is shown as typed, escaped, never parsed.
      expect(shown).toContain(`<script>window.pwned.push("script")</script>`);
      expect(shown).toContain(`<img src=x onerror="window.pwned.push('img')">`);
      expect(shown).toContain(`<iframe src="javascript:alert(1)"></iframe>`);
      expect(shown).toContain(`<a href="https://example.com" onclick="alert(1)">raw link</a>`);
      expect(await r.text.locator("h1").textContent()).toBe("Try these");
      // Unsafe and relative links keep their words and lose their target.
      for (const words of ["js link", "entity link", "data link", "relative"]) {
        const a = r.text.locator("a", { hasText: words });
        expect(await a.count()).toBe(1);
        expect(await a.getAttribute("href")).toBeNull();
      }
      // An image is a link to it (nothing is fetched as the reply renders); a data: image has no link at all.
      const pixel = r.text.locator("a", { hasText: "pixel" }).first();
      expect(await pixel.getAttribute("href")).toBe("https://tracker.invalid/p.png?q=secret");
      expect(await pixel.getAttribute("rel")).toBe("noopener noreferrer");
      expect(await r.text.locator("a", { hasText: "data pixel" }).getAttribute("href")).toBeNull();
      await shot(r.bubble, "md-1-xss");
    },
    T,
  );

  test(
    "a streamed code block is <pre><code> while it streams and after, the blocks above it are kept in place, and Copy copies it",
    async () => {
      // biome-ignore lint/suspicious/noTemplateCurlyInString: the reply quotes a JavaScript template literal
      const code = "const a = 1;\nconsole.log(`<b>${a}</b>`);\n";
      const reply = "Here it is:\n\n```js\n" + code + "```\n\nDone.";
      const tokens = pieces(reply, 4);
      const held = tokens.findIndex((_, i) => tokens.slice(0, i).join("").includes("const a = 1;\n"));
      const r = await ask("Some code please", reply, { tokens, holdAfter: held });
      await model.waitHeld();
      // Half a code block (no closing fence yet) is already a code block.
      const streamingCode = page.locator("#messages > li.assistant.streaming pre > code", { hasText: "const a = 1;" });
      await streamingCode.waitFor();
      await shot(r.bubble, "md-2-streaming-code");
      // Marked: the paragraph above must survive every re-render as the very same node.
      await r.text.locator("p", { hasText: "Here it is:" }).evaluate((p) => ((p as any).kept = true));
      model.release();
      await r.done();
      expect(await r.text.locator("p", { hasText: "Here it is:" }).evaluate((p) => (p as any).kept)).toBe(true);
      const block = r.text.locator("pre");
      expect(await block.count()).toBe(1);
      expect(await block.locator("code").textContent()).toBe(code);
      expect(await block.locator("b").count()).toBe(0);
      expect(await r.text.locator("p").last().textContent()).toBe("Done.");

      await block.locator("button.copy").click();
      await block.locator('button.copy[data-copied="yes"]').waitFor();
      expect(await page.evaluate(() => navigator.clipboard.readText())).toBe(code);
      await shot(r.bubble, "md-3-copied");
      await assertInert(r.text);
    },
    T,
  );

  test(
    "headings, lists, a table and links: links open in a new tab without a handle back",
    async () => {
      const reply = [
        "## Results",
        "",
        "| Name | Score |",
        "| :--- | ---: |",
        "| Ann | 3 |",
        "| <b>Bob</b> | 5 |",
        "",
        "- one",
        "- two",
        "  1. nested",
        "",
        'Read [the docs](https://example.com/docs "Docs"), mail <ops@example.com>, or see https://example.org.',
      ].join("\n");
      const r = await ask("A table", reply);
      // Mid-stream the table is already a table (its header row arrives early).
      await page.locator("#messages > li.assistant table th", { hasText: "Score" }).waitFor();
      await r.done();
      expect(await r.text.locator("h2").textContent()).toBe("Results");
      expect(await r.text.locator("thead th").allTextContents()).toEqual(["Name", "Score"]);
      const rows = await r.text.locator("tbody tr").evaluateAll((trs) => trs.map((tr) => [...tr.children].map((td) => td.textContent)));
      expect(rows).toEqual([
        ["Ann", "3"],
        ["<b>Bob</b>", "5"],
      ]);
      expect(await r.text.locator("thead th").last().getAttribute("align")).toBe("right");
      expect(await r.text.locator("ul > li").count()).toBe(2);
      expect(await r.text.locator("ul ol > li").textContent()).toBe("nested");

      const links = await r.text
        .locator("a")
        .evaluateAll((as) => as.map((a) => [a.textContent, a.getAttribute("href"), a.getAttribute("target"), a.getAttribute("rel")]));
      expect(links).toEqual([
        ["the docs", "https://example.com/docs", "_blank", "noopener noreferrer"],
        ["ops@example.com", "mailto:ops@example.com", "_blank", "noopener noreferrer"],
        ["https://example.org", "https://example.org", "_blank", "noopener noreferrer"],
      ]);
      await shot(r.bubble, "md-4-table");
      await assertInert(r.text);
    },
    T,
  );

  test(
    "streaming keeps the view at the bottom, and leaves it alone once the person scrolls up",
    async () => {
      const lines = Array.from({ length: 120 }, (_, i) => `- item ${i}`).join("\n");
      const tokens = lines.split("\n").map((l) => `${l}\n`);
      const r = await ask("A long list", lines, { tokens, holdAfter: 80 });
      await model.waitHeld();
      await page.locator("#messages > li.assistant.streaming li", { hasText: "item 79" }).waitFor();
      const gap = () => page.locator("#messages").evaluate((m) => m.scrollHeight - m.scrollTop - m.clientHeight);
      expect(await gap()).toBeLessThan(60);
      await page.locator("#messages").evaluate((m) => (m.scrollTop = 0));
      model.release();
      await r.done();
      expect(await r.text.locator("li").count()).toBe(120);
      expect(await page.locator("#messages").evaluate((m) => m.scrollTop)).toBe(0);
    },
    T,
  );

  test(
    "after a reload the history renders the same way",
    async () => {
      await page.reload();
      await page.locator('#conn[data-state="online"]').waitFor();
      const table = page.locator("#messages > li.assistant table");
      await table.waitFor();
      expect(await table.locator("tbody tr").count()).toBe(2);
      expect(await page.locator("#messages > li.assistant pre > code", { hasText: "const a = 1;" }).count()).toBe(1);
      await assertInert(page.locator("#messages .text"));
    },
    T,
  );

  test(
    "renderMarkdown is one reusable function; re-rendering a long reply as it grows costs its last block, not the whole",
    async () => {
      const t = await page.evaluate(async () => {
        const { renderMarkdown } = await import("/page/markdown.js" as string);
        const para = "Some **bold** text, `code`, and [a link](https://example.com).\n\n";
        const text = (para + "```\nlet x = 1;\n```\n\n| a | b |\n| - | - |\n| 1 | 2 |\n\n").repeat(300) + "The end"; // ~35 kB
        const median = (f: (i: number) => void) => {
          const runs = Array.from({ length: 3 }, (_, i) => {
            const start = performance.now();
            f(i);
            return performance.now() - start;
          });
          return runs.sort((a, b) => a - b)[1]!;
        };
        renderMarkdown(document.createElement("div"), text); // warm up
        const full = median(() => renderMarkdown(document.createElement("div"), text));
        const el = document.createElement("div");
        renderMarkdown(el, text);
        const first = el.firstChild;
        const grown = (i: number) => `${text} is near${".".repeat(i + 1)}`;
        const delta = median((i) => renderMarkdown(el, grown(i)));
        const whole = document.createElement("div");
        renderMarkdown(whole, grown(2)); // the last of the three deltas

        return {
          chars: text.length,
          blocks: el.childElementCount,
          full,
          delta,
          kept: el.firstChild === first,
          same: el.isEqualNode(whole),
        };
      });
      console.log(
        `renderMarkdown, ${t.chars} characters in ${t.blocks} blocks: whole ${t.full.toFixed(1)} ms, one more delta ${t.delta.toFixed(1)} ms`,
      );
      expect(t.blocks).toBeGreaterThan(500);
      expect(t.kept).toBe(true);
      expect(t.same).toBe(true); // rendering in steps ends exactly where rendering at once does
      expect(t.delta).toBeLessThan(t.full / 3);
    },
    T,
  );
});
