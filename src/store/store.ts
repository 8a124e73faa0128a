import type { Chat, Message } from "../records";

// The one contract both stores keep. test/store.contract.ts runs the same suite against each.
// Everything here is safe for several server replicas sharing one database: uniqueness and
// ownership are decided by the database (create-if-absent, etag match), never by process memory.

export type Page<T> = { items: T[]; cursor?: string };

/** Event Hubs partition ownership, as the load balancer of @azure/event-hubs needs it. */
export type Ownership = {
  partitionId: string;
  ownerId: string;
  etag: string;
  lastModifiedTimeInMs: number;
};

export type Checkpoint = { partitionId: string; sequenceNumber: number; offset: string };

export type Store = {
  readonly kind: "sqlite" | "cosmos";
  /** Resolves when the database answers; throws StoreUnavailableError when it does not. */
  ping(): Promise<void>;
  close(): Promise<void>;

  /** Most recently active first (updated_at, then created_at, descending). */
  listChats(opts: { limit: number; cursor?: string }): Promise<Page<Chat>>;
  getChat(id: string): Promise<Chat | undefined>;
  createChat(chat: Chat): Promise<void>;
  /** Replaces the stored chat; false when it no longer exists. */
  updateChat(chat: Chat): Promise<boolean>;
  /** Removes the chat and all its messages; false when there was no such chat. */
  deleteChat(id: string): Promise<boolean>;
  /** The active chat bound to a device, if any. */
  findDeviceChat(deviceId: string): Promise<Chat | undefined>;

  /** Creates the message if its id is new in that chat; false (and nothing written) if it exists. */
  addMessage(message: Message): Promise<boolean>;
  /** Creates or replaces a message (an assistant reply being finalised). */
  putMessage(message: Message): Promise<void>;
  /**
   * The newest `limit` messages of a chat, returned oldest first. With `before` (a created_at
   * timestamp), only messages strictly older than it.
   */
  listMessages(chatId: string, opts: { limit: number; before?: string }): Promise<Message[]>;

  /** Records a device message id; true the first time, false on every later call until it expires. */
  claimProcessed(messageId: string, ttlSeconds: number): Promise<boolean>;
  /** Drops processed-message records older than their TTL; returns how many went. */
  purgeProcessed(): Promise<number>;

  /** `scope` is "<namespace>/<event hub>/<consumer group>". */
  listOwnership(scope: string): Promise<Ownership[]>;
  /**
   * Claims a partition for ownerId. With etag: only if the stored record still has that etag.
   * Without: only if no record exists. Returns the new record, or undefined when someone else won.
   */
  claimOwnership(scope: string, partitionId: string, ownerId: string, etag?: string): Promise<Ownership | undefined>;
  listCheckpoints(scope: string): Promise<Checkpoint[]>;
  putCheckpoint(scope: string, checkpoint: Checkpoint): Promise<void>;

  getSettings(owner: string): Promise<Record<string, unknown> | undefined>;
  putSettings(owner: string, settings: Record<string, unknown>): Promise<void>;
};
