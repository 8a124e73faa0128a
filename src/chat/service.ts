import { chatCommands } from "./chat-commands";
import { deviceChat } from "./device-chat";
import { deviceCommands, type DeviceSayer } from "./devices";
import { historyPages } from "./history";
import { knownChats } from "./known-chats";
import { replyCommands } from "./reply";
import { createReplies, type Generation, type JobSpec, type ReplyOutcome, type StopReason } from "./replies";
import { localLanes, modelCallLimit } from "./lanes";
import { createLiveReplies } from "./live";
import { replyLeases } from "./lease";
import { sendCommands, type SendRequest } from "./send";
import { getSettingsOf, updateSettingsOf, type SettingsPatch } from "./settings";
import type { ChatClient, ChatContext, ChatParts } from "./context";
import { titleChat } from "./title";
import { branchCommands } from "./branches";
import { SEARCH_MAX_LIMIT, SEARCH_PAGE_SIZE, searchCommands } from "./search";
import { transferCommands } from "./transfer";
import { withSettingsCache } from "./settings-cache";
import { recentMessages } from "./recent";
import { defaultDeviceOwner, deviceOwners, UNASSIGNED_OWNER } from "./device-owners";
import { budgeted } from "./usage";
import { perUser } from "./user-generations";
import { allowedModels, checkModelChoice, onlyAllowed } from "./model-choice";
import { ChatError } from "./errors";
import { organiseCommands, type ChatListQuery } from "./organise";
import { feedbackCommands, type Rating } from "./feedback";
import type { HistoryQuery } from "./history";
import type { SearchQuery } from "./search";

/**
 * The chat service: every use-case browsers and devices share, built once from its parts.
 * src/ws and src/devices are adapters over this object; nothing else reaches the store or model.
 */
export function createChatService(parts: ChatParts) {
  // The modules below need each other's functions; these late bindings tie the knot once.
  let run: (spec: JobSpec, g: Generation) => Promise<ReplyOutcome> = async () => ({});
  let stopElsewhere: (r: { chatId: string; traceId: string }) => Promise<boolean> = async () => false;
  const replies = createReplies({
    max: parts.options.maxGenerations,
    queueLimit: parts.options.queueLimit,
    run: (spec, g) => run(spec, g),
  });
  const live = createLiveReplies({
    bus: parts.bus,
    leaseMs: parts.options.replyLeaseMs,
    backfill: parts.backfill,
    onError: (e) => parts.log.warn("could not fill in a live reply", { error: e }),
  });
  const lanes = parts.sharedLanes ? parts.sharedLanes(replies) : localLanes(replies, modelCallLimit(parts.options.modelCallsPerMinute));
  const settingsCache = withSettingsCache(parts.store, parts.bus);
  const recent = recentMessages(parts.store, parts.bus, {
    perChat: parts.options.historyMaxMessages,
    maxChars: parts.options.historyCacheChars,
    ttlMs: parts.options.historyCacheTtlMs,
  });
  const leases = replyLeases({
    store: settingsCache.store,
    bus: parts.bus,
    live,
    log: parts.log,
    leaseMs: parts.options.replyLeaseMs,
    checkpointMs: parts.options.replyCheckpointMs,
    instanceId: parts.options.instanceId,
    backfill: parts.backfill,
  });
  // Every model call tagged with its user is metered: budget first, a usage record after (src/chat/usage.ts).
  const allowed = allowedModels(parts.model.name, parts.options.modelAllowed);
  const chosen = onlyAllowed(parts.model, allowed);
  const model = parts.usage ? parts.usage.meter(chosen) : chosen;
  const ctx: ChatContext = { ...parts, model, store: settingsCache.store, replies, lanes, live, recent, leases };
  let regeneratingQuestion: (traceId: string) => string | undefined = () => undefined;
  const known = knownChats(ctx.store);
  const chats = chatCommands(ctx, known, (r) => stopElsewhere(r));
  const { history } = historyPages(ctx, known, (t) => regeneratingQuestion(t));
  const branches = branchCommands(ctx, { requireChat: known.requireChat, markBranched: known.markBranched });
  regeneratingQuestion = branches.regeneratingQuestion;
  const reply = replyCommands(ctx, known.requireOwned);
  stopElsewhere = reply.stopElsewhere;
  const sending = sendCommands(ctx, {
    requireChat: known.requireChat,
    requireOwned: known.requireOwned,
    answer: reply.answer,
    titleLater: (owner, chat, exchange) => void titleChat(ctx, chats.renameChat, owner, chat, exchange),
    mayNeedTitle: known.mayNeedTitle,
    isBranched: known.isBranched,
    branches,
  });
  run = sending.run;
  // Pins, folders and ratings (src/chat/organise.ts, src/chat/feedback.ts).
  const organise = organiseCommands(ctx, known);
  const feedback = feedbackCommands({ ...ctx, onFeedback: parts.onFeedback }, known);
  const transfer = transferCommands(ctx, known.requireChat, feedback.ratingsIn);
  const search = searchCommands(ctx).search;
  // Requests from other replicas: stop a reply generated here; a chat deleted there stops ours.
  const deviceChatOf = deviceChat(ctx.store, chats.createChat);
  const unsubscribe = parts.bus.subscribe((e) => {
    if (e.type === "stop_request") replies.byTrace(e.traceId)?.controller.abort({ stop: "stopped" } satisfies StopReason);
    if (e.type === "chat_updated") known.noteName(e.chat);
    if (e.type === "chat_deleted") {
      known.forget(e.chatId);
      void replies.cancel(e.chatId);
    }
    // A chat branched anywhere is branched here too; after a gap in the bus, nothing remembered is trusted.
    if (e.type === "branch_selected") known.markBranched(e.chatId);
    if (e.type === "resync") known.forgetAll();
  });

  let sayer: DeviceSayer | undefined;
  const devices = deviceCommands({ store: ctx.store, bus: parts.bus, deviceChat: deviceChatOf, sayer: () => sayer });
  // A send takes one of its user's reply slots (MAX_GENERATIONS_PER_USER), then passes the budget check.
  const checked = parts.usage ? budgeted(parts.usage, parts.model.name, sending.send) : sending.send;
  const admitted = parts.userGenerations ? perUser(parts.userGenerations, (o: SendRequest) => o.owner, checked) : checked;

  return {
    /** GET_CHATS: pinned chats first, each with `pinned` and `folderId`; filtered to a folder or to pins when asked. */
    listChats: (owner: string, o: ChatListQuery) => organise.listChats(owner, o),
    createChat: chats.createChat,
    /** A history page; a reply the user rated carries its `feedback`. */
    async history(o: HistoryQuery, client: ChatClient) {
      const page = await history(o, client);
      if (!page.messages.some((m) => m.role === "assistant")) return page;
      const ratings = await feedback.ratingsIn(client.owner, o.chatId);
      if (ratings.size === 0) return page;
      return { ...page, messages: page.messages.map((m) => (ratings.has(m.id) ? { ...m, feedback: ratings.get(m.id) } : m)) };
    },
    /** The chat goes; then its pin, placement and ratings (a failure there leaves only records nothing shows). */
    async deleteChat(o: { owner: string; chatId: string; origin?: string }) {
      await chats.deleteChat(o);
      await organise.forget(o.owner, o.chatId).catch((e) => parts.log.warn("could not forget a deleted chat's marks", { error: e }));
    },
    pinChat: organise.pin,
    moveChat: organise.move,
    folders: organise.folders,
    createFolder: organise.createFolder,
    renameFolder: organise.renameFolder,
    deleteFolder: organise.deleteFolder,
    /** RATE_REPLY: thumbs up or down (null: none) on a reply, with an optional comment. */
    rateReply: (o: { owner: string; chatId: string; messageId: string; rating: Rating | null; comment?: string }) => feedback.rate(o),
    /** The owner's ratings in a chat, by message id (exports show them). */
    ratingsIn: feedback.ratingsIn,
    renameChat: chats.renameChat,
    deviceChat: deviceChatOf,
    /** GET_DEVICES, DEVICE_UPDATED, SEND_TO_DEVICE (src/chat/devices.ts); `connect` is called once IoT Hub's bridge runs. */
    devices: {
      list: devices.list,
      updated: devices.updated,
      say: devices.say,
      connect: (say: DeviceSayer) => void (sayer = say),
    },
    /** Whose a device's chats are: its assignment, else DEVICE_DEFAULT_OWNER; UNASSIGNED_OWNER means nobody's (not answered). */
    deviceOwner: deviceOwners(parts.store, defaultDeviceOwner(parts.store, parts.options.deviceDefaultOwner, parts.log), parts.log),
    unassignedOwner: UNASSIGNED_OWNER,
    requireChats: chats.requireChats,
    /** A chat and its messages as pages for a file (src/chat/transfer.ts), owner only. */
    exportChat: transfer.exportChat,
    /** A new chat for the owner from an exported file; announced like CREATE_CHAT, never answered by the model. */
    importChat: transfer.importChat,
    send: admitted,
    storeQuestion: sending.storeQuestion,
    /** REGENERATE: a new reply to a question, the earlier ones kept as other versions (src/chat/branches.ts). */
    async regenerate(o: { chatId: string; questionId?: string }, client: ChatClient) {
      // Watch first, as for a send: the reply may start streaming before this returns.
      await known.requireOwned(client.owner, o.chatId);
      // The user's share and budget, before anything is stored (as for a send).
      const slot = parts.userGenerations ? await parts.userGenerations(client.owner) : () => {};
      let budget = () => {};
      try {
        if (parts.usage) budget = await parts.usage.admitQuestion(client.owner, o.chatId, parts.model.name, "");
      } catch (e) {
        slot();
        throw e;
      }
      const release = () => (slot(), budget());
      const unwatch = client.watch(o.chatId);
      try {
        const r = await branches.regenerate({ ...o, owner: client.owner, origin: client.id });
        void r.reply?.finally(release);
        return r;
      } catch (e) {
        release();
        unwatch();
        throw e;
      }
    },
    /** GET_BRANCHES: a message and its siblings. */
    branches: branches.branches,
    /** SELECT_BRANCH: makes the branch through a message current, and answers with its newest history page. */
    async selectBranch(o: { chatId: string; messageId: string }, client: ChatClient) {
      await branches.select({ ...o, owner: client.owner, origin: client.id });
      return history({ chatId: o.chatId }, client);
    },
    stop: reply.stop,
    resume: reply.resume,
    /** GET_USAGE: the owner's tokens per day and model, and today's budget (src/chat/usage.ts). */
    usage: (owner: string, days: number) =>
      parts.usage
        ? parts.usage.report(owner, days)
        : Promise.reject(new ChatError("INVALID_ARGUMENT", "usage is not recorded on this server (USAGE_RECORDS=false)")),
    getSettings: (owner: string) => getSettingsOf(ctx.store, owner),
    updateSettings: (owner: string, patch: SettingsPatch) => (checkModelChoice(patch, allowed), updateSettingsOf(ctx.store, owner, patch)),
    /** Full-text search over the owner's chat names and messages (src/chat/search.ts). */
    search: (owner: string, o: SearchQuery & { folderId?: string }) =>
      o.folderId === undefined
        ? search(owner, o)
        : organise.searchIn(owner, o.folderId, { ...o, limit: Math.min(o.limit ?? SEARCH_PAGE_SIZE, SEARCH_MAX_LIMIT) }, (q) =>
            search(owner, q),
          ),
    /** Device messages are handled at least once, with one effect: a claim is a lease this process holds. */
    claims: {
      take: (messageId: string, leaseMs: number) => parts.store.claimMessage(messageId, parts.options.instanceId, leaseMs),
      renew: (messageId: string, leaseMs: number) => parts.store.renewClaim(messageId, parts.options.instanceId, leaseMs),
      complete: (messageId: string, ttlSeconds: number) => parts.store.completeClaim(messageId, parts.options.instanceId, ttlSeconds),
      /** Drops records past their TTL (Cosmos expires them itself; the SQLite table would only grow). */
      purge: () => parts.store.purgeProcessed(),
    },
    /**
     * Finalises replies whose process died (lease lapsed, or not heard on the bus for a lease) as
     * interrupted, and ends their streams for anyone watching. Run at start-up and then every half lease.
     */
    sweepOrphans: leases.sweep,
    /** The server's defaults, shown beside a user's settings. */
    defaults: {
      systemPrompt: parts.options.systemPrompt,
      model: parts.model.name,
      ...(parts.options.deviceSystemPrompt ? { deviceSystemPrompt: parts.options.deviceSystemPrompt } : {}),
    },
    /** Replies in flight, for graceful shutdown and tests. */
    replies,
    live,
    bus: parts.bus,
    close() {
      unsubscribe();
      feedback.close();
      settingsCache.stop();
      recent.stop();
      live.close();
      leases.stop();
      devices.close();
    },
  };
}
export type ChatService = ReturnType<typeof createChatService>;
