// Which user a voice device belongs to, on the store the server uses (same env / .env). A device's
// chats are its owner's; messages from an unassigned device go to DEVICE_DEFAULT_OWNER.
//
//   bun run devices assign <deviceId> <user>   user: a name from `bun run users list`, "default" (the
//                                              API_TOKEN's user), or a signed-in user's id (oidc-…, from /api/me)
//   bun run devices show <deviceId>
import { LEGACY_USER_ID } from "../src/auth/identity";
import type { Store } from "../src/store/store";
import { AdminError, expectArgs, runAdmin, UsageError } from "./admin";

const USAGE = `usage: bun run devices assign <deviceId> <user> | show <deviceId>
  <user>: a user name, "${LEGACY_USER_ID}" (the API_TOKEN's user), or an id from /api/me (oidc-…)`;

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
    default:
      throw new UsageError(`unknown command "${args[0]}"`);
  }
});
