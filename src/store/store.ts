import type { Chat, ChatMark, Feedback, Folder, Message, SearchHit, Share, UsageRecord, User } from "../records";

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

  // Chats belong to an owner (a user id, src/auth/identity.ts). Every chat method names the owner:
  // another owner's chat is not there for it, exactly as an id that does not exist. On Cosmos the
  // owner is the partition key, so each of these is one partition.

  /** The owner's chats, most recently active first (updated_at, then created_at, descending). */
  listChats(owner: string, opts: { limit: number; cursor?: string }): Promise<Page<Chat>>;
  getChat(owner: string, id: string): Promise<Chat | undefined>;
  /** Those of `ids` that are the owner's chats, in one store read (WATCH checks its list with it). */
  getChats(owner: string, ids: string[]): Promise<Chat[]>;
  createChat(owner: string, chat: Chat): Promise<void>;
  /**
   * Changes only the named fields (a partial update: a rename racing an activity update loses
   * neither). `updated_at` never moves backwards; `selected` (a branched chat's current message) is
   * set as given. The chat as stored after, or undefined when it no longer exists.
   */
  patchChat(owner: string, id: string, patch: { name?: string; updated_at?: string; selected?: string }): Promise<Chat | undefined>;
  /**
   * A question's activity time, in one store operation (a send's hot path): sets `updated_at` to
   * `at` when that is later. On Cosmos the set is unconditional (no read first), so two questions
   * landing in the same chat within milliseconds may leave the earlier one's time. False when the
   * owner has no such chat (deleted meanwhile).
   */
  touchChat(owner: string, id: string, at: string): Promise<boolean>;
  /**
   * Removes the chat and all its messages; false when the owner has no such chat. The chat record
   * goes first, so a writer that checks for the chat after writing sees it gone (delete wins).
   */
  deleteChat(owner: string, id: string): Promise<boolean>;
  /** The owner's active chat bound to a device, if any. */
  findDeviceChat(owner: string, deviceId: string): Promise<Chat | undefined>;
  /** The owner's active device chats, most recently active first (at most DEVICE_LIST_MAX). */
  listDeviceChats(owner: string): Promise<Chat[]>;
  /**
   * Full-text search over the owner's chat names and finished messages (never a "streaming"
   * checkpoint, never another owner's), best first. Each word of `query` must match the start of
   * a word, case and diacritics aside (src/store/search-text.ts). A query without words finds
   * nothing; a cursor from another query throws InvalidCursorError. Work per query is bounded:
   * SQLite matches the owner inside the index query; Cosmos scans the owner's most recently active
   * chats only, and says `hasMore` when older chats were left unsearched.
   */
  searchChats(owner: string, query: string, opts: { limit: number; cursor?: string }): Promise<Page<SearchHit> & { hasMore?: boolean }>;

  /** Creates the message if its id is new in that chat; false (and nothing written) if it exists. */
  addMessage(message: Message): Promise<boolean>;
  /**
   * A question, stored with its chat's activity time (the send path: on SQLite one transaction,
   * on Cosmos addMessage then touchChat). "exists": that id was stored before (nothing written);
   * "gone": the owner has no such chat (deleted meanwhile, or never theirs): nothing is left written.
   */
  addQuestion(owner: string, message: Message): Promise<"added" | "exists" | "gone">;
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
  /**
   * A conditional write of one message: `next` is shown the message as stored (or undefined) and
   * returns what to write, or undefined to write nothing. What it returns is written only if the
   * record did not change meanwhile (SQLite: one transaction; Cosmos: create-if-absent or an etag
   * match, `next` asked again after a lost race). Resolves to what was written, or undefined.
   */
  rewriteMessage(chatId: string, id: string, next: (current: Message | undefined) => Message | undefined): Promise<Message | undefined>;

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

  // Users with personal tokens, and which user each device belongs to (src/store/*/users.ts).

  /** False (nothing written) when the name is taken; the database decides, so two racing creates have one winner. */
  createUser(user: User): Promise<boolean>;
  findUser(name: string): Promise<User | undefined>;
  /** Every user, by name. */
  listUsers(): Promise<User[]>;
  /** Stores a personal token by its hash (never the token) for an existing user. */
  addToken(userId: string, hash: string): Promise<void>;
  /** The user a live (not revoked) token hash belongs to. */
  userOfToken(hash: string): Promise<User | undefined>;
  /** Revokes every token of the user; returns how many there were. */
  revokeTokens(userId: string): Promise<number>;
  /** Sets (or moves) the device to `owner`, a user id. */
  assignDevice(deviceId: string, owner: string): Promise<void>;
  deviceOwner(deviceId: string): Promise<string | undefined>;

  // Usage of the model (src/chat/usage.ts) and each user's budget (src/store/*/usage.ts).

  /** Stores the record if its id is new; false (nothing written) when it was stored before. */
  addUsage(record: UsageRecord): Promise<boolean>;
  /** Creates or replaces the record by id (a call's final counts over the estimate stored when it began). */
  putUsage(record: UsageRecord): Promise<void>;
  /** Records from `since` (an ISO time) on, oldest first: one user's (on Cosmos, one partition) or everyone's. */
  listUsage(o: { userId?: string; since: string }): Promise<UsageRecord[]>;
  /** The user's prompt plus completion tokens recorded from `since` on, summed by the database. */
  tokensUsedSince(userId: string, since: string): Promise<number>;
  /** The user's own tokens per day: a number, null for "no limit", undefined when they have no override. */
  tokensPerDay(userId: string): Promise<number | null | undefined>;
  /** Sets the override (null: no limit) or removes it (undefined: the server's USER_TOKENS_PER_DAY applies). */
  setTokensPerDay(userId: string, tokens: number | null | undefined): Promise<void>;
  /** The devices assigned to `owner` (at most DEVICE_LIST_MAX). */
  assignedDevices(owner: string): Promise<string[]>;

  // Organising chats, feedback and shared snapshots (src/store/*/organise.ts). Per owner like chats:
  // another owner's folder, mark, rating or share is not there for them.

  /** The owner's folders, oldest first. */
  listFolders(owner: string): Promise<Folder[]>;
  createFolder(owner: string, folder: Folder): Promise<void>;
  /** The folder as stored after, or undefined when the owner has no such folder. */
  renameFolder(owner: string, id: string, name: string): Promise<Folder | undefined>;
  /** Removes the folder and every chat's placement in it; false when the owner has no such folder. */
  deleteFolder(owner: string, id: string): Promise<boolean>;
  /** Every chat of the owner that is pinned or in a folder (chats deleted since may still be named). */
  listMarks(owner: string): Promise<ChatMark[]>;
  /** Pin and folder are separate records, so a pin racing a move keeps both. */
  setPinned(owner: string, chatId: string, pinned: boolean): Promise<void>;
  /** `folderId` undefined: out of any folder. */
  setFolder(owner: string, chatId: string, folderId: string | undefined): Promise<void>;
  /** A chat's pin, placement, ratings and temporary mark go with it. */
  forgetChat(owner: string, chatId: string): Promise<void>;

  // Temporary chats (src/chat/temporary.ts): a mark beside the chat saying when it goes at the latest
  // (`expires_at`) and until when its owner was last known connected (`alive_until`).

  /** Marks a chat (made or about to be made) temporary; listMarks shows its `expires_at`. */
  markTemporary(owner: string, chatId: string, expiresAt: string, aliveUntil: string): Promise<void>;
  /** The chat is kept (a normal chat from now on); false when it was not marked. */
  unmarkTemporary(owner: string, chatId: string): Promise<boolean>;
  /** Moves `alive_until` of every temporary chat of the owner to `aliveUntil` (never past its `expires_at`). */
  renewTemporary(owner: string, aliveUntil: string): Promise<void>;
  /** Every owner's temporary chats whose `expires_at` or `alive_until` is at or before `now`. */
  dueTemporary(now: string): Promise<{ owner: string; chat_id: string }[]>;

  /** Creates or replaces the user's rating of that message. */
  putFeedback(feedback: Feedback): Promise<void>;
  /** False when there was none. */
  removeFeedback(userId: string, chatId: string, messageId: string): Promise<boolean>;
  /** One user's ratings in one chat (one partition on Cosmos). */
  chatFeedback(userId: string, chatId: string): Promise<Feedback[]>;
  /** Everyone's ratings changed from `since` on, oldest first (the operator's export). */
  listFeedback(o: { since: string }): Promise<Feedback[]>;

  createShare(share: Share): Promise<void>;
  /** A share by its id alone (whoever asks: the caller decides who may read it). */
  getShare(id: string): Promise<Share | undefined>;
  /** The owner's shares, newest first, without their messages (`messages` is empty). */
  listShares(owner: string): Promise<Share[]>;
  /** False when the owner has no such share (another owner's included). */
  deleteShare(owner: string, id: string): Promise<boolean>;
  /** Every share of the chat (it was deleted); returns how many. */
  deleteChatShares(owner: string, chatId: string): Promise<number>;
};

/** How many devices one user's list shows. */
export const DEVICE_LIST_MAX = 200;
