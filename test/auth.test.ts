import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { tokensMatch } from "../src/http/auth";
import { startTestServer, type TestServer } from "./support/harness";
import { connect } from "./support/ws-client";

const TOKEN = "0f3c9a7d5e2b4c1a8f6e0d9b7c5a3e1f";

// A refused upgrade must be a plain HTTP answer: no 101, no socket, no frames.
async function upgradeStatus(url: string, headers: Record<string, string> = {}) {
  const res = await fetch(url.replace(/^ws/, "http"), {
    headers: { Connection: "Upgrade", Upgrade: "websocket", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", ...headers },
  });
  return { status: res.status, body: await res.text() };
}

describe("API token", () => {
  let srv: TestServer;
  beforeAll(async () => {
    srv = await startTestServer({ ENVIRONMENT: "production", API_TOKEN: TOKEN, ALLOWED_ORIGINS: "https://chat.example.com" });
  });
  afterAll(() => srv.close());

  test("no token and a wrong token are refused with 401 before the upgrade", async () => {
    expect((await upgradeStatus(srv.wsUrl)).status).toBe(401);
    const wrong = await upgradeStatus(`${srv.wsUrl}?token=${TOKEN.slice(0, -1)}x`);
    expect(wrong.status).toBe(401);
    expect(wrong.body).not.toContain(TOKEN);
    expect((await upgradeStatus(srv.wsUrl, { Authorization: "Bearer nope" })).status).toBe(401);
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
    const listed = await connect(`${srv.wsUrl}?token=${TOKEN}`, { headers: { Origin: "https://chat.example.com" } });
    listed.close();
    const host = new URL(srv.url).host;
    const same = await upgradeStatus(`${srv.wsUrl}?token=${TOKEN}`, { Origin: `http://${host}` });
    expect(same.status).toBe(403);
    expect(JSON.parse(same.body).code).toBe("ORIGIN_NOT_ALLOWED");
  });

  test("/health stays public and shows no secret", async () => {
    const res = await fetch(`${srv.url}/health`);
    expect(res.status).toBe(200);
    expect(await res.text()).not.toContain(TOKEN);
  });
});

describe("development", () => {
  test("without API_TOKEN the socket is open; the .env.example placeholder counts as unset", async () => {
    for (const env of [{}, { API_TOKEN: "change-me-to-a-long-random-string" }] as Record<string, string>[]) {
      const srv = await startTestServer({ ENVIRONMENT: "development", ...env });
      const c = await srv.connect();
      expect((await c.request({ type: "GET_CHATS" }, "CHAT_LIST")).type).toBe("CHAT_LIST");
      c.close();
      await srv.close();
    }
  });

  test("with no ALLOWED_ORIGINS, development accepts any Origin, even \"null\" from a file:// page", async () => {
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
