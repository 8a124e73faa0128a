import type { TokenCredential } from "@azure/identity";
import type { Config } from "./config";

/** How each Azure dependency authenticates; shown in /health (never the secret itself). */
export type AuthMode = "key" | "azure-identity" | "none";

export function authModes(c: Config): { store: AuthMode; model: AuthMode; iotHub: AuthMode } {
  const keyless = (endpoint: unknown, key: unknown): AuthMode => (!endpoint ? "none" : key ? "key" : "azure-identity");
  return {
    store: keyless(c.COSMOS_ENDPOINT, c.COSMOS_KEY),
    model: c.AZURE_OPENAI_ENDPOINT ? keyless(true, c.AZURE_OPENAI_KEY) : c.OPENAI_BASE_URL ? (c.OPENAI_API_KEY ? "key" : "none") : "none",
    iotHub: !c.IOT_HUB_ENABLE ? "none" : c.EVENT_HUB_COMPATIBLE_CONN_STR && c.IOT_HUB_CONNECTION_STRING ? "key" : "azure-identity",
  };
}

let shared: TokenCredential | undefined;

/**
 * DefaultAzureCredential, made once and only when some dependency has no key: managed identity
 * on Azure, `az login` on a laptop. Loaded lazily so keyed and local set-ups never touch it.
 */
export async function azureCredential(): Promise<TokenCredential> {
  if (!shared) {
    const { DefaultAzureCredential } = await import("@azure/identity");
    shared = new DefaultAzureCredential();
  }
  return shared;
}
