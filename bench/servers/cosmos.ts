import { startCosmosServer } from "../../test/support/cosmos-server";
import { serveChild } from "../lib/proc";

// The Cosmos test server (the tests' in-memory look-alike, HTTPS on loopback) in a process of its
// own, so its request handling competes with neither the bench's clock readings nor a server under
// test. Several replicas need a shared store; each bench server picks its own database on it.

const cosmos = await startCosmosServer();

serveChild(
  { endpoint: cosmos.endpoint, key: cosmos.key, port: cosmos.port },
  {
    stop: () => cosmos.stop(),
  },
);
