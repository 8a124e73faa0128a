import { describe, expect, test } from "bun:test";
import { chatDeltas, StreamError } from "../src/model/sse";

// The Chat Completions stream reader (src/model/sse.ts) on byte streams cut at every awkward place.
// Pure parsing: the real server path over a socket is covered by model.test.ts and every reply test.

const enc = new TextEncoder();
const line = (content: string) =>
  `data: {"id":"x","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":${JSON.stringify(content)}}}]}\n\n`;
const ROLE = `data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n`;
const STOP = `data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n`;

/** The bytes of `text`, delivered in reads cut at the given byte offsets. */
function body(text: string, cuts: number[] = []): ReadableStream<Uint8Array> {
  const bytes = enc.encode(text);
  const edges = [0, ...cuts.filter((c) => c > 0 && c < bytes.length).sort((a, b) => a - b), bytes.length];
  return new ReadableStream({
    start(c) {
      for (let i = 0; i + 1 < edges.length; i++) c.enqueue(bytes.slice(edges[i], edges[i + 1]));
      c.close();
    },
  });
}
const all = async (s: ReadableStream<Uint8Array>) => {
  const out: string[] = [];
  for await (const d of chatDeltas(s)) out.push(d);
  return out;
};

describe("chatDeltas", () => {
  const words = ["Hé", " 😀 ", "line\nbreak", "  spaces  ", '"quoted" \\ back', "日本語"];
  const text = ROLE + words.map(line).join("") + STOP;

  test("every delta, exactly and in order, whatever the read boundaries (every single cut point)", async () => {
    const n = enc.encode(text).length;
    for (let cut = 1; cut < n; cut++) expect(await all(body(text, [cut]))).toEqual(words);
  });

  test("one byte per read, and CRLF line endings", async () => {
    const n = enc.encode(text).length;
    expect(
      await all(
        body(
          text,
          Array.from({ length: n }, (_, i) => i),
        ),
      ),
    ).toEqual(words);
    expect(await all(body(text.replaceAll("\n", "\r\n")))).toEqual(words);
  });

  test("comments, event names, role-only and empty chunks are skipped; nothing after [DONE] is read", async () => {
    const noisy = `: keep-alive\n\nevent: message\n${ROLE}${line("a")}${line("")}data:${JSON.stringify({ choices: [{ delta: { content: "b" } }] })}\n\n${STOP}${line("after")}`;
    expect(await all(body(noisy))).toEqual(["a", "b"]);
  });

  test("once the signal is aborted, no delta already read is handed on, and the abort's reason is thrown", async () => {
    const ac = new AbortController();
    const got: string[] = [];
    const run = async () => {
      for await (const d of chatDeltas(body(line("a") + line("b") + line("c")), ac.signal)) {
        got.push(d);
        ac.abort(new Error("stopped"));
      }
    };
    await expect(run()).rejects.toThrow("stopped");
    expect(got).toEqual(["a"]);
  });

  test("a body that ends without [DONE] or a final newline still yields its last delta", async () => {
    expect(await all(body(line("a") + line("b").trimEnd()))).toEqual(["a", "b"]);
  });

  test("an error event or a chunk that is not JSON throws StreamError after the deltas before it", async () => {
    const got: string[] = [];
    const run = async (t: string) => {
      for await (const d of chatDeltas(body(t))) got.push(d);
    };
    await expect(run(line("a") + `data: {"error":{"message":"overloaded"}}\n\n`)).rejects.toBeInstanceOf(StreamError);
    expect(got).toEqual(["a"]);
    await expect(run(`data: {not json\n\n`)).rejects.toBeInstanceOf(StreamError);
  });
});
