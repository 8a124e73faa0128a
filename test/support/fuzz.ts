// A seeded protocol fuzzer for /ws. Several clients pipeline thousands of random, mutated and
// hostile frames at the real server while a well-behaved client chats through it; every frame must
// get exactly one answer of the kind its generator predicted, and the store must be intact after.
//
// Used by test/fuzz.test.ts (short, CI) and scripts/fuzz.ts (long, standalone).
//
// How answers are correlated: the server handles one connection's frames strictly in arrival order
// and answers each frame with exactly one "direct" frame (a reply, or an ERROR without traceId),
// except a successful SEND_MESSAGE without requestId, which the fuzzer never sends to a real chat.
// So the n-th direct frame a client receives answers the n-th frame it sent. Broadcasts
// (CHAT_CREATED, CHAT_UPDATED/CHAT_DELETED of others) and stream frames (MESSAGE, an ERROR with a
// traceId) are told apart by type and requestId. A missing, extra or misattributed answer breaks
// the alignment and shows up as a requestId or type mismatch on a later frame.

import * as v from "valibot";
import { ChatSchema, MessageSchema, type Chat, type Message } from "../../src/records";
import { isInboundType } from "../../src/ws/handlers";
import { startTestServer, type TestServer } from "./harness";
import { startSseModel, type SseModel } from "./sse-model";
import type { TestClient } from "./ws-client";

// ── Seeded randomness ─────────────────────────────────────────────────────────────────────

/** mulberry32: a tiny 32-bit PRNG; the same seed gives the same sequence everywhere. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export class Rng {
  private readonly next: () => number;
  constructor(seed: number) {
    this.next = mulberry32(seed);
  }
  float = () => this.next();
  /** Whole number in [min, max]. */
  int = (min: number, max: number) => min + Math.floor(this.next() * (max - min + 1));
  chance = (p: number) => this.next() < p;
  pick = <T>(xs: readonly T[]): T => xs[Math.floor(this.next() * xs.length)]!;
  weighted<T>(entries: readonly (readonly [number, T])[]): T {
    const total = entries.reduce((s, [w]) => s + w, 0);
    let r = this.next() * total;
    for (const [w, x] of entries) if ((r -= w) < 0) return x;
    return entries.at(-1)![1];
  }
  /** A v4-shaped UUID from this generator (crypto.randomUUID is not seeded). */
  uuid(): string {
    const h = (n: number) => Array.from({ length: n }, () => this.int(0, 15).toString(16)).join("");
    return `${h(8)}-${h(4)}-4${h(3)}-${this.pick(["8", "9", "a", "b"])}${h(3)}-${h(12)}`;
  }
  bytes(n: number): Uint8Array<ArrayBuffer> {
    const b = new Uint8Array(n);
    for (let i = 0; i < n; i++) b[i] = this.int(0, 255);
    return b;
  }
  ascii(n: number, alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"): string {
    let s = "";
    for (let i = 0; i < n; i++) s += alphabet[this.int(0, alphabet.length - 1)];
    return s;
  }
  /** Random code points from awkward ranges; lone surrogates only when asked. */
  unicode(n: number, o: { lone?: boolean } = {}): string {
    const ranges: [number, number][] = [
      [0x20, 0x7e], [0x00, 0x1f], [0x7f, 0x9f], [0xa0, 0x24f], [0x300, 0x36f], [0x590, 0x6ff], [0x900, 0x97f],
      [0x4e00, 0x9fff], [0xac00, 0xd7a3], [0x200b, 0x200f], [0x2028, 0x202e], [0x2066, 0x2069], [0x3000, 0x3000],
      [0xfeff, 0xfeff], [0xfffd, 0xffff], [0x1f300, 0x1faff], [0x10000, 0x1007f], [0xe0000, 0xe007f], [0x10fff0, 0x10ffff],
      [0x22, 0x22], [0x5c, 0x5c],
    ];
    let s = "";
    for (let i = 0; i < n; i++) {
      if (o.lone && this.chance(0.05)) s += String.fromCharCode(this.int(0xd800, 0xdfff));
      else {
        const [lo, hi] = this.pick(ranges);
        s += String.fromCodePoint(this.int(lo, hi));
      }
    }
    return s;
  }
}

// ── Frames and what the server must answer ───────────────────────────────────────────────────

// Direct answers (besides ERROR). MESSAGE is one only for RESUME, which the fuzz sends to random chats.
const REPLY_TYPES = ["CHAT_LIST", "NEW_CHAT", "CHAT_HISTORY", "CHAT_UPDATED", "CHAT_DELETED", "MESSAGE_ACCEPTED", "SETTINGS", "GENERATION_STOPPED"] as const;
// The frame types the generator knows how to fill in. Unknown-type frames are checked against the
// server's own table (isInboundType), so a type added later is never sent as "unknown".
const KNOWN_TYPES = [
  "GET_CHATS", "CREATE_CHAT", "GET_CHAT_HISTORY", "DELETE_CHAT", "RENAME_CHAT", "SEND_MESSAGE",
  "STOP_GENERATION", "RESUME", "GET_SETTINGS", "UPDATE_SETTINGS",
] as const;
/** What a mutated frame can succeed as: with random chat ids only these answers are possible. */
const MUTATION_SUCCESSES = ["CHAT_LIST", "NEW_CHAT", "SETTINGS"];
const GEN_REFUSALS = ["GENERATION_IN_PROGRESS", "TOO_MANY_GENERATIONS"];

export type Expect =
  /** Must be answered by an ERROR whose code is one of `codes` (any code when absent). */
  | { kind: "error"; codes?: string[]; requestId?: string | null }
  /** Must be answered by one of `replies`, or by an ERROR with one of `orCodes` (a load-dependent refusal). */
  | { kind: "ok"; replies: string[]; orCodes?: string[]; requestId?: string | null; own?: OwnOp }
  /** A mutation: any single answer will do, as long as there is exactly one. */
  | { kind: "any"; replies: string[] }
  /** Over 4× MAX_FRAME_BYTES: the server closes the socket with this code. */
  | { kind: "close"; code: number };
// requestId: a string must be echoed exactly; null means it must not be echoed; absent: unchecked.

type OwnOp =
  | { op: "create"; name: string | undefined }
  | { op: "history"; chatId: string }
  | { op: "rename"; chatId: string; name: string }
  | { op: "delete"; chatId: string }
  | { op: "send"; chatId: string; content: string; messageId?: string }
  | { op: "stop"; chatId: string };

export type FuzzFrame = { category: string; data: string | Uint8Array<ArrayBuffer>; expect: Expect; bytes: number };

export type FuzzLimits = { maxFrameBytes: number; maxMessageChars: number };

/**
 * Equal, or equal once lone surrogates are replaced by U+FFFD. A JSON escape like "\ud800" makes a
 * lone surrogate; the server makes every string well-formed on arrival, so what it echoes and stores
 * is the normalised form of what the fuzzer sent (counted as `knownIssues.loneSurrogateRoundTrip`).
 */
const sameText = (a: unknown, b: unknown) => a === b || (typeof a === "string" && typeof b === "string" && a.toWellFormed() === b.toWellFormed());

const byteLength = (d: string | Uint8Array) => (typeof d === "string" ? Buffer.byteLength(d) : d.byteLength);

/** What the first two server checks (JSON, envelope) make of a payload that is not a valid frame. */
function rawVerdict(text: string): "BAD_JSON" | "INVALID_FRAME" | "OTHER" {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return "BAD_JSON";
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) return "INVALID_FRAME";
  const o = json as Record<string, unknown>;
  if (typeof o.type !== "string") return "INVALID_FRAME";
  return "OTHER";
}

/** The text the server sees for a string the client sends (the client encodes UTF-8, replacing lone surrogates). */
const asServerSees = (s: string) => Buffer.from(s, "utf8").toString("utf8");

/** Pads a JSON frame (with a trailing `"pad":""` field) to exactly `target` UTF-8 bytes. */
function padTo(obj: Record<string, unknown>, target: number, unit = "x"): string {
  const base = JSON.stringify({ ...obj, pad: "" });
  const missing = target - Buffer.byteLength(base);
  if (missing < 0) return base;
  const unitBytes = Buffer.byteLength(unit);
  const n = Math.floor(missing / unitBytes);
  const text = JSON.stringify({ ...obj, pad: unit.repeat(n) + "x".repeat(missing - n * unitBytes) });
  return text;
}

/** Per-client frame generator. Each client draws from its own PRNG, so runs are reproducible by seed. */
export class FrameGen {
  private n = 0;
  constructor(readonly rng: Rng, readonly tag: string, readonly limits: FuzzLimits) {}

  private rid() {
    return `${this.tag}-${++this.n}`;
  }
  private frame(category: string, data: string | Uint8Array<ArrayBuffer>, expect: Expect): FuzzFrame {
    return { category, data, expect, bytes: byteLength(data) };
  }
  /** A frame with its arguments at the top level or inside `payload`, picked at random. */
  private envelope(type: string, args: Record<string, unknown>, requestId?: unknown): Record<string, unknown> {
    const head: Record<string, unknown> = { type, ...(requestId === undefined ? {} : { requestId }) };
    return this.rng.chance(0.5) ? { ...head, ...args } : { ...head, payload: args };
  }
  private validArgs(type: (typeof KNOWN_TYPES)[number], chatId = this.rng.uuid()): Record<string, unknown> {
    const r = this.rng;
    switch (type) {
      case "GET_CHATS": return r.chance(0.5) ? { limit: r.int(1, 3) } : { limit: 1, cursor: null };
      case "CREATE_CHAT": return r.chance(0.5) ? {} : { name: r.ascii(r.int(1, 30)) };
      case "GET_CHAT_HISTORY": return r.chance(0.5) ? { chatId } : { chatId, limit: r.int(1, 50) };
      case "DELETE_CHAT": return { chatId };
      case "RENAME_CHAT": return { chatId, name: r.ascii(r.int(1, 40)) };
      case "SEND_MESSAGE":
        return r.chance(0.5)
          ? { chatId, content: r.ascii(r.int(1, 60), "abc def ") + "." }
          : { chatId, message: { content: `q ${r.ascii(r.int(1, 40))}`, id: r.ascii(r.int(8, 24)) } };
      case "STOP_GENERATION": return r.chance(0.5) ? { chatId } : { traceId: r.uuid() };
      case "RESUME": return { chatId, traceId: r.uuid(), fromSeq: r.int(0, 5) };
      case "GET_SETTINGS": return {};
      case "UPDATE_SETTINGS": return r.pick([{ temperature: r.int(0, 20) / 10 }, { temperature: null }, { systemPrompt: null }, { model: null }]);
    }
  }
  /** A well-formed frame of a random known type whose chat ids are random (so it cannot touch real chats). */
  private template(): Record<string, unknown> {
    const type = this.rng.pick(KNOWN_TYPES);
    return this.envelope(type, this.validArgs(type), this.rid());
  }

  /**
   * Picks the kind of the next frame. "valid-own" frames act on this client's own chats and depend
   * on earlier answers: the caller drains before building one, so the run stays reproducible.
   */
  pick(badOnly: boolean): Kind {
    const bad = KINDS.filter((k) => k.bad);
    return this.rng.weighted((badOnly ? bad : KINDS).map((k) => [k.weight, k] as const));
  }

  build(kind: Kind, ownChats: readonly Chat[]): FuzzFrame {
    return kind.make(this, ownChats);
  }

  /** The next frame, for callers that do not drain (e.g. reproducibility checks). */
  next(o: { badOnly: boolean; ownChats: readonly Chat[] }): FuzzFrame {
    let f = this.build(this.pick(o.badOnly), o.ownChats);
    while (o.badOnly && !isBad(f)) f = this.build(this.pick(true), o.ownChats);
    return f;
  }

  randomBytes(): FuzzFrame {
    const b = this.rng.bytes(this.rng.int(0, 400));
    const verdict = rawVerdict(Buffer.from(b).toString("utf8"));
    return this.frame("random-bytes", b, { kind: "error", codes: verdict === "OTHER" ? undefined : [verdict], requestId: null });
  }

  randomText(): FuzzFrame {
    const r = this.rng;
    const s = r.pick([
      () => r.unicode(r.int(0, 120), { lone: true }),
      () => r.ascii(r.int(0, 80), ' {}[]":,0123456789truefalsn-.eE\\'),
      () => r.pick(["", " ", "\n", "null", "true", "0", "-1", "1e999", '""', '"GET_CHATS"', "[]", "{}", "[{}]", "{\"type\"}", "NaN", "undefined"]),
    ])();
    const verdict = rawVerdict(asServerSees(s));
    return this.frame("random-text", s, { kind: "error", codes: verdict === "OTHER" ? undefined : [verdict], requestId: null });
  }

  truncated(): FuzzFrame {
    const text = JSON.stringify(this.template());
    // Any proper prefix of a JSON object text is not JSON.
    return this.frame("truncated-json", text.slice(0, this.rng.int(1, text.length - 1)), { kind: "error", codes: ["BAD_JSON"], requestId: null });
  }

  mutated(): FuzzFrame {
    const r = this.rng;
    let text = JSON.stringify(this.template());
    const rounds = r.int(1, 4);
    for (let i = 0; i < rounds; i++) {
      const at = r.int(0, text.length);
      text = r.pick([
        () => text.slice(0, at) + r.pick(['"', "{", "}", "[", "]", ",", ":", "\\", "0", "-", "e", " ", "\u0000", "\ud800", "null", r.unicode(1)]) + text.slice(at + 1),
        () => text.slice(0, at) + text.slice(at + r.int(1, 8)),
        () => text.slice(0, at) + r.unicode(r.int(1, 6)) + text.slice(at),
        () => text.slice(0, at) + text.slice(at, at + r.int(1, 20)) + text.slice(at),
        () => {
          // a structural mutation: one field's value replaced by a random JSON value
          try {
            const o = JSON.parse(text);
            const target = o.payload && typeof o.payload === "object" && r.chance(0.7) ? o.payload : o;
            const keys = Object.keys(target);
            const key = keys.length && r.chance(0.8) ? r.pick(keys) : r.ascii(r.int(1, 8));
            target[key] = this.randomJsonValue(2);
            return JSON.stringify(o);
          } catch {
            return text;
          }
        },
      ])();
    }
    if (byteLength(text) > this.limits.maxFrameBytes) text = text.slice(0, 200);
    return this.frame("mutated-json", text, { kind: "any", replies: MUTATION_SUCCESSES });
  }

  private randomJsonValue(depth: number): unknown {
    const r = this.rng;
    const leaves = [
      () => r.int(-1e6, 1e6), () => r.float() * 1e300, () => -0, () => null, () => true, () => false,
      () => "", () => r.unicode(r.int(1, 10)), () => r.uuid(), () => "x".repeat(r.int(150, 300)),
    ];
    if (depth <= 0 || r.chance(0.6)) return r.pick(leaves)();
    return r.chance(0.5)
      ? Array.from({ length: r.int(0, 3) }, () => this.randomJsonValue(depth - 1))
      : Object.fromEntries(Array.from({ length: r.int(0, 3) }, () => [r.ascii(r.int(1, 6)), this.randomJsonValue(depth - 1)]));
  }

  wrongTypes(): FuzzFrame {
    const r = this.rng;
    const uuid = r.uuid();
    // Values each field's schema must refuse. (null is allowed where a field is nullish.)
    const bad: Record<string, unknown[]> = {
      chatId: [42, 0, -1, 1.5, true, false, null, [], {}, [uuid], { id: uuid }, "", "abc", `${uuid}x`, uuid.slice(1), uuid.replaceAll("-", "")],
      limit: ["5", "", 0, -1, 1001, 1.5, 1e9, true, [], {}, [5]],
      cursor: [5, true, {}, [], ["a"]],
      before: [5, "yesterday", "2020-01-01", "2020-13-01T00:00:00Z", true, [], {}],
      createName: [5, true, {}, [], "n".repeat(201), " ".repeat(3) + "n".repeat(201)],
      renameName: [null, 5, true, {}, [], "", "   ", "n".repeat(201)],
      content: [5, true, {}, [], { text: "hi" }, "", "   ", "\n\t ", null],
      message: [5, "hi", true, { content: 5 }, { content: "hi", id: "a b" }, { content: "hi", id: "" }, { content: "hi", id: "a/b" }, { content: "hi", id: "x".repeat(129) }, { content: "   " }, { id: "ok" }],
      messageId: [5, true, {}, "", "a b", "a/b", "a?b", "a#b", "a\\b", "x".repeat(129)],
      traceId: [5, true, {}, [], "", "abc", uuid.slice(2)],
      fromSeq: [-1, 1.5, "1", true, [], {}],
      temperature: [-0.1, 2.1, "1", true, [], {}, 1e9],
      systemPrompt: [5, true, {}, [], "", "   ", "p".repeat(4001)],
      model: [5, true, {}, "", "a b", "gpt 4", "m".repeat(101), "x;y"],
    };
    const cases: [string, string, string, Record<string, unknown>][] = [
      ["GET_CHATS", "limit", "limit", {}],
      ["GET_CHATS", "cursor", "cursor", {}],
      ["GET_CHAT_HISTORY", "chatId", "chatId", {}],
      ["GET_CHAT_HISTORY", "limit", "limit", { chatId: uuid }],
      ["GET_CHAT_HISTORY", "before", "before", { chatId: uuid }],
      ["DELETE_CHAT", "chatId", "chatId", {}],
      ["RENAME_CHAT", "chatId", "chatId", { name: "ok" }],
      ["RENAME_CHAT", "name", "renameName", { chatId: uuid }],
      ["CREATE_CHAT", "name", "createName", {}],
      ["SEND_MESSAGE", "chatId", "chatId", { content: "hi" }],
      ["SEND_MESSAGE", "content", "content", { chatId: uuid }],
      ["SEND_MESSAGE", "message", "message", { chatId: uuid }],
      ["SEND_MESSAGE", "messageId", "messageId", { chatId: uuid, content: "hi" }],
      ["STOP_GENERATION", "chatId", "chatId", {}],
      ["STOP_GENERATION", "traceId", "traceId", {}],
      ["RESUME", "chatId", "chatId", { traceId: uuid }],
      ["RESUME", "traceId", "traceId", { chatId: uuid }],
      ["RESUME", "fromSeq", "fromSeq", { chatId: uuid, traceId: uuid }],
      ["UPDATE_SETTINGS", "temperature", "temperature", {}],
      ["UPDATE_SETTINGS", "systemPrompt", "systemPrompt", {}],
      ["UPDATE_SETTINGS", "model", "model", {}],
    ];
    const [type, field, pool, rest] = r.pick(cases);
    const requestId = this.rid();
    const frame = this.envelope(type, { ...rest, [field]: r.pick(bad[pool]!) }, requestId);
    return this.frame("wrong-field-types", JSON.stringify(frame), { kind: "error", codes: ["INVALID_FRAME"], requestId });
  }

  unknownType(): FuzzFrame {
    const r = this.rng;
    let type: string;
    do type = r.pick([
      () => r.ascii(r.int(1, 30)),
      () => r.pick(KNOWN_TYPES).toLowerCase(),
      () => ` ${r.pick(KNOWN_TYPES)}`,
      () => `${r.pick(KNOWN_TYPES)} `,
      () => `${r.pick(KNOWN_TYPES)}\u0000`,
      () => r.pick(["__proto__", "constructor", "prototype", "toString", "hasOwnProperty", "valueOf", "__defineGetter__", "isPrototypeOf"]),
      () => r.pick(["ERROR", "error", "MESSAGE", "NEW_CHAT", "CHAT_LIST", "SETTINGS", "stop_generation", "resume", ""]),
      () => r.unicode(r.int(1, 20), { lone: true }),
      () => "T".repeat(r.int(65, 2000)),
    ])();
    while (isInboundType(type));
    const requestId = this.rid();
    return this.frame("unknown-type", JSON.stringify(this.envelope(type, {}, requestId)), { kind: "error", codes: ["UNKNOWN_TYPE"], requestId });
  }

  badEnvelope(): FuzzFrame {
    const r = this.rng;
    const requestId = this.rid();
    const text = r.pick([
      () => JSON.stringify(r.pick([0, 1.5, -3, "GET_CHATS", "", null, true, false, [], [{ type: "GET_CHATS" }], ["GET_CHATS"]])),
      () => JSON.stringify({ requestId, payload: { chatId: r.uuid() } }),
      () => JSON.stringify({ type: r.pick([5, 0, null, true, [], ["GET_CHATS"], { type: "GET_CHATS" }]), requestId }),
      () => JSON.stringify({ type: "GET_CHATS", requestId, payload: r.pick(["x", 5, true, false, "{}"]) }),
      () => JSON.stringify({ TYPE: "GET_CHATS", requestId }),
      () => `{"type":"GET_CHATS","type":${r.pick(["5", "null", "[]", "{}"])}}`,
    ])();
    return this.frame("bad-envelope", text, { kind: "error", codes: ["INVALID_FRAME"], requestId: null });
  }

  nearLimit(): FuzzFrame {
    const r = this.rng;
    const max = this.limits.maxFrameBytes;
    const requestId = this.rid();
    const obj = { type: "GET_CHATS", requestId, limit: 1 };
    const binary = r.chance(0.2);
    const wrap = (s: string) => (binary ? new TextEncoder().encode(s) : s);
    const kind = r.int(0, 4);
    if (kind === 0) {
      // at or just under the limit: accepted
      const text = padTo(obj, max - r.int(0, 64), r.pick(["x", "é", "€", "😀"]));
      if (Buffer.byteLength(text) > max) throw new Error("padTo overshot");
      return this.frame("near-limit-ok", wrap(text), { kind: "ok", replies: ["CHAT_LIST"], requestId });
    }
    if (kind === 1) {
      // multi-byte padding: fewer characters than the limit, more bytes
      const text = padTo(obj, max + r.int(1, 200), r.pick(["é", "€", "😀"]));
      return this.frame("near-limit-over", wrap(text), { kind: "error", codes: ["FRAME_TOO_LARGE"], requestId: null });
    }
    const target = kind === 2 ? max + 1 : kind === 3 ? 4 * max : r.int(max + 1, 4 * max);
    return this.frame("near-limit-over", wrap(padTo(obj, target)), { kind: "error", codes: ["FRAME_TOO_LARGE"], requestId: null });
  }

  overLimit(): FuzzFrame {
    const max = this.limits.maxFrameBytes;
    const text = padTo({ type: "SEND_MESSAGE", chatId: this.rng.uuid() }, this.rng.int(4 * max + 1, 6 * max));
    return this.frame("over-4x", this.rng.chance(0.3) ? new TextEncoder().encode(text) : text, { kind: "close", code: 1009 });
  }

  deepNesting(): FuzzFrame {
    const r = this.rng;
    const budget = this.limits.maxFrameBytes - 200;
    const depth = r.int(50, Math.floor(budget / 2)); // arrays: 2 bytes a level
    const oDepth = r.int(20, Math.floor(budget / 6)); // objects: 6 bytes a level
    const arr = (d: number) => "[".repeat(d) + "]".repeat(d);
    const obj = (d: number) => '{"a":'.repeat(d) + "1" + "}".repeat(d);
    const requestId = this.rid();
    const rid = JSON.stringify(requestId);
    const uuid = JSON.stringify(r.uuid());
    return r.pick([
      () => this.frame("deep-nesting", arr(depth), { kind: "error", codes: ["INVALID_FRAME"], requestId: null }),
      () => this.frame("deep-nesting", obj(oDepth), { kind: "error", codes: ["INVALID_FRAME"], requestId: null }),
      () => this.frame("deep-nesting", "[".repeat(depth), { kind: "error", codes: ["BAD_JSON"], requestId: null }),
      () => this.frame("deep-nesting", `{"type":"GET_CHATS","requestId":${rid},"limit":1,"x":${arr(depth)}}`, { kind: "ok", replies: ["CHAT_LIST"], requestId }),
      () => this.frame("deep-nesting", `{"type":"GET_CHATS","requestId":${rid},"payload":{"limit":1,"x":${obj(oDepth)}}}`, { kind: "ok", replies: ["CHAT_LIST"], requestId }),
      () => this.frame("deep-nesting", `{"type":"SEND_MESSAGE","requestId":${rid},"chatId":${uuid},"content":${arr(depth)}}`, { kind: "error", codes: ["INVALID_FRAME"], requestId }),
      () => this.frame("deep-nesting", `{"type":"GET_CHAT_HISTORY","requestId":${rid},"payload":{"chatId":${obj(oDepth)}}}`, { kind: "error", codes: ["INVALID_FRAME"], requestId }),
    ])();
  }

  protoKeys(): FuzzFrame {
    const r = this.rng;
    const requestId = this.rid();
    const rid = JSON.stringify(requestId);
    const uuid = JSON.stringify(r.uuid());
    const key = r.pick(["__proto__", "constructor", "prototype"]);
    const polluter = key === "constructor" ? (x: string) => `{"prototype":${x}}` : (x: string) => x;
    // Were `key` to reach an object's prototype, the schema would see the inherited fields and the
    // answer would change: limit "x" fails GET_CHATS, an inherited chatId satisfies DELETE_CHAT.
    return r.pick([
      () => this.frame("proto-keys", `{"type":"GET_CHATS","requestId":${rid},"${key}":${polluter('{"limit":"x"}')}}`, { kind: "ok", replies: ["CHAT_LIST"], requestId }),
      () => this.frame("proto-keys", `{"type":"GET_CHATS","requestId":${rid},"payload":{"limit":1,"${key}":${polluter('{"limit":"x","type":"X"}')}}}`, { kind: "ok", replies: ["CHAT_LIST"], requestId }),
      () => this.frame("proto-keys", `{"type":"DELETE_CHAT","requestId":${rid},"${key}":${polluter(`{"chatId":${uuid}}`)}}`, { kind: "error", codes: ["INVALID_FRAME"], requestId }),
      () => this.frame("proto-keys", `{"type":"DELETE_CHAT","requestId":${rid},"payload":{"${key}":${polluter(`{"chatId":${uuid}}`)}}}`, { kind: "error", codes: ["INVALID_FRAME"], requestId }),
      () => this.frame("proto-keys", `{"type":"SEND_MESSAGE","requestId":${rid},"chatId":${uuid},"__proto__":{"content":"polluted"}}`, { kind: "error", codes: ["INVALID_FRAME"], requestId }),
      () => this.frame("proto-keys", `{"type":"GET_CHATS","requestId":${rid},"limit":1,"__proto__":null}`, { kind: "ok", replies: ["CHAT_LIST"], requestId }),
      () => this.frame("proto-keys", `{"__proto__":{"type":"GET_CHATS"},"requestId":${rid}}`, { kind: "error", codes: ["INVALID_FRAME"], requestId: null }),
      () => this.frame("proto-keys", JSON.stringify({ type: r.pick(["__proto__", "constructor", "prototype", "toString", "__lookupGetter__"]), requestId }), { kind: "error", codes: ["UNKNOWN_TYPE"], requestId }),
    ])();
  }

  notFound(): FuzzFrame {
    const r = this.rng;
    const requestId = this.rid();
    const chatId = r.chance(0.2) ? r.uuid().toUpperCase() : r.uuid();
    const type = r.pick(["GET_CHAT_HISTORY", "DELETE_CHAT", "RENAME_CHAT", "SEND_MESSAGE", "STOP_GENERATION", "RESUME"] as const);
    if (type === "SEND_MESSAGE" && r.chance(0.3)) {
      // Too long is checked before the chat is looked up.
      const content = "m".repeat(r.int(this.limits.maxMessageChars + 1, Math.min(this.limits.maxMessageChars * 2, this.limits.maxFrameBytes - 200)));
      return this.frame("message-too-long", JSON.stringify(this.envelope(type, { chatId, content }, requestId)), { kind: "error", codes: ["MESSAGE_TOO_LONG"], requestId });
    }
    // The per-connection generation cap is checked before the chat is looked up.
    const codes = type === "SEND_MESSAGE" ? ["CHAT_NOT_FOUND", "TOO_MANY_GENERATIONS"] : type === "STOP_GENERATION" ? ["NO_GENERATION"] : ["CHAT_NOT_FOUND"];
    return this.frame("not-found", JSON.stringify(this.envelope(type, this.validArgs(type, chatId), requestId)), { kind: "error", codes, requestId });
  }

  unicode(): FuzzFrame {
    const r = this.rng;
    const requestId = r.chance(0.5) ? this.rid() : `${this.rid()}-${r.unicode(r.int(1, 20), { lone: true })}`.slice(0, 200);
    return r.pick([
      () => {
        const name = r.unicode(r.int(1, 60), { lone: r.chance(0.3) });
        const tooLong = name.length > 200;
        return this.frame("unicode", JSON.stringify(this.envelope("CREATE_CHAT", { name }, requestId)), tooLong
          ? { kind: "error", codes: ["INVALID_FRAME"], requestId }
          : { kind: "ok", replies: ["NEW_CHAT"], requestId, own: { op: "create", name: name.trim() ? name : undefined } });
      },
      () => {
        const content = r.unicode(r.int(1, 200), { lone: r.chance(0.3) });
        // Content is kept exactly; only a blank one is refused, and its length is in code points.
        const codes = content.trim().length === 0 ? ["INVALID_FRAME"] : [...content].length > this.limits.maxMessageChars ? ["MESSAGE_TOO_LONG"] : ["CHAT_NOT_FOUND", "TOO_MANY_GENERATIONS"];
        return this.frame("unicode", JSON.stringify(this.envelope("SEND_MESSAGE", { chatId: r.uuid(), content }, requestId)), { kind: "error", codes, requestId });
      },
      () => this.frame("unicode", JSON.stringify({ type: "GET_CHATS", requestId, limit: 1, note: r.unicode(r.int(1, 100), { lone: true }) }), { kind: "ok", replies: ["CHAT_LIST"], requestId }),
    ])();
  }

  oddRequestId(): FuzzFrame {
    const r = this.rng;
    const requestId = r.pick<unknown>([5, 0, -1, 1.5, true, false, null, {}, [], ["r"], { id: "r" }, "", "r".repeat(201), "r".repeat(1000)]);
    if (r.chance(0.2)) {
      const exact = `${this.rid()}-`.padEnd(200, "r");
      return this.frame("odd-request-id", JSON.stringify({ type: "GET_CHATS", limit: 1, requestId: exact }), { kind: "ok", replies: ["CHAT_LIST"], requestId: exact });
    }
    return this.frame("odd-request-id", JSON.stringify({ type: "GET_CHATS", limit: 1, requestId }), { kind: "ok", replies: ["CHAT_LIST"], requestId: null });
  }

  valid(): FuzzFrame {
    const r = this.rng;
    const requestId = this.rid();
    if (r.chance(0.12)) {
      const args = this.validArgs("CREATE_CHAT");
      // Names are stored exactly as sent; a blank one means the default.
      const name = typeof args.name === "string" && args.name.trim() ? args.name : undefined;
      return this.frame("valid", JSON.stringify(this.envelope("CREATE_CHAT", args, requestId)), { kind: "ok", replies: ["NEW_CHAT"], requestId, own: { op: "create", name } });
    }
    if (r.chance(0.1)) {
      const type = r.pick(["GET_SETTINGS", "UPDATE_SETTINGS"] as const);
      return this.frame("valid", JSON.stringify(this.envelope(type, this.validArgs(type), requestId)), { kind: "ok", replies: ["SETTINGS"], requestId });
    }
    const text = JSON.stringify(this.envelope("GET_CHATS", this.validArgs("GET_CHATS"), requestId));
    return this.frame("valid", r.chance(0.15) ? new TextEncoder().encode(text) : text, { kind: "ok", replies: ["CHAT_LIST"], requestId });
  }

  /** Frames that really act on a chat this client created. The caller drains first, so `ownChats` is exact. */
  validOwn(ownChats: readonly Chat[]): FuzzFrame {
    const r = this.rng;
    const requestId = this.rid();
    if (ownChats.length === 0 || r.chance(0.05)) {
      return this.frame("valid-own", JSON.stringify(this.envelope("CREATE_CHAT", {}, requestId)), { kind: "ok", replies: ["NEW_CHAT"], requestId, own: { op: "create", name: undefined } });
    }
    const chat = r.pick(ownChats);
    const op = r.weighted([[3, "history"], [2, "rename"], [6, "send"], [1, "resend"], [1, "stop"], [0.4, "delete"]] as const);
    switch (op) {
      case "history":
        return this.frame("valid-own", JSON.stringify(this.envelope("GET_CHAT_HISTORY", { chatId: chat.id }, requestId)), { kind: "ok", replies: ["CHAT_HISTORY"], requestId, own: { op: "history", chatId: chat.id } });
      case "rename": {
        const name = r.chance(0.5) ? r.ascii(r.int(1, 40)) : `  ${r.unicode(r.int(1, 30))} `;
        if (name.trim().length === 0 || name.length > 200) return this.validOwn(ownChats);
        return this.frame("valid-own", JSON.stringify(this.envelope("RENAME_CHAT", { chatId: chat.id, name }, requestId)), { kind: "ok", replies: ["CHAT_UPDATED"], requestId, own: { op: "rename", chatId: chat.id, name } });
      }
      case "send":
      case "resend": {
        const messageId = op === "resend" ? `m-${this.tag}-${r.int(1, 3)}` : r.chance(0.5) ? `m-${this.tag}-${this.n}` : undefined;
        const content = r.chance(0.1) ? "c".repeat(this.limits.maxMessageChars) : ` ${r.unicode(r.int(1, 40))} q${this.n} `;
        const args = messageId
          ? (r.chance(0.5) ? { chatId: chat.id, message: { content, id: messageId } } : { chatId: chat.id, content, messageId })
          : { chatId: chat.id, content };
        return this.frame("valid-own", JSON.stringify(this.envelope("SEND_MESSAGE", args, requestId)), {
          kind: "ok", replies: ["MESSAGE_ACCEPTED"], orCodes: GEN_REFUSALS, requestId, own: { op: "send", chatId: chat.id, content, messageId },
        });
      }
      case "stop":
        // Whether a reply is still streaming there is a matter of timing: either answer is right.
        return this.frame("valid-own", JSON.stringify(this.envelope("STOP_GENERATION", { chatId: chat.id }, requestId)), {
          kind: "ok", replies: ["GENERATION_STOPPED"], orCodes: ["NO_GENERATION"], requestId, own: { op: "stop", chatId: chat.id },
        });
      case "delete":
        return this.frame("valid-own", JSON.stringify(this.envelope("DELETE_CHAT", { chatId: chat.id }, requestId)), { kind: "ok", replies: ["CHAT_DELETED"], requestId, own: { op: "delete", chatId: chat.id } });
    }
  }
}

/** The frame kinds and how often each is drawn. `bad`: always (or nearly always) refused. */
export type Kind = { name: string; weight: number; bad: boolean; make: (g: FrameGen, own: readonly Chat[]) => FuzzFrame };
const KINDS: Kind[] = [
  { name: "random-bytes", weight: 8, bad: true, make: (g) => g.randomBytes() },
  { name: "random-text", weight: 6, bad: true, make: (g) => g.randomText() },
  { name: "truncated-json", weight: 10, bad: true, make: (g) => g.truncated() },
  { name: "wrong-field-types", weight: 12, bad: true, make: (g) => g.wrongTypes() },
  { name: "unknown-type", weight: 8, bad: true, make: (g) => g.unknownType() },
  { name: "bad-envelope", weight: 6, bad: true, make: (g) => g.badEnvelope() },
  { name: "near-limit", weight: 6, bad: true, make: (g) => g.nearLimit() },
  { name: "over-4x", weight: 0.6, bad: true, make: (g) => g.overLimit() },
  { name: "deep-nesting", weight: 5, bad: true, make: (g) => g.deepNesting() },
  { name: "proto-keys", weight: 6, bad: true, make: (g) => g.protoKeys() },
  { name: "not-found", weight: 6, bad: true, make: (g) => g.notFound() },
  { name: "mutated-json", weight: 14, bad: false, make: (g) => g.mutated() },
  { name: "unicode", weight: 4, bad: false, make: (g) => g.unicode() },
  { name: "odd-request-id", weight: 3, bad: false, make: (g) => g.oddRequestId() },
  { name: "valid", weight: 6, bad: false, make: (g) => g.valid() },
  { name: "valid-own", weight: 5, bad: false, make: (g, own) => g.validOwn(own) },
];
export const isBad = (f: FuzzFrame) => f.expect.kind === "error" || f.expect.kind === "close";

// ── A fuzzing client ────────────────────────────────────────────────────────────────────────

type Pending = { frame: FuzzFrame };

/** What the fuzz clients learn about the chats they create, to check the store against at the end. */
export type Ledger = {
  chats: Map<string, {
    chat: Chat; name: string; deleted: boolean;
    sent: { id: string; content: string; traceId: string }[];
    /** Replies cut short by STOP_GENERATION: stored as "stopped" with a prefix of the text, or not at all if empty. */
    stopped: Set<string>;
  }>;
};

type Stats = {
  framesSent: number;
  bytesSent: number;
  byCategory: Record<string, number>;
  errorCodes: Record<string, number>;
  replies: Record<string, number>;
  closes: Record<string, number>;
  reconnects: number;
  badFramesSent: number;
  errorsForBadFrames: number;
  broadcastsSeen: number;
  streamFramesSeen: number;
};

const inc = (o: Record<string, number>, k: string, by = 1) => (o[k] = (o[k] ?? 0) + by);

class FuzzClient {
  ws!: WebSocket;
  pending: Pending[] = [];
  ownChats: Chat[] = [];
  private waiters = new Set<() => void>();
  private closeInfo: { code: number; reason: string } | undefined;
  private expectingClose = false;
  /** Bad-only clients: every ERROR without traceId, counted apart from the in-order matching. */
  errorsReceived = 0;
  badSentOnSocket = 0;
  /** Replies whose end:true this socket saw: an ERROR naming one of them (and no requestId) ends that stream. */
  private ended = new Set<string>();

  constructor(
    readonly tag: string,
    readonly url: string,
    readonly stats: Stats,
    readonly ledger: Ledger,
    readonly violations: string[],
  ) {}

  private violate(msg: string) {
    if (this.violations.length < 200) this.violations.push(`[${this.tag}] ${msg}`);
  }

  async open(): Promise<void> {
    this.closeInfo = undefined;
    this.expectingClose = false;
    const ws = new WebSocket(this.url);
    this.ws = ws;
    ws.binaryType = "arraybuffer";
    ws.addEventListener("message", (e) => this.onMessage(e.data));
    ws.addEventListener("close", (e) => {
      if (ws !== this.ws) return;
      this.closeInfo = { code: e.code, reason: e.reason };
      if (!this.expectingClose) {
        this.violate(`socket closed unexpectedly (${e.code} ${e.reason}) with ${this.pending.length} frames unanswered`);
      }
      this.wake();
    });
    await new Promise<void>((resolve, reject) => {
      ws.addEventListener("open", () => resolve(), { once: true });
      ws.addEventListener("error", () => reject(new Error(`${this.tag}: could not connect to ${this.url}`)), { once: true });
    });
  }

  private wake() {
    for (const w of this.waiters) w();
  }

  private onMessage(data: unknown) {
    if (typeof data !== "string") return this.violate("server sent a binary frame");
    let f: Record<string, unknown>;
    try {
      f = JSON.parse(data);
    } catch {
      return this.violate(`server sent non-JSON: ${data.slice(0, 80)}`);
    }
    if (typeof f !== "object" || f === null || typeof f.type !== "string") return this.violate(`server frame without a string type: ${data.slice(0, 120)}`);
    if (f.type === "error" || (f.type !== "ERROR" && f.type.toUpperCase() === "ERROR")) this.violate(`lowercase error frame: ${data.slice(0, 120)}`);
    if (f.type === "ERROR" && (typeof f.code !== "string" || typeof f.error !== "string" || !f.code || !f.error)) {
      this.violate(`ERROR without string code and error: ${data.slice(0, 200)}`);
    }
    const direct = this.isDirect(f);
    if (!direct) {
      if (f.type === "MESSAGE" && f.end === true && typeof f.traceId === "string") this.ended.add(f.traceId);
      if (f.type === "MESSAGE" || f.type === "ERROR") {
        this.stats.streamFramesSeen++;
        if (f.type === "ERROR") this.violate(`a reply stream ended with an error: ${data.slice(0, 200)}`);
        // "stopped" is a reply cut short by DELETE_CHAT of its chat, which the fuzz does; nothing else may end one early.
        if (f.type === "MESSAGE" && f.end === true && f.reason !== undefined && f.reason !== "stopped") this.violate(`a reply ended early: ${data.slice(0, 200)}`);
      } else if (["CHAT_CREATED", "CHAT_UPDATED", "CHAT_DELETED", "FIRST_MESSAGE"].includes(f.type)) {
        this.stats.broadcastsSeen++;
      } else {
        this.violate(`unexpected frame type ${JSON.stringify(f.type)}: ${data.slice(0, 120)}`);
      }
      return;
    }
    if (f.type === "ERROR") {
      inc(this.stats.errorCodes, String(f.code));
      this.errorsReceived++;
    } else inc(this.stats.replies, f.type);
    const p = this.pending.shift();
    if (!p) return this.violate(`an answer to no frame: ${data.slice(0, 200)}`);
    this.check(p.frame, f, data);
    this.wake();
  }

  /** A frame answering one of ours, as opposed to a broadcast or part of a reply stream. */
  private isDirect(f: Record<string, unknown>): boolean {
    // A reply that fails ends with end:true and then an ERROR with its traceId, sent to its watchers.
    // Other ERRORs may name a traceId too (STOP_GENERATION of an unknown one): those answer a frame.
    if (f.type === "ERROR") return !(typeof f.traceId === "string" && this.ended.has(f.traceId) && f.requestId === undefined);
    if (f.type === "CHAT_UPDATED" || f.type === "CHAT_DELETED") return typeof f.requestId === "string" && f.requestId.startsWith(`${this.tag}-`);
    return (REPLY_TYPES as readonly string[]).includes(f.type as string);
  }

  private check(frame: FuzzFrame, f: Record<string, any>, data: string) {
    const e = frame.expect;
    const what = `${frame.category} frame ${JSON.stringify(typeof frame.data === "string" ? frame.data.slice(0, 120) : `<${frame.bytes} binary bytes>`)}`;
    const got = data.slice(0, 240);
    const isError = f.type === "ERROR";
    if (e.kind === "close") return this.violate(`${what}: expected close ${e.code}, got ${got}`);
    if (e.kind === "error") {
      this.stats.errorsForBadFrames += isError ? 1 : 0;
      if (!isError) return this.violate(`${what}: expected an ERROR, got ${got}`);
      if (e.codes && !e.codes.includes(f.code)) return this.violate(`${what}: expected ${e.codes.join("|")}, got ${got}`);
    } else if (e.kind === "ok") {
      if (isError ? !e.orCodes?.includes(f.code) : !e.replies.includes(f.type)) {
        return this.violate(`${what}: expected ${[...e.replies, ...(e.orCodes ?? [])].join("|")}, got ${got}`);
      }
    } else if (!isError && !e.replies.includes(f.type)) {
      return this.violate(`${what}: a mutation got an impossible success ${got}`);
    }
    if ("requestId" in e && e.requestId !== undefined) {
      if (e.requestId === null ? "requestId" in f : !sameText(f.requestId, e.requestId)) {
        return this.violate(`${what}: requestId ${JSON.stringify(f.requestId)} where ${JSON.stringify(e.requestId)} was due; got ${got}`);
      }
    }
    this.record(e, f, what);
  }

  /** Bookkeeping of what now exists, for the store check. */
  private record(e: Expect, f: Record<string, any>, what: string) {
    if (f.type === "NEW_CHAT") {
      const chat = f.chat as Chat;
      if (!v.is(ChatSchema, chat)) this.violate(`${what}: NEW_CHAT carries an invalid chat ${JSON.stringify(chat).slice(0, 200)}`);
      this.ownChats.push(chat);
      this.ledger.chats.set(chat.id, { chat, name: chat.name, deleted: false, sent: [], stopped: new Set() });
      if (e.kind === "ok" && e.own?.op === "create" && !sameText(chat.name, e.own.name ?? "New Chat")) {
        this.violate(`${what}: chat created with name ${JSON.stringify(chat.name)}`);
      }
      return;
    }
    if (e.kind !== "ok" || !e.own) return;
    const own = e.own;
    if (f.type === "CHAT_HISTORY" && own.op === "history") {
      for (const m of f.messages ?? []) {
        const { streaming: _s, seq: _q, ...rest } = m;
        if (!v.is(MessageSchema, rest) || rest.chat_id !== own.chatId) this.violate(`${what}: history has an invalid message ${JSON.stringify(m).slice(0, 200)}`);
      }
    } else if (f.type === "CHAT_UPDATED" && own.op === "rename") {
      const entry = this.ledger.chats.get(own.chatId);
      if (entry) entry.name = f.chat.name;
      if (!sameText(f.chat?.name, own.name)) this.violate(`${what}: renamed to ${JSON.stringify(f.chat?.name)}`);
    } else if (f.type === "CHAT_DELETED" && own.op === "delete") {
      const entry = this.ledger.chats.get(own.chatId);
      if (entry) entry.deleted = true;
      this.ownChats = this.ownChats.filter((c) => c.id !== own.chatId);
    } else if (f.type === "GENERATION_STOPPED" && own.op === "stop") {
      if (f.chatId !== own.chatId || typeof f.traceId !== "string") this.violate(`${what}: bad GENERATION_STOPPED ${JSON.stringify(f)}`);
      this.ledger.chats.get(own.chatId)?.stopped.add(f.traceId);
    } else if (f.type === "MESSAGE_ACCEPTED" && own.op === "send") {
      if (f.chatId !== own.chatId || typeof f.messageId !== "string") this.violate(`${what}: bad MESSAGE_ACCEPTED ${JSON.stringify(f)}`);
      if (own.messageId !== undefined && f.messageId !== own.messageId) this.violate(`${what}: MESSAGE_ACCEPTED for ${f.messageId}`);
      const entry = this.ledger.chats.get(own.chatId);
      if (f.duplicate === false) {
        if (typeof f.traceId !== "string") this.violate(`${what}: MESSAGE_ACCEPTED without traceId`);
        entry?.sent.push({ id: f.messageId, content: own.content, traceId: f.traceId });
      } else if (f.duplicate === true) {
        if (!entry?.sent.some((s) => s.id === f.messageId)) this.violate(`${what}: duplicate of a message never accepted`);
      } else this.violate(`${what}: MESSAGE_ACCEPTED without duplicate flag`);
    }
  }

  /** Resolves once at most `n` frames are unanswered. */
  waitPending(n: number, timeoutMs: number): Promise<void> {
    return this.waitFor(() => this.pending.length <= n, timeoutMs, () => `${this.pending.length} frames still unanswered`);
  }

  private waitFor(cond: () => boolean, timeoutMs: number, describe: () => string): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = () => {
        if (cond()) {
          done();
          resolve();
        } else if (this.closeInfo) {
          done();
          reject(new Error(`${this.tag}: socket closed (${this.closeInfo.code}) while waiting: ${describe()}`));
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`${this.tag}: timed out after ${timeoutMs} ms: ${describe()}`));
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      this.waiters.add(check);
      check();
    });
  }

  send(frame: FuzzFrame) {
    this.stats.framesSent++;
    this.stats.bytesSent += frame.bytes;
    inc(this.stats.byCategory, frame.category);
    if (frame.expect.kind === "error") {
      this.stats.badFramesSent++;
      this.badSentOnSocket++;
    }
    if (frame.expect.kind !== "close") this.pending.push({ frame });
    this.ws.send(frame.data);
  }

  /** Sends a frame the server must answer by closing the socket; checks the code and reconnects. */
  async sendExpectingClose(frame: FuzzFrame & { expect: { kind: "close" } }, timeoutMs: number) {
    await this.waitPending(0, timeoutMs);
    this.expectingClose = true;
    this.send(frame);
    this.stats.badFramesSent++;
    await this.waitFor(() => this.closeInfo !== undefined, timeoutMs, () => "the server did not close the socket").catch(() => {});
    const code = this.closeInfo?.code;
    inc(this.stats.closes, String(code ?? "none"));
    if (code !== frame.expect.code) this.violate(`${frame.category} (${frame.bytes} bytes): closed with ${code}, expected ${frame.expect.code}`);
    this.checkBadCount();
    this.stats.reconnects++;
    await this.open();
  }

  /** On a bad-only client every frame sent on this socket so far must have drawn one ERROR. */
  checkBadCount() {
    if (this.tag.startsWith("bad") && this.errorsReceived !== this.badSentOnSocket) {
      this.violate(`bad-only client: ${this.badSentOnSocket} bad frames sent, ${this.errorsReceived} ERRORs received`);
    }
    this.errorsReceived = 0;
    this.badSentOnSocket = 0;
  }

  close(): Promise<void> {
    this.expectingClose = true;
    if (this.closeInfo) return Promise.resolve();
    const closed = new Promise<void>((resolve) => this.ws.addEventListener("close", () => resolve(), { once: true }));
    this.ws.close();
    return closed;
  }
}

// ── A fuzz session against a running server ───────────────────────────────────────────────────

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

export type FuzzReport = {
  seed: number;
  clients: number;
  elapsedMs: number;
  framesPerSecond: number;
  stats: Stats;
  good: { messages: number; repliesDuringFuzz: number; maxReplyMs: number; meanReplyMs: number };
  store: { chats: number; messages: number; fuzzChats: number; fuzzChatsDeleted: number; fuzzMessages: number };
  /** Deviations of a known, reported kind (not counted as violations). */
  knownIssues: { loneSurrogateRoundTrip: number; examples: string[] };
  violations: string[];
};

/** The model's reply to everything in a fuzz session; unicode so the stream and the store are checked byte for byte. */
export const FUZZ_MODEL_TOKENS = ["Bonjour", " —", " héllo", " 👋🏽", " 世界", ",", " مرحبا", " \u200d", "\n", "fin", "."];
export const FUZZ_MODEL_TEXT = FUZZ_MODEL_TOKENS.join("");

/** Env for a fuzz target: a small frame limit (fast), limits high enough not to mask everything else. */
export const FUZZ_ENV = {
  MAX_FRAME_BYTES: "4096",
  MAX_MESSAGE_CHARS: "1000",
  RATE_LIMIT_FRAMES_PER_SECOND: "100000",
  RATE_LIMIT_MESSAGES_PER_MINUTE: "100000",
  MAX_GENERATIONS_PER_CONNECTION: "2",
  // Titles are a second, background model call that renames chats; off, so the store check is exact.
  CHAT_TITLES: "false",
};

/** The real server with SQLite and a local SSE model, configured for fuzzing. */
export async function startFuzzTarget(): Promise<{ srv: TestServer; model: SseModel; stop(): Promise<void> }> {
  const model = await startSseModel({ tokens: FUZZ_MODEL_TOKENS, delayMs: 1 });
  const srv = await startTestServer({ ...FUZZ_ENV, OPENAI_BASE_URL: `${model.url}/v1`, OPENAI_MODEL: "fuzz-model", OPENAI_API_KEY: "sk-fuzz" });
  return {
    srv,
    model,
    async stop() {
      await srv.close();
      model.stop();
    },
  };
}

const sameIgnoringLoneSurrogates = (a: string, b: string) => sameText(a, b);

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
    framesSent: 0, bytesSent: 0, byCategory: {}, errorCodes: {}, replies: {}, closes: {}, reconnects: 0,
    badFramesSent: 0, errorsForBadFrames: 0, broadcastsSeen: 0, streamFramesSeen: 0,
  };
  const protoKeysBefore = Object.getOwnPropertyNames(Object.prototype).sort().join();

  // The well-behaved client: its own chat, one message after another, each reply in full.
  const good = await srv.connect();
  // A new chat every GOOD_CHAT_MESSAGES questions keeps each history under HISTORY_MAX_MESSAGES in long runs.
  const GOOD_CHAT_MESSAGES = 40;
  const goodChats: { chat: Chat; sent: string[]; traces: string[] }[] = [];
  const newGoodChat = async () => {
    const chat = (await good.request({ type: "CREATE_CHAT", payload: { name: `well-behaved ✓ ${goodChats.length + 1}` } }, "NEW_CHAT")).chat as Chat;
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
  })().then(() => undefined, (e: unknown) => e);

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
      if (++sentTotal % 1000 === 0) o.progress?.(`${sentTotal} frames, ${Math.round(sentTotal / ((performance.now() - t0) / 1000))}/s, ${violations.length} violations`);
    }
    await c.waitPending(0, 10_000);
    // A last frame: everything before it has been answered, so any further answer is an extra one.
    c.send({ category: "sentinel", data: JSON.stringify({ type: "GET_CHATS", limit: 1, requestId: `${c.tag}-sentinel` }), expect: { kind: "ok", replies: ["CHAT_LIST"], requestId: `${c.tag}-sentinel` }, bytes: 0 });
    await c.waitPending(0, 10_000);
    c.checkBadCount();
  };
  const results = await Promise.allSettled(clients.map(fuzzOne));
  for (const r of results) if (r.status === "rejected") violations.push(`fuzz client failed: ${r.reason instanceof Error ? r.reason.message : r.reason}`);
  const elapsedMs = performance.now() - t0;
  fuzzing = false;

  const goodFailure = await goodLoop;
  if (goodFailure) violations.push(`[good] the well-behaved client was not served: ${goodFailure instanceof Error ? goodFailure.message : goodFailure}`);
  if (repliesDuringFuzz < 1) violations.push("[good] no reply completed while the fuzz ran");

  // Every socket still open is known to the server, and no other.
  if (srv.conns.count !== clients.length + 1) violations.push(`server tracks ${srv.conns.count} sockets, ${clients.length + 1} are open`);
  // Replies the fuzz clients started finish and are stored before the store is read.
  await srv.deps.inflight.idle();

  // The well-behaved client's histories, over the wire and in the store: exactly its questions and the replies.
  const shape = (ms: Message[]) => ms.map((m) => [m.role, m.content, m.role === "assistant" ? m.id : null, m.status ?? null]);
  for (const gc of goodChats) {
    const expected = gc.sent.flatMap((content, i) => [["user", content, null, null], ["assistant", FUZZ_MODEL_TEXT, gc.traces[i] ?? "?", null]]);
    const hist = await good.request({ type: "GET_CHAT_HISTORY", chatId: gc.chat.id }, "CHAT_HISTORY").catch((e): Record<string, any> => ({ type: "FAILED", error: String(e) }));
    if (hist.type !== "CHAT_HISTORY") violations.push(`[good] history request failed: ${JSON.stringify(hist).slice(0, 200)}`);
    else if (JSON.stringify(shape(hist.messages)) !== JSON.stringify(expected)) violations.push(`[good] history over the wire differs: ${JSON.stringify(shape(hist.messages)).slice(0, 400)}`);
    const stored = await srv.store.listMessages(gc.chat.id, { limit: 10_000 });
    if (JSON.stringify(shape(stored)) !== JSON.stringify(expected)) violations.push(`[good] stored history differs: ${JSON.stringify(shape(stored)).slice(0, 400)}`);
  }
  const goodIds = new Set(goodChats.map((gc) => gc.chat.id));

  // Everything in the store is well-formed, and is exactly what the clients were told.
  const storeSummary = { chats: 0, messages: 0, fuzzChats: 0, fuzzChatsDeleted: 0, fuzzMessages: 0 };
  const seen = new Set<string>();
  let cursor: string | undefined;
  do {
    const page = await srv.store.listChats({ limit: 200, cursor });
    cursor = page.cursor;
    for (const chat of page.items) {
      storeSummary.chats++;
      seen.add(chat.id);
      if (!v.is(ChatSchema, chat)) violations.push(`[store] invalid chat ${JSON.stringify(chat).slice(0, 200)}`);
      if (chat.updated_at < chat.created_at) violations.push(`[store] chat ${chat.id} updated before it was created`);
      const messages = await srv.store.listMessages(chat.id, { limit: 10_000 });
      storeSummary.messages += messages.length;
      for (const m of messages) {
        if (!v.is(MessageSchema, m) || m.chat_id !== chat.id) violations.push(`[store] invalid message ${JSON.stringify(m).slice(0, 200)}`);
      }
      if (goodIds.has(chat.id)) continue;
      const entry = ledger.chats.get(chat.id);
      if (!entry) {
        violations.push(`[store] a chat nobody was told about: ${JSON.stringify(chat).slice(0, 200)}`);
        continue;
      }
      storeSummary.fuzzChats++;
      storeSummary.fuzzMessages += messages.length;
      if (entry.deleted) violations.push(`[store] chat ${chat.id} is still stored after CHAT_DELETED`);
      if (chat.created_at !== entry.chat.created_at) violations.push(`[store] chat ${chat.id} created_at changed`);
      if (chat.name !== entry.name) {
        if (sameIgnoringLoneSurrogates(chat.name, entry.name)) {
          knownIssues.loneSurrogateRoundTrip++;
          if (knownIssues.examples.length < 3) knownIssues.examples.push(`chat name told ${JSON.stringify(entry.name)}, stored ${JSON.stringify(chat.name)}`);
        } else violations.push(`[store] chat ${chat.id} name ${JSON.stringify(chat.name)}, clients were told ${JSON.stringify(entry.name)}`);
      }
      // Each accepted question, then its reply: whole and unmarked, or (if stopped) a non-empty prefix marked "stopped" or nothing.
      const got = messages.map((m) => ({ id: m.id, role: m.role, content: m.content, status: m.status }));
      const problem = (() => {
        let i = 0;
        for (const s of entry.sent) {
          const u = got[i++];
          if (!u || u.id !== s.id || u.role !== "user" || u.status !== undefined) return `question ${s.id} missing or out of place`;
          if (u.content !== s.content) {
            if (!sameIgnoringLoneSurrogates(u.content, s.content)) return `question ${s.id} content changed`;
            knownIssues.loneSurrogateRoundTrip++;
          }
          const a = got[i];
          if (entry.stopped.has(s.traceId)) {
            if (a?.id !== s.traceId) continue; // stopped before any text: not stored
            i++;
            if (a.role !== "assistant" || a.status !== "stopped" || !a.content || !FUZZ_MODEL_TEXT.startsWith(a.content)) return `stopped reply ${s.traceId} stored as ${JSON.stringify(a)}`;
          } else {
            i++;
            if (!a || a.id !== s.traceId || a.role !== "assistant" || a.status !== undefined || a.content !== FUZZ_MODEL_TEXT) return `reply ${s.traceId} stored as ${JSON.stringify(a)}`;
          }
        }
        return i === got.length ? undefined : `${got.length - i} messages nobody sent`;
      })();
      if (problem) violations.push(`[store] chat ${chat.id}: ${problem}; stored ${JSON.stringify(got).slice(0, 400)}`);
    }
  } while (cursor);
  for (const [id, entry] of ledger.chats) {
    if (entry.deleted) {
      storeSummary.fuzzChatsDeleted++;
      if (seen.has(id)) continue; // reported above
      if ((await srv.store.listMessages(id, { limit: 1 })).length) violations.push(`[store] deleted chat ${id} still has messages`);
    } else if (!seen.has(id)) violations.push(`[store] chat ${id} (NEW_CHAT was sent) is missing`);
  }
  for (const id of goodIds) if (!seen.has(id)) violations.push(`[store] the well-behaved chat ${id} is missing`);

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

/** One screenful: throughput, answers by code, and every violation. */
export function formatReport(r: FuzzReport): string {
  const sorted = (o: Record<string, number>) => Object.entries(o).sort((a, b) => b[1] - a[1]).map(([k, n]) => `${k}=${n}`).join(" ");
  return [
    `fuzz seed=${r.seed} clients=${r.clients}: ${r.stats.framesSent} frames (${(r.stats.bytesSent / 1024).toFixed(0)} KiB) in ${r.elapsedMs} ms = ${r.framesPerSecond} frames/s`,
    `  bad frames sent: ${r.stats.badFramesSent}; ERROR answers: ${sorted(r.stats.errorCodes)}`,
    `  other answers: ${sorted(r.stats.replies)}; socket closes: ${sorted(r.stats.closes) || "none"}; reconnects: ${r.stats.reconnects}`,
    `  by category: ${sorted(r.stats.byCategory)}`,
    `  broadcasts seen: ${r.stats.broadcastsSeen}; stream frames seen by fuzz clients: ${r.stats.streamFramesSeen}`,
    `  well-behaved client: ${r.good.messages} messages, ${r.good.repliesDuringFuzz} full replies during the fuzz, reply time mean ${r.good.meanReplyMs} ms, max ${r.good.maxReplyMs} ms`,
    `  store: ${r.store.chats} chats, ${r.store.messages} messages; fuzz chats ${r.store.fuzzChats} (+${r.store.fuzzChatsDeleted} deleted) with ${r.store.fuzzMessages} messages`,
    `  known issues: lone-surrogate round trip x${r.knownIssues.loneSurrogateRoundTrip}${r.knownIssues.examples.length ? ` e.g. ${r.knownIssues.examples[0]}` : ""}`,
    r.violations.length ? `  VIOLATIONS (${r.violations.length}):\n${r.violations.map((x) => `    - ${x}`).join("\n")}` : "  violations: none",
  ].join("\n");
}
