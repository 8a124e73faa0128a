import * as v from "valibot";

// Records as they are stored and as they go over the wire: one shape for both, so a Chat
// read from either store can be sent to a browser unchanged.

export const IsoTime = v.pipe(v.string(), v.isoTimestamp());

export const ChatSchema = v.object({
  id: v.pipe(v.string(), v.uuid()),
  name: v.string(),
  active: v.boolean(),
  created_at: IsoTime,
  updated_at: IsoTime,
  device_id: v.optional(v.string()),
});
export type Chat = v.InferOutput<typeof ChatSchema>;

export const RoleSchema = v.picklist(["user", "assistant", "system"]);
export type Role = v.InferOutput<typeof RoleSchema>;

// Absent means complete. A reply cut short keeps its text and says why.
export const MessageStatusSchema = v.picklist(["incomplete", "stopped", "interrupted"]);
export type MessageStatus = v.InferOutput<typeof MessageStatusSchema>;

export const MessageSchema = v.object({
  id: v.string(),
  chat_id: v.pipe(v.string(), v.uuid()),
  role: RoleSchema,
  content: v.string(),
  created_at: IsoTime,
  status: v.optional(MessageStatusSchema),
  device_id: v.optional(v.string()),
});
export type Message = v.InferOutput<typeof MessageSchema>;
