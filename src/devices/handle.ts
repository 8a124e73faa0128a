import type { ReceivedEventData } from "@azure/event-hubs";
import type { ChatService } from "../chat/service";
import type { Logger } from "../log";
import type { Metrics } from "../metrics";
import { ChatError } from "../chat/errors";
import { SORRY, speakInParts, speakOnce, type SpeakerDeps, type Speech, type Spoken } from "./speaker";
import { connectionState } from "./presence";
import { tapReplies } from "./tap";
import { parseDeviceEvent, type DeviceMessage } from "./telemetry";

export type DeviceDeps = {
  chat: ChatService;
  /** How replies reach devices: C2D sends within the budgets, one message or in parts. */
  speaker: Omit<SpeakerDeps, "log">;
  log: Logger;
  metrics?: Metrics;
  replyMaxAgeMs: number;
  processedTtlS: number;
  /** How long a claim on a device message holds without renewal. */
  claimLeaseMs: number;
  /** Messages this process is handling now (by claimKey): a redelivery meanwhile (a partition handed back and forth) waits for it. */
  handling: Map<string, Promise<DeviceOutcome>>;
  /** DEVICE_ID_FROM_BODY: telemetry without IoT Hub's device id property may name its device in the body. */
  deviceIdFromBody?: boolean;
};

/**
 * The claim on a device message is the device's: message ids are chosen by devices (and the
 * `event-<seq>-<offset>` fallback repeats across partitions), so two devices may send the same one.
 * The device id is URI-encoded, so it never contains the space that ends it.
 */
export const claimKey = (m: Pick<DeviceMessage, "deviceId" | "messageId">) => `${encodeURIComponent(m.deviceId)} ${m.messageId}`;

export type DeviceOutcome = "answered" | "duplicate" | "stale" | "unassigned" | "refused" | "c2d_failed" | "model_failed";

export { SORRY };

/** One event from the hub: parsed, handled, counted and logged once. Never throws. */
export async function handleDeviceEvent(deps: DeviceDeps, event: ReceivedEventData): Promise<void> {
  const state = connectionState(event);
  if (state) return notePresence(deps, state);
  const parsed = parseDeviceEvent(event, { deviceIdFromBody: deps.deviceIdFromBody });
  if (!parsed.ok) {
    deps.metrics?.deviceMessages.inc({ outcome: "invalid" });
    deps.log.warn("skipped device event that is not valid telemetry", {
      reason: parsed.reason,
      sequenceNumber: event.sequenceNumber,
      deviceId: event.systemProperties?.["iothub-connection-device-id"],
    });
    return;
  }
  const m = parsed.value;
  const started = performance.now();
  const outcome = await handleDeviceMessage(deps, m).catch((e) => {
    deps.log.error("device message failed", { deviceId: m.deviceId, messageId: m.messageId, error: e });
    return "failed" as const;
  });
  deps.metrics?.deviceMessages.inc({ outcome });
  deps.log.info("device message handled", {
    deviceId: m.deviceId,
    messageId: m.messageId,
    outcome,
    durationMs: Math.round(performance.now() - started),
  });
}

/** IoT Hub says a device (dis)connected: its owner's browsers are told. */
async function notePresence(deps: DeviceDeps, s: { deviceId: string; online: boolean; at: string }) {
  try {
    const owner = await deps.chat.deviceOwner(s.deviceId);
    if (owner !== deps.chat.unassignedOwner) deps.chat.devices.updated(owner, { id: s.deviceId, online: s.online, onlineAt: s.at });
  } catch (e) {
    deps.log.warn("could not note a device's connection state", { deviceId: s.deviceId, error: e });
  }
}

/**
 * One device question, end to end, at least once with one effect: claim its id (a lease, renewed
 * while we work), store it in the device's chat, stream the model's reply to watching browsers,
 * store the reply, send it to the device, and mark the id done. If this process dies midway, the
 * event is delivered again (it was not checkpointed); once the lease lapses, whoever reads the
 * partition takes the claim over and finishes the job: a reply already stored is sent, not made again.
 */
export async function handleDeviceMessage(deps: DeviceDeps, m: DeviceMessage): Promise<DeviceOutcome> {
  const key = claimKey(m);
  const running = deps.handling.get(key);
  if (running) {
    await running.catch(() => {});
    deps.log.info("device message already handled; skipped", { deviceId: m.deviceId, messageId: m.messageId });
    return "duplicate";
  }
  const p = handleOnce(deps, m, key);
  deps.handling.set(key, p);
  try {
    return await p;
  } finally {
    deps.handling.delete(key);
  }
}

async function handleOnce(deps: DeviceDeps, m: DeviceMessage, key: string): Promise<DeviceOutcome> {
  const { chat } = deps;
  const log = deps.log.child({ deviceId: m.deviceId, messageId: m.messageId });
  const claim = await takeClaim(deps, key);
  if (claim !== "claimed") {
    log.info(claim === "done" ? "device message already handled; skipped" : "device message is being handled elsewhere; skipped");
    return "duplicate";
  }
  const renew = setInterval(() => {
    chat.claims.renew(key, deps.claimLeaseMs).then(
      (ok) => ok || log.warn("lost the claim on a device message while answering it"),
      (e) => log.warn("could not renew a device message claim", { error: e }),
    );
  }, deps.claimLeaseMs / 3);
  try {
    const outcome = await answerDevice(deps, m, log);
    await chat.claims.complete(key, deps.processedTtlS);
    return outcome;
  } finally {
    clearInterval(renew);
  }
}

/** Waits (up to about one and a half leases) while another owner holds the claim. */
async function takeClaim(deps: DeviceDeps, key: string) {
  const deadline = Date.now() + deps.claimLeaseMs * 1.5;
  for (;;) {
    const c = await deps.chat.claims.take(key, deps.claimLeaseMs);
    if (c !== "held" || Date.now() > deadline) return c;
    await Bun.sleep(Math.min(1000, Math.max(50, deps.claimLeaseMs / 10)));
  }
}

async function answerDevice(deps: DeviceDeps, m: DeviceMessage, log: Logger): Promise<DeviceOutcome> {
  const { chat } = deps;
  // The device's user owns its chat, and only their browsers are shown it.
  const owner = await chat.deviceOwner(m.deviceId);
  const room = await chat.deviceChat(owner, m.deviceId);
  const keepOnly = { owner, chatId: room.id, content: m.text, messageId: m.messageId, deviceId: m.deviceId };

  if (owner === chat.unassignedOwner) {
    // DEVICE_DEFAULT_OWNER=none: nobody answers for this device. Kept (nobody sees it) until it is assigned.
    await chat.storeQuestion(keepOnly);
    log.info("device message from an unassigned device; stored, not answered");
    return "unassigned";
  }
  if (Date.now() - m.sentAtMs > deps.replyMaxAgeMs) {
    // The device stopped waiting long ago: keep the question, skip the model and the reply.
    await chat.storeQuestion(keepOnly);
    log.info("device message too old to answer; stored only", { ageMs: Date.now() - m.sentAtMs });
    return "stale";
  }

  deps.speaker.allowance.asked(m.deviceId);
  // Listening before asking: the reply may start streaming before send returns.
  const tap = tapReplies(chat.bus, room.id);
  try {
    // A browser's reply may be running in the device's chat: the question waits its turn.
    let sent: Awaited<ReturnType<typeof chat.send>>;
    try {
      sent = await chat.send({
        owner,
        chatId: room.id,
        content: m.text,
        messageId: m.messageId,
        deviceId: m.deviceId,
        context: m.conversation,
        retryCutShort: true,
      });
    } catch (e) {
      // Refused (too long for the model's context, the chat's queue full, the service at its limit):
      // the device still hears back, with the reason, instead of waiting in silence.
      if (!(e instanceof ChatError) || e.code === "STORE_UNAVAILABLE") throw e;
      log.warn("device message refused", { code: e.code });
      const said = await speak(deps, m, log, {
        deviceId: m.deviceId,
        correlationId: m.messageId,
        conversationId: room.id,
        replyId: m.messageId,
        result: Promise.resolve({ status: "incomplete", error: { code: e.code, message: e.message } }),
        askedAt: m.sentAtMs,
      });
      return said?.told ? "refused" : "c2d_failed";
    }
    // The question is stored: the owner's device list shows it.
    chat.devices.updated(owner, {
      id: m.deviceId,
      label: room.name,
      chatId: room.id,
      lastSeen: sent.message.created_at,
      lastQuestion: m.text.slice(0, 200),
    });
    const result = sent.reply ?? Promise.resolve(undefined);
    // A duplicate whose reply is being made elsewhere (its own delivery answers it) or cannot be found: nothing to say.
    if (sent.duplicate && !(await result)) return "duplicate";
    // A duplicate's reply may still be generated (by this process for an earlier delivery): its id is the question's.
    const replyId = sent.duplicate ? ((await result)?.message?.id ?? m.messageId) : sent.traceId;
    const said = await speak(deps, m, log, {
      deviceId: m.deviceId,
      correlationId: m.messageId,
      conversationId: room.id,
      replyId,
      ...(sent.duplicate ? {} : { live: { tap, traceId: sent.traceId } }),
      result,
      askedAt: m.sentAtMs,
    });
    if (!said) return "c2d_failed";
    return said.answered ? "answered" : "model_failed";
  } finally {
    tap.close();
  }
}

/** Sends a reply the way the device takes it; undefined when the hub could not be reached. */
async function speak(deps: DeviceDeps, m: DeviceMessage, log: Logger, s: Speech): Promise<Spoken | undefined> {
  const mode = m.parts ? "parts" : "one";
  try {
    const said = await (m.parts ? speakInParts : speakOnce)({ ...deps.speaker, log }, s);
    if (said.firstAt) deps.metrics?.deviceFirstC2D.observe({ mode }, (said.firstAt - m.sentAtMs) / 1000);
    if (said.lastAt) deps.metrics?.deviceLastC2D.observe({ mode }, (said.lastAt - m.sentAtMs) / 1000);
    deps.metrics?.deviceC2DPerReply.observe({ mode }, said.messages);
    return said;
  } catch (e) {
    log.error("could not send the reply to the device; it stays stored", { chatId: s.conversationId, error: e });
    return undefined;
  }
}
