import type { Model } from "../../model/model";
import type { ChatParts } from "../context";
import { localLanes, modelCallLimit } from "./lanes";
import { replyLeases } from "../lease";
import { createLiveReplies } from "../live";
import { createReplies, type JobSpec } from "./replies";
import type { Store } from "../../store/store";
import { replyControl } from "./control";
import { replyGenerator, type PromptInput } from "./generate";

export type { SendRequest, SendResult } from "./admit";
export type { Resumed } from "./control";
export type { PromptInput, ReplyResult } from "./generate";

/**
 * A reply's life, built once: this process's lanes (src/chat/pipeline/replies.ts) run each job through the
 * generator (prompt, model, checkpoints under the lease, end), every replica's replies are mirrored
 * (src/chat/live.ts), and orphans are finalised (src/chat/lease.ts). Built in dependency order, so
 * nothing is bound late: the prompt builder comes in from outside (it reads history and settings).
 * Questions enter through src/chat/pipeline/admit.ts, which takes a place in `lanes`.
 */
export function replyRuntime(
  /** `model` and `store` as the service wraps them (metered, settings cached). */
  parts: ChatParts & { store: Store; model: Model },
  o: {
    prompt(spec: JobSpec): Promise<PromptInput>;
    requireOwned(owner: string, chatId: string): Promise<void>;
  },
) {
  const { options, bus, log, store } = parts;
  const live = createLiveReplies({
    bus,
    leaseMs: options.replyLeaseMs,
    backfill: parts.backfill,
    onError: (e) => log.warn("could not fill in a live reply", { error: e }),
  });
  const leases = replyLeases({
    store,
    bus,
    live,
    log,
    leaseMs: options.replyLeaseMs,
    checkpointMs: options.replyCheckpointMs,
    instanceId: options.instanceId,
    backfill: parts.backfill,
  });
  const generate = replyGenerator({
    store,
    bus,
    log,
    model: parts.model,
    options,
    tools: parts.tools,
    live,
    leases,
    // The lanes are built from the replies this generator runs in: looked up when a tool round asks.
    admitModelCall: async () => lanes.admitModelCall?.(),
    prompt: o.prompt,
  });
  const replies = createReplies({ max: options.maxGenerations, queueLimit: options.queueLimit, run: generate });
  const lanes = parts.sharedLanes ? parts.sharedLanes(replies) : localLanes(replies, modelCallLimit(options.modelCallsPerMinute));
  const control = replyControl({ replies, live, bus, store, requireOwned: o.requireOwned });
  return {
    replies,
    lanes,
    live,
    leases,
    ...control,
    close() {
      live.close();
      leases.stop();
    },
  };
}
