// A seeded protocol fuzzer for /ws. Several clients pipeline thousands of random, mutated and
// hostile frames at the real server while a well-behaved client chats through it; every frame must
// get exactly one answer of the kind its generator predicted, and the store must be intact after.
//
// Used by test/fuzz.test.ts (short, CI) and scripts/fuzz.ts (long, standalone). The parts:
// rng.ts (seeded randomness), generators.ts (frames and the answer each must get), client.ts (a
// pipelining socket that matches answers to frames), checker.ts (answers and the store against
// expectations), report.ts (counts and the summary), target.ts (the server under test); this file
// runs a session.
//
// How answers are correlated: the server handles one connection's frames strictly in arrival order
// and answers each frame with exactly one "direct" frame (a reply, or an ERROR without traceId),
// except a successful SEND_MESSAGE without requestId, which the fuzzer never sends to a real chat.
// So the n-th direct frame a client receives answers the n-th frame it sent. Broadcasts
// (CHAT_CREATED, CHAT_UPDATED/CHAT_DELETED of others) and stream frames (MESSAGE, an ERROR with a
// traceId) are told apart by type and requestId. A missing, extra or misattributed answer breaks
// the alignment and shows up as a requestId or type mismatch on a later frame.

import type { Chat, Message } from "../../../src/records";
import type { TestServer } from "../harness";
import { checkStore, type Ledger } from "./checker";
import { FuzzClient } from "./client";
import { FrameGen, isBad, type FuzzFrame } from "./generators";
import type { FuzzReport, Stats } from "./report";
import { Rng } from "./rng";
import { FUZZ_MODEL_TEXT } from "./target";

export { mulberry32, Rng } from "./rng";
export { FrameGen, isBad, type Expect, type FuzzFrame, type FuzzLimits, type Kind } from "./generators";
export type { Ledger } from "./checker";
export { formatReport, type FuzzReport } from "./report";
export { FUZZ_ENV, FUZZ_MODEL_TEXT, FUZZ_MODEL_TOKENS, startFuzzTarget } from "./target";

export type FuzzOptions = {
  seed: number;
  /** Total frames across all fuzz clients. */
  frames: number;
  clients?: number;
  /** Frames each client may have unanswered at once. */
  window?: number;
  /** Print progress every this many frames (standalone runs). */
  progress?: (line: string) => void;
};

/**
 * Runs the fuzz clients and one well-behaved client at once against `srv`, then checks the
 * store, /health and the log. Returns every violation rather than throwing, so a standalone run
 * can print them all.
 */
export async function runFuzz(srv: TestServer, o: FuzzOptions): Promise<FuzzReport> {
  const nClients = o.clients ?? 4;
  const window = o.window ?? 32;
  const limits = { maxFrameBytes: srv.config.MAX_FRAME_BYTES, maxMessageChars: srv.config.MAX_MESSAGE_CHARS };
  const violations: string[] = [];
  const knownIssues = { loneSurrogateRoundTrip: 0, examples: [] as string[] };
  const ledger: Ledger = { chats: new Map() };
  const stats: Stats = {
    framesSent: 0,
    bytesSent: 0,
    byCategory: {},
    errorCodes: {},
    replies: {},
    closes: {},
    reconnects: 0,
    badFramesSent: 0,
    errorsForBadFrames: 0,
    broadcastsSeen: 0,
    streamFramesSeen: 0,
  };
  const protoKeysBefore = Object.getOwnPropertyNames(Object.prototype).sort().join();

  // The well-behaved client: its own chat, one message after another, each reply in full.
  const good = await srv.connect();
  // A new chat every GOOD_CHAT_MESSAGES questions keeps each history under HISTORY_MAX_MESSAGES in long runs.
  const GOOD_CHAT_MESSAGES = 40;
  const goodChats: { chat: Chat; sent: string[]; traces: string[] }[] = [];
  const newGoodChat = async () => {
    const chat = (await good.request({ type: "CREATE_CHAT", payload: { name: `well-behaved ✓ ${goodChats.length + 1}` } }, "NEW_CHAT"))
      .chat as Chat;
    goodChats.push({ chat, sent: [], traces: [] });
    return goodChats.at(-1)!;
  };
  await newGoodChat();
  let fuzzing = true;
  let goodMessages = 0;
  const replyMs: number[] = [];
  let repliesDuringFuzz = 0;
  const goodLoop: Promise<unknown> = (async () => {
    for (let i = 0; fuzzing || i < 3; i++) {
      const gc = goodChats.at(-1)!.sent.length >= GOOD_CHAT_MESSAGES ? await newGoodChat() : goodChats.at(-1)!;
      const content = `question ${i}: ça va? 🧪 ${"漢字".repeat(i % 4)} \u05e9\u05dc\u05d5\u05dd`;
      const t0 = performance.now();
      good.send({ type: "SEND_MESSAGE", chatId: gc.chat.id, content });
      gc.sent.push(content);
      goodMessages++;
      const r = await good.reply(gc.chat.id, 10_000);
      replyMs.push(performance.now() - t0);
      if (fuzzing) repliesDuringFuzz++;
      gc.traces.push(r.traceId);
      if (r.text !== FUZZ_MODEL_TEXT) violations.push(`[good] reply ${i} came out as ${JSON.stringify(r.text)}`);
      if (r.end.reason !== undefined) violations.push(`[good] reply ${i} ended with reason ${r.end.reason}`);
      const seqs = r.chunks.map((c) => c.seq);
      if (seqs.some((s, k) => s !== k + 1)) violations.push(`[good] reply ${i} seqs ${seqs.join(",")}`);
      if (r.chunks.some((c) => c.traceId !== r.traceId)) violations.push(`[good] reply ${i} mixes traceIds`);
    }
  })().then(
    () => undefined,
    (e: unknown) => e,
  );

  const clients: FuzzClient[] = [];
  for (let k = 0; k < nClients; k++) {
    const c = new FuzzClient(k === 0 ? "bad0" : `mix${k}`, srv.wsUrl, stats, ledger, violations);
    await c.open();
    clients.push(c);
  }

  const t0 = performance.now();
  const perClient = Math.ceil(o.frames / nClients);
  let sentTotal = 0;
  const fuzzOne = async (c: FuzzClient, k: number) => {
    const gen = new FrameGen(new Rng((o.seed * 1000003 + k * 7919) >>> 0), c.tag, limits);
    const badOnly = c.tag.startsWith("bad");
    for (let i = 0; i < perClient; i++) {
      const kind = gen.pick(badOnly);
      // Frames on own chats depend on earlier answers: drain first so the sequence is reproducible.
      if (kind.name === "valid-own") await c.waitPending(0, 10_000);
      let frame = gen.build(kind, c.ownChats);
      while (badOnly && !isBad(frame)) frame = gen.build(gen.pick(true), c.ownChats);
      if (frame.expect.kind === "close") {
        await c.sendExpectingClose(frame as FuzzFrame & { expect: { kind: "close" } }, 10_000);
      } else {
        await c.waitPending(window - 1, 10_000);
        c.send(frame);
      }
      if (++sentTotal % 1000 === 0)
        o.progress?.(
          `${sentTotal} frames, ${Math.round(sentTotal / ((performance.now() - t0) / 1000))}/s, ${violations.length} violations`,
        );
    }
    await c.waitPending(0, 10_000);
    // A last frame: everything before it has been answered, so any further answer is an extra one.
    c.send({
      category: "sentinel",
      data: JSON.stringify({ type: "GET_CHATS", limit: 1, requestId: `${c.tag}-sentinel` }),
      expect: { kind: "ok", replies: ["CHAT_LIST"], requestId: `${c.tag}-sentinel` },
      bytes: 0,
    });
    await c.waitPending(0, 10_000);
    c.checkBadCount();
  };
  const results = await Promise.allSettled(clients.map(fuzzOne));
  for (const r of results)
    if (r.status === "rejected") violations.push(`fuzz client failed: ${r.reason instanceof Error ? r.reason.message : r.reason}`);
  const elapsedMs = performance.now() - t0;
  fuzzing = false;

  const goodFailure = await goodLoop;
  if (goodFailure)
    violations.push(`[good] the well-behaved client was not served: ${goodFailure instanceof Error ? goodFailure.message : goodFailure}`);
  if (repliesDuringFuzz < 1) violations.push("[good] no reply completed while the fuzz ran");

  // Every socket still open is known to the server, and no other.
  if (srv.conns.count !== clients.length + 1) violations.push(`server tracks ${srv.conns.count} sockets, ${clients.length + 1} are open`);
  // Replies the fuzz clients started finish and are stored before the store is read.
  await srv.chat.replies.idle();

  // The well-behaved client's histories, over the wire and in the store: exactly its questions and the replies.
  const shape = (ms: Message[]) => ms.map((m) => [m.role, m.content, m.role === "assistant" ? m.id : null, m.status ?? null]);
  for (const gc of goodChats) {
    const expected = gc.sent.flatMap((content, i) => [
      ["user", content, null, null],
      ["assistant", FUZZ_MODEL_TEXT, gc.traces[i] ?? "?", null],
    ]);
    const hist = await good
      .request({ type: "GET_CHAT_HISTORY", chatId: gc.chat.id }, "CHAT_HISTORY")
      .catch((e): Record<string, any> => ({ type: "FAILED", error: String(e) }));
    if (hist.type !== "CHAT_HISTORY") violations.push(`[good] history request failed: ${JSON.stringify(hist).slice(0, 200)}`);
    else if (JSON.stringify(shape(hist.messages)) !== JSON.stringify(expected))
      violations.push(`[good] history over the wire differs: ${JSON.stringify(shape(hist.messages)).slice(0, 400)}`);
    const stored = await srv.store.listMessages(gc.chat.id, { limit: 10_000 });
    if (JSON.stringify(shape(stored)) !== JSON.stringify(expected))
      violations.push(`[good] stored history differs: ${JSON.stringify(shape(stored)).slice(0, 400)}`);
  }
  const goodIds = new Set(goodChats.map((gc) => gc.chat.id));

  // Everything in the store is well-formed, and is exactly what the clients were told.
  const storeSummary = await checkStore(srv.store, { ledger, goodIds, violations, knownIssues });

  // Still alive, nothing logged as a crash, no prototype pollution.
  const health = await fetch(`${srv.url}/health`).catch((e) => ({ status: 0, statusText: String(e) }) as Response);
  if (health.status !== 200) violations.push(`/health answered ${health.status}`);
  const crashes = srv.log.lines.filter((l) => l.includes('"level":"error"'));
  for (const l of crashes.slice(0, 5)) violations.push(`error logged: ${l.slice(0, 300)}`);
  if (Object.getOwnPropertyNames(Object.prototype).sort().join() !== protoKeysBefore) violations.push("Object.prototype gained properties");
  for (const k of ["limit", "chatId", "content", "type", "polluted"]) {
    if (k in {}) violations.push(`Object.prototype.${k} exists after the fuzz`);
  }
  if ((stats.errorCodes.INTERNAL_ERROR ?? 0) > 0) violations.push(`${stats.errorCodes.INTERNAL_ERROR} INTERNAL_ERROR answers`);

  await Promise.all(clients.map((c) => c.close()));
  good.close();
  await good.closed;

  return {
    seed: o.seed,
    clients: nClients,
    elapsedMs: Math.round(elapsedMs),
    framesPerSecond: Math.round(stats.framesSent / (elapsedMs / 1000)),
    stats,
    good: {
      messages: goodMessages,
      repliesDuringFuzz,
      maxReplyMs: Math.round(Math.max(...replyMs)),
      meanReplyMs: Math.round(replyMs.reduce((a, b) => a + b, 0) / replyMs.length),
    },
    store: storeSummary,
    knownIssues,
    violations,
  };
}
