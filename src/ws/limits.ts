import type { Config } from "../config";
import { FrameError } from "./errors";

// Every per-socket limit in one place: frame size, frame rate, frames waiting to be handled,
// message length and replies streaming to one socket; and the one per-user limit, sends per
// minute across all of a user's sockets (and replicas, with Redis). Limits that protect the whole
// server live in src/chat.

export type SocketLimits = {
  maxFrameBytes: number;
  maxMessageChars: number;
  maxGenerationsPerConnection: number;
  framesPerSecond: number;
  messagesPerMinute: number;
  sendQueueLimitBytes: number;
  idleTimeoutS: number;
  /** Frames received and not yet handled (the one being handled included), and their bytes. */
  inboundMaxFrames: number;
  inboundMaxBytes: number;
};

/** The socket limits from the environment. */
export function socketLimitsOf(c: Config): SocketLimits {
  return {
    maxFrameBytes: c.MAX_FRAME_BYTES,
    maxMessageChars: c.MAX_MESSAGE_CHARS,
    maxGenerationsPerConnection: c.MAX_GENERATIONS_PER_CONNECTION,
    framesPerSecond: c.RATE_LIMIT_FRAMES_PER_SECOND,
    messagesPerMinute: c.RATE_LIMIT_MESSAGES_PER_MINUTE,
    sendQueueLimitBytes: c.SEND_BUFFER_LIMIT_BYTES,
    idleTimeoutS: c.WS_IDLE_TIMEOUT_S,
    inboundMaxFrames: c.INBOUND_QUEUE_MAX_FRAMES,
    inboundMaxBytes: c.INBOUND_QUEUE_MAX_BYTES,
  };
}

/** Page size of GET_CHATS when the client names none. */
export const CHAT_PAGE_SIZE = 1000;

/** A token bucket: `burst` tokens, refilled at `perSecond`. Pure, so it is tested without a clock. */
export function tokenBucket({ perSecond, burst }: { perSecond: number; burst: number }) {
  let tokens = burst;
  let last = -1;
  return function take(nowMs: number): { ok: true } | { ok: false; retryAfterMs: number } {
    if (last >= 0) tokens = Math.min(burst, tokens + ((nowMs - last) / 1000) * perSecond);
    last = nowMs;
    if (tokens >= 1) {
      tokens -= 1;
      return { ok: true };
    }
    return { ok: false, retryAfterMs: Math.ceil(((1 - tokens) / perSecond) * 1000) };
  };
}
export type TokenBucket = ReturnType<typeof tokenBucket>;

/** Whether a user may send one more message now: one bucket per user, wherever they are connected. */
export type UserSends = (userId: string) => Promise<{ ok: true } | { ok: false; retryAfterMs: number }>;

/** Users idle this long have a full bucket anyway: their entry can go. */
const IDLE_USER_MS = 120_000;

/** Each user's send bucket, in this process (one replica, or the fallback while Redis is down). */
export function localUserSends(perMinute: number): UserSends {
  const buckets = new Map<string, { take: TokenBucket; used: number }>();
  return async (userId) => {
    const now = Date.now();
    if (buckets.size > 10_000) for (const [k, b] of buckets) if (now - b.used > IDLE_USER_MS) buckets.delete(k);
    let b = buckets.get(userId);
    if (!b) buckets.set(userId, (b = { take: tokenBucket({ perSecond: perMinute / 60, burst: perMinute }), used: now }));
    b.used = now;
    return b.take(now);
  };
}

/** What one socket has used of its limits. */
export type Budget = {
  frames: TokenBucket;
  generations: number;
  /** Frames waiting in the socket's chain (src/ws/inbound.ts), counted from arrival until handled. */
  pending: { frames: number; bytes: number };
  /** Frames dropped since the chain last ran empty: the first one of a run is logged, not every one. */
  dropped: number;
};

export const newBudget = (l: SocketLimits): Budget => ({
  frames: tokenBucket({ perSecond: l.framesPerSecond, burst: l.framesPerSecond * 2 }),
  generations: 0,
  pending: { frames: 0, bytes: 0 },
  dropped: 0,
});

/** What a client is told to wait after a frame was dropped because its queue was full. */
export const INBOUND_RETRY_AFTER_MS = 1000;

/**
 * Checked when a frame arrives, before it is queued behind the frames still being handled (a slow
 * store makes them wait): past `inboundMaxFrames` frames or `inboundMaxBytes` bytes waiting, the
 * frame is refused, so what one socket holds in memory is bounded whatever it sends. The token
 * bucket (admitFrame) runs later, in order; this bound is about memory, not rate.
 */
export function admitInbound(l: SocketLimits, b: Budget, bytes: number): boolean {
  // An idle socket always gets its frame in (Bun's maxPayloadLength bounds its size).
  if (b.pending.frames === 0) return true;
  return b.pending.frames < l.inboundMaxFrames && b.pending.bytes + bytes <= l.inboundMaxBytes;
}

/** Size first, then rate: a frame that is refused for its size does not cost a token. */
export function admitFrame(l: SocketLimits, b: Budget, bytes: number): void {
  if (bytes > l.maxFrameBytes)
    throw new FrameError("FRAME_TOO_LARGE", `frames must be at most ${l.maxFrameBytes} bytes`, { limit: l.maxFrameBytes });
  const rate = b.frames(Date.now());
  if (!rate.ok) throw new FrameError("RATE_LIMITED", "too many frames; slow down", { retryAfterMs: rate.retryAfterMs });
}

/**
 * Checks a SEND_MESSAGE against the limits (length, replies streaming to this socket, the user's
 * sends per minute, in that order) and returns `track`, which counts a started reply until it settles.
 */
export async function admitSend(l: SocketLimits, b: Budget, content: string, sends: () => ReturnType<UserSends>) {
  if (charCount(content, l.maxMessageChars) > l.maxMessageChars) {
    throw new FrameError("MESSAGE_TOO_LONG", `content must be at most ${l.maxMessageChars} characters`, { limit: l.maxMessageChars });
  }
  if (b.generations >= l.maxGenerationsPerConnection) {
    throw new FrameError("TOO_MANY_GENERATIONS", `at most ${l.maxGenerationsPerConnection} replies may stream to one connection at once`, {
      retryAfterMs: 1000,
    });
  }
  const allowed = await sends();
  if (!allowed.ok) throw new FrameError("RATE_LIMITED", "too many messages; slow down", { retryAfterMs: allowed.retryAfterMs });
  return function track(reply: Promise<unknown>) {
    b.generations += 1;
    void reply.finally(() => (b.generations -= 1));
  };
}

/**
 * Characters as people count them (Unicode code points: an emoji is one, not two UTF-16 units),
 * counted only as far as needed to tell whether `content` is over `max`.
 */
export function charCount(content: string, max: number): number {
  if (content.length <= max) return content.length;
  let n = 0;
  for (let i = 0; i < content.length; i++, n++) {
    const c = content.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < content.length) {
      const d = content.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) i++;
    }
    if (n > max) return n;
  }
  return n;
}
