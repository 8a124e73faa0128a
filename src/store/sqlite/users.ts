import type { Database } from "bun:sqlite";
import type { User } from "../../records";
import type { UserOps } from "../ops";
import type { Guard } from "./guard";
import { DEVICE_LIST_MAX } from "../store";

// Users, their personal token hashes and device owners (tables in schema.ts).

export function userOps(db: Database, guard: Guard): UserOps {
  const q = {
    // The UNIQUE name decides a race: the loser's insert changes nothing.
    createUser: db.query("INSERT INTO users (id, name, created_at) VALUES ($id, $name, $created_at) ON CONFLICT DO NOTHING"),
    findUser: db.query<User, { $name: string }>("SELECT id, name, created_at FROM users WHERE name = $name"),
    listUsers: db.query<User, []>("SELECT id, name, created_at FROM users ORDER BY name"),
    addToken: db.query("INSERT INTO api_tokens (hash, user_id, created_at) VALUES ($hash, $user_id, $created_at)"),
    userOfToken: db.query<User, { $hash: string }>(
      "SELECT u.id, u.name, u.created_at FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.hash = $hash",
    ),
    revokeTokens: db.query("DELETE FROM api_tokens WHERE user_id = $user_id"),
    assignDevice: db.query(
      "INSERT INTO device_owners (device_id, owner) VALUES ($device_id, $owner) ON CONFLICT (device_id) DO UPDATE SET owner = excluded.owner",
    ),
    deviceOwner: db.query<{ owner: string }, { $device_id: string }>("SELECT owner FROM device_owners WHERE device_id = $device_id"),
    assignedDevices: db.query<{ device_id: string }, { $owner: string; $limit: number }>(
      "SELECT device_id FROM device_owners WHERE owner = $owner ORDER BY device_id LIMIT $limit",
    ),
  };
  const plain = (u: User): User => ({ id: u.id, name: u.name, created_at: u.created_at });

  return {
    createUser: guard((u: User) => q.createUser.run({ $id: u.id, $name: u.name, $created_at: u.created_at }).changes > 0),
    findUser: guard((name: string) => {
      const row = q.findUser.get({ $name: name });
      return row ? plain(row) : undefined;
    }),
    listUsers: guard(() => q.listUsers.all().map(plain)),
    // The foreign key refuses a token for a user that does not exist.
    addToken: guard(
      (userId: string, hash: string) => void q.addToken.run({ $hash: hash, $user_id: userId, $created_at: new Date().toISOString() }),
    ),
    userOfToken: guard((hash: string) => {
      const row = q.userOfToken.get({ $hash: hash });
      return row ? plain(row) : undefined;
    }),
    revokeTokens: guard((userId: string) => q.revokeTokens.run({ $user_id: userId }).changes),
    assignDevice: guard((deviceId: string, owner: string) => void q.assignDevice.run({ $device_id: deviceId, $owner: owner })),
    deviceOwner: guard((deviceId: string) => q.deviceOwner.get({ $device_id: deviceId })?.owner),
    assignedDevices: guard((owner: string) => q.assignedDevices.all({ $owner: owner, $limit: DEVICE_LIST_MAX }).map((r) => r.device_id)),
  };
}
