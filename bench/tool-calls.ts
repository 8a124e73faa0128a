import { chatDeltas } from "../src/model/sse";
import { toolCallAssembler } from "../src/model/tool-calls";
import { now } from "./lib/clock";
import { ratio, runAlone, type Row, type Scenario } from "./lib/report";
import { median, round } from "./lib/stats";

// What reading tool calls costs the stream reader (src/model/sse.ts), per chunk, in one process:
//  - a text reply with tools offered (the tool-call callback set) against the same reply without
//    (the baseline): what every reply pays once tools are on;
//  - a stream of tool-call chunks (arguments in 4-character pieces, as Azure sends them), read and
//    put back together, against a text stream of as many chunks.

const CHUNKS = Number(process.env.BENCH_TOOL_CHUNKS ?? 20_000);
const REPEATS = Number(process.env.BENCH_TOOL_REPEATS ?? 15);

const line = (delta: object) =>
  `data: ${JSON.stringify({ id: "chatcmpl-x", object: "chat.completion.chunk", created: 0, model: "m", choices: [{ index: 0, delta, finish_reason: null }] })}\n\n`;

function body(text: string): ReadableStream<Uint8Array> {
  const bytes = new TextEncoder().encode(text);
  // Reads of 16 KiB, as a socket hands them over.
  return new ReadableStream({
    start(c) {
      for (let i = 0; i < bytes.length; i += 16_384) c.enqueue(bytes.subarray(i, i + 16_384));
      c.close();
    },
  });
}

const textStream = Array.from({ length: CHUNKS }, (_, i) => line({ content: `w${i} ` })).join("") + "data: [DONE]\n\n";
const toolStream = (() => {
  const out: string[] = [];
  const calls = 8;
  const per = Math.floor(CHUNKS / calls);
  for (let c = 0; c < calls; c++) {
    out.push(line({ tool_calls: [{ index: c, id: `call_${c}`, type: "function", function: { name: "calc__add", arguments: "" } }] }));
    for (let k = 1; k < per; k++) out.push(line({ tool_calls: [{ index: c, function: { arguments: k % 2 ? '{"a"' : ":1}" } }] }));
  }
  return `${out.join("")}data: [DONE]\n\n`;
})();

/** One read of `text` through the reader: ns per chunk. */
async function once(text: string, withTools: boolean): Promise<number> {
  const a = toolCallAssembler();
  const t0 = now();
  for await (const _ of chatDeltas(body(text), undefined, withTools ? a.add : undefined));
  if (withTools) a.calls();
  return ((now() - t0) * 1e6) / CHUNKS;
}

/** The three cases in turn, REPEATS times (interleaved, so load and JIT warm-up fall on all alike); medians after the first two. */
async function measure() {
  const t = { plain: [] as number[], offered: [] as number[], calls: [] as number[] };
  for (let r = 0; r < REPEATS; r++) {
    t.plain.push(await once(textStream, false));
    t.offered.push(await once(textStream, true));
    t.calls.push(await once(toolStream, true));
  }
  return { plain: median(t.plain.slice(2)), offered: median(t.offered.slice(2)), calls: median(t.calls.slice(2)) };
}

export const scenario: Scenario = {
  name: "tool-calls",
  title: `Reading tool calls from the model's stream (${CHUNKS} chunks, median of ${REPEATS - 2})`,
  timeoutMs: 120_000,
  async run() {
    const { plain, offered, calls } = await measure();
    const rows: Row[] = [
      {
        metric: "text chunk, tools offered (vs not)",
        unit: "ns/chunk",
        ours: round(offered, 0),
        baseline: round(plain, 0),
        ratio: ratio(offered, plain),
        better: "lower",
      },
      {
        metric: "tool-call chunk, read and assembled (vs text chunk)",
        unit: "ns/chunk",
        ours: round(calls, 0),
        baseline: round(plain, 0),
        ratio: ratio(calls, plain),
        better: "lower",
      },
    ];
    return { rows, data: { chunks: CHUNKS, repeats: REPEATS, plainNs: plain, offeredNs: offered, toolCallNs: calls } };
  },
};

if (import.meta.main) await runAlone(scenario);
