import type { TokenCredential } from "@azure/identity";
import { azureCredential } from "../azure-auth";
import type { Config } from "../config";
import type { Model } from "./model";
import { offlineModel } from "./offline";
import { azureOpenAIModel, openAICompatibleModel } from "./openai";

/** Azure OpenAI when configured, else an OpenAI-compatible server, else the offline responder. */
export async function modelFromConfig(c: Config, credential: () => Promise<TokenCredential> = azureCredential): Promise<Model> {
  if (c.AZURE_OPENAI_ENDPOINT && c.AZURE_OPENAI_DEPLOYMENT_NAME) {
    return azureOpenAIModel({
      endpoint: c.AZURE_OPENAI_ENDPOINT,
      apiVersion: c.AZURE_OPENAI_API_VERSION,
      ...(c.AZURE_OPENAI_KEY ? { apiKey: c.AZURE_OPENAI_KEY } : { credential: await credential() }),
      deployment: c.AZURE_OPENAI_DEPLOYMENT_NAME,
      timeoutMs: c.MODEL_TIMEOUT_MS,
    });
  }
  if (c.OPENAI_BASE_URL && c.OPENAI_MODEL) {
    return openAICompatibleModel({
      baseURL: c.OPENAI_BASE_URL,
      apiKey: c.OPENAI_API_KEY,
      model: c.OPENAI_MODEL,
      timeoutMs: c.MODEL_TIMEOUT_MS,
    });
  }
  return offlineModel({ delayMs: c.OFFLINE_MODEL_DELAY_MS });
}
