import type { Chat } from "../../../src/records";
import { isInboundType } from "../../../src/ws/handlers";
import type { Rng } from "./rng";

// Frames and what the server must answer: every generated frame carries the answer its generator
// predicts (an ERROR with given codes, a reply of given types, or a close), checked by checker.ts.

// Direct answers (besides ERROR). MESSAGE is one only for RESUME, which the fuzz sends to random chats.
export const REPLY_TYPES = [
  "CHAT_LIST",
  "NEW_CHAT",
  "CHAT_HISTORY",
  "CHAT_UPDATED",
  "CHAT_DELETED",
  "MESSAGE_ACCEPTED",
  "SETTINGS",
  "GENERATION_STOPPED",
] as const;
// The frame types the generator knows how to fill in. Unknown-type frames are checked against the
// server's own table (isInboundType), so a type added later is never sent as "unknown".
const KNOWN_TYPES = [
  "GET_CHATS",
  "CREATE_CHAT",
  "GET_CHAT_HISTORY",
  "DELETE_CHAT",
  "RENAME_CHAT",
  "SEND_MESSAGE",
  "STOP_GENERATION",
  "RESUME",
  "GET_SETTINGS",
  "UPDATE_SETTINGS",
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

export type OwnOp =
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
export const sameText = (a: unknown, b: unknown) =>
  a === b || (typeof a === "string" && typeof b === "string" && a.toWellFormed() === b.toWellFormed());

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
  constructor(
    readonly rng: Rng,
    readonly tag: string,
    readonly limits: FuzzLimits,
  ) {}

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
      case "GET_CHATS":
        return r.chance(0.5) ? { limit: r.int(1, 3) } : { limit: 1, cursor: null };
      case "CREATE_CHAT":
        return r.chance(0.5) ? {} : { name: r.ascii(r.int(1, 30)) };
      case "GET_CHAT_HISTORY":
        return r.chance(0.5) ? { chatId } : { chatId, limit: r.int(1, 50) };
      case "DELETE_CHAT":
        return { chatId };
      case "RENAME_CHAT":
        return { chatId, name: r.ascii(r.int(1, 40)) };
      case "SEND_MESSAGE":
        return r.chance(0.5)
          ? { chatId, content: r.ascii(r.int(1, 60), "abc def ") + "." }
          : { chatId, message: { content: `q ${r.ascii(r.int(1, 40))}`, id: r.ascii(r.int(8, 24)) } };
      case "STOP_GENERATION":
        return r.chance(0.5) ? { chatId } : { traceId: r.uuid() };
      case "RESUME":
        return { chatId, traceId: r.uuid(), fromSeq: r.int(0, 5) };
      case "GET_SETTINGS":
        return {};
      case "UPDATE_SETTINGS":
        return r.pick([{ temperature: r.int(0, 20) / 10 }, { temperature: null }, { systemPrompt: null }, { model: null }]);
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
      () =>
        r.pick([
          "",
          " ",
          "\n",
          "null",
          "true",
          "0",
          "-1",
          "1e999",
          '""',
          '"GET_CHATS"',
          "[]",
          "{}",
          "[{}]",
          '{"type"}',
          "NaN",
          "undefined",
        ]),
    ])();
    const verdict = rawVerdict(asServerSees(s));
    return this.frame("random-text", s, { kind: "error", codes: verdict === "OTHER" ? undefined : [verdict], requestId: null });
  }

  truncated(): FuzzFrame {
    const text = JSON.stringify(this.template());
    // Any proper prefix of a JSON object text is not JSON.
    return this.frame("truncated-json", text.slice(0, this.rng.int(1, text.length - 1)), {
      kind: "error",
      codes: ["BAD_JSON"],
      requestId: null,
    });
  }

  mutated(): FuzzFrame {
    const r = this.rng;
    let text = JSON.stringify(this.template());
    const rounds = r.int(1, 4);
    for (let i = 0; i < rounds; i++) {
      const at = r.int(0, text.length);
      text = r.pick([
        () =>
          text.slice(0, at) +
          r.pick(['"', "{", "}", "[", "]", ",", ":", "\\", "0", "-", "e", " ", "\u0000", "\ud800", "null", r.unicode(1)]) +
          text.slice(at + 1),
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
      () => r.int(-1e6, 1e6),
      () => r.float() * 1e300,
      () => -0,
      () => null,
      () => true,
      () => false,
      () => "",
      () => r.unicode(r.int(1, 10)),
      () => r.uuid(),
      () => "x".repeat(r.int(150, 300)),
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
      chatId: [
        42,
        0,
        -1,
        1.5,
        true,
        false,
        null,
        [],
        {},
        [uuid],
        { id: uuid },
        "",
        "abc",
        `${uuid}x`,
        uuid.slice(1),
        uuid.replaceAll("-", ""),
      ],
      limit: ["5", "", 0, -1, 1001, 1.5, 1e9, true, [], {}, [5]],
      cursor: [5, true, {}, [], ["a"]],
      before: [5, "yesterday", "2020-01-01", "2020-13-01T00:00:00Z", true, [], {}],
      createName: [5, true, {}, [], "n".repeat(201), " ".repeat(3) + "n".repeat(201)],
      renameName: [null, 5, true, {}, [], "", "   ", "n".repeat(201)],
      content: [5, true, {}, [], { text: "hi" }, "", "   ", "\n\t ", null],
      message: [
        5,
        "hi",
        true,
        { content: 5 },
        { content: "hi", id: "a b" },
        { content: "hi", id: "" },
        { content: "hi", id: "a/b" },
        { content: "hi", id: "x".repeat(129) },
        { content: "   " },
        { id: "ok" },
      ],
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
    do
      type = r.pick([
        () => r.ascii(r.int(1, 30)),
        () => r.pick(KNOWN_TYPES).toLowerCase(),
        () => ` ${r.pick(KNOWN_TYPES)}`,
        () => `${r.pick(KNOWN_TYPES)} `,
        () => `${r.pick(KNOWN_TYPES)}\u0000`,
        () =>
          r.pick(["__proto__", "constructor", "prototype", "toString", "hasOwnProperty", "valueOf", "__defineGetter__", "isPrototypeOf"]),
        () => r.pick(["ERROR", "error", "MESSAGE", "NEW_CHAT", "CHAT_LIST", "SETTINGS", "stop_generation", "resume", ""]),
        () => r.unicode(r.int(1, 20), { lone: true }),
        () => "T".repeat(r.int(65, 2000)),
      ])();
    while (isInboundType(type));
    const requestId = this.rid();
    return this.frame("unknown-type", JSON.stringify(this.envelope(type, {}, requestId)), {
      kind: "error",
      codes: ["UNKNOWN_TYPE"],
      requestId,
    });
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
      () =>
        this.frame("deep-nesting", `{"type":"GET_CHATS","requestId":${rid},"limit":1,"x":${arr(depth)}}`, {
          kind: "ok",
          replies: ["CHAT_LIST"],
          requestId,
        }),
      () =>
        this.frame("deep-nesting", `{"type":"GET_CHATS","requestId":${rid},"payload":{"limit":1,"x":${obj(oDepth)}}}`, {
          kind: "ok",
          replies: ["CHAT_LIST"],
          requestId,
        }),
      () =>
        this.frame("deep-nesting", `{"type":"SEND_MESSAGE","requestId":${rid},"chatId":${uuid},"content":${arr(depth)}}`, {
          kind: "error",
          codes: ["INVALID_FRAME"],
          requestId,
        }),
      () =>
        this.frame("deep-nesting", `{"type":"GET_CHAT_HISTORY","requestId":${rid},"payload":{"chatId":${obj(oDepth)}}}`, {
          kind: "error",
          codes: ["INVALID_FRAME"],
          requestId,
        }),
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
      () =>
        this.frame("proto-keys", `{"type":"GET_CHATS","requestId":${rid},"${key}":${polluter('{"limit":"x"}')}}`, {
          kind: "ok",
          replies: ["CHAT_LIST"],
          requestId,
        }),
      () =>
        this.frame(
          "proto-keys",
          `{"type":"GET_CHATS","requestId":${rid},"payload":{"limit":1,"${key}":${polluter('{"limit":"x","type":"X"}')}}}`,
          { kind: "ok", replies: ["CHAT_LIST"], requestId },
        ),
      () =>
        this.frame("proto-keys", `{"type":"DELETE_CHAT","requestId":${rid},"${key}":${polluter(`{"chatId":${uuid}}`)}}`, {
          kind: "error",
          codes: ["INVALID_FRAME"],
          requestId,
        }),
      () =>
        this.frame("proto-keys", `{"type":"DELETE_CHAT","requestId":${rid},"payload":{"${key}":${polluter(`{"chatId":${uuid}}`)}}}`, {
          kind: "error",
          codes: ["INVALID_FRAME"],
          requestId,
        }),
      () =>
        this.frame("proto-keys", `{"type":"SEND_MESSAGE","requestId":${rid},"chatId":${uuid},"__proto__":{"content":"polluted"}}`, {
          kind: "error",
          codes: ["INVALID_FRAME"],
          requestId,
        }),
      () =>
        this.frame("proto-keys", `{"type":"GET_CHATS","requestId":${rid},"limit":1,"__proto__":null}`, {
          kind: "ok",
          replies: ["CHAT_LIST"],
          requestId,
        }),
      () =>
        this.frame("proto-keys", `{"__proto__":{"type":"GET_CHATS"},"requestId":${rid}}`, {
          kind: "error",
          codes: ["INVALID_FRAME"],
          requestId: null,
        }),
      () =>
        this.frame(
          "proto-keys",
          JSON.stringify({ type: r.pick(["__proto__", "constructor", "prototype", "toString", "__lookupGetter__"]), requestId }),
          { kind: "error", codes: ["UNKNOWN_TYPE"], requestId },
        ),
    ])();
  }

  notFound(): FuzzFrame {
    const r = this.rng;
    const requestId = this.rid();
    const chatId = r.chance(0.2) ? r.uuid().toUpperCase() : r.uuid();
    const type = r.pick(["GET_CHAT_HISTORY", "DELETE_CHAT", "RENAME_CHAT", "SEND_MESSAGE", "STOP_GENERATION", "RESUME"] as const);
    if (type === "SEND_MESSAGE" && r.chance(0.3)) {
      // Too long is checked before the chat is looked up.
      const content = "m".repeat(
        r.int(this.limits.maxMessageChars + 1, Math.min(this.limits.maxMessageChars * 2, this.limits.maxFrameBytes - 200)),
      );
      return this.frame("message-too-long", JSON.stringify(this.envelope(type, { chatId, content }, requestId)), {
        kind: "error",
        codes: ["MESSAGE_TOO_LONG"],
        requestId,
      });
    }
    // The per-connection generation cap is checked before the chat is looked up.
    const codes =
      type === "SEND_MESSAGE"
        ? ["CHAT_NOT_FOUND", "TOO_MANY_GENERATIONS"]
        : type === "STOP_GENERATION"
          ? ["NO_GENERATION"]
          : ["CHAT_NOT_FOUND"];
    return this.frame("not-found", JSON.stringify(this.envelope(type, this.validArgs(type, chatId), requestId)), {
      kind: "error",
      codes,
      requestId,
    });
  }

  unicode(): FuzzFrame {
    const r = this.rng;
    const requestId = r.chance(0.5) ? this.rid() : `${this.rid()}-${r.unicode(r.int(1, 20), { lone: true })}`.slice(0, 200);
    return r.pick([
      () => {
        const name = r.unicode(r.int(1, 60), { lone: r.chance(0.3) });
        const tooLong = name.length > 200;
        return this.frame(
          "unicode",
          JSON.stringify(this.envelope("CREATE_CHAT", { name }, requestId)),
          tooLong
            ? { kind: "error", codes: ["INVALID_FRAME"], requestId }
            : { kind: "ok", replies: ["NEW_CHAT"], requestId, own: { op: "create", name: name.trim() ? name : undefined } },
        );
      },
      () => {
        const content = r.unicode(r.int(1, 200), { lone: r.chance(0.3) });
        // Content is kept exactly; only a blank one is refused, and its length is in code points.
        const codes =
          content.trim().length === 0
            ? ["INVALID_FRAME"]
            : [...content].length > this.limits.maxMessageChars
              ? ["MESSAGE_TOO_LONG"]
              : ["CHAT_NOT_FOUND", "TOO_MANY_GENERATIONS"];
        return this.frame("unicode", JSON.stringify(this.envelope("SEND_MESSAGE", { chatId: r.uuid(), content }, requestId)), {
          kind: "error",
          codes,
          requestId,
        });
      },
      () =>
        this.frame("unicode", JSON.stringify({ type: "GET_CHATS", requestId, limit: 1, note: r.unicode(r.int(1, 100), { lone: true }) }), {
          kind: "ok",
          replies: ["CHAT_LIST"],
          requestId,
        }),
    ])();
  }

  oddRequestId(): FuzzFrame {
    const r = this.rng;
    const requestId = r.pick<unknown>([
      5,
      0,
      -1,
      1.5,
      true,
      false,
      null,
      {},
      [],
      ["r"],
      { id: "r" },
      "",
      "r".repeat(201),
      "r".repeat(1000),
    ]);
    if (r.chance(0.2)) {
      const exact = `${this.rid()}-`.padEnd(200, "r");
      return this.frame("odd-request-id", JSON.stringify({ type: "GET_CHATS", limit: 1, requestId: exact }), {
        kind: "ok",
        replies: ["CHAT_LIST"],
        requestId: exact,
      });
    }
    return this.frame("odd-request-id", JSON.stringify({ type: "GET_CHATS", limit: 1, requestId }), {
      kind: "ok",
      replies: ["CHAT_LIST"],
      requestId: null,
    });
  }

  valid(): FuzzFrame {
    const r = this.rng;
    const requestId = this.rid();
    if (r.chance(0.12)) {
      const args = this.validArgs("CREATE_CHAT");
      // Names are stored exactly as sent; a blank one means the default.
      const name = typeof args.name === "string" && args.name.trim() ? args.name : undefined;
      return this.frame("valid", JSON.stringify(this.envelope("CREATE_CHAT", args, requestId)), {
        kind: "ok",
        replies: ["NEW_CHAT"],
        requestId,
        own: { op: "create", name },
      });
    }
    if (r.chance(0.1)) {
      const type = r.pick(["GET_SETTINGS", "UPDATE_SETTINGS"] as const);
      return this.frame("valid", JSON.stringify(this.envelope(type, this.validArgs(type), requestId)), {
        kind: "ok",
        replies: ["SETTINGS"],
        requestId,
      });
    }
    const text = JSON.stringify(this.envelope("GET_CHATS", this.validArgs("GET_CHATS"), requestId));
    return this.frame("valid", r.chance(0.15) ? new TextEncoder().encode(text) : text, { kind: "ok", replies: ["CHAT_LIST"], requestId });
  }

  /** Frames that really act on a chat this client created. The caller drains first, so `ownChats` is exact. */
  validOwn(ownChats: readonly Chat[]): FuzzFrame {
    const r = this.rng;
    const requestId = this.rid();
    if (ownChats.length === 0 || r.chance(0.05)) {
      return this.frame("valid-own", JSON.stringify(this.envelope("CREATE_CHAT", {}, requestId)), {
        kind: "ok",
        replies: ["NEW_CHAT"],
        requestId,
        own: { op: "create", name: undefined },
      });
    }
    const chat = r.pick(ownChats);
    const op = r.weighted([
      [3, "history"],
      [2, "rename"],
      [6, "send"],
      [1, "resend"],
      [1, "stop"],
      [0.4, "delete"],
    ] as const);
    switch (op) {
      case "history":
        return this.frame("valid-own", JSON.stringify(this.envelope("GET_CHAT_HISTORY", { chatId: chat.id }, requestId)), {
          kind: "ok",
          replies: ["CHAT_HISTORY"],
          requestId,
          own: { op: "history", chatId: chat.id },
        });
      case "rename": {
        const name = r.chance(0.5) ? r.ascii(r.int(1, 40)) : `  ${r.unicode(r.int(1, 30))} `;
        if (name.trim().length === 0 || name.length > 200) return this.validOwn(ownChats);
        return this.frame("valid-own", JSON.stringify(this.envelope("RENAME_CHAT", { chatId: chat.id, name }, requestId)), {
          kind: "ok",
          replies: ["CHAT_UPDATED"],
          requestId,
          own: { op: "rename", chatId: chat.id, name },
        });
      }
      case "send":
      case "resend": {
        const messageId = op === "resend" ? `m-${this.tag}-${r.int(1, 3)}` : r.chance(0.5) ? `m-${this.tag}-${this.n}` : undefined;
        const content = r.chance(0.1) ? "c".repeat(this.limits.maxMessageChars) : ` ${r.unicode(r.int(1, 40))} q${this.n} `;
        const args = messageId
          ? r.chance(0.5)
            ? { chatId: chat.id, message: { content, id: messageId } }
            : { chatId: chat.id, content, messageId }
          : { chatId: chat.id, content };
        return this.frame("valid-own", JSON.stringify(this.envelope("SEND_MESSAGE", args, requestId)), {
          kind: "ok",
          replies: ["MESSAGE_ACCEPTED"],
          orCodes: GEN_REFUSALS,
          requestId,
          own: { op: "send", chatId: chat.id, content, messageId },
        });
      }
      case "stop":
        // Whether a reply is still streaming there is a matter of timing: either answer is right.
        return this.frame("valid-own", JSON.stringify(this.envelope("STOP_GENERATION", { chatId: chat.id }, requestId)), {
          kind: "ok",
          replies: ["GENERATION_STOPPED"],
          orCodes: ["NO_GENERATION"],
          requestId,
          own: { op: "stop", chatId: chat.id },
        });
      case "delete":
        return this.frame("valid-own", JSON.stringify(this.envelope("DELETE_CHAT", { chatId: chat.id }, requestId)), {
          kind: "ok",
          replies: ["CHAT_DELETED"],
          requestId,
          own: { op: "delete", chatId: chat.id },
        });
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
