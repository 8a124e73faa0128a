import { silentLogger } from "../log";
import type { Model } from "../model/model";
import { openAICompatibleModel } from "../model/openai";
import { cannedModelServer, preconnect, warmModelClient } from "../model/warm-up";
import { openSqliteStore } from "../store/sqlite";
import type { ChatOptions } from "./context";
import { localBus } from "./events";
import { createChatService } from "./service";
import { tokenizerFor } from "./tokenizer";
import { createUsage } from "./usage";

/**
 * What the first send would otherwise load or compile on first use, done at start-up: the
 * tokenizer of the server's model (its table is 1-2 MB of JS, about a second to load on one core),
 * the model client's request path and a connection to the model's host (src/model/warm-up.ts),
 * then one whole send (`warmSend`). A user whose settings name a model of another family loads
 * that tokenizer on their first send.
 */
export async function warmUp(model: Pick<Model, "name" | "kind">, modelUrl?: string, options?: ChatOptions): Promise<void> {
  if (modelUrl && model.kind !== "offline") preconnect(modelUrl);
  const tokenizer = await tokenizerFor(model.name);
  tokenizer.count("Warming up: what will the weather be like tomorrow?");
  if (model.kind !== "offline") await warmModelClient();
  if (options) await warmSend(model.name, options);
}

/**
 * One send through the real chat service (admission, the question stored, the lane, the prompt
 * fitted to the window, the metered model call, the deltas on the bus, the reply and its usage
 * record stored) on a throwaway stack: a private in-memory SQLite store, a bus nobody else hears,
 * the openai client against `cannedModelServer`. Nothing is stored where the server stores and
 * nothing reaches the model; the code a send runs is compiled before a user's send runs it (a
 * fresh process's first send took 8-10 ms to its first chunk against 2 ms for the next).
 */
export async function warmSend(modelName: string, options: ChatOptions): Promise<void> {
  const server = cannedModelServer(["Warm", "ing", " up", "."]);
  const store = openSqliteStore(":memory:");
  const bus = localBus();
  const model = openAICompatibleModel({ baseURL: `http://127.0.0.1:${server.port}/v1`, model: modelName, timeoutMs: 10_000 });
  const usage = createUsage({
    store,
    log: silentLogger,
    options: { enabled: true, tokensPerDay: null, replyReserveTokens: options.context.replyReserveTokens },
  });
  const chat = createChatService({
    store,
    model,
    bus,
    usage,
    log: silentLogger,
    // No title request, and nothing left running after: one chat, one reply, then closed.
    options: { ...options, autoTitle: false, instanceId: "warm-up" },
  });
  try {
    const owner = "warm-up";
    const { id: chatId } = await chat.createChat({ owner, name: "warm-up", announce: false });
    for (let i = 0; i < 2; i++) {
      const sent = await chat.send({ owner, chatId, content: `Warming up ${i}: what will the weather be like tomorrow?` });
      await sent.reply;
    }
    await usage.drained();
  } finally {
    chat.close();
    await store.close();
    server.stop(true);
  }
}
