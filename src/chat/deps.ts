import type { Logger } from "../log";
import type { Model } from "../model/model";
import type { Store } from "../store/store";
import type { Bus } from "./events";
import type { Inflight } from "./inflight";

/** What the chat use-cases need, passed in so tests can build them with real local peers. */
export type ChatDeps = {
  store: Store;
  model: Model;
  bus: Bus;
  inflight: Inflight;
  log: Logger;
  options: {
    systemPrompt: string;
    /** Characters of history sent with each model request. */
    historyChars: number;
    /** Longest silence from the model, mid-stream, before the reply is cut off as timed out. */
    modelIdleTimeoutMs: number;
    /** Upper bound on messages returned by one history request. */
    historyMaxMessages: number;
    /** Name a chat from its first exchange. */
    autoTitle: boolean;
  };
};
