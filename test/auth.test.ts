import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { tokensMatch } from "../src/http/auth";
import { newPersonalToken } from "../src/auth/tokens";
import { UPGRADE_HEADERS } from "./support/fixtures";
import { startTestServer, type TestServer } from "./support/harness";
import { addUser } from "./support/users";
import { connect } from "./support/ws-client";

const TOKEN = "0f3c9a7d5e2b4c1a8f6e0d9b7c5a3e1f";

// A refused upgrade must be a plain HTTP answer: no 101, no socket, no frames.
async function upgradeStatus(url: string, headers: Record<string, string> = {}) {
  const res = await fetch(url.replace(/^ws/, "http"), { headers: { ...UPGRADE_HEADERS, ...headers } });
  return { status: res.status, body: await res.text(), headers: res.headers };
}
const json = (body: string) => JSON.parse(body) as Record<string, unknown>;

describe("API token", () => {
  let srv: TestServer;
  beforeAll(async () => {
    srv = await startTestServer({ ENVIRONMENT: "production", API_TOKEN: TOKEN, ALLOWED_ORIGINS: "https://chat.example.com" });
  });
  afterAll(() => srv.close());

  test("no token and a wrong token are refused with 401 before the upgrade: code UNAUTHORIZED and WWW-Authenticate: Bearer", async () => {
    const refusals = [
      await upgradeStatus(srv.wsUrl),
      await upgradeStatus(`${srv.wsUrl}?token=${TOKEN.slice(0, -1)}x`),
      await upgradeStatus(srv.wsUrl, { Authorization: "Bearer nope" }),
      await upgradeStatus(srv.wsUrl, { "Sec-WebSocket-Protocol": "pichat, bearer.nope" }),
      // The header wins over a right token in the query (the first of the three ways that is present).
      await upgradeStatus(`${srv.wsUrl}?token=${TOKEN}`, { Authorization: "Bearer nope" }),
    ];
    for (const r of refusals) {
      expect(r.status).toBe(401);
      expect(json(r.body)).toEqual({ error: "a valid API token is required", code: "UNAUTHORIZED" });
      expect(r.headers.get("www-authenticate")).toBe("Bearer");
      expect(r.body).not.toContain(TOKEN);
    }
    await expect(connect(srv.wsUrl)).rejects.toThrow();
  });

  test("the token is accepted as ?token=, as a bearer.<token> subprotocol, and as Authorization: Bearer", async () => {
    const viaQuery = await connect(`${srv.wsUrl}?token=${TOKEN}`);
    const viaProtocol = await connect(srv.wsUrl, { protocols: ["pichat", `bearer.${TOKEN}`] });
    const viaHeader = await connect(srv.wsUrl, { headers: { Authorization: `Bearer ${TOKEN}` } });
    // The socket answers with the non-secret subprotocol, never the token.
    expect(viaProtocol.ws.protocol).toBe("pichat");
    for (const c of [viaQuery, viaProtocol, viaHeader]) {
      expect((await c.request({ type: "GET_CHATS" }, "CHAT_LIST")).type).toBe("CHAT_LIST");
      c.close();
    }
  });

  test("in production with ALLOWED_ORIGINS a foreign browser Origin is refused, and so is one equal to Host (DNS rebinding); a listed one is allowed", async () => {
    const foreign = await upgradeStatus(`${srv.wsUrl}?token=${TOKEN}`, { Origin: "https://evil.example" });
    expect(foreign.status).toBe(403);
    expect(json(foreign.body)).toEqual({ error: "this origin may not open a socket here", code: "ORIGIN_NOT_ALLOWED" });
    const listed = await connect(`${srv.wsUrl}?token=${TOKEN}`, { headers: { Origin: "https://chat.example.com" } });
    listed.close();
    const host = new URL(srv.url).host;
    const same = await upgradeStatus(`${srv.wsUrl}?token=${TOKEN}`, { Origin: `http://${host}` });
    expect(same.status).toBe(403);
    expect(JSON.parse(same.body).code).toBe("ORIGIN_NOT_ALLOWED");
  });

  test('in production the "null" Origin of a file:// page is refused (it is not a URL and not listed)', async () => {
    const refused = await upgradeStatus(`${srv.wsUrl}?token=${TOKEN}`, { Origin: "null" });
    expect(refused.status).toBe(403);
    expect(json(refused.body)).toMatchObject({ code: "ORIGIN_NOT_ALLOWED" });
    await expect(connect(`${srv.wsUrl}?token=${TOKEN}`, { headers: { Origin: "null" } })).rejects.toThrow();
  });

  test("an Upgrade request the WebSocket handshake cannot complete (no or a malformed Sec-WebSocket-Key) gets 400 UPGRADE_FAILED", async () => {
    for (const key of [undefined, "short"]) {
      const headers: Record<string, string> = { ...UPGRADE_HEADERS, Authorization: `Bearer ${TOKEN}` };
      if (key === undefined) delete headers["Sec-WebSocket-Key"];
      else headers["Sec-WebSocket-Key"] = key;
      const res = await fetch(srv.url + "/ws", { headers });
      expect(res.status).toBe(400);
      expect(await res.json()).toEqual({ error: "WebSocket upgrade failed", code: "UPGRADE_FAILED" });
    }
    // A plain GET with the token is not an upgrade at all: 426, and the token was accepted (not 401).
    const plain = await fetch(srv.url + "/ws", { headers: { Authorization: `Bearer ${TOKEN}` } });
    expect(plain.status).toBe(426);
    expect(await plain.json()).toEqual({ error: "expected a WebSocket upgrade", code: "UPGRADE_REQUIRED" });
  });

  test("/health stays public and shows no secret", async () => {
    const res = await fetch(`${srv.url}/health`);
    expect(res.status).toBe(200);
    expect(await res.text()).not.toContain(TOKEN);
  });
});

describe("origins in production", () => {
  test('without ALLOWED_ORIGINS, "null" is refused too (it is not a URL, so not same-origin); a client with no Origin is not', async () => {
    const srv = await startTestServer({ ENVIRONMENT: "production", API_TOKEN: TOKEN });
    try {
      const refused = await upgradeStatus(`${srv.wsUrl}?token=${TOKEN}`, { Origin: "null" });
      expect(refused.status).toBe(403);
      expect(json(refused.body)).toMatchObject({ code: "ORIGIN_NOT_ALLOWED" });
      const c = await srv.connect({ query: `token=${TOKEN}` });
      expect((await c.request({ type: "GET_CHATS", limit: 1 }, "CHAT_LIST")).type).toBe("CHAT_LIST");
    } finally {
      await srv.close();
    }
  });

  test('"null" is allowed only when ALLOWED_ORIGINS lists it literally, or lists *', async () => {
    for (const allowed of ["https://chat.example.com,null", "*"]) {
      const srv = await startTestServer({ ENVIRONMENT: "production", API_TOKEN: TOKEN, ALLOWED_ORIGINS: allowed });
      try {
        const c = await srv.connect({ query: `token=${TOKEN}`, headers: { Origin: "null" } });
        expect((await c.request({ type: "GET_CHATS", limit: 1 }, "CHAT_LIST")).type).toBe("CHAT_LIST");
        if (allowed !== "*") {
          // Listing "null" lets only "null" in: a foreign URL origin is still refused.
          const foreign = await upgradeStatus(`${srv.wsUrl}?token=${TOKEN}`, { Origin: "https://evil.example" });
          expect(foreign.status).toBe(403);
        }
      } finally {
        await srv.close();
      }
    }
  });
});

describe("development", () => {
  test("without API_TOKEN (absent or empty, as in .env.example) the socket is open", async () => {
    for (const env of [{}, { API_TOKEN: "" }] as Record<string, string>[]) {
      const srv = await startTestServer({ ENVIRONMENT: "development", ...env });
      const c = await srv.connect();
      expect((await c.request({ type: "GET_CHATS" }, "CHAT_LIST")).type).toBe("CHAT_LIST");
      c.close();
      await srv.close();
    }
  });

  test("an open server still checks a personal token: an unknown one is 401, a known one signs in as its user", async () => {
    const srv = await startTestServer({ ENVIRONMENT: "development" });
    try {
      const carol = await addUser(srv.store, "carol");
      expect((await upgradeStatus(`${srv.wsUrl}?token=${newPersonalToken()}`)).status).toBe(401);
      expect(await (await fetch(`${srv.url}/api/me?token=${carol.token}`)).json()).toMatchObject({ name: "carol", via: "token" });
      expect(await (await fetch(`${srv.url}/api/me`)).json()).toMatchObject({ name: "default" });
    } finally {
      await srv.close();
    }
  });

  test('with no ALLOWED_ORIGINS, development accepts any Origin, even "null" from a file:// page', async () => {
    const srv = await startTestServer({ ENVIRONMENT: "development" });
    for (const origin of ["http://localhost:5173", "null"]) {
      const c = await srv.connect({ headers: { Origin: origin } });
      c.close();
    }
    await srv.close();
  });

  test("a real token set in development is still required", async () => {
    const srv = await startTestServer({ ENVIRONMENT: "development", API_TOKEN: TOKEN });
    expect((await upgradeStatus(srv.wsUrl)).status).toBe(401);
    await srv.close();
  });
});

test("tokensMatch compares by digest: equal only for the same string", () => {
  expect(tokensMatch(TOKEN, TOKEN)).toBe(true);
  expect(tokensMatch(`${TOKEN}x`, TOKEN)).toBe(false);
  expect(tokensMatch("", TOKEN)).toBe(false);
  expect(tokensMatch(undefined, TOKEN)).toBe(false);
});
