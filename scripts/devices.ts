// Which user a voice device belongs to, on the store the server uses (same env / .env). A device's
// chats are its owner's; messages from an unassigned device go to DEVICE_DEFAULT_OWNER.
//
//   bun run devices assign <deviceId> <user>   user: a name from `bun run users list`, "default" (the
//                                              API_TOKEN's user), or a signed-in user's id (oidc-…, from /api/me)
//   bun run devices show <deviceId>
//   bun run devices say <deviceId> <text…>     one C2D message the device speaks (needs IOT_HUB_CONNECTION_STRING
//                                              or IOT_HUB_HOST_NAME), stored in its chat as an announcement
import { LEGACY_USER_ID } from "../src/auth/identity";
import { SAY_MAX_BYTES, sayBytes } from "../src/chat/devices";
import { defaultDeviceOwner, UNASSIGNED_OWNER } from "../src/chat/device-owners";
import { loadConfig } from "../src/config";
import { c2dAllowance, localHubBudget } from "../src/devices/budget";
import { createC2DSender } from "../src/devices/c2d";
import { deviceBridgeOptions } from "../src/devices/options";
import { sayer } from "../src/devices/say";
import { silentLogger } from "../src/log";
import type { Store } from "../src/store/store";
import { AdminError, expectArgs, runAdmin, UsageError } from "./admin";

const USAGE = `usage: bun run devices assign <deviceId> <user> | show <deviceId> | say <deviceId> <text…>
  <user>: a user name, "${LEGACY_USER_ID}" (the API_TOKEN's user), or an id from /api/me (oidc-…)`;

/** `say`: through the hub the server uses, to a device someone owns, kept in that owner's device chat. */
async function say(store: Store, deviceId: string, text: string) {
  if (text.trim() === "") throw new UsageError("the text is empty");
  if (sayBytes(text) > SAY_MAX_BYTES)
    throw new AdminError(`the text is too long for one device message: at most ${SAY_MAX_BYTES} bytes as JSON`);
  const config = loadConfig();
  if (!config.IOT_HUB_CONNECTION_STRING && !config.IOT_HUB_HOST_NAME) {
    throw new AdminError("set IOT_HUB_CONNECTION_STRING (or IOT_HUB_HOST_NAME) to reach the devices");
  }
  const owner = (await store.deviceOwner(deviceId)) ?? (await defaultDeviceOwner(store, config.DEVICE_DEFAULT_OWNER, silentLogger)());
  const chat = owner === UNASSIGNED_OWNER ? undefined : await store.findDeviceChat(owner, deviceId);
  if (!chat && !(await store.deviceOwner(deviceId))) throw new AdminError(`no device "${deviceId}" (never assigned, never answered)`);
  const room = chat ?? {
    id: crypto.randomUUID(),
    name: deviceId,
    active: true,
    created_at: new Date().toISOString(),
    updated_at: new Date().toISOString(),
    device_id: deviceId,
  };
  if (!chat) await store.createChat(owner, room);
  const o = await deviceBridgeOptions(config);
  const c2d = createC2DSender({ access: o.iotHub, attempts: 2 });
  try {
    const messageId = crypto.randomUUID();
    // This process counts alone: one message is well within any hub's budget.
    const { expiresAt } = await sayer({
      send: c2d.send,
      allowance: c2dAllowance(localHubBudget(o.c2dPerMinute), { windowMs: o.replyMaxAgeMs }),
    })(deviceId, { text, chatId: room.id, messageId });
    const created_at = new Date().toISOString();
    await store.addMessage({ id: messageId, chat_id: room.id, role: "assistant", content: text, created_at, device_id: deviceId });
    await store.touchChat(owner, room.id, created_at);
    console.log(`Sent to ${deviceId} (message ${messageId}); IoT Hub keeps it for the device until ${expiresAt}.`);
  } catch (e) {
    throw new AdminError((e as Error).message);
  } finally {
    await c2d.close();
  }
}

async function ownerId(store: Store, who: string): Promise<{ id: string; label: string }> {
  if (who === LEGACY_USER_ID) return { id: LEGACY_USER_ID, label: `${LEGACY_USER_ID} (the API_TOKEN's user)` };
  // JWT users have no record: their id is what /api/me shows them.
  if (/^oidc-[\w-]{32}$/.test(who)) return { id: who, label: who };
  const user = await store.findUser(who);
  if (!user) throw new AdminError(`no user named "${who}" (bun run users list)`);
  return { id: user.id, label: `${user.name} (${user.id})` };
}

await runAdmin(USAGE, async (store, args) => {
  switch (args[0]) {
    case "assign": {
      const [deviceId, who] = expectArgs(args, 2) as [string, string];
      if (deviceId.trim() === "") throw new UsageError("the device id is empty");
      const owner = await ownerId(store, who);
      await store.assignDevice(deviceId, owner.id);
      console.log(`Device ${deviceId} now belongs to ${owner.label}.`);
      return;
    }
    case "show": {
      const [deviceId] = expectArgs(args, 1) as [string];
      const owner = await store.deviceOwner(deviceId);
      console.log(owner ? `${deviceId}\t${owner}` : `${deviceId}\t(unassigned: DEVICE_DEFAULT_OWNER)`);
      return;
    }
    case "say": {
      if (args.length < 3) throw new UsageError("say: expects a device id and the text");
      return say(store, args[1]!, args.slice(2).join(" "));
    }
    default:
      throw new UsageError(`unknown command "${args[0]}"`);
  }
});
