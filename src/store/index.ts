import type { TokenCredential } from "@azure/identity";
import { azureCredential } from "../azure-auth";
import type { Config } from "../config";
import { openSqliteStore } from "./sqlite";
import type { Store } from "./store";

/**
 * Cosmos DB when COSMOS_ENDPOINT is set, else the embedded SQLite file. `warn` hears what the store
 * could not fix on its own at open (a container's indexing policy it may not change).
 */
export async function storeFromConfig(
  c: Config,
  credential: () => Promise<TokenCredential> = azureCredential,
  warn?: (message: string) => void,
): Promise<Store> {
  if (!c.COSMOS_ENDPOINT) return openSqliteStore(c.SQLITE_PATH);
  const { openCosmosStore } = await import("./cosmos");
  return openCosmosStore({
    endpoint: c.COSMOS_ENDPOINT,
    ...(c.COSMOS_KEY ? { key: c.COSMOS_KEY } : { credential: await credential() }),
    database: c.COSMOS_DATABASE,
    containers: {
      chats: c.COSMOS_CONTAINER_CHATS,
      messages: c.COSMOS_CONTAINER_MESSAGES,
      users: c.COSMOS_CONTAINER_USERS,
      settings: c.COSMOS_CONTAINER_SETTINGS,
      processedMessages: c.COSMOS_CONTAINER_PROCESSED_MESSAGES,
      checkpoints: c.COSMOS_CONTAINER_CHECKPOINTS,
      usage: c.COSMOS_CONTAINER_USAGE,
    },
    allowSelfSignedCert: c.COSMOS_ALLOW_SELF_SIGNED_CERT,
    fullTextSearch: c.COSMOS_FULL_TEXT_SEARCH,
    ...(warn ? { warn } : {}),
  });
}
