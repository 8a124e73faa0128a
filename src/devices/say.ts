import { ChatError } from "../chat/errors";
import type { DeviceSayer } from "../chat/devices";
import type { C2DAllowance } from "./budget";
import type { C2DSender } from "./c2d";
import { speakable } from "./speech";

/** How long IoT Hub keeps an announcement for a device that is not connected (its default TTL, 1 h). */
export const ANNOUNCEMENT_TTL_MS = 3_600_000;
/** How long an announcement waits for room in the C2D budget before it is refused. */
const BUDGET_WAIT_MS = 5_000;

/**
 * SEND_TO_DEVICE's C2D message: the one-message shape the original client reads (`response`, with
 * `announcement: true` for newer ones), counted in the hub's budget.
 */
export function sayer(o: { send: C2DSender["send"]; allowance: C2DAllowance }): DeviceSayer {
  return async (deviceId, a) => {
    if (!(await o.allowance.take(deviceId, Date.now() + BUDGET_WAIT_MS))) {
      throw new ChatError("DEVICE_UNREACHABLE", "IoT Hub's cloud-to-device budget is used up for now; try again in a minute", {
        retryAfterMs: 60_000,
      });
    }
    const expiresAt = new Date(Date.now() + ANNOUNCEMENT_TTL_MS).toISOString();
    try {
      await o.send(
        deviceId,
        {
          response: speakable(a.text),
          conversation_id: a.chatId,
          message_id: a.messageId,
          timestamp: new Date().toISOString(),
          announcement: true,
        },
        { correlationId: a.messageId, expiresInMs: ANNOUNCEMENT_TTL_MS, deadline: Date.now() + BUDGET_WAIT_MS },
      );
    } catch (e) {
      const name = (e as Error)?.name;
      throw new ChatError(
        "DEVICE_UNREACHABLE",
        name === "DeviceNotFoundError"
          ? "IoT Hub has no such device registered"
          : name === "DeviceMaximumQueueDepthExceededError"
            ? "the device's queue at IoT Hub is full (it has not connected to read its messages)"
            : "IoT Hub could not be reached; nothing was sent",
      );
    }
    return { expiresAt };
  };
}
