import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium, type Browser, type Page } from "playwright-core";

// Debian's Chromium driven by playwright-core: never a browser download. Each launch gets a
// fresh temporary profile, deleted when the browser closes.

export const CHROMIUM_PATH = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
export const ARTIFACTS = join(import.meta.dir, "..", "..", "test-artifacts", "page");

const ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
];

export async function launchBrowser(): Promise<Browser> {
  if (!existsSync(CHROMIUM_PATH)) {
    throw new Error(
      `Chromium is not at ${CHROMIUM_PATH}. The page tests need a real browser and never download one: ` +
        "install Debian's package (apt-get install chromium) or set CHROMIUM_PATH to a Chromium binary.",
    );
  }
  mkdirSync(ARTIFACTS, { recursive: true });
  return chromium.launch({ executablePath: CHROMIUM_PATH, args: ARGS, headless: true, timeout: 20_000 });
}

/** A page in its own context (cookies, storage), with short timeouts and its problems recorded. */
export async function openPage(browser: Browser, viewport = { width: 1100, height: 720 }) {
  const context = await browser.newContext({ viewport });
  context.setDefaultTimeout(10_000);
  const page = await context.newPage();
  const problems: string[] = [];
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error" && /Content Security Policy|Uncaught/i.test(m.text())) problems.push(`console: ${m.text()}`);
  });
  return { page, context, problems };
}

export const screenshot = (page: Page, name: string) => page.screenshot({ path: join(ARTIFACTS, `${name}.png`) });
