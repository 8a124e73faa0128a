import { Agent } from "node:https";
import type { TokenCredential } from "@azure/identity";
import { CosmosClient, type Container, type ContainerDefinition, type ContainerRequest, type PatchOperation, type SqlQuerySpec } from "@azure/cosmos";
import type { Chat, Message } from "../records";
import { decodeChatCursor, decodeMessageCursor, encodeChatCursor, encodeMessageCursor } from "./cursor";
import { StoreUnavailableError } from "./errors";
import { mergeSettings } from "./merge";
import type { Checkpoint, Ownership, Page, Store } from "./store";

// Azure Cosmos DB behind the Store contract. docs/storage.md explains the partition keys; in
// short, every hot-path call names its partition key so it never fans out across partitions.

export type CosmosStoreConfig = {
  endpoint: string;
  /** With a key, key auth; without, `credential` (Azure identity) is required. */
  key?: string;
  credential?: TokenCredential;
  database: string;
  containers: { chats: string; messages: string; users: string; settings: string; processedMessages: string; checkpoints: string };
  /** For the official emulator and for tests: trust a self-signed HTTPS certificate. */
  allowSelfSignedCert: boolean;
  /** Per HTTP request; an unreachable server fails as StoreUnavailableError instead of hanging. */
  requestTimeoutMs?: number;
  /** Told when an existing container's indexing policy could not be brought up to date (no secrets in the text). */
  warn?: (message: string) => void;
};

type ContainerName = keyof CosmosStoreConfig["containers"];

/** Single tenant today: every chat lives in this partition until per-user accounts arrive. */
const OWNER = "default";

const desc = (path: string) => ({ path, order: "descending" as const });
const CONTAINERS: Record<ContainerName, Omit<ContainerRequest, "id">> = {
  // Multi-field ORDER BY needs a matching composite index on real Cosmos (the test server checks it too).
  chats: {
    partitionKey: { paths: ["/owner"] },
    indexingPolicy: {
      includedPaths: [{ path: "/*" }],
      compositeIndexes: [[desc("/updated_at"), desc("/created_at"), desc("/id")]],
    },
  },
  // History pages and reply lookups order by (created_at, id), newest first.
  messages: {
    partitionKey: { paths: ["/chat_id"] },
    indexingPolicy: {
      includedPaths: [{ path: "/*" }],
      compositeIndexes: [[desc("/created_at"), desc("/id")]],
    },
  },
  users: { partitionKey: { paths: ["/id"] } },
  settings: { partitionKey: { paths: ["/owner"] } },
  // -1: TTL on, no default; each item carries its own `ttl`.
  processedMessages: { partitionKey: { paths: ["/id"] }, defaultTtl: -1 },
  checkpoints: { partitionKey: { paths: ["/scope"] } },
};

const SYSTEM_FIELDS = ["_rid", "_self", "_etag", "_attachments", "_ts"];

/** Attempts at a read-then-conditional-write before giving up as contention (each lost attempt means another writer won). */
const ETAG_ATTEMPTS = 10;

type CompositePath = { path: string; order?: string };
const sameComposite = (a: CompositePath[], b: CompositePath[]) =>
  a.length === b.length && a.every((p, i) => p.path === b[i]!.path && (p.order ?? "ascending") === (b[i]!.order ?? "ascending"));

/** Records must read back equal to what was written: drop what Cosmos or we added. */
function strip<T>(doc: Record<string, unknown>, extra: readonly string[] = []): T {
  const out = { ...doc };
  for (const k of [...SYSTEM_FIELDS, ...extra]) delete out[k];
  return out as T;
}

const status = (e: unknown): number | string | undefined => (e as { code?: number | string } | null)?.code;

const UNAVAILABLE_STATUS = new Set<number | string>([408, 429, 449, 502, 503, 504]);
const UNAVAILABLE_CODES = new Set<number | string>([
  "ECONNREFUSED", "ECONNRESET", "ECONNABORTED", "ETIMEDOUT", "EPIPE", "ENOTFOUND", "EAI_AGAIN",
  "EHOSTUNREACH", "ENETUNREACH", "ERR_SOCKET_CLOSED", "REQUEST_SEND_ERROR", "TimeoutError",
]);

/** Network failures and "try later" answers; never echoes request details, which carry auth. */
function toUnavailable(e: unknown): StoreUnavailableError | undefined {
  if (e instanceof StoreUnavailableError) return e;
  const code = status(e);
  const name = (e as { name?: string } | null)?.name;
  const down = (code !== undefined && (UNAVAILABLE_STATUS.has(code) || UNAVAILABLE_CODES.has(code)))
    || name === "AbortError" || name === "TimeoutError";
  if (!down) return undefined;
  const cause = Object.assign(new Error(e instanceof Error ? e.message : String(e)), { code });
  return new StoreUnavailableError(`Cosmos DB is unavailable (${code ?? name})`, { cause });
}

/** Cosmos ids may not contain / \ ? #; device message ids are not ours to constrain. */
const safeId = (id: string) => (/[/\\?#]|^b64:/.test(id) ? `b64:${Buffer.from(id).toString("base64url")}` : id);

export async function openCosmosStore(config: CosmosStoreConfig): Promise<Store> {
  const timeoutMs = config.requestTimeoutMs ?? 5000;
  const client = new CosmosClient({
    endpoint: config.endpoint,
    ...(config.key ? { key: config.key } : { aadCredentials: config.credential }),
    ...(config.allowSelfSignedCert ? { agent: new Agent({ keepAlive: true, rejectUnauthorized: false }) } : {}),
    connectionPolicy: {
      // With discovery on, the SDK retries an unreachable endpoint for minutes (and the emulator
      // advertises addresses we may not reach). We talk to the one endpoint we were given.
      enableEndpointDiscovery: false,
      requestTimeout: timeoutMs,
      retryOptions: { maxRetryAttemptCount: 3, fixedRetryIntervalInMilliseconds: 200, maxWaitTimeInSeconds: Math.ceil(timeoutMs / 1000) },
    },
  });
  // The SDK still retries some read errors on its own (1 s apart); this caps any single call.
  const o = () => ({ abortSignal: AbortSignal.timeout(2 * timeoutMs) });

  const guard = <A extends unknown[], R>(fn: (...a: A) => Promise<R>) => async (...a: A): Promise<R> => {
    try {
      return await fn(...a);
    } catch (e) {
      throw toUnavailable(e) ?? e;
    }
  };

  /**
   * createIfNotExists leaves an existing container as it was: one created before an index was added
   * gets its indexing policy replaced here (Cosmos builds the index online). Without the right (data
   * plane only, keyless) permissions that fails; the store still opens, and `warn` says what to fix.
   */
  const ensureCompositeIndexes = async (container: Container, resource: ContainerDefinition | undefined, wanted: ContainerRequest) => {
    const want = wanted.indexingPolicy?.compositeIndexes ?? [];
    const have = resource?.indexingPolicy?.compositeIndexes ?? [];
    const missing = want.filter((w) => !have.some((h) => sameComposite(h, w)));
    if (!resource || missing.length === 0) return;
    try {
      await container.replace({ ...resource, indexingPolicy: { ...resource.indexingPolicy, compositeIndexes: [...have, ...missing] } }, o());
    } catch (e) {
      if (toUnavailable(e)) throw toUnavailable(e);
      config.warn?.(`Cosmos container ${resource.id}: could not add its composite indexes (status ${String(status(e) ?? "unknown")}); add ${JSON.stringify(missing)} to its indexing policy`);
    }
  };

  const setup = guard(async () => {
    const { database } = await client.databases.createIfNotExists({ id: config.database }, o());
    const entries = await Promise.all(
      (Object.keys(CONTAINERS) as ContainerName[]).map(async (name) => {
        const req = { id: config.containers[name], ...CONTAINERS[name] };
        const { container, resource } = await database.containers.createIfNotExists(req, o());
        await ensureCompositeIndexes(container, resource, req);
        return [name, container] as const;
      }),
    );
    return { database, c: Object.fromEntries(entries) as Record<ContainerName, Container> };
  });
  const { database, c } = await setup().catch((e: unknown) => {
    client.dispose();
    throw e;
  });

  /** Every query names its partition key twice: in the WHERE (the test server ignores the
   *  feed option) and as the feed option (so real Cosmos routes it to one partition). */
  const query = async <T>(container: Container, spec: SqlQuerySpec, partitionKey?: string): Promise<T[]> =>
    (await container.items.query<T>(spec, { ...o(), ...(partitionKey === undefined ? {} : { partitionKey }) }).fetchAll()).resources;

  /** Point read: undefined when absent (the SDK resolves 404 for reads rather than throwing). */
  const read = async <T>(container: Container, id: string, pk: string): Promise<(T & Record<string, unknown>) | undefined> =>
    (await container.item(id, pk).read<T & Record<string, unknown>>(o())).resource;

  /** Runs a write; the listed statuses become `fallback` instead of an error. */
  const tolerate = async <T>(op: () => Promise<T>, statuses: number[], fallback: T): Promise<T> => {
    try {
      return await op();
    } catch (e) {
      const s = status(e);
      if (typeof s === "number" && statuses.includes(s)) return fallback;
      throw e;
    }
  };

  const toChat = (doc: Record<string, unknown>) => strip<Chat>(doc, ["owner"]);
  const chatDoc = (chat: Chat) => ({ ...chat, owner: OWNER });
  const matchEtag = (etag: string) => ({ accessCondition: { type: "IfMatch", condition: etag } });

  const CHAT_ORDER = "ORDER BY c.updated_at DESC, c.created_at DESC, c.id DESC";
  const listChats = async ({ limit, cursor }: { limit: number; cursor?: string }) => {
    // A keyset cursor (as in SQLite) rather than continuation tokens: TOP + WHERE on the sort
    // keys behaves the same on the test server and real Cosmos, and pages are never short.
    const after = cursor === undefined ? undefined : decodeChatCursor(cursor);
    const parameters = [{ name: "@n", value: limit + 1 }, { name: "@owner", value: OWNER }];
    const spec: SqlQuerySpec = after
      ? {
          // (u, c, id) < cursor, spelled flat: the nested form means the same, but the test server's
          // parser takes seconds over it (3.2 s against 0.1 s measured).
          query: `SELECT TOP @n * FROM c WHERE c.owner = @owner AND (c.updated_at < @u
            OR (c.updated_at = @u AND c.created_at < @c) OR (c.updated_at = @u AND c.created_at = @c AND c.id < @id)) ${CHAT_ORDER}`,
          parameters: [...parameters, { name: "@u", value: after.updated_at }, { name: "@c", value: after.created_at }, { name: "@id", value: after.id }],
        }
      : { query: `SELECT TOP @n * FROM c WHERE c.owner = @owner ${CHAT_ORDER}`, parameters };
    const rows = await query<Record<string, unknown>>(c.chats, spec, OWNER);
    const items = rows.slice(0, limit).map(toChat);
    const last = items.at(-1);
    return rows.length > limit && last ? { items, cursor: encodeChatCursor(last) } : { items };
  };

  const MESSAGE_ORDER = "ORDER BY c.created_at DESC, c.id DESC";
  /**
   * The newest `limit` messages (one extra fetched, to learn whether older ones exist) older than
   * the cursor's (created_at, id), or than `before`; oldest first. Same order as SQLite's.
   */
  const pageMessages = async (chatId: string, { limit, cursor, before }: { limit: number; cursor?: string; before?: string }): Promise<Page<Message>> => {
    const after = cursor === undefined ? undefined : decodeMessageCursor(cursor, chatId);
    if (limit <= 0) return { items: [] };
    const parameters = [{ name: "@n", value: limit + 1 }, { name: "@chat", value: chatId }];
    const spec: SqlQuerySpec = after
      ? {
          query: `SELECT TOP @n * FROM c WHERE c.chat_id = @chat AND (c.created_at < @t OR (c.created_at = @t AND c.id < @id)) ${MESSAGE_ORDER}`,
          parameters: [...parameters, { name: "@t", value: after.created_at }, { name: "@id", value: after.id }],
        }
      : before === undefined
        ? { query: `SELECT TOP @n * FROM c WHERE c.chat_id = @chat ${MESSAGE_ORDER}`, parameters }
        : {
            query: `SELECT TOP @n * FROM c WHERE c.chat_id = @chat AND c.created_at < @before ${MESSAGE_ORDER}`,
            parameters: [...parameters, { name: "@before", value: before }],
          };
    const rows = await query<Record<string, unknown>>(c.messages, spec, chatId);
    const items = rows.slice(0, limit).reverse().map((r) => strip<Message>(r));
    const oldest = items[0];
    return rows.length > limit && oldest ? { items, cursor: encodeMessageCursor(chatId, oldest) } : { items };
  };

  const listMessages = async (chatId: string, o: { limit: number; before?: string }) => (await pageMessages(chatId, o)).items;

  const findReply = async (chatId: string, questionId: string) => {
    const [doc] = await query<Record<string, unknown>>(c.messages, {
      query: `SELECT TOP 1 * FROM c WHERE c.chat_id = @chat AND c.parent_id = @q AND c.role = @role ${MESSAGE_ORDER}`,
      parameters: [{ name: "@chat", value: chatId }, { name: "@q", value: questionId }, { name: "@role", value: "assistant" }],
    }, chatId);
    return doc ? strip<Message>(doc) : undefined;
  };

  const finalizeStale = async (now: number, chatId?: string) => {
    // Without chatId this is maintenance: a cross-partition query. A "streaming" record with no
    // lease has nothing keeping it alive, so it counts as lapsed.
    const parameters = [{ name: "@streaming", value: "streaming" }, { name: "@now", value: now }];
    const stale = await query<Record<string, unknown>>(c.messages, chatId === undefined
      ? { query: "SELECT * FROM c WHERE c.status = @streaming AND (NOT IS_DEFINED(c.lease) OR c.lease.until < @now)", parameters }
      : {
          query: "SELECT * FROM c WHERE c.chat_id = @chat AND c.status = @streaming AND (NOT IS_DEFINED(c.lease) OR c.lease.until < @now)",
          parameters: [...parameters, { name: "@chat", value: chatId }],
        }, chatId);
    const out: Message[] = [];
    for (const doc of stale) {
      const { lease: _lease, ...rest } = strip<Message>(doc);
      const next: Message = { ...rest, status: "interrupted" };
      // Only if it is still the checkpoint we read: a live writer's newer checkpoint (412) wins.
      const res = await tolerate(() => c.messages.item(next.id, next.chat_id).replace(next, { ...o(), ...matchEtag(String(doc._etag)) }), [404, 412], undefined);
      if (res?.resource) out.push(strip<Message>(res.resource as unknown as Record<string, unknown>));
    }
    return out.sort((a, b) => (a.created_at < b.created_at ? -1 : a.created_at > b.created_at ? 1 : a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  };

  type ChatDoc = Chat & Record<string, unknown>;
  /**
   * A partial update guarded by the etag of what we read: only the named fields are set (a rename
   * and an activity update racing both land), and updated_at is set only when it moves forward.
   * A conditional patch with a filter predicate would save the read, but it cannot take parameters.
   */
  const patchChat = async (id: string, patch: { name?: string; updated_at?: string }) => {
    for (let attempt = 0; attempt < ETAG_ATTEMPTS; attempt++) {
      const doc = await read<ChatDoc>(c.chats, id, OWNER);
      if (!doc) return undefined;
      const ops: PatchOperation[] = [];
      if (patch.name !== undefined && patch.name !== doc.name) ops.push({ op: "set", path: "/name", value: patch.name });
      if (patch.updated_at !== undefined && patch.updated_at > doc.updated_at) ops.push({ op: "set", path: "/updated_at", value: patch.updated_at });
      if (ops.length === 0) return toChat(doc);
      try {
        const res = await c.chats.item(id, OWNER).patch<ChatDoc>(ops, { ...o(), ...matchEtag(String(doc._etag)) });
        return res.resource ? toChat(res.resource) : undefined;
      } catch (e) {
        if (status(e) === 404) return undefined;
        if (status(e) !== 412) throw e;
      }
    }
    throw new StoreUnavailableError("Cosmos DB: the chat changed on every attempt to update it; try again");
  };

  const deleteChat = async (id: string) => {
    // The chat first: a writer that checks for the chat after storing a message sees it gone and
    // removes its own message. Its messages are swept even when the chat was already gone, so a
    // retry after a half-done delete finishes the job.
    const existed = await tolerate(async () => (await c.chats.item(id, OWNER).delete(o()), true), [404], false);
    const ids = await query<{ id: string }>(c.messages, {
      query: "SELECT c.id FROM c WHERE c.chat_id = @chat",
      parameters: [{ name: "@chat", value: id }],
    }, id);
    for (let i = 0; i < ids.length; i += 20) {
      await Promise.all(ids.slice(i, i + 20).map((m) => tolerate(() => c.messages.item(m.id, id).delete(o()), [404], undefined)));
    }
    return existed;
  };

  const claimProcessed = async (messageId: string, ttlSeconds: number) => {
    const id = safeId(messageId);
    const now = Date.now();
    // expires_at decides; `ttl` (whole seconds only) lets real Cosmos delete the record itself.
    const doc = { id, expires_at: now + ttlSeconds * 1000, ttl: Math.max(1, Math.ceil(ttlSeconds)) };
    // Create is the atomic guard (409 on a duplicate). An expired record that TTL has not yet
    // removed (or never will, on the test server) is taken over by an etag-guarded replace.
    for (let attempt = 0; attempt < 3; attempt++) {
      if (await tolerate(async () => (await c.processedMessages.items.create(doc, o()), true), [409], false)) return true;
      const existing = await read<{ expires_at: number }>(c.processedMessages, id, id);
      if (!existing) continue; // removed since our create: create again
      if (existing.expires_at > now) return false;
      try {
        await c.processedMessages.item(id, id).replace(doc, { ...o(), ...matchEtag(String(existing._etag)) });
        return true;
      } catch (e) {
        if (status(e) === 412) return false; // another caller took it over first (and got true)
        if (status(e) !== 404) throw e; // 404: purged meanwhile, so create again
      }
    }
    return false;
  };

  const purgeProcessed = async () => {
    // Maintenance, not the hot path: the one cross-partition query (real Cosmos TTL does this anyway).
    const expired = await query<{ id: string }>(c.processedMessages, {
      query: "SELECT c.id FROM c WHERE c.expires_at <= @now",
      parameters: [{ name: "@now", value: Date.now() }],
    });
    let purged = 0;
    for (const { id } of expired) {
      if (await tolerate(async () => (await c.processedMessages.item(id, id).delete(o()), true), [404], false)) purged++;
    }
    return purged;
  };

  type ClaimDoc = { id: string; expires_at: number; ttl: number; owner?: string; lease_until?: number; done?: boolean; _etag?: string };
  const readClaim = (id: string) => read<ClaimDoc>(c.processedMessages, id, id);
  /** Records written by claimProcessed carry no `done`: they are finished work. */
  const isDone = (d: ClaimDoc) => d.done !== false;
  /** Replace only if the record is still the version we read; false when someone else changed (412) or removed (404) it. */
  const replaceClaim = (doc: ClaimDoc, etag: unknown) =>
    tolerate(async () => (await c.processedMessages.item(doc.id, doc.id).replace(doc, { ...o(), ...matchEtag(String(etag)) }), true), [404, 412], false);
  const createClaim = (doc: ClaimDoc) =>
    tolerate(async () => (await c.processedMessages.items.create(doc, o()), true), [409], false);
  // A held record outlives its lease by a minute: real Cosmos TTL then removes an abandoned claim.
  const heldDoc = (id: string, owner: string, until: number, leaseMs: number): ClaimDoc =>
    ({ id, owner, lease_until: until, done: false, expires_at: until, ttl: Math.ceil(leaseMs / 1000) + 60 });

  const claimMessage = async (messageId: string, owner: string, leaseMs: number): Promise<"claimed" | "held" | "done"> => {
    const id = safeId(messageId);
    for (let attempt = 0; attempt < ETAG_ATTEMPTS; attempt++) {
      const now = Date.now();
      const held = heldDoc(id, owner, now + leaseMs, leaseMs);
      if (await createClaim(held)) return "claimed";
      const existing = await readClaim(id);
      if (!existing) continue; // removed since our create: create again
      if (isDone(existing) && existing.expires_at > now) return "done";
      if (!isDone(existing) && existing.owner !== owner && (existing.lease_until ?? 0) >= now) return "held";
      // Expired, lapsed, or ours already: take it over, unless someone else does first (then look again).
      if (await replaceClaim(held, existing._etag)) return "claimed";
    }
    return "held";
  };

  const renewClaim = async (messageId: string, owner: string, leaseMs: number) => {
    const id = safeId(messageId);
    for (let attempt = 0; attempt < ETAG_ATTEMPTS; attempt++) {
      const existing = await readClaim(id);
      if (!existing || isDone(existing) || existing.owner !== owner) return false;
      const until = Date.now() + leaseMs;
      if (await replaceClaim({ ...heldDoc(id, owner, until, leaseMs), expires_at: Math.max(existing.expires_at, until) }, existing._etag)) return true;
    }
    return false;
  };

  const completeClaim = async (messageId: string, owner: string, ttlSeconds: number) => {
    const id = safeId(messageId);
    for (let attempt = 0; attempt < ETAG_ATTEMPTS; attempt++) {
      const done: ClaimDoc = { id, owner, done: true, expires_at: Date.now() + ttlSeconds * 1000, ttl: Math.max(1, Math.ceil(ttlSeconds)) };
      const existing = await readClaim(id);
      if (!existing) {
        if (await createClaim(done)) return;
        continue;
      }
      // Taken over after our lease lapsed: finishing it is the new owner's business.
      if (existing.owner !== owner) return;
      if (await replaceClaim(done, existing._etag)) return;
    }
  };

  type SettingsDoc = { id: string; owner: string; value: Record<string, unknown>; _etag?: string };
  const patchSettings = async (owner: string, patch: Record<string, unknown>) => {
    const id = safeId(owner);
    for (let attempt = 0; attempt < ETAG_ATTEMPTS; attempt++) {
      const existing = await read<SettingsDoc>(c.settings, id, owner);
      const value = mergeSettings(existing?.value ?? {}, patch);
      const doc: SettingsDoc = { id, owner, value };
      // Create-if-absent, or replace-if-unchanged: a patch racing another re-reads and merges again.
      const written = existing
        ? await tolerate(async () => (await c.settings.item(id, owner).replace(doc, { ...o(), ...matchEtag(String(existing._etag)) }), true), [404, 412], false)
        : await tolerate(async () => (await c.settings.items.create(doc, o()), true), [409], false);
      if (written) return value;
    }
    throw new StoreUnavailableError("Cosmos DB: the settings changed on every attempt to update them; try again");
  };

  type OwnershipDoc = { partitionId: string; ownerId: string; lastModifiedTimeInMs: number; _etag?: string };
  const toOwnership = (d: OwnershipDoc): Ownership => ({
    partitionId: d.partitionId, ownerId: d.ownerId, etag: String(d._etag), lastModifiedTimeInMs: d.lastModifiedTimeInMs,
  });

  const claimOwnership = async (scope: string, partitionId: string, ownerId: string, etag?: string) => {
    const doc = { id: `own:${partitionId}`, scope, type: "ownership", partitionId, ownerId, lastModifiedTimeInMs: Date.now() };
    // No etag: create-if-absent (409 = someone holds it). Etag: replace only if still current (412).
    const write = etag === undefined
      ? () => c.checkpoints.items.create<OwnershipDoc>(doc, o())
      : () => c.checkpoints.item(doc.id, scope).replace<OwnershipDoc>(doc, { ...o(), ...matchEtag(etag) });
    const res = await tolerate(write, [404, 409, 412], undefined);
    return res?.resource ? toOwnership(res.resource) : undefined;
  };

  const byType = (scope: string, type: string): SqlQuerySpec => ({
    query: "SELECT * FROM c WHERE c.scope = @scope AND c.type = @type",
    parameters: [{ name: "@scope", value: scope }, { name: "@type", value: type }],
  });

  const store: Store = {
    kind: "cosmos",
    ping: async () => void (await database.read(o())),
    close: async () => client.dispose(),

    listChats,
    getChat: async (id) => {
      const doc = await read<Chat>(c.chats, id, OWNER);
      return doc ? toChat(doc) : undefined;
    },
    createChat: async (chat) => void (await c.chats.items.create(chatDoc(chat), o())),
    updateChat: (chat) => tolerate(async () => (await c.chats.item(chat.id, OWNER).replace(chatDoc(chat), o()), true), [404], false),
    patchChat,
    deleteChat,
    findDeviceChat: async (deviceId) => {
      const [doc] = await query<Record<string, unknown>>(c.chats, {
        query: "SELECT TOP 1 * FROM c WHERE c.owner = @owner AND c.device_id = @device AND c.active = true ORDER BY c.updated_at DESC",
        parameters: [{ name: "@owner", value: OWNER }, { name: "@device", value: deviceId }],
      }, OWNER);
      return doc ? toChat(doc) : undefined;
    },

    addMessage: (m) => tolerate(async () => (await c.messages.items.create(m, o()), true), [409], false),
    putMessage: async (m) => void (await c.messages.items.upsert(m, o())),
    listMessages,
    pageMessages,
    findReply,
    finalizeStale,

    claimProcessed,
    claimMessage,
    renewClaim,
    completeClaim,
    purgeProcessed,

    listOwnership: async (scope) => (await query<OwnershipDoc>(c.checkpoints, byType(scope, "ownership"), scope)).map(toOwnership),
    claimOwnership,
    listCheckpoints: async (scope) =>
      (await query<Checkpoint>(c.checkpoints, byType(scope, "checkpoint"), scope)).map(
        ({ partitionId, sequenceNumber, offset }): Checkpoint => ({ partitionId, sequenceNumber, offset }),
      ),
    putCheckpoint: async (scope, cp) => void (await c.checkpoints.items.upsert({ id: `cp:${cp.partitionId}`, scope, type: "checkpoint", ...cp }, o())),

    getSettings: async (owner) => (await read<{ value: Record<string, unknown> }>(c.settings, safeId(owner), owner))?.value,
    putSettings: async (owner, settings) => void (await c.settings.items.upsert({ id: safeId(owner), owner, value: settings }, o())),
    patchSettings,
  };

  // One error mapping for every operation that talks to the server.
  const guarded = Object.fromEntries(
    Object.entries(store).map(([k, v]) => [k, typeof v === "function" && k !== "close" ? guard(v as (...a: unknown[]) => Promise<unknown>) : v]),
  );
  return guarded as Store;
}
