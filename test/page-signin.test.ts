import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import type { Browser, Page } from "playwright-core";
import { hashToken, newPersonalToken } from "../src/auth/tokens";
import { launchBrowser, openPage } from "./support/browser";
import { startTestServer, type TestServer } from "./support/harness";
import { until } from "./support/until";
import { addUser } from "./support/users";

// Signing in by link (/?token=) and where the page may connect, in a real Chromium against the real
// server (SQLite). Each test is a fresh tab (its own sessionStorage), signed in the way a person would.

// The callbacks given to page.evaluate run in the browser; this project compiles without the DOM types.
declare const window: any, document: any, WebSocket: any;

const T = 30_000;
const LEGACY = "page-signin-legacy-token-8e2b6d40c1";

let srv: TestServer;
let browser: Browser;
let alice: Awaited<ReturnType<typeof addUser>>;
let bob: Awaited<ReturnType<typeof addUser>>;

beforeAll(async () => {
  srv = await startTestServer({ API_TOKEN: LEGACY, CHAT_TITLES: "false" });
  [alice, bob] = [await addUser(srv.store, "alice"), await addUser(srv.store, "bob")];
  browser = await launchBrowser();
}, T);
afterAll(async () => {
  await browser?.close();
  await srv?.close();
}, T);

// Every tab a test opened is closed after it, passed or failed, so its socket never counts in the next.
const contexts: { close(): Promise<void> }[] = [];
afterEach(async () => {
  await Promise.all(contexts.splice(0).map((c) => c.close()));
  await until(() => srv.conns.all().length === 0, "the closed tabs' sockets to close");
});

/** A fresh tab; every dialog it raises is recorded (and answered by `answer`, else dismissed). */
async function tab(answer: (message: string) => boolean = () => false) {
  const opened = await openPage(browser);
  contexts.push(opened.context);
  const dialogs: string[] = [];
  opened.page.on("dialog", (d) => {
    dialogs.push(d.message());
    void (answer(d.message()) ? d.accept() : d.dismiss());
  });
  return { ...opened, dialogs };
}

const online = (p: Page) => p.locator('#conn[data-state="online"]').waitFor();
const shownName = (p: Page) => p.locator("#who .user-name").textContent();
const tabToken = (p: Page) => p.evaluate(() => window.sessionStorage.getItem("pichat.token"));
/** The users the server has sockets open for, by name. */
const socketsOf = (name: string) => srv.conns.all().filter((ws) => ws.data.user.name === name).length;

async function signedInAs(p: Page, who: { name: string; token: string }) {
  await p.goto(`${srv.url}/?token=${who.token}`);
  await online(p);
  await p.locator("#who .user-name", { hasText: who.name }).waitFor();
  expect(await tabToken(p)).toBe(who.token);
}

describe("login by link", () => {
  test(
    "a fresh tab is signed in by the link; the token leaves the address bar before the page asks who it is",
    async () => {
      const { page } = await tab();
      // Hold the page's first question to the server: by then the address bar must already be clean.
      let seenUrl = "";
      await page.route("**/api/me", async (route) => {
        seenUrl = page.url();
        await route.continue();
      });
      await page.goto(`${srv.url}/?keep=1&token=${alice.token}`);
      await online(page);
      expect(seenUrl).not.toBe("");
      expect(seenUrl).not.toContain(alice.token);
      expect(page.url()).toBe(`${srv.url}/?keep=1`); // other parameters stay
      expect(await shownName(page)).toBe("alice");
    },
    T,
  );

  test(
    "a tab signed in as alice, opening bob's link, is asked first, with both names; declining keeps alice",
    async () => {
      const { page, dialogs } = await tab(() => false);
      await signedInAs(page, alice);
      await page.goto(`${srv.url}/?token=${bob.token}`);
      await online(page);
      expect(dialogs).toHaveLength(1);
      expect(dialogs[0]).toContain('"bob"');
      expect(dialogs[0]).toContain('"alice"');
      expect(page.url()).not.toContain(bob.token);
      expect(await shownName(page)).toBe("alice");
      expect(await tabToken(page)).toBe(alice.token);
      expect(await page.locator("#notice").textContent()).toContain('still signed in as "alice"');
      // The socket the tab opened is alice's: what she types goes to her account.
      await until(() => socketsOf("alice") === 1 && socketsOf("bob") === 0, "the tab's socket to be alice's");
    },
    T,
  );

  test(
    "accepting the question switches the tab to bob",
    async () => {
      const { page, dialogs } = await tab(() => true);
      await signedInAs(page, alice);
      await page.goto(`${srv.url}/?token=${bob.token}`);
      await online(page);
      await page.locator("#who .user-name", { hasText: "bob" }).waitFor();
      expect(dialogs).toHaveLength(1);
      expect(await tabToken(page)).toBe(bob.token);
      await until(() => socketsOf("bob") === 1 && socketsOf("alice") === 0, "the tab's socket to be bob's");
    },
    T,
  );

  test(
    "no question when nothing changes hands: the same token, another token of the same user, or a tab whose token no longer works",
    async () => {
      const second = newPersonalToken();
      await srv.store.addToken(alice.id, hashToken(second));
      const { page, dialogs } = await tab(() => false);
      await signedInAs(page, alice);
      await page.goto(`${srv.url}/?token=${alice.token}`);
      await online(page);
      await page.goto(`${srv.url}/?token=${second}`);
      await online(page);
      expect(await tabToken(page)).toBe(second);
      // The tab's token no longer signs anyone in: a link then simply signs in.
      await page.evaluate(() => window.sessionStorage.setItem("pichat.token", "pc_not-a-token-anyone-has"));
      await page.goto(`${srv.url}/?token=${bob.token}`);
      await online(page);
      await page.locator("#who .user-name", { hasText: "bob" }).waitFor();
      expect(dialogs).toEqual([]);
    },
    T,
  );

  test(
    "a link whose token is refused changes nothing and says so",
    async () => {
      const { page, dialogs } = await tab(() => true);
      await signedInAs(page, alice);
      const refused = newPersonalToken();
      await page.goto(`${srv.url}/?token=${refused}`);
      await online(page);
      expect(dialogs).toEqual([]);
      expect(page.url()).not.toContain(refused);
      expect(await tabToken(page)).toBe(alice.token);
      expect(await page.locator("#notice").textContent()).toContain("refused");
    },
    T,
  );
});

describe("where the page may connect (CSP connect-src)", () => {
  test(
    "its own socket opens; a socket or fetch to any other host is blocked by the browser",
    async () => {
      // Another local server the page's scripts must not reach.
      let reached = 0;
      const other = Bun.serve({
        hostname: "127.0.0.1",
        port: 0,
        fetch(req, s) {
          reached++;
          return s.upgrade(req) ? undefined : new Response("hi", { headers: { "Access-Control-Allow-Origin": "*" } });
        },
        websocket: { message() {} },
      });
      try {
        const host = new URL(srv.url).host;
        const csp = (await fetch(`${srv.url}/`)).headers.get("content-security-policy") ?? "";
        expect(csp).toContain(`connect-src 'self' ws://${host} wss://${host};`);
        expect(csp).not.toMatch(/\sws:\s|\swss:\s|\swss:;/);

        const { page } = await tab();
        await signedInAs(page, alice);
        const blocked = await page.evaluate(async (url: string) => {
          const violations: string[] = [];
          document.addEventListener("securitypolicyviolation", (e: any) => violations.push(`${e.effectiveDirective} ${e.blockedURI}`));
          let socket = "opened";
          try {
            const ws = new WebSocket(`ws://${url}/`);
            socket = await new Promise((resolve) => {
              ws.onopen = () => resolve("opened");
              ws.onerror = () => resolve("error");
            });
          } catch (e: any) {
            socket = `threw ${e.name}`;
          }
          const fetched = await fetch(`http://${url}/`).then(
            () => "fetched",
            () => "refused",
          );
          await new Promise((r) => setTimeout(r, 0)); // violation events are dispatched as tasks
          return { socket, fetched, violations };
        }, `127.0.0.1:${other.port}`);
        expect(blocked.socket).not.toBe("opened");
        expect(blocked.fetched).toBe("refused");
        expect(blocked.violations.filter((v) => v.startsWith("connect-src")).length).toBeGreaterThanOrEqual(2);
        expect(reached).toBe(0);
      } finally {
        other.stop(true);
      }
    },
    T,
  );
});
