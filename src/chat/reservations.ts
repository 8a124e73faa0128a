// Tokens admitted for a user's model calls and not yet recorded (src/chat/usage.ts): counted with
// the store's total when a budget is checked, so calls admitted at the same moment cannot each see
// the whole budget free. Kept in this process (`localReservations`), or across replicas
// (src/redis/reservations.ts) so that every replica sees every other's admissions.

/**
 * Reserves `n` tokens for the user when `used` (the store's total today) plus every reservation
 * held plus `n` stays within `budget`: a release function (call it once the call's record is
 * stored), or "full".
 */
export type Reservations = (userId: string, n: number, used: number, budget: number) => Promise<(() => void) | "full">;

/** This process's reservations (one replica, or the fallback while Redis is down). */
export function localReservations(): Reservations & { heldFor(userId: string): number } {
  const held = new Map<string, number>();
  const add = (userId: string, n: number) => {
    const left = (held.get(userId) ?? 0) + n;
    if (left <= 0) held.delete(userId);
    else held.set(userId, left);
  };
  const take: Reservations = async (userId, n, used, budget) => {
    if (used + (held.get(userId) ?? 0) + n > budget) return "full";
    add(userId, n);
    let done = false;
    return () => {
      if (!done) add(userId, -n);
      done = true;
    };
  };
  return Object.assign(take, { heldFor: (userId: string) => held.get(userId) ?? 0 });
}
