import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { Parser } from "@asyncapi/parser";
import { asyncapiYaml, SPEC_PATH } from "../scripts/protocol";
import { ERROR_CODES } from "../src/ws/errors";
import { handlers } from "../src/ws/handlers";
import { outbound } from "../src/ws/protocol";

// docs/asyncapi.yaml is the contract: what the frame schemas generate, checked in, and a valid AsyncAPI 3.0 document.

const generated = asyncapiYaml();
const parsed = new Parser().parse(generated);

describe("docs/asyncapi.yaml", () => {
  test("is what `bun run protocol` generates from src/ws/protocol.ts (run it after changing a frame)", () => {
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
  });
});
