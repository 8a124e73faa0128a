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
  /**
   * Changes only the named fields (a partial update: a rename racing an activity update loses
   * neither). `updated_at` never moves backwards. The chat as stored after, or undefined when it no longer exists.
   */
  patchChat(id: string, patch: { name?: string; updated_at?: string }): Promise<Chat | undefined>;
  /**
   * Removes the chat and all its messages; false when there was no such chat. The chat record
   * goes first, so a writer that checks for the chat after writing sees it gone (delete wins).
   */
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
  /**
   * A page of history, oldest first, ordered by (created_at, id) on every store. `cursor` (from
   * the previous page) or `before` (a created_at timestamp, older clients) selects older messages;
   * the returned cursor is there only when older messages exist. A cursor this store did not
   * issue throws InvalidCursorError.
   */
  pageMessages(chatId: string, opts: { limit: number; cursor?: string; before?: string }): Promise<Page<Message>>;
  /** The assistant reply whose parent_id is `questionId`, if one was stored (finished, cut short or streaming). */
  findReply(chatId: string, questionId: string): Promise<Message | undefined>;
  /**
   * Replies stored as "streaming" whose lease ended before `now` (their process died): each is
   * set to "interrupted" (lease removed, text kept) only if it is still that same checkpoint, and
   * returned as stored after. With `chatId`, only that chat's.
   */
  finalizeStale(now: number, chatId?: string): Promise<Message[]>;

  /** Records a device message id; true the first time, false on every later call until it expires. */
  claimProcessed(messageId: string, ttlSeconds: number): Promise<boolean>;
  /**
   * Claims a device message for `owner` for `leaseMs` (at-least-once with one effect): "claimed"
   * when it was free, never seen, or its previous claim's lease lapsed; "held" while another
   * owner's lease runs; "done" once completed (until the record expires).
   */
  claimMessage(messageId: string, owner: string, leaseMs: number): Promise<"claimed" | "held" | "done">;
  /** Extends `owner`'s claim; false when it is no longer theirs. */
  renewClaim(messageId: string, owner: string, leaseMs: number): Promise<boolean>;
  /** Marks the message done (kept `ttlSeconds`, so a redelivery is skipped). */
  completeClaim(messageId: string, owner: string, ttlSeconds: number): Promise<void>;
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
  /**
   * Merges `patch` into the owner's settings atomically (null removes a key; undefined leaves it):
   * two patches of different keys racing keep both. Returns the settings as stored after.
   */
  patchSettings(owner: string, patch: Record<string, unknown>): Promise<Record<string, unknown>>;
};
