import type { User } from "../../records";
import type { UserOps } from "../ops";
import { DEVICE_LIST_MAX } from "../store";
import { type Cosmos, query, read, tolerate } from "./requests";

// Users, personal token hashes and device owners: three kinds of document in the `users` container
// (partition key /id, so each is one point read). Ids carry their kind; Cosmos ids may not contain
// / \ ? #, so names and device ids (not ours to constrain) go in base64url.
//
//   user:<base64url(id)>       the user, by id (addToken checks it, userOfToken reads it)
//   name:<base64url(name)>     the name's reservation, holding the whole user: created with
//                              create-if-absent, so the database decides which of two racing creates
//                              gets a name; findUser and listUsers read these
//   token:<sha256 hex>         a live personal token (revoking deletes it)
//   device:<base64url(id)>     a device's owner

type UserDoc = { id: string; type: "user"; user: User };
type NameDoc = { id: string; type: "name"; user: User };
type TokenDoc = { id: string; type: "token"; user_id: string; created_at: string };
type DeviceDoc = { id: string; type: "device"; device_id: string; owner: string };

const b64 = (s: string) => Buffer.from(s, "utf8").toString("base64url");
const userId = (id: string) => `user:${b64(id)}`;
const nameId = (name: string) => `name:${b64(name)}`;
const tokenId = (hash: string) => `token:${hash}`;
const deviceId = (id: string) => `device:${b64(id)}`;
const plain = (u: User): User => ({ id: u.id, name: u.name, created_at: u.created_at });

export function userOps(k: Cosmos): UserOps {
  const { c, o } = k;
  const users = c.users;
  const get = <T>(id: string) => read<T>(k, users, id, id);

  const createUser = async (user: User) => {
    // The by-id record first (its id is fresh, so it cannot collide), then the name. Whoever loses the
    // name removes its record; one left by a crash between the two has no name, so nothing finds it.
    const record: UserDoc = { id: userId(user.id), type: "user", user: plain(user) };
    await users.items.upsert(record, o());
    const reservation: NameDoc = { id: nameId(user.name), type: "name", user: plain(user) };
    if (await tolerate(async () => (await users.items.create(reservation, o()), true), [409], false)) return true;
    await tolerate(async () => void (await users.item(record.id, record.id).delete(o())), [404], undefined);
    return false;
  };

  const userById = async (id: string) => {
    const doc = await get<UserDoc>(userId(id));
    return doc ? plain(doc.user) : undefined;
  };

  return {
    createUser,
    findUser: async (name) => {
      const doc = await get<NameDoc>(nameId(name));
      return doc ? plain(doc.user) : undefined;
    },
    // Admin only (the CLI): a cross-partition query is fine here.
    listUsers: async () =>
      (await query<NameDoc>(k, users, { query: "SELECT * FROM c WHERE c.type = @type", parameters: [{ name: "@type", value: "name" }] }))
        .map((d) => plain(d.user))
        .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)),
    addToken: async (id, hash) => {
      if (!(await userById(id))) throw new Error("no such user");
      const doc: TokenDoc = { id: tokenId(hash), type: "token", user_id: id, created_at: new Date().toISOString() };
      await users.items.create(doc, o());
    },
    userOfToken: async (hash) => {
      const token = await get<TokenDoc>(tokenId(hash));
      return token ? userById(token.user_id) : undefined;
    },
    revokeTokens: async (id) => {
      const tokens = await query<{ id: string }>(k, users, {
        query: "SELECT c.id FROM c WHERE c.type = @type AND c.user_id = @user",
        parameters: [
          { name: "@type", value: "token" },
          { name: "@user", value: id },
        ],
      });
      // A token deleted meanwhile by another revoke is gone all the same: counted once, by whoever deleted it.
      const deleted = await Promise.all(
        tokens.map((t) => tolerate(async () => (await users.item(t.id, t.id).delete(o()), true), [404], false)),
      );
      return deleted.filter(Boolean).length;
    },
    assignDevice: async (device, owner) => {
      const doc: DeviceDoc = { id: deviceId(device), type: "device", device_id: device, owner };
      await users.items.upsert(doc, o());
    },
    deviceOwner: async (device) => (await get<DeviceDoc>(deviceId(device)))?.owner,
    // GET_DEVICES: a cross-partition query, one per request (device records are few).
    assignedDevices: async (owner) =>
      (
        await query<{ device_id: string }>(k, users, {
          query: "SELECT TOP @n c.device_id FROM c WHERE c.type = @type AND c.owner = @owner ORDER BY c.device_id",
          parameters: [
            { name: "@n", value: DEVICE_LIST_MAX },
            { name: "@type", value: "device" },
            { name: "@owner", value: owner },
          ],
        })
      ).map((d) => d.device_id),
  };
}
