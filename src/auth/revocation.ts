import type { Logger } from "../log";
import type { Identity } from "./identity";

// Signing in is checked once, at the upgrade; a socket can stay open for days. This loop closes the
// sockets whose sign-in no longer holds: a revoked personal token within `everyMs` (plus one store
// lookup), an expired JWT within `everyMs` of its exp.

export const CLOSE_POLICY_VIOLATION = 1008;

export type WatchedSocket = { data: { user: Identity }; close(code: number, reason: string): void };

export function watchRevocations(o: {
  everyMs: number;
  sockets: () => Iterable<WatchedSocket>;
  stillValid: (identity: Identity) => Promise<boolean>;
  log: Logger;
}): () => void {
  let timer: ReturnType<typeof setTimeout> | undefined;
  let stopped = false;

  async function check() {
    const now = Date.now();
    const byToken = new Map<string, { identity: Identity; sockets: WatchedSocket[] }>();
    for (const ws of o.sockets()) {
      const user = ws.data.user;
      if (user.via === "jwt" && user.expiresAt !== undefined && user.expiresAt <= now) {
        ws.close(CLOSE_POLICY_VIOLATION, "token expired");
      } else if (user.via === "token" && user.tokenHash) {
        const entry = byToken.get(user.tokenHash) ?? byToken.set(user.tokenHash, { identity: user, sockets: [] }).get(user.tokenHash)!;
        entry.sockets.push(ws);
      }
    }
    // One lookup per distinct token, however many sockets share it; in parallel, so one slow lookup
    // does not hold up the rest.
    await Promise.all(
      [...byToken.values()].map(async ({ identity, sockets }) => {
        try {
          if (await o.stillValid(identity)) return;
        } catch (e) {
          // The store is down: a token we cannot check stays signed in until we can.
          return o.log.warn("could not recheck a personal token", { error: e, user: identity.userId });
        }
        o.log.info("token revoked: closing its sockets", { user: identity.userId, sockets: sockets.length });
        for (const ws of sockets) ws.close(CLOSE_POLICY_VIOLATION, "token revoked");
      }),
    );
  }

  // A chain of timeouts rather than an interval: a slow round never overlaps the next.
  const schedule = () => {
    if (!stopped)
      timer = setTimeout(
        () =>
          void check()
            .catch((e) => o.log.error("socket recheck failed", { error: e }))
            .finally(schedule),
        o.everyMs,
      );
  };
  schedule();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
