import { Agent } from "node:https";
import type { TokenCredential } from "@azure/identity";
import { CosmosClient, type Container, type ContainerRequest, type SqlQuerySpec } from "@azure/cosmos";
import type { Chat, Message } from "../records";
import { decodeCursor, encodeCursor } from "./cursor";
import { StoreUnavailableError } from "./errors";
import type { Checkpoint, Ownership, Store } from "./store";

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
  messages: { partitionKey: { paths: ["/chat_id"] } },
  users: { partitionKey: { paths: ["/id"] } },
  settings: { partitionKey: { paths: ["/owner"] } },
  // -1: TTL on, no default; each item carries its own `ttl`.
  processedMessages: { partitionKey: { paths: ["/id"] }, defaultTtl: -1 },
  checkpoints: { partitionKey: { paths: ["/scope"] } },
};

const SYSTEM_FIELDS = ["_rid", "_self", "_etag", "_attachments", "_ts"];

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

  const setup = guard(async () => {
    const { database } = await client.databases.createIfNotExists({ id: config.database }, o());
    const entries = await Promise.all(
      (Object.keys(CONTAINERS) as ContainerName[]).map(async (name) => {
        const req = { id: config.containers[name], ...CONTAINERS[name] };
        return [name, (await database.containers.createIfNotExists(req, o())).container] as const;
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
    const after = cursor === undefined ? undefined : decodeCursor(cursor, 3);
    const parameters = [{ name: "@n", value: limit + 1 }, { name: "@owner", value: OWNER }];
    const spec: SqlQuerySpec = after
      ? {
          query: `SELECT TOP @n * FROM c WHERE c.owner = @owner AND (c.updated_at < @u OR (c.updated_at = @u
            AND (c.created_at < @c OR (c.created_at = @c AND c.id < @id)))) ${CHAT_ORDER}`,
          parameters: [...parameters, { name: "@u", value: after[0]! }, { name: "@c", value: after[1]! }, { name: "@id", value: after[2]! }],
        }
      : { query: `SELECT TOP @n * FROM c WHERE c.owner = @owner ${CHAT_ORDER}`, parameters };
    const rows = await query<Record<string, unknown>>(c.chats, spec, OWNER);
    const items = rows.slice(0, limit).map(toChat);
    const last = items.at(-1);
    return rows.length > limit && last
      ? { items, cursor: encodeCursor([last.updated_at, last.created_at, last.id]) }
      : { items };
  };

  const listMessages = async (chatId: string, { limit, before }: { limit: number; before?: string }) => {
    if (limit <= 0) return [];
    const parameters = [{ name: "@n", value: limit }, { name: "@chat", value: chatId }];
    const spec: SqlQuerySpec = before === undefined
      ? { query: "SELECT TOP @n * FROM c WHERE c.chat_id = @chat ORDER BY c.created_at DESC", parameters }
      : {
          query: "SELECT TOP @n * FROM c WHERE c.chat_id = @chat AND c.created_at < @before ORDER BY c.created_at DESC",
          parameters: [...parameters, { name: "@before", value: before }],
        };
    const rows = await query<Record<string, unknown>>(c.messages, spec, chatId);
    return rows.reverse().map((r) => strip<Message>(r));
  };

  const deleteChat = async (id: string) => {
    // Messages first: if we stop half-way the chat still exists, so a retry finishes the job.
    const ids = await query<{ id: string }>(c.messages, {
      query: "SELECT c.id FROM c WHERE c.chat_id = @chat",
      parameters: [{ name: "@chat", value: id }],
    }, id);
    for (let i = 0; i < ids.length; i += 20) {
      await Promise.all(ids.slice(i, i + 20).map((m) => tolerate(() => c.messages.item(m.id, id).delete(o()), [404], undefined)));
    }
    return tolerate(async () => (await c.chats.item(id, OWNER).delete(o()), true), [404], false);
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

    claimProcessed,
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
  };

  // One error mapping for every operation that talks to the server.
  const guarded = Object.fromEntries(
    Object.entries(store).map(([k, v]) => [k, typeof v === "function" && k !== "close" ? guard(v as (...a: unknown[]) => Promise<unknown>) : v]),
  );
  return guarded as Store;
}
