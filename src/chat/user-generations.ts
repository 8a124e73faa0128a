import { ChatError } from "./errors";
import { heldUntilReply } from "./held-until-reply";

// MAX_GENERATIONS_PER_USER: the replies one user may have at once (answering or waiting in a
// chat's lane), so one person with many sockets cannot take every slot of MAX_GENERATIONS. Counted
// in this process (`localUserGenerations`) or across replicas (src/redis/user-generations.ts).

/** A slot for one reply of the user's, or TOO_MANY_GENERATIONS; call the release once, when the reply settles. */
export type UserGenerations = (userId: string) => Promise<() => void>;

export const tooManyForUser = (max: number) =>
  new ChatError("TOO_MANY_GENERATIONS", `you already have ${max} replies being generated; wait for one to finish`, {
    retryAfterMs: 1000,
    limit: max,
  });

/** This process's count per user (one replica, or the fallback while Redis is down). */
export function localUserGenerations(max: number): UserGenerations {
  const running = new Map<string, number>();
  return async (userId) => {
    const n = running.get(userId) ?? 0;
    if (n >= max) throw tooManyForUser(max);
    running.set(userId, n + 1);
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const left = (running.get(userId) ?? 1) - 1;
      if (left <= 0) running.delete(userId);
      else running.set(userId, left);
    };
  };
}

/**
 * A send (or regeneration) that holds one of the user's slots until its reply settles; none taken
 * for a duplicate that needs no reply. Refused before anything is stored.
 */
export function perUser<A, C extends unknown[], R extends { reply?: Promise<unknown> }>(
  slots: UserGenerations,
  ownerOf: (a: A, ...rest: C) => string,
  send: (a: A, ...rest: C) => Promise<R>,
) {
  return heldUntilReply<A, C, R>((a, ...rest) => slots(ownerOf(a, ...rest)), send);
}
