import type { Server } from "node:https";
import type { AddressInfo, Socket } from "node:net";
import { createHttpsServer } from "@vercel/cosmosdb-server";
import type { CosmosStoreConfig } from "../../src/store/cosmos";

// An in-process Cosmos DB look-alike on loopback, over HTTPS with the package's self-signed
// certificate. stop()/start() simulate the database going away and coming back on the same port.

export type CosmosTestServer = {
  endpoint: string;
  /** The emulator's well-known key: the test server accepts any key, the SDK needs one that decodes. */
  key: string;
  port: number;
  stop(): Promise<void>;
  start(): Promise<void>;
};

const EMULATOR_KEY = "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XqBNQ==";

const listen = (server: Server, port: number) =>
  new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => {
      server.off("error", reject);
      resolve();
    });
  });

export async function startCosmosServer(): Promise<CosmosTestServer> {
  const server = createHttpsServer();
  const sockets = new Set<Socket>();
  server.on("connection", (socket: Socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
  });

  await listen(server, 0);
  const { port } = server.address() as AddressInfo;
  // The library builds its in-memory account (all the data) on every "listening" event. Dropping
  // its listener after the first one keeps the data across stop()/start(), like a real restart.
  for (const l of server.listeners("listening")) server.off("listening", l as () => void);

  let running = true;
  return {
    endpoint: `https://127.0.0.1:${port}/`,
    key: EMULATOR_KEY,
    port,
    async stop() {
      if (!running) return;
      running = false;
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const s of sockets) s.destroy();
      sockets.clear();
      server.closeAllConnections?.();
      await closed;
    },
    async start() {
      if (running) return;
      await listen(server, port);
      running = true;
    },
  };
}

/** The default container names (COSMOS_CONTAINER_* unset). */
export const COSMOS_TEST_CONTAINERS = {
  chats: "chats",
  messages: "messages",
  users: "users",
  settings: "settings",
  processedMessages: "processed_messages",
  checkpoints: "checkpoints",
};

/** Our Cosmos store on the test server, in a fresh database named `<prefix>-<uuid>`. */
export function openTestCosmosStore(
  server: CosmosTestServer,
  prefix: string,
  o: { requestTimeoutMs?: number; searchMaxChats?: number } = {},
) {
  return openCosmosStoreAt(server, `${prefix}-${crypto.randomUUID()}`, o);
}

/** Our Cosmos store on the test server, in `database` (one a test's servers write, or a new one), with the default containers. */
export async function openCosmosStoreAt(
  server: CosmosTestServer,
  database: string,
  o: Partial<Omit<CosmosStoreConfig, "endpoint" | "key" | "database">> = {},
) {
  const { openCosmosStore } = await import("../../src/store/cosmos");
  return openCosmosStore({
    endpoint: server.endpoint,
    key: server.key,
    database,
    containers: COSMOS_TEST_CONTAINERS,
    allowSelfSignedCert: true,
    ...o,
  });
}
