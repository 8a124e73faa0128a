import { Agent } from "node:https";
import { CosmosClient } from "@azure/cosmos";
import type { Store } from "../store";
import { chatOps } from "./chats";
import { checkpointOps } from "./checkpoints";
import { claimOps } from "./claims";
import type { CosmosStoreConfig } from "./config";
import { setupContainers } from "./containers";
import { guard } from "./failures";
import { messageOps } from "./messages";
import type { Cosmos } from "./requests";
import { searchOps } from "./search";
import { settingsOps } from "./settings";
import { organiseOps } from "./organise";
import { usageOps } from "./usage";
import { userOps } from "./users";

// Azure Cosmos DB behind the Store contract. docs/storage.md explains the partition keys; in
// short, every hot-path call names its partition key so it never fans out across partitions.

export type { CosmosStoreConfig } from "./config";

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

  const { database, c } = await setupContainers(client, config, o).catch((e: unknown) => {
    client.dispose();
    throw e;
  });
  const k: Cosmos = { c, o };
  const chats = chatOps(k);

  const store: Store = {
    kind: "cosmos",
    ping: async () => void (await database.read(o())),
    close: async () => client.dispose(),
    ...chats,
    ...messageOps(k, chats.touchChat),
    ...claimOps(k),
    ...checkpointOps(k),
    ...settingsOps(k),
    ...userOps(k),
    ...usageOps(k),
    ...organiseOps(k),
    ...searchOps(k, config.fullTextSearch ?? "auto", config.searchMaxChats),
  };

  // One error mapping for every operation that talks to the server.
  const guarded = Object.fromEntries(
    Object.entries(store).map(([k, v]) => [
      k,
      typeof v === "function" && k !== "close" ? guard(v as (...a: unknown[]) => Promise<unknown>) : v,
    ]),
  );
  return guarded as Store;
}
