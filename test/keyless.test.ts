import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { AccessToken, GetTokenOptions, TokenCredential } from "@azure/identity";
import { loadConfig } from "../src/config";
import { modelFromConfig } from "../src/model";
import { storeFromConfig } from "../src/store";
import { startCosmosServer, type CosmosTestServer } from "./support/cosmos-server";
import { startTestServer } from "./support/harness";
import { startSseModel, type SseModel } from "./support/sse-model";

// Keyless Azure: the production code paths with a credential in place of a key. Entra ID itself
// cannot run here, so the credential is a stand-in that hands out a known token and records the
// scopes it was asked for; everything after it is the real SDK over a real socket.

function recordingCredential(token = "aad-token-for-tests"): TokenCredential & { scopes: string[] } {
  const scopes: string[] = [];
  return {
    scopes,
    async getToken(scope: string | string[], _o?: GetTokenOptions): Promise<AccessToken> {
      scopes.push(...[scope].flat());
      return { token, expiresOnTimestamp: Date.now() + 3_600_000 };
    },
  };
}

let model: SseModel;
let cosmos: CosmosTestServer;
beforeAll(async () => {
  model = await startSseModel({ tokens: ["keyless", " works"] });
  cosmos = await startCosmosServer();
});
afterAll(async () => {
  model.stop();
  await cosmos.stop();
});

describe("Azure OpenAI without a key", () => {
  test("each request carries a bearer token for the Cognitive Services scope, and no api-key", async () => {
    const credential = recordingCredential();
    const config = loadConfig({ AZURE_OPENAI_ENDPOINT: model.url, AZURE_OPENAI_DEPLOYMENT_NAME: "dep", OFFLINE_MODEL_DELAY_MS: "0" });
    const m = await modelFromConfig(config, async () => credential);
    let text = "";
    for await (const d of m.stream([{ role: "user", content: "hi" }], { signal: new AbortController().signal })) text += d;
    expect(text).toBe("keyless works");
    const req = model.requests.at(-1)!;
    expect(req.headers.authorization).toBe("Bearer aad-token-for-tests");
    expect(req.headers["api-key"]).toBeUndefined();
    expect(credential.scopes).toContain("https://cognitiveservices.azure.com/.default");
  });
});

describe("Cosmos DB without a key", () => {
  test("the store signs requests with the credential's token and works", async () => {
    const credential = recordingCredential();
    const config = loadConfig({
      COSMOS_ENDPOINT: cosmos.endpoint,
      COSMOS_DATABASE: `keyless-${crypto.randomUUID()}`,
      COSMOS_ALLOW_SELF_SIGNED_CERT: "true",
    });
    const store = await storeFromConfig(config, async () => credential);
    expect(store.kind).toBe("cosmos");
    await store.ping();
    expect(credential.scopes.length).toBeGreaterThan(0);
    expect(credential.scopes.every((s) => s.endsWith("/.default"))).toBe(true);
    await store.close();
  });
});

describe("/health", () => {
  test("says which auth each dependency uses, never the secret", async () => {
    const keyed = await startTestServer({
      AZURE_OPENAI_ENDPOINT: model.url,
      AZURE_OPENAI_DEPLOYMENT_NAME: "dep",
      AZURE_OPENAI_KEY: "super-secret-key-123",
    });
    const body: any = await (await fetch(`${keyed.url}/health`)).json();
    expect(body.services.model.auth).toBe("key");
    expect(body.services.store.auth).toBe("none");
    expect(JSON.stringify(body)).not.toContain("super-secret-key-123");
    await keyed.close();
  });
});
