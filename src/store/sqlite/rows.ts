import type { Chat, Message } from "../../records";

// Records to bound parameters and rows back to records.

export type ChatRow = {
  id: string;
  owner: string;
  name: string;
  active: number;
  created_at: string;
  updated_at: string;
  device_id: string | null;
  selected: string | null;
};
export type MessageRow = {
  chat_id: string;
  id: string;
  role: Message["role"];
  content: string;
  created_at: string;
  status: string | null;
  device_id: string | null;
  parent_id: string | null;
  lease_owner: string | null;
  lease_until: number | null;
  lease_seq: number | null;
  tool_calls: string | null;
};
export type ClaimRow = { owner: string | null; lease_until: number | null; done: number; expires_at: number };

export const toChat = (r: ChatRow): Chat => ({
  id: r.id,
  name: r.name,
  active: r.active === 1,
  created_at: r.created_at,
  updated_at: r.updated_at,
  ...(r.device_id === null ? {} : { device_id: r.device_id }),
  ...(r.selected === null ? {} : { selected: r.selected }),
});

// Only the fields that were written come back, so a record reads back exactly equal to itself.
export const toMessage = (r: MessageRow): Message => ({
  id: r.id,
  chat_id: r.chat_id,
  role: r.role,
  content: r.content,
  created_at: r.created_at,
  ...(r.status === null ? {} : { status: r.status as Message["status"] }),
  ...(r.device_id === null ? {} : { device_id: r.device_id }),
  ...(r.parent_id === null ? {} : { parent_id: r.parent_id }),
  ...(r.lease_owner === null ? {} : { lease: { owner: r.lease_owner, until: r.lease_until ?? 0, seq: r.lease_seq ?? 0 } }),
  ...(r.tool_calls ? { tool_calls: JSON.parse(r.tool_calls) } : {}),
});

export const chatParams = (owner: string, c: Chat) => ({
  $id: c.id,
  $owner: owner,
  $name: c.name,
  $active: c.active ? 1 : 0,
  $created_at: c.created_at,
  $updated_at: c.updated_at,
  $device_id: c.device_id ?? null,
  $selected: c.selected ?? null,
});

export const messageParams = (m: Message) => ({
  $chat_id: m.chat_id,
  $id: m.id,
  $role: m.role,
  $content: m.content,
  $created_at: m.created_at,
  $status: m.status ?? null,
  $device_id: m.device_id ?? null,
  $parent_id: m.parent_id ?? null,
  $lease_owner: m.lease?.owner ?? null,
  $lease_until: m.lease?.until ?? null,
  $lease_seq: m.lease?.seq ?? null,
  $tool_calls: m.tool_calls?.length ? JSON.stringify(m.tool_calls) : null,
});

export const MESSAGE_COLUMNS =
  "chat_id, id, role, content, created_at, status, device_id, parent_id, lease_owner, lease_until, lease_seq, tool_calls";
export const MESSAGE_VALUES =
  "$chat_id, $id, $role, $content, $created_at, $status, $device_id, $parent_id, $lease_owner, $lease_until, $lease_seq, $tool_calls";
