// Sends that take something before anything is stored (a budget estimate, a per-user slot) and hold
// it for as long as the reply they start runs.

/**
 * A send that holds what `take` acquires until its reply settles: released at once when the send
 * fails or needs no reply (a duplicate). A refusal from `take` refuses the send before it starts.
 */
export function heldUntilReply<A, C extends unknown[], R extends { reply?: Promise<unknown> }>(
  take: (a: A, ...rest: C) => Promise<() => void>,
  send: (a: A, ...rest: C) => Promise<R>,
) {
  return async (a: A, ...rest: C): Promise<R> => {
    const release = await take(a, ...rest);
    try {
      const r = await send(a, ...rest);
      if (r.reply) void r.reply.finally(release);
      else release();
      return r;
    } catch (e) {
      release();
      throw e;
    }
  };
}
