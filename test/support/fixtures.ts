import type { TestServer } from "./harness";
import type { SseModel } from "./sse-model";
import type { TestClient } from "./ws-client";

// Small pieces several test files share.

/** The env pointing a test server at the local SSE model; titles off so no second model call interferes. */
export const modelEnv = (m: SseModel) => ({
  OPENAI_BASE_URL: `${m.url}/v1`,
  OPENAI_MODEL: "test-model",
  OPENAI_API_KEY: "sk-test",
  CHAT_TITLES: "false",
});

export const newChat = async (c: TestClient) => (await c.request({ type: "CREATE_CHAT" }, "NEW_CHAT")).chat as { id: string; name: string };

/**
 * Connects and returns the client with the server's side of its socket (found once the server has
 * answered it). `track` may register the client for closing after the test.
 */
export async function connectWithConn(srv: TestServer, track: (c: TestClient) => TestClient = (c) => c) {
  const before = new Set(srv.conns.all().map((ws) => ws.data.id));
  const client = track(await srv.connect());
  await client.request({ type: "GET_CHATS", limit: 1 }, "CHAT_LIST");
  const conn = srv.conns.all().find((ws) => !before.has(ws.data.id));
  if (!conn) throw new Error("the server has no socket for the new client");
  return { client, conn };
}

/** The raw headers of a WebSocket upgrade request (RFC 6455 sample key). */
export const UPGRADE_HEADERS = {
  Connection: "Upgrade",
  Upgrade: "websocket",
  "Sec-WebSocket-Version": "13",
  "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
};
