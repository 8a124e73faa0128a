import * as v from "valibot";
import type { Chat, Message } from "../records";
import { DEVICE_LIST_MAX, type Store } from "../store/store";
import { nowIso } from "./clock";
import { ChatError } from "./errors";
import type { Bus } from "./events";

/** A device as its owner sees it (GET_DEVICES, DEVICE_UPDATED). */
export const DeviceInfoSchema = v.object({
  id: v.string(),
  label: v.optional(v.pipe(v.string(), v.description("the name of its chat (the device id until renamed)"))),
  chatId: v.optional(v.string()),
  lastSeen: v.optional(v.pipe(v.string(), v.description("when it last asked something (ISO time)"))),
  lastQuestion: v.optional(v.pipe(v.string(), v.description("the start of its last question"))),
  online: v.optional(
    v.pipe(v.boolean(), v.description("only where IoT Hub reports it (device connection state events on the built-in endpoint)")),
  ),
  onlineAt: v.optional(v.pipe(v.string(), v.description("when IoT Hub reported that state"))),
});
export type DeviceInfo = v.InferOutput<typeof DeviceInfoSchema>;

/** What a device is told (SEND_TO_DEVICE), at most this many UTF-8 bytes as a JSON string: one C2D message, with room for its envelope. */
export const SAY_MAX_BYTES = 60_000;
export const sayBytes = (text: string) => Buffer.byteLength(JSON.stringify(text));

/** Sends an announcement to a device (src/devices, given by server.ts when IoT Hub is on). */
export type DeviceSayer = (deviceId: string, a: { text: string; chatId: string; messageId: string }) => Promise<{ expiresAt: string }>;

const QUESTION_PREVIEW = 200;

export const deviceNotFound = (deviceId: string) =>
  new ChatError("DEVICE_NOT_FOUND", `you have no device with id ${deviceId}`, { deviceId });

/**
 * A user's devices: listed, updated live, and spoken to. A device is the caller's when it is assigned
 * to them, or, unassigned, when they have its chat (it was answered under them). Anything else,
 * unknown or someone else's, is DEVICE_NOT_FOUND, after the same reads.
 */
export function deviceCommands(o: {
  store: Store;
  bus: Bus;
  deviceChat(owner: string, deviceId: string): Promise<Chat>;
  sayer(): DeviceSayer | undefined;
}) {
  const { store, bus } = o;
  // Presence as IoT Hub reported it, from the bus (any replica's consumer may read the event).
  const presence = new Map<string, { online: boolean; at: string }>();
  const unsubscribe = bus.subscribe((e) => {
    if (e.type !== "device_updated" || e.device.online === undefined) return;
    if (presence.size > 100_000) presence.clear();
    presence.set(e.device.id, { online: e.device.online, at: e.device.onlineAt ?? nowIso() });
  });

  async function owns(owner: string, deviceId: string): Promise<Chat | undefined | false> {
    const [assigned, chat] = await Promise.all([store.deviceOwner(deviceId), store.findDeviceChat(owner, deviceId)]);
    if (assigned !== undefined) return assigned === owner && chat;
    return chat ?? false;
  }

  async function infoOf(deviceId: string, chat?: Chat): Promise<DeviceInfo> {
    const seen = presence.get(deviceId);
    const info: DeviceInfo = { id: deviceId, ...(seen ? { online: seen.online, onlineAt: seen.at } : {}) };
    if (!chat) return info;
    const recent = await store.listMessages(chat.id, { limit: 20 });
    const question = recent.findLast((m) => m.role === "user" && m.device_id === deviceId);
    return {
      ...info,
      label: chat.name,
      chatId: chat.id,
      ...(question ? { lastSeen: question.created_at, lastQuestion: question.content.slice(0, QUESTION_PREVIEW) } : {}),
    };
  }

  return {
    /** GET_DEVICES: assigned to the owner, or with a chat of theirs; the most recently active first. */
    async list(owner: string): Promise<DeviceInfo[]> {
      const [chats, assigned] = await Promise.all([store.listDeviceChats(owner), store.assignedDevices(owner)]);
      const byDevice = new Map<string, Chat>();
      for (const c of chats) if (c.device_id && !byDevice.has(c.device_id)) byDevice.set(c.device_id, c);
      const ids = [...new Set([...byDevice.keys(), ...assigned])].slice(0, DEVICE_LIST_MAX);
      // A chat kept from before the device was assigned to someone else is history, not a device of theirs.
      const owners = await Promise.all(ids.map((id) => (assigned.includes(id) ? owner : store.deviceOwner(id))));
      const mine = ids.filter((id, i) => owners[i] === undefined || owners[i] === owner);
      return Promise.all(mine.map((id) => infoOf(id, byDevice.get(id))));
    },

    /** Tells the owner's browsers what changed about a device (fields absent: unchanged). */
    updated(owner: string, device: DeviceInfo) {
      bus.publish({ type: "device_updated", owner, device });
    },

    /**
     * SEND_TO_DEVICE: one C2D message the device speaks, counted in the hub's budget, then stored in the
     * device's chat as an announcement (an assistant message answering no question).
     */
    async say(owner: string, deviceId: string, text: string, origin?: string) {
      const mine = await owns(owner, deviceId);
      if (mine === false) throw deviceNotFound(deviceId);
      const say = o.sayer();
      if (!say) throw new ChatError("DEVICES_DISABLED", "voice devices are not enabled on this server (IOT_HUB_ENABLE)");
      const chat = mine ?? (await o.deviceChat(owner, deviceId));
      const message: Message = {
        id: crypto.randomUUID(),
        chat_id: chat.id,
        role: "assistant",
        content: text,
        created_at: nowIso(),
        device_id: deviceId,
      };
      const { expiresAt } = await say(deviceId, { text, chatId: chat.id, messageId: message.id });
      if (await store.addMessage(message)) {
        await store.touchChat(owner, chat.id, message.created_at).catch(() => false);
        bus.publish({ type: "user_message", owner, message, origin });
      }
      const seen = presence.get(deviceId);
      return {
        deviceId,
        chatId: chat.id,
        messageId: message.id,
        expiresAt,
        // Not known to be connected: it waits at the hub until it connects, or until expiresAt.
        queued: seen?.online !== true,
        ...(seen ? { online: seen.online } : {}),
      };
    },

    close: unsubscribe,
  };
}
