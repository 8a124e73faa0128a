import { branchCommands, branchPath } from "./branches";
import { chatCommands } from "./chat-commands";
import type { ChatClient, ChatContext, ChatParts } from "./context";
import { deviceChat } from "./device-chat";
import { defaultDeviceOwner, deviceOwners, UNASSIGNED_OWNER } from "./device-owners";
import { deviceCommands, type DeviceSayer } from "./devices";
import { ChatError } from "./errors";
import { feedbackCommands, type Rating } from "./feedback";
import { historyPages, type HistoryQuery } from "./history";
import { knownChats } from "./known-chats";
import { allowedModels, checkModelChoice, onlyAllowed } from "./model-choice";
import { organiseCommands, type ChatListQuery } from "./organise";
import { replyRuntime } from "./pipeline";
import { sendCommands, type SendRequest } from "./pipeline/admit";
import { promptBuilder } from "./pipeline/prompt";
import { questionStore } from "./pipeline/question";
import type { StopReason } from "./pipeline/replies";
import { recentMessages } from "./recent";
import { shareCommands } from "./shares";
import { temporaryChats } from "./temporary";
import { SEARCH_MAX_LIMIT, SEARCH_PAGE_SIZE, searchCommands, type SearchQuery } from "./search";
import { getSettingsOf, updateSettingsOf, type SettingsPatch } from "./settings";
import { withSettingsCache } from "./settings-cache";
import { titleChat } from "./title";
import { transferCommands } from "./transfer";
import { budgeted } from "./usage";
import { perUser } from "./user-generations";

/**
 * The chat service: every use-case browsers and devices share, built once from its parts.
 * src/ws and src/devices are adapters over this object; nothing else reaches the store or model.
 */
export function createChatService(parts: ChatParts) {
  // Built in dependency order, each part once: no part needs one built after it.
  const settingsCache = withSettingsCache(parts.store, parts.bus);
  const store = settingsCache.store;
  const recent = recentMessages(parts.store, parts.bus, {
    perChat: parts.options.historyMaxMessages,
    maxChars: parts.options.historyCacheChars,
    ttlMs: parts.options.historyCacheTtlMs,
  });
  // Every model call tagged with its user is metered: budget first, a usage record after (src/chat/usage.ts).
  const allowed = allowedModels(parts.model.name, parts.options.modelAllowed);
  const chosen = onlyAllowed(parts.model, allowed);
  const model = parts.usage ? parts.usage.meter(chosen) : chosen;
  const known = knownChats(store);
  // A reply's life (src/chat/pipeline/): lanes, generation, mirrors, leases.
  const runtime = replyRuntime(
    { ...parts, store, model },
    {
      prompt: promptBuilder({ store, recent, options: parts.options, modelName: model.name, pathFor: (q) => branchPath(store, q) }),
      requireOwned: known.requireOwned,
    },
  );
  const { replies, lanes, live, leases } = runtime;
  const ctx: ChatContext = { ...parts, model, store, replies, lanes, live, recent, leases };
  const branches = branchCommands(ctx, { requireChat: known.requireChat, markBranched: known.markBranched });
  const { history } = historyPages(ctx, known, branches.regeneratingQuestion);
  const chats = chatCommands(ctx, known, runtime.stopElsewhere);
  const storeQuestion = questionStore({ store, bus: parts.bus, log: parts.log, isBranched: known.isBranched, branches });
  const sending = sendCommands(ctx, {
    requireOwned: known.requireOwned,
    titleLater: (owner, chat, exchange) => void titleChat(ctx, chats.renameChat, known.noTitleWanted, owner, chat, exchange),
    mayNeedTitle: known.mayNeedTitle,
    storeQuestion,
    branches,
  });
  // Pins, folders and ratings (src/chat/organise.ts, src/chat/feedback.ts).
  const organise = organiseCommands(ctx, known);
  const feedback = feedbackCommands({ ...ctx, onFeedback: parts.onFeedback }, known);
  /** A chat made here holds no ratings yet: its history pages read none (a rating anywhere drops that). */
  const createChat: typeof chats.createChat = async (o) => {
    const chat = await chats.createChat(o);
    feedback.noteUnrated(o.owner, chat.id);
    return chat;
  };
  const transfer = transferCommands(ctx, known.requireChat, feedback.ratingsIn);
  const search = searchCommands(ctx).search;
  const shares = shareCommands(ctx, known, { allowPublic: parts.options.allowPublicShares ?? false });
  /** The chat goes; then its pin, placement, ratings and links (a failure there leaves only records nothing shows). */
  async function deleteChat(o: { owner: string; chatId: string; origin?: string }) {
    await chats.deleteChat(o);
    await Promise.all([organise.forget(o.owner, o.chatId), shares.forgetChat(o.owner, o.chatId)]).catch((e) =>
      parts.log.warn("could not forget a deleted chat's marks and links (its links end anyway: views check the chat)", { error: e }),
    );
  }
  // Temporary chats (src/chat/temporary.ts): renewed while their owner is connected, swept when due.
  const temporary = temporaryChats(
    {
      store,
      bus: parts.bus,
      createChat,
      requireChat: known.requireChat,
      deleteChat,
      onError: (what, e) => parts.log.warn(what, { error: e }),
    },
    { ttlS: parts.options.temporaryChatTtlS ?? 3600 },
  );
  // Requests from other replicas: stop a reply generated here; a chat deleted there stops ours.
  const deviceChatOf = deviceChat(ctx.store, createChat);
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
  // A regeneration the same way (its estimate: the reply's, no new question text); it watches the chat
  // first, as a send does, since the reply may start streaming before this returns.
  type Regeneration = { owner: string; chatId: string; questionId?: string; content: ""; client: ChatClient };
  const regenerating = async (o: Regeneration) => {
    const unwatch = o.client.watch(o.chatId);
    try {
      return await branches.regenerate({ chatId: o.chatId, questionId: o.questionId, owner: o.owner, origin: o.client.id });
    } catch (e) {
      unwatch();
      throw e;
    }
  };
  const regenChecked = parts.usage ? budgeted(parts.usage, parts.model.name, regenerating) : regenerating;
  const regenerate = parts.userGenerations ? perUser(parts.userGenerations, (o: Regeneration) => o.owner, regenChecked) : regenChecked;

  return {
    /** GET_CHATS: pinned chats first, each with `pinned` and `folderId`; filtered to a folder or to pins when asked. */
    listChats: (owner: string, o: ChatListQuery) => organise.listChats(owner, o),
    createChat,
    /** A history page; a reply the user rated carries its `feedback`. */
    async history(o: HistoryQuery, client: ChatClient) {
      const page = await history(o, client);
      if (!page.messages.some((m) => m.role === "assistant")) return page;
      const ratings = await feedback.ratingsIn(client.owner, o.chatId);
      if (ratings.size === 0) return page;
      return { ...page, messages: page.messages.map((m) => (ratings.has(m.id) ? { ...m, feedback: ratings.get(m.id) } : m)) };
    },
    deleteChat,
    /** CREATE_CHAT {temporary: true}: gone when its owner's last socket closes or after TEMPORARY_CHAT_TTL_S. */
    createTemporaryChat: temporary.create,
    /** KEEP_CHAT: a temporary chat becomes a normal one. */
    keepChat: async (o: { owner: string; chatId: string; origin?: string }) => organise.asListed(o.owner, await temporary.keep(o)),
    /** Whether a chat is temporary, as this replica knows it: list frames about it go to nobody (the original web UI never sees one). */
    isTemporary: temporary.isTemporary,
    /** server.ts: who is connected here, for temporary chats' leases. */
    attachPresence: temporary.attach,
    pinChat: organise.pin,
    moveChat: organise.move,
    folders: organise.folders,
    createFolder: organise.createFolder,
    renameFolder: organise.renameFolder,
    deleteFolder: organise.deleteFolder,
    /** RATE_REPLY: thumbs up or down (null: none) on a reply, with an optional comment. */
    rateReply: (o: { owner: string; chatId: string; messageId: string; rating: Rating | null; comment?: string }) => feedback.rate(o),
    /** SHARE_CHAT, GET_SHARES, REVOKE_SHARE, and what /s/<id> shows (src/chat/shares.ts). */
    shareChat: async (o: Parameters<typeof shares.share>[0]) => {
      await temporary.refuseIfTemporary(o.owner, o.chatId, "shared");
      return shares.share(o);
    },
    shares: shares.list,
    revokeShare: shares.revoke,
    viewShare: shares.view,
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
    exportChat: async (owner: string, chatId: string) => {
      await temporary.refuseIfTemporary(owner, chatId, "exported");
      return transfer.exportChat(owner, chatId);
    },
    /** A new chat for the owner from an exported file; announced like CREATE_CHAT, never answered by the model. */
    importChat: transfer.importChat,
    send: admitted,
    storeQuestion,
    /** REGENERATE: a new reply to a question, the earlier ones kept as other versions (src/chat/branches.ts). */
    async regenerate(o: { chatId: string; questionId?: string }, client: ChatClient) {
      await known.requireOwned(client.owner, o.chatId);
      return regenerate({ ...o, owner: client.owner, content: "", client });
    },
    /** GET_BRANCHES: a message and its siblings. */
    branches: branches.branches,
    /** SELECT_BRANCH: makes the branch through a message current, and answers with its newest history page. */
    async selectBranch(o: { chatId: string; messageId: string }, client: ChatClient) {
      await branches.select({ ...o, owner: client.owner, origin: client.id });
      return history({ chatId: o.chatId }, client);
    },
    stop: runtime.stop,
    resume: runtime.resume,
    /** GET_USAGE: the owner's tokens per day and model, and today's budget (src/chat/usage.ts). */
    usage: (owner: string, days: number) =>
      parts.usage
        ? parts.usage.report(owner, days)
        : Promise.reject(new ChatError("INVALID_ARGUMENT", "usage is not recorded on this server (USAGE_RECORDS=false)")),
    getSettings: (owner: string) => getSettingsOf(ctx.store, owner),
    /** The tools a user's replies may call, with what they turned off (GET_TOOLS). */
    async listTools(owner: string) {
      if (!parts.tools) return { tools: [], servers: [] };
      const settings = await getSettingsOf(ctx.store, owner);
      return parts.tools.toolbox.catalogue({ toolsOff: settings.toolsOff });
    },
    updateSettings: (owner: string, patch: SettingsPatch) => (checkModelChoice(patch, allowed), updateSettingsOf(ctx.store, owner, patch)),
    /** Full-text search over the owner's chat names and messages (src/chat/search.ts). */
    search: async (owner: string, o: SearchQuery & { folderId?: string }) =>
      organise.withoutTemporary(
        owner,
        o.folderId === undefined
          ? await search(owner, o)
          : await organise.searchIn(owner, o.folderId, { ...o, limit: Math.min(o.limit ?? SEARCH_PAGE_SIZE, SEARCH_MAX_LIMIT) }, (q) =>
              search(owner, q),
            ),
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
      organise.close();
      temporary.close();
      settingsCache.stop();
      recent.stop();
      runtime.close();
      devices.close();
    },
  };
}
export type ChatService = ReturnType<typeof createChatService>;
