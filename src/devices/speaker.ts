import type { ReplyResult } from "../chat/pipeline";
import type { Logger } from "../log";
import type { C2DAllowance } from "./budget";
import type { C2DReply } from "./c2d";
import { codePoints, finalPieces, fitCut, jsonBytes, nextCut, RESPONSE_MAX_BYTES, sentenceEnds } from "./parts";
import { speakable } from "./speech";
import type { ReplyTap } from "./tap";

export const SORRY = "Sorry, I couldn't get an answer just now. Please try again.";
/** Said after what was ready when a one-message device's deadline came. */
export const DEADLINE_NOTE = "The rest of my answer is in the app.";
/** Said when nothing was ready by then. */
export const STILL_WORKING = "I'm still working on that. You'll find the answer in the app.";
/** Said when a reply is longer than one C2D message can carry. */
export const TOO_LONG_NOTE = "That's as much as I can say here; the full answer is in the app.";
/** Said after the parts already spoken when the reply failed midway. */
export const CUT_SHORT_NOTE = "Sorry, I couldn't finish that answer.";

/** One reply on its way to one device. */
export type Speech = {
  deviceId: string;
  /** The device message answered: the C2D correlation id. */
  correlationId: string;
  conversationId: string;
  /** The reply's id (its stored message id), once known. */
  replyId: string;
  /** The reply's live text, when it is generated now (not for a reply stored before). */
  live?: { tap: ReplyTap; traceId: string };
  result: Promise<ReplyResult | undefined>;
  /** Epoch ms: when the device sent the question (IoT Hub's enqueued time). */
  askedAt: number;
};

export type SpeakerDeps = {
  send(deviceId: string, reply: C2DReply, o: { correlationId: string; expiresInMs: number; deadline?: number }): Promise<void>;
  allowance: C2DAllowance;
  log: Logger;
  /** How long a C2D message may wait at the hub (the device's patience for an answer). */
  expiresInMs: number;
  /** DEVICE_REPLY_DEADLINE_S, for one-message devices. */
  deadlineMs: number;
};

export type Spoken = { told: boolean; answered: boolean; messages: number; firstAt?: number; lastAt?: number };

const answeredText = (r: ReplyResult | undefined) => (r?.message && !r.error && !r.status ? r.message.content : undefined);
const failure = (r: ReplyResult | undefined) =>
  r?.error?.code ?? (r?.status === "interrupted" || r?.status === "streaming" ? "INTERRUPTED" : "MODEL_ERROR");
const now = () => Date.now();

/**
 * A device that asked for parts: the first when the reply's first sentence is complete, later ones
 * growing (src/devices/parts.ts), the rest when the reply is stored. Joined, the parts are the
 * stored reply's spoken text. A part that cannot go now (budget, the device's queue) is merged into
 * the next; the last part waits for room and is never dropped.
 */
export async function speakInParts(deps: SpeakerDeps, s: Speech): Promise<Spoken> {
  const out: Spoken = { told: false, answered: false, messages: 0 };
  let sent = 0; // UTF-16 index into the spoken text
  let offset = 0; // code points before the next part
  let index = 0;
  let heard = "";
  let done = false;
  let result: ReplyResult | undefined;
  const finished = s.result.then((r) => {
    done = true;
    result = r;
  });
  const expiry = s.askedAt + deps.expiresInMs;

  const part = async (response: string, last: boolean, error?: string) => {
    const reply: C2DReply = {
      response,
      conversation_id: s.conversationId,
      message_id: s.replyId,
      timestamp: new Date().toISOString(),
      part: index,
      last,
      offset,
      ...(error ? { error } : {}),
    };
    await deps.send(s.deviceId, reply, { correlationId: s.correlationId, expiresInMs: deps.expiresInMs, deadline: expiry });
    out.firstAt ??= now();
    out.lastAt = now();
    out.messages++;
    out.told = true;
    index++;
    offset += codePoints(response);
    heard += response;
  };

  if (s.live) {
    let firstWordsAt: number | undefined;
    while (!done) {
      // Per delta until the first part is out (it is what the person waits for), then a few times a second.
      await Promise.race(index === 0 ? [s.live.tap.changed(), finished, Bun.sleep(250)] : [finished, Bun.sleep(250)]);
      if (done) break;
      const raw = s.live.tap.text(s.live.traceId);
      if (!raw) continue;
      firstWordsAt ??= now();
      const spoken = speakable(raw, false);
      const cut = nextCut(spoken, sent, index, now() - firstWordsAt);
      if (cut === undefined || cut <= sent) continue;
      if (!(await deps.allowance.tryTake(s.deviceId))) continue;
      const piece = spoken.slice(sent, cut);
      try {
        await part(piece, false);
        sent = cut;
      } catch (e) {
        // Not lost: the piece goes with the next part.
        deps.log.warn("could not send a reply part; it goes with the next", { error: e });
      }
    }
  }
  await finished;

  const text = answeredText(result);
  out.answered = text !== undefined;
  if (text !== undefined) {
    const spoken = speakable(text, true);
    if (!spoken.startsWith(heard)) {
      deps.log.warn("the stored reply's spoken text does not continue the parts sent; sending the rest from there", {
        sentChars: heard.length,
      });
    }
    const pieces = finalPieces(spoken, Math.min(sent, spoken.length));
    for (const [i, piece] of pieces.entries()) {
      await deps.allowance.take(s.deviceId, expiry);
      await part(piece, i === pieces.length - 1);
    }
  } else {
    await deps.allowance.take(s.deviceId, expiry);
    await part(index === 0 ? SORRY : ` ${CUT_SHORT_NOTE}`, true, failure(result));
  }
  return out;
}

/**
 * The original client's way: one message with the whole reply, in today's shape. Cut to fit IoT
 * Hub's 64 KB with a spoken ending; past `deadlineMs` from the question, what is ready now and a
 * note that the rest is in the app (the reply goes on and is stored).
 */
export async function speakOnce(deps: SpeakerDeps, s: Speech): Promise<Spoken> {
  const out: Spoken = { told: false, answered: false, messages: 0 };
  const expiry = s.askedAt + deps.expiresInMs;
  const timeout = Symbol("deadline");
  const wait = Math.max(0, s.askedAt + deps.deadlineMs - now());
  let timer: ReturnType<typeof setTimeout> | undefined;
  const first = await Promise.race([
    s.result,
    new Promise<typeof timeout>((resolve) => {
      timer = setTimeout(() => resolve(timeout), wait);
    }),
  ]);
  clearTimeout(timer);

  let response: string;
  let error: string | undefined;
  if (first === timeout) {
    const spoken = s.live ? speakable(s.live.tap.text(s.live.traceId), false) : "";
    const ready = spoken.slice(0, sentenceEnds(spoken).at(-1) ?? 0);
    response = ready ? fitWithNote(ready, DEADLINE_NOTE) : STILL_WORKING;
  } else {
    const text = answeredText(first);
    out.answered = text !== undefined;
    response = text !== undefined ? fitWithNote(speakable(text, true), TOO_LONG_NOTE) : SORRY;
    if (text === undefined) error = failure(first);
  }
  await deps.allowance.take(s.deviceId, expiry);
  await deps.send(
    s.deviceId,
    {
      response,
      conversation_id: s.conversationId,
      message_id: s.replyId,
      timestamp: new Date().toISOString(),
      ...(error ? { error } : {}),
    },
    { correlationId: s.correlationId, expiresInMs: deps.expiresInMs, deadline: expiry },
  );
  out.told = true;
  out.messages = 1;
  out.firstAt = out.lastAt = now();
  if (first === timeout) out.answered = answeredText(await s.result) !== undefined;
  return out;
}

/** `text` whole when it fits one message; else as much as fits at a sentence end, then `note`. */
export function fitWithNote(text: string, note: string): string {
  if (note === DEADLINE_NOTE) {
    const joined = `${text.trimEnd()} ${note}`;
    if (jsonBytes(joined) <= RESPONSE_MAX_BYTES) return joined;
  } else if (jsonBytes(text) <= RESPONSE_MAX_BYTES) {
    return text;
  }
  const cut = fitCut(text, 0, RESPONSE_MAX_BYTES - jsonBytes(` ${note}`)) ?? text.length;
  return `${text.slice(0, cut).trimEnd()} ${note}`;
}
