import type { Config } from "../config";
import type { Logger } from "../log";
import type { Model } from "../model/model";
import type { Feedback } from "../records";
import type { Store } from "../store/store";
import type { ToolParts } from "./tool-rounds";
import type { Bus } from "./events";
import type { Lanes } from "./pipeline/lanes";
import type { ReplyLeases } from "./lease";
import type { LiveReplies } from "./live";
import type { ContextBudget } from "./pipeline/window";
import type { RecentMessages } from "./recent";
import type { Replies } from "./pipeline/replies";
import type { Usage } from "./usage";
import type { UserGenerations } from "./user-generations";

export type ChatOptions = {
  systemPrompt: string;
  /** DEVICE_SYSTEM_PROMPT: for questions from voice devices (unset: systemPrompt). */
  deviceSystemPrompt?: string;
  /** The model's context window and the share kept for the reply, in tokens (src/chat/pipeline/window.ts). */
  context: ContextBudget;
  /** Longest silence from the model, mid-stream, before the reply is cut off as timed out. */
  modelIdleTimeoutMs: number;
  /** Upper bound on messages returned by one history request. */
  historyMaxMessages: number;
  /** Upper bound on the JSON bytes of one history page's messages (src/chat/page-budget.ts); unset: none. */
  historyPageMaxBytes?: number;
  /** Name a chat from its first exchange. */
  autoTitle: boolean;
  /** Chats this process answers at once (a reply running or questions waiting). */
  maxGenerations: number;
  /** Questions that may wait behind a running reply in one chat. */
  queueLimit: number;
  /** How often a streaming reply's text is checkpointed to the store. */
  replyCheckpointMs: number;
  /** How long a checkpoint's lease holds without renewal before the reply counts as orphaned. */
  replyLeaseMs: number;
  /** This process, as the owner of the leases it takes (reply checkpoints, device claims). */
  instanceId: string;
  /** Questions let in per minute, service-wide (0: no limit). */
  modelCallsPerMinute: number;
  /** Characters of message content kept in memory for chats' newest messages (HISTORY_CACHE_MB); 0: none. */
  historyCacheChars: number;
  /** How long a chat's cached newest messages are trusted without news from the bus. */
  historyCacheTtlMs: number;
  /** DEVICE_DEFAULT_OWNER: who owns the chats of devices nobody was assigned to ("default", "none" or a user name). */
  deviceDefaultOwner: string;
  /** MODEL_ALLOWED: the models a user may pick in their settings; empty or unset: the configured one only. */
  modelAllowed?: readonly string[];
  /** ALLOW_PUBLIC_SHARES: an owner may make a shared link readable without signing in (src/chat/shares.ts). */
  allowPublicShares?: boolean;
  /** TEMPORARY_CHAT_TTL_S: the longest a temporary chat lives (src/chat/temporary.ts). */
  temporaryChatTtlS?: number;
};

/** What the chat service is built from, once, in server.ts (tests pass real local peers). */
export type ChatParts = {
  store: Store;
  model: Model;
  bus: Bus;
  log: Logger;
  options: ChatOptions;
  /** Lanes shared between replicas (Redis); without it, this process's own. */
  sharedLanes?: (local: Replies) => Lanes;
  /** Tools the model may call in replies (absent: none offered). */
  tools?: ToolParts;
  /** The text so far of a reply streaming on another replica (the Redis stream that mirrors it). */
  backfill?: (chatId: string, traceId: string) => Promise<string[]>;
  /** Usage records and budgets (src/chat/usage.ts); without it, model calls are not metered. */
  usage?: Usage;
  /** MAX_GENERATIONS_PER_USER (src/chat/user-generations.ts); without it, no per-user share. */
  userGenerations?: UserGenerations;
  /** Told of each new or changed rating (src/chat/feedback.ts): /metrics counts them by model. */
  onFeedback?: (f: Feedback) => void;
};

/** What the modules inside src/chat close over. */
export type ChatContext = Omit<ChatParts, "sharedLanes"> & {
  /** Replies this process generates. */
  replies: Replies;
  /** Who answers which chat's questions, and in what order. */
  lanes: Lanes;
  /** Replies streaming anywhere (this replica's and, through the bus, the others'), with their text so far. */
  live: LiveReplies;
  /** Whether a reply's process is alive, and what becomes of one that died (src/chat/lease.ts). */
  leases: ReplyLeases;
  /** Each chat's newest messages, kept exact through the bus (src/chat/recent.ts). */
  recent: RecentMessages;
};

/**
 * The connection a command came from, as the chat service sees it: an id (so the sender can be
 * answered differently from other watchers), the user it signed in as (the owner of what it
 * touches) and a way to start watching a chat's live frames.
 * `watch` returns an undo, which does nothing if the client was already watching.
 */
export type ChatClient = { id: string; owner: string; watch(chatId: string): () => void };

/** The chat layer's options from the environment; `shared`: several replicas through Redis. */
export function chatOptionsOf(c: Config, o: { instanceId: string; shared: boolean }): ChatOptions {
  return {
    systemPrompt: c.SYSTEM_PROMPT,
    deviceSystemPrompt: c.DEVICE_SYSTEM_PROMPT,
    context: { contextTokens: c.MODEL_CONTEXT_TOKENS, replyReserveTokens: c.MODEL_REPLY_RESERVE_TOKENS },
    modelIdleTimeoutMs: c.MODEL_TIMEOUT_MS,
    historyMaxMessages: c.HISTORY_MAX_MESSAGES,
    historyPageMaxBytes: c.HISTORY_PAGE_MAX_BYTES,
    autoTitle: c.CHAT_TITLES,
    maxGenerations: c.MAX_GENERATIONS,
    queueLimit: c.CHAT_QUEUE_LIMIT,
    replyCheckpointMs: c.REPLY_CHECKPOINT_MS,
    replyLeaseMs: c.REPLY_LEASE_MS,
    instanceId: o.instanceId,
    modelCallsPerMinute: c.MODEL_CALLS_PER_MINUTE,
    deviceDefaultOwner: c.DEVICE_DEFAULT_OWNER,
    modelAllowed: c.MODEL_ALLOWED,
    allowPublicShares: c.ALLOW_PUBLIC_SHARES,
    temporaryChatTtlS: c.TEMPORARY_CHAT_TTL_S,
    // Characters, two bytes each in memory (JS strings); with several replicas, trusted for less time
    // without news from the bus (src/chat/recent.ts).
    historyCacheChars: c.HISTORY_CACHE_MB * 500_000,
    historyCacheTtlMs: o.shared ? 5_000 : 60_000,
  };
}
