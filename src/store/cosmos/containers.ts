import type { Container, ContainerDefinition, ContainerRequest, CosmosClient } from "@azure/cosmos";
import type { ContainerName, CosmosStoreConfig } from "./config";
import { guard, status, toUnavailable } from "./failures";
import type { Cosmos } from "./requests";

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
  // One user's records are one partition: a day's total and GET_USAGE are single-partition queries.
  usage: { partitionKey: { paths: ["/user_id"] } },
  // A user's folders, pins, placements and ratings: one partition per user (src/store/cosmos/organise.ts).
  organise: { partitionKey: { paths: ["/owner"] } },
  // A share is read by its id alone (the link): a point read.
  shares: { partitionKey: { paths: ["/id"] } },
};

// COSMOS_FULL_TEXT_SEARCH=on: the messages container is created with a full-text policy and index
// on content (an account needs the full-text feature for that). A container that exists keeps its
// definition: add the same policy and index to it by hand (docs/storage.md).
const FULL_TEXT = {
  fullTextPolicy: { defaultLanguage: "en-US", fullTextPaths: [{ path: "/content", language: "en-US" }] },
  fullTextIndexes: [{ path: "/content" }],
};
const withFullText = (req: ContainerRequest): ContainerRequest => ({
  ...req,
  fullTextPolicy: FULL_TEXT.fullTextPolicy,
  indexingPolicy: { ...req.indexingPolicy, fullTextIndexes: FULL_TEXT.fullTextIndexes },
});

type CompositePath = { path: string; order?: string };
const sameComposite = (a: CompositePath[], b: CompositePath[]) =>
  a.length === b.length && a.every((p, i) => p.path === b[i]!.path && (p.order ?? "ascending") === (b[i]!.order ?? "ascending"));

/** The database and every container, created when missing, with their indexing policies brought up to date. */
export function setupContainers(client: CosmosClient, config: CosmosStoreConfig, o: Cosmos["o"]) {
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
      await container.replace(
        { ...resource, indexingPolicy: { ...resource.indexingPolicy, compositeIndexes: [...have, ...missing] } },
        o(),
      );
    } catch (e) {
      if (toUnavailable(e)) throw toUnavailable(e);
      config.warn?.(
        `Cosmos container ${resource.id}: could not add its composite indexes (status ${String(status(e) ?? "unknown")}); add ${JSON.stringify(missing)} to its indexing policy`,
      );
    }
  };

  const setup = guard(async () => {
    const { database } = await client.databases.createIfNotExists({ id: config.database }, o());
    const entries = await Promise.all(
      (Object.keys(CONTAINERS) as ContainerName[]).map(async (name) => {
        const base = { id: config.containers[name] ?? name, ...CONTAINERS[name] };
        const req = name === "messages" && config.fullTextSearch === "on" ? withFullText(base) : base;
        const { container, resource } = await database.containers.createIfNotExists(req, o());
        await ensureCompositeIndexes(container, resource, req);
        return [name, container] as const;
      }),
    );
    return { database, c: Object.fromEntries(entries) as Record<ContainerName, Container> };
  });
  return setup();
}
