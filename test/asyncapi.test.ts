import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { Parser } from "@asyncapi/parser";
import { asyncapiYaml, SPEC_PATH } from "../scripts/protocol";
import { ERROR_CODES } from "../src/ws/errors";
import { handlers } from "../src/ws/handlers";
import { originalWebUi, outbound } from "../src/ws/protocol";
import { frameProblems } from "./support/frame-check";
import { startTestServer, type TestServer } from "./support/harness";

// docs/asyncapi.yaml is the contract: what the frame schemas generate, checked in, and a valid AsyncAPI 3.0 document.

const generated = asyncapiYaml();
const parsed = new Parser().parse(generated);

describe("docs/asyncapi.yaml", () => {
  test("is what `bun run protocol` generates from src/ws/protocol.ts and docs/protocol.md §6 (run it after changing either)", () => {
    expect(readFileSync(SPEC_PATH, "utf8")).toBe(generated);
  });

  test("is a valid AsyncAPI 3.0 document (@asyncapi/parser), with no errors", async () => {
    const { document, diagnostics } = await parsed;
    // Severity 0 is an error; 1 to 3 are warnings, hints and notes (e.g. "3.1.0 is newer").
    expect(diagnostics.filter((d) => d.severity === 0).map((d) => `${d.path.join(".")}: ${d.message}`)).toEqual([]);
    expect(document).toBeDefined();
    expect(document!.version()).toBe("3.0.0");
    const channel = document!.channels().get("ws");
    expect(channel?.address()).toBe("/ws");
    const names = new Set(
      channel!
        .messages()
        .all()
        .map((m) => m.id()),
    );
    // Every frame a client may send (the handler table) and every frame the server builds is in the channel.
    for (const t of [...Object.keys(handlers), ...Object.keys(outbound)]) expect(names.has(t)).toBe(true);
    expect(names.size).toBe(Object.keys(handlers).length + Object.keys(outbound).length);
    // The three ways to sign in.
    const schemes = document!
      .servers()
      .get("local")!
      .security()
      .flatMap((r) => r.all().map((s) => [s.scheme().type(), s.scheme().in() ?? s.scheme().scheme(), s.scheme().name() ?? ""].join(" ")));
    expect(schemes.sort()).toEqual(["http bearer ", "httpApiKey header Sec-WebSocket-Protocol", "httpApiKey query token"]);
  });

  test("requests name their answer; ERROR lists every error code", async () => {
    const { document } = await parsed;
    const send = document!.operations().get("SEND_MESSAGE")!;
    expect(send.action()).toBe("receive");
    expect(
      send
        .reply()!
        .messages()
        .all()
        .map((m) => m.id()),
    ).toEqual(["MESSAGE_ACCEPTED", "ERROR"]);
    const error = document!.components().messages().get("ERROR")!.payload()!.json() as { properties: { code: { enum: string[] } } };
    expect(error.properties.code.enum.sort()).toEqual([...ERROR_CODES].sort());
    expect(ERROR_CODES).toContain("CHAT_NOT_FOUND");
    // Each with what it means, taken from docs/protocol.md §6 (test/docs.test.ts keeps a row there for every
    // code the server raises; a code declared and not raised yet may have none).
    const table = document!.channels().get("ws")!.extensions().get("x-error-codes")!.value() as Record<string, { meaning: string }[]>;
    expect(Object.keys(table).sort()).toEqual([...ERROR_CODES].sort());
    expect(table.CHAT_NOT_FOUND?.[0]?.meaning).toContain("no chat with that id");
    expect(ERROR_CODES.filter((c) => table[c]?.length).length).toBeGreaterThan(ERROR_CODES.length / 2);
  });
});

describe("the original web UI (x-original-web-ui)", () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer({ CHAT_TITLES: "false" });
  });
  afterAll(async () => {
    await server?.close();
  });

  test("the spec lists what it sends and handles, each a frame of the contract with the fields it reads required", async () => {
    const { document } = await parsed;
    const ui = document!.info().extensions().get("x-original-web-ui")!.value() as typeof originalWebUi;
    expect(ui).toEqual(JSON.parse(JSON.stringify(originalWebUi)));
    const payload = (t: string) => document!.components().messages().get(t)!.payload()!.json() as { required?: string[]; properties: any };
    for (const t of [...ui.sends, ...ui.handles]) expect(payload(t)).toBeDefined();
    expect(payload("MESSAGE").required).toEqual(expect.arrayContaining(["type", "chatId", "content", "traceId", "end"]));
    expect(payload("ERROR").properties.type.const).toBe("ERROR");
    expect(payload("CHAT_LIST").required).toContain("chats");
    expect(payload("CHAT_HISTORY").required).toEqual(expect.arrayContaining(["chatId", "messages"]));
  });

  test("its session (docs/protocol.md §8) against the real server: every frame it gets is in the contract", async () => {
    const a = await server.connect();
    const b = await server.connect();
    const chat = (await a.request({ type: "CREATE_CHAT", payload: { name: "Trip plans" } }, "NEW_CHAT")).chat;
    await b.next((f) => f.type === "CHAT_CREATED" && f.chat.id === chat.id);
    await a.request({ type: "GET_CHATS" }, "CHAT_LIST");
    await a.request({ type: "GET_CHAT_HISTORY", payload: { chatId: chat.id } }, "CHAT_HISTORY");
    a.send({ type: "SEND_MESSAGE", payload: { chatId: chat.id, message: { content: "What is the answer?", id: crypto.randomUUID() } } });
    const reply = await a.reply(chat.id);
    expect(reply.end.content).toBe("");
    expect(reply.text.length).toBeGreaterThan(0);
    await a.request({ type: "DELETE_CHAT", payload: { chatId: chat.id } }, "CHAT_DELETED");
    await b.next((f) => f.type === "CHAT_DELETED" && f.chatId === chat.id);
    const err = await a.request({ type: "GET_CHAT_HISTORY", payload: { chatId: chat.id } }, "CHAT_HISTORY");
    expect(err).toMatchObject({ type: "ERROR", code: "CHAT_NOT_FOUND" });
    const frames = [...a.frames, ...b.frames];
    expect(frames.map((f) => f.type).filter((t) => !(originalWebUi.handles as readonly string[]).includes(t))).toEqual([]);
    expect(frames.flatMap((f) => frameProblems(f))).toEqual([]);
  });
});
