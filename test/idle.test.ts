import { expect, test } from "bun:test";
import { startTestServer } from "./support/harness";
import { until } from "./support/until";

// Idle sockets are pinged before WS_IDLE_TIMEOUT_S; one that cannot answer (its reader is stuck,
// as with a vanished peer) is closed, while an idle but live client stays connected.
test("a peer that stops answering pings is closed; an idle live client stays", async () => {
  const srv = await startTestServer({ WS_IDLE_TIMEOUT_S: "8" });
  try {
    const live = await srv.connect();
    const dead = await srv.connect();
    await until(() => srv.conns.count === 2, "both sockets registered");
    const started = Date.now();
    (dead.ws as WebSocket & { pause(): boolean }).pause(); // stops reading: pings go unanswered
    await until(() => srv.conns.count === 1, "the unresponsive socket to be closed", 25_000);
    const closedAfterS = (Date.now() - started) / 1000;
    console.log(`unresponsive socket closed after ${closedAfterS.toFixed(1)} s (WS_IDLE_TIMEOUT_S=8)`);
    expect(closedAfterS).toBeGreaterThanOrEqual(7);
    // The live one sent nothing all along, answered the pings, and still works.
    expect((await live.request({ type: "GET_CHATS" }, "CHAT_LIST")).type).toBe("CHAT_LIST");
  } finally {
    await srv.close();
  }
}, 40_000);
