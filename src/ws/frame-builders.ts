import type { StreamingMessage } from "../chat/history";
import type { BranchInfo } from "../chat/branches";
import type { ChatEvent, ToolCallEvent } from "../chat/events";
import type { Resumed } from "../chat/pipeline";
import type { SearchResults } from "../chat/search";
import type { UsageReport } from "../chat/usage-report";
import type { Settings } from "../chat/settings";
import type { DeviceInfo } from "../chat/devices";
import type { Chat, Folder, Message } from "../records";
import type { ListedChat } from "../chat/organise";
import type { PublicFeedback } from "../chat/feedback";
import type { ShareInfo } from "../chat/shares";
import type { ErrorCode } from "./errors";
import type { Outbound } from "./server-frames";

// The functions that build each server frame, type-checked against its schema in ./server-frames.

const catchUp = (r: {
  chatId: string;
  traceId: string;
  content: string;
  seq: number;
  toolCalls?: ToolCallEvent[];
}): Outbound<"MESSAGE"> => ({
  type: "MESSAGE",
  chatId: r.chatId,
  content: r.content,
  traceId: r.traceId,
  end: false,
  seq: r.seq,
  ...(r.toolCalls?.length ? { toolCalls: r.toolCalls } : {}),
});
/** A reply's stored status as an end frame's reason ("streaming" is no ending: none). */
const reasonOf = (status?: Message["status"]) =>
  status === "incomplete" ? ("error" as const) : status === "streaming" || !status ? undefined : status;
// A reply's lease (which process writes it, until when) is the server's business: never in a frame.
const publicMessage = <M extends Message>({ lease: _lease, ...m }: M): Omit<M, "lease"> => m;
const finished = (message: Message, seq?: number): Outbound<"MESSAGE"> => ({
  type: "MESSAGE",
  chatId: message.chat_id,
  content: "",
  traceId: message.id,
  end: true,
  ...(seq === undefined ? {} : { seq }),
  ...(reasonOf(message.status) ? { reason: reasonOf(message.status) } : {}),
  message: publicMessage(message),
});

export const frames = {
  chatList: (page: { items: ListedChat[]; cursor?: string }) => ({
    type: "CHAT_LIST",
    chats: page.items,
    ...(page.cursor ? { cursor: page.cursor } : {}),
  }),
  newChat: (chat: Chat | ListedChat) => ({ type: "NEW_CHAT", chat }),
  chatCreated: (chat: Chat) => ({ type: "CHAT_CREATED", chat }),
  chatUpdated: (chat: Chat | ListedChat) => ({ type: "CHAT_UPDATED", chat }),
  folders: (folders: Folder[], folder?: Folder) => ({ type: "FOLDERS", folders, ...(folder ? { folder } : {}) }),
  share: (share: ShareInfo) => ({ type: "SHARE", share: { ...share, url: `/s/${share.id}` } }),
  shares: (shares: ShareInfo[]) => ({ type: "SHARES", shares: shares.map((s) => ({ ...s, url: `/s/${s.id}` })) }),
  shareRevoked: (shareId: string) => ({ type: "SHARE_REVOKED", shareId }),
  feedback: (f: { chatId: string; messageId: string; feedback: PublicFeedback | null }) => ({
    type: "FEEDBACK",
    chatId: f.chatId,
    messageId: f.messageId,
    feedback: f.feedback,
  }),
  chatDeleted: (chatId: string) => ({ type: "CHAT_DELETED", chatId }),
  chatHistory: (h: { chatId: string; messages: (Message | StreamingMessage)[]; hasMore: boolean; cursor?: string }) => ({
    type: "CHAT_HISTORY",
    chatId: h.chatId,
    messages: h.messages.map(publicMessage),
    hasMore: h.hasMore,
    ...(h.cursor ? { cursor: h.cursor } : {}),
  }),
  firstMessage: (message: Message) => ({
    type: "FIRST_MESSAGE",
    chatId: message.chat_id,
    content: message.content,
    message: publicMessage(message),
  }),
  delta: (e: Extract<ChatEvent, { type: "reply_delta" }>) => ({
    type: "MESSAGE",
    chatId: e.chatId,
    content: e.content,
    traceId: e.traceId,
    end: false,
    seq: e.seq,
  }),
  /** A tool call's start (no `ok` yet) or end. The original web UI ignores both: it knows neither type. */
  toolCall: (e: Extract<ChatEvent, { type: "reply_tool" }>): Outbound<"TOOL_CALL_START"> | Outbound<"TOOL_CALL_END"> =>
    e.call.ok === undefined
      ? {
          type: "TOOL_CALL_START",
          chatId: e.chatId,
          traceId: e.traceId,
          seq: e.seq,
          call: { id: e.call.id, name: e.call.name, arguments: e.call.arguments },
        }
      : {
          type: "TOOL_CALL_END",
          chatId: e.chatId,
          traceId: e.traceId,
          seq: e.seq,
          call: { ...e.call, ok: e.call.ok, result: e.call.result ?? "", ms: e.call.ms ?? 0 },
        },
  // content "" on the last frame: the web UI appends whatever arrives.
  end: (e: Extract<ChatEvent, { type: "reply_end" }>) => ({
    type: "MESSAGE",
    chatId: e.chatId,
    content: "",
    traceId: e.traceId,
    end: true,
    seq: e.seq,
    ...(reasonOf(e.status) ? { reason: reasonOf(e.status) } : {}),
  }),
  /** RESUME's answer: the rest of a live reply so far, or the finished one. */
  resumed: (r: Resumed) => (r.live ? catchUp(r) : finished(r.message)),
  catchUp,
  finished,
  toolList: (t: Omit<Outbound<"TOOLS">, "type" | "requestId">): Outbound<"TOOLS"> => ({
    type: "TOOLS",
    tools: t.tools,
    servers: t.servers,
  }),
  generationStopped: (g: { chatId: string; traceId: string }) => ({ type: "GENERATION_STOPPED", chatId: g.chatId, traceId: g.traceId }),
  settings: (settings: Settings, defaults: { systemPrompt: string; model: string; deviceSystemPrompt?: string }) => ({
    type: "SETTINGS",
    settings,
    defaults,
  }),
  devices: (devices: DeviceInfo[]) => ({ type: "DEVICES", devices }),
  deviceUpdated: (device: DeviceInfo) => ({ type: "DEVICE_UPDATED", device }),
  deviceMessageSent: (r: {
    deviceId: string;
    chatId: string;
    messageId: string;
    expiresAt: string;
    queued: boolean;
    online?: boolean;
  }) => ({
    type: "DEVICE_MESSAGE_SENT",
    ...r,
  }),
  usage: (r: UsageReport): Outbound<"USAGE"> => ({ type: "USAGE", days: r.days, today: r.today }),
  messageAccepted: (chatId: string, r: { duplicate: boolean; message: Message; traceId?: string; queued?: boolean }) => ({
    type: "MESSAGE_ACCEPTED",
    chatId,
    messageId: r.message.id,
    ...(r.traceId ? { traceId: r.traceId } : {}),
    duplicate: r.duplicate,
    ...(r.duplicate ? {} : { queued: !!r.queued }),
  }),
  error: (code: ErrorCode, error: string, extra?: Record<string, unknown>): Outbound<"ERROR"> => ({ ...extra, type: "ERROR", error, code }),
  /** Live frames may have been missed (the shared bus was down): reload the chat list and the open chat. */
  resync: (reason: string) => ({ type: "RESYNC", reason }),
  searchResults: (r: SearchResults) => ({
    type: "SEARCH_RESULTS",
    query: r.query,
    hits: r.hits,
    ...(r.cursor ? { cursor: r.cursor } : {}),
    ...(r.hasMore ? { hasMore: true } : {}),
  }),
  /** REGENERATE's answer: which question is answered again, under which traceId; `queued` when other replies come first. */
  regenerating: (r: { chatId: string; questionId: string; traceId: string; queued: boolean }) => ({
    type: "REGENERATING",
    chatId: r.chatId,
    questionId: r.questionId,
    traceId: r.traceId,
    queued: r.queued,
  }),
  branches: (b: BranchInfo) => ({ type: "BRANCHES", chatId: b.chatId, messageId: b.messageId, siblings: b.siblings, current: b.current }),
  /** To the owner's other sockets watching the chat: its current branch changed; reload its history. */
  branchSelected: (chatId: string, messageId: string) => ({ type: "BRANCH_SELECTED", chatId, messageId }),
  /** WATCH / UNWATCH's answer: every chat the socket now watches, and which of them is its focus. */
  watching: (w: { chatIds: string[]; focus: string | null }) => ({ type: "WATCHING", chatIds: w.chatIds, focus: w.focus }),
} as const satisfies Record<string, (...args: never[]) => Outbound>;
