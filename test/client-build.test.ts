import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { buildClient, CLIENT_BUNDLE } from "../scripts/build-client";
import { startTestServer, type TestServer } from "./support/harness";

// The built client (src/http/page/client.js, what the page loads): what client/ builds to, one file with
// no imports (nothing of valibot or the server), and working in Node with its global (undici) WebSocket.

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer({ CHAT_TITLES: "false" });
});
afterAll(async () => {
  await server?.close();
});

describe("the built client", () => {
  test("is what `bun run build:client` makes from client/ (run it after changing the client)", async () => {
    expect(readFileSync(CLIENT_BUNDLE, "utf8")).toBe(await buildClient());
  });

  test("is one ES module that imports nothing", () => {
    const code = readFileSync(CLIENT_BUNDLE, "utf8");
    const { imports, exports } = new Bun.Transpiler({ loader: "js" }).scan(code);
    expect(imports).toEqual([]);
    expect(exports.sort()).toEqual(["PiChatError", "backoffDelay", "createClient", "isFinalClose", "newMessageId"]);
    expect(code).not.toContain("valibot");
  });

  test("the built-in page speaks /ws only through it: served from our origin, imported by app.js, no socket code of its own", async () => {
    const served = await fetch(`${server.url}/page/client.js`);
    expect(served.status).toBe(200);
    expect(served.headers.get("content-type")).toStartWith("text/javascript");
    expect(await served.text()).toBe(readFileSync(CLIENT_BUNDLE, "utf8"));
    const app = readFileSync(join(import.meta.dir, "..", "src", "http", "page", "app.js"), "utf8");
    expect(app).toContain('import { createClient } from "/page/client.js";');
    for (const socketCode of ["new WebSocket", "JSON.parse", "JSON.stringify", "requestId:", "readyState", "onmessage"]) {
      expect(app).not.toContain(socketCode);
    }
  });

  test("runs in Node with the global WebSocket: a chat, a question, its streamed reply", async () => {
    const script = `
      const { createClient } = await import(${JSON.stringify(`file://${CLIENT_BUNDLE}`)});
      const client = createClient({ url: process.argv[1] });
      const { chat } = await client.request("CREATE_CHAT", { name: "from node" });
      const text = [];
      const done = new Promise((resolve) => client.on("MESSAGE", (f) => (text.push(f.content), f.end && resolve(f))));
      const accepted = await client.send(chat.id, "hello from node");
      await done;
      console.log(JSON.stringify({ chatId: chat.id, accepted: accepted.type, text: text.join(""), state: client.state }));
      client.close();
    `;
    // Node 22 has WebSocket by default; Node 20 (this machine's) has the same undici one behind the flag.
    const major = Number(/^v(\d+)/.exec(Bun.spawnSync(["node", "--version"]).stdout.toString())?.[1] ?? 0);
    const flags = major < 22 ? ["--experimental-websocket"] : [];
    const proc = Bun.spawn(["node", ...flags, "--input-type=module", "-e", script, server.wsUrl], { stdout: "pipe", stderr: "pipe" });
    const timer = setTimeout(() => proc.kill(), 15_000);
    const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
    clearTimeout(timer);
    expect({ code, err: err.replace(/\(node:\d+\) ExperimentalWarning[^\n]*\n(\(Use[^\n]*\n)?/g, "") }).toEqual({ code: 0, err: "" });
    const result = JSON.parse(out.trim());
    expect(result.accepted).toBe("MESSAGE_ACCEPTED");
    const stored = (await server.store.pageMessages(result.chatId, { limit: 10 })).items.map((m) => m.content);
    expect(stored).toEqual(["hello from node", result.text]);
    expect(result.text.length).toBeGreaterThan(0);
    expect(result.state).toBe("open");
  });
});
