import type { Model } from "../model/model";
import { preconnect } from "../model/warm-up";
import { tokenizerFor } from "./tokenizer";

/**
 * What the first send would otherwise load or compile on first use, done at start-up: the
 * tokenizer of the server's model (its table is 1-2 MB of JS, about a second to load on one core)
 * and a connection to the model's host (src/model/warm-up.ts). Then src/warm-up.ts runs whole sends
 * (the model client's request path included) through a throwaway server. A user whose settings name a
 * model of another family loads that tokenizer on their first send.
 */
export async function warmUp(model: Pick<Model, "name" | "kind">, modelUrl?: string): Promise<void> {
  if (modelUrl && model.kind !== "offline") preconnect(modelUrl);
  const tokenizer = await tokenizerFor(model.name);
  tokenizer.count("Warming up: what will the weather be like tomorrow?");
}
