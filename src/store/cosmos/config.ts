import type { TokenCredential } from "@azure/identity";

export type CosmosStoreConfig = {
  endpoint: string;
  /** With a key, key auth; without, `credential` (Azure identity) is required. */
  key?: string;
  credential?: TokenCredential;
  database: string;
  containers: {
    chats: string;
    messages: string;
    users: string;
    settings: string;
    processedMessages: string;
    checkpoints: string;
    /** Usage records, partitioned by user; "usage" when not named. */
    usage?: string;
    /** Folders, pins, placements and feedback, partitioned by owner; "organise" when not named. */
    organise?: string;
    /** Shared snapshots, partitioned by their id; "shares" when not named. */
    shares?: string;
  };
  /** For the official emulator and for tests: trust a self-signed HTTPS certificate. */
  allowSelfSignedCert: boolean;
  /** Per HTTP request; an unreachable server fails as StoreUnavailableError instead of hanging. */
  requestTimeoutMs?: number;
  /**
   * Full-text search on messages (src/store/cosmos/search.ts): "on" creates the messages container
   * with a full-text policy and index and queries with FullTextContainsAll/FullTextScore; "off" uses
   * the parameterised scan; "auto" (the default) probes once and uses full text where the account answers it.
   */
  fullTextSearch?: "auto" | "on" | "off";
  /** Chats one search scans at most, the most recently active (src/store/cosmos/search.ts); tests lower it. */
  searchMaxChats?: number;
  /** Told when an existing container's indexing policy could not be brought up to date (no secrets in the text). */
  warn?: (message: string) => void;
};

export type ContainerName = keyof CosmosStoreConfig["containers"];
