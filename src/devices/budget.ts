// How many C2D messages may go now: the hub's send budget (IOT_HUB_C2D_PER_MINUTE, one bucket shared
// by every replica when Redis is on; server.ts passes it in) and a bound per device on messages that
// may still sit in its queue at the hub (IoT Hub refuses the 51st with 403004).

export type Admission = { ok: true } | { ok: false; retryAfterMs: number };
/** Takes one send from the hub-wide budget. */
export type HubBudget = () => Promise<Admission>;

/** This process's own bucket: `perMinute` sends a minute, as a burst of up to `perMinute`. */
export function localHubBudget(perMinute: number): HubBudget {
  const perMs = perMinute / 60_000;
  let tokens = perMinute;
  let at = Date.now();
  return async () => {
    const now = Date.now();
    tokens = Math.min(perMinute, tokens + (now - at) * perMs);
    at = now;
    if (tokens >= 1) {
      tokens -= 1;
      return { ok: true };
    }
    return { ok: false, retryAfterMs: Math.ceil((1 - tokens) / perMs) };
  };
}

/** A device's queue at the hub holds 50; we leave room for messages sent by anything else. */
export const DEVICE_OUTSTANDING_MAX = 20;

export type C2DAllowance = ReturnType<typeof c2dAllowance>;

/**
 * `windowMs` is how long a sent message may wait at the hub (its expiry): after that, or once the
 * device asks something again, it no longer counts against its device. Nothing here is ever a reason to drop an answer: a part that cannot go
 * now is merged into the next, and the last waits (`take`) or goes regardless when its time is up.
 */
export function c2dAllowance(hub: HubBudget, o: { windowMs: number; perDevice?: number; onShort?: () => void }) {
  const perDevice = o.perDevice ?? DEVICE_OUTSTANDING_MAX;
  const sent = new Map<string, number[]>();
  const pending = (deviceId: string) => {
    const now = Date.now();
    const list = (sent.get(deviceId) ?? []).filter((t) => t > now - o.windowMs);
    if (list.length === 0) sent.delete(deviceId);
    else sent.set(deviceId, list);
    return list.length;
  };
  const note = (deviceId: string) => {
    if (sent.size > 10_000) for (const id of sent.keys()) pending(id);
    sent.set(deviceId, [...(sent.get(deviceId) ?? []), Date.now()]);
  };
  return {
    /** The device asked something: it is connected and reads its messages, so none of ours still waits at the hub. */
    asked(deviceId: string) {
      sent.delete(deviceId);
    },
    /** Room for one message now, or false (and nothing taken). */
    async tryTake(deviceId: string): Promise<boolean> {
      if (pending(deviceId) >= perDevice) return (o.onShort?.(), false);
      const a = await hub();
      if (!a.ok) return (o.onShort?.(), false);
      note(deviceId);
      return true;
    },
    /**
     * Waits for room in the hub's budget until `until` (epoch ms); true when taken, false when the time
     * ran out. A last part or a one-message reply does not wait for its device's bound: a full queue
     * at the hub answers 403004, which the sender retries.
     */
    async take(deviceId: string, until: number): Promise<boolean> {
      for (;;) {
        const a = await hub();
        if (a.ok) {
          note(deviceId);
          return true;
        }
        o.onShort?.();
        const left = until - Date.now();
        if (left <= 0) {
          note(deviceId);
          return false;
        }
        await Bun.sleep(Math.max(10, Math.min(a.retryAfterMs, left, 1000)));
      }
    },
  };
}
