import * as v from "valibot";
import { createLogger } from "../src/log";
import { createMetrics } from "../src/metrics";
import type { Socket } from "../src/ws/connections";
import { parseArgs } from "../src/ws/handlers";
import { commandOutcomes } from "../src/ws/outcomes";
import { Envelope, frames, mergedArgs } from "../src/ws/protocol";

// What the socket layer costs per frame, in-process and in CPU time (process.cpuUsage, so other
// work on a shared machine does not count): reading a frame (JSON, the envelope, the arguments),
// counting and timing its outcome, and building and serialising a delta frame. No socket: the
// write itself is the kernel's, and the bare forwarder pays the same one per frame.
// Usage: bun bench/frame-cost.ts   (BENCH_FRAME_N, default 200000 per piece)

const N = Number(process.env.BENCH_FRAME_N ?? 200_000);
const chatId = crypto.randomUUID();
const send = JSON.stringify({ type: "SEND_MESSAGE", chatId, content: "Question 12: what will the weather be like tomorrow? tokens=20" });
const history = JSON.stringify({ type: "GET_CHAT_HISTORY", chatId, limit: 20, requestId: "r-1" });
const wellFormed = (_k: string, x: unknown) => (typeof x === "string" ? x.toWellFormed() : x);
const SURROGATE_ESCAPE = /\\u[dD][89a-fA-F]/;

const cpuUs = () => {
  const u = process.cpuUsage();
  return u.user + u.system;
};
function measure(name: string, fn: () => unknown) {
  for (let i = 0; i < N / 10; i++) fn();
  const t0 = cpuUs();
  for (let i = 0; i < N; i++) fn();
  const us = (cpuUs() - t0) / N;
  console.log(`${name.padEnd(64)} ${us.toFixed(3).padStart(8)} µs`);
  return us;
}

const read = (raw: string) => {
  const json = raw.isWellFormed() && !SURROGATE_ESCAPE.test(raw) ? JSON.parse(raw) : JSON.parse(raw, wellFormed);
  const env = v.safeParse(Envelope, json);
  if (!env.success) throw new Error("envelope");
  return parseArgs(env.output.type as "SEND_MESSAGE", mergedArgs(json));
};
const metrics = createMetrics();
const outcomes = commandOutcomes(metrics, createLogger({ level: "warn", json: true, write: () => {} }));
const ws = { data: { id: "c" } } as unknown as Socket;
const delta = { type: "reply_delta" as const, chatId, traceId: crypto.randomUUID(), seq: 7, content: " word" };

console.log(`per piece, CPU time, ${N.toLocaleString("en-US")} times each:`);
measure("JSON.parse of a SEND_MESSAGE with the well-formedness reviver", () => JSON.parse(send, wellFormed));
measure("JSON.parse of a SEND_MESSAGE as src/ws/frame.ts reads it", () =>
  send.isWellFormed() && !SURROGATE_ESCAPE.test(send) ? JSON.parse(send) : JSON.parse(send, wellFormed),
);
measure("reading a SEND_MESSAGE: JSON, envelope, arguments (valibot)", () => read(send));
measure("reading a GET_CHAT_HISTORY: JSON, envelope, arguments (valibot)", () => read(history));
measure("a command's outcome: counter, histogram (ws/outcomes.ts)", () => outcomes.handled(ws, { type: "SEND_MESSAGE" }, "ok", 0.001));
measure("a delta frame: frames.delta and JSON.stringify", () => JSON.stringify(frames.delta(delta)));
