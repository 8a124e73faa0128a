import type { Turn } from "../model/model";
import type { Chat, Message } from "../records";
import { nowIso } from "./clock";
import type { ChatClient, ChatContext } from "./context";
import { chatNotFound } from "./errors";
import { cutShort } from "./lease";
import { buildPrompt, checkQuestionFits, tokenizerFor } from "./prompt";
import type { ReplyJob, ReplyResult } from "./reply";
import type { Generation, JobSpec, Ticket } from "./replies";
import { getSettingsOf } from "./settings";
import type { BranchCommands } from "./branches";

export type SendResult =
  /** Already answered, or being answered: `reply` is the answer (stored, or settling here). */
  | { duplicate: true; message: Message; reply?: Promise<ReplyResult> }
  /** `queued`: other replies in the chat come first; the question is stored either way. */
  | { duplicate: false; message: Message; traceId: string; queued: boolean; reply: Promise<ReplyResult> };

export type SendRequest = {
  /** The user asking: the chat must be theirs, and their settings shape the reply. */
  owner: string;
  chatId: string;
  content: string;
  messageId?: string;
  deviceId?: string;
  /** Context to send instead of the stored history (a device's own conversation). */
  context?: Turn[];
  /**
   * A stored reply that a crash cut short (interrupted, or still marked streaming with its lease
   * lapsed) does not count as an answer: answer again. Devices use it; a voice user cannot read
   * half a reply.
   */
  retryCutShort?: boolean;
  /** EDIT_MESSAGE: the question this one is an edit of. It goes beside it, as a new branch that becomes current. */
  editOf?: string;
};

type Needs = {
  requireOwned(owner: string, chatId: string): Promise<void>;
  requireChat(owner: string, chatId: string): Promise<Chat>;
  answer(job: ReplyJob): (g: Generation) => Promise<ReplyResult>;
  /** False for a chat known to be named already (no record read to find out). */
  mayNeedTitle(chatId: string): boolean;
  /** Called with the first exchange of a chat that may want a title. */
  titleLater(owner: string, chat: Chat, exchange: [Message, Message]): void;
  /** From memory for a chat this process knows (the hot path reads nothing more). */
  isBranched(owner: string, chatId: string): Promise<boolean>;
  branches: Pick<BranchCommands, "editParent" | "leaf" | "serial" | "announce" | "pathFor">;
};

/** Questions in, replies started or queued behind the chat's running one. */
export function sendCommands(ctx: ChatContext, needs: Needs) {
  const { store, bus, lanes, options, log } = ctx;

  /**
   * Stores a question once (by id) and shows it to the chat's other watchers; `stored: false`
   * when that id was stored before. The one path for browsers and devices, answered or not. A
   * chat deleted meanwhile wins: the question is removed again and CHAT_NOT_FOUND thrown.
   */
  async function storeQuestion(o: QuestionToStore) {
    // A branched chat's question follows its current branch's leaf (an edit: its tree parent is
    // given), one at a time in this process, and becomes the chat's selected message.
    if (o.parentId !== undefined || (await needs.isBranched(o.owner, o.chatId))) {
      return needs.branches.serial(o.chatId, async () => place(o, o.parentId ?? (await needs.branches.leaf(o.owner, o.chatId))));
    }
    return place(o);
  }

  /** A branched chat's question also becomes its selected message (src/chat/branches.ts). */
  async function storeInBranch(owner: string, message: Message): Promise<"added" | "exists" | "gone"> {
    if (!(await store.addMessage(message))) return "exists";
    // deleteChat removes the chat record before its messages: if it is gone now, our write may
    // have landed after the messages were listed for deletion. Take it back.
    const after = await store.patchChat(owner, message.chat_id, { updated_at: message.created_at, selected: message.id }).then(
      (chat) => chat !== undefined,
      (e) => (log.warn("could not update chat activity time", { chatId: message.chat_id, error: e }), true),
    );
    if (after) return "added";
    await store.deleteChat(owner, message.chat_id).catch(() => {});
    return "gone";
  }

  async function place(o: QuestionToStore, parentId?: string) {
    const { owner, chatId } = o;
    const message: Message = {
      id: o.messageId ?? crypto.randomUUID(),
      chat_id: chatId,
      role: "user",
      content: o.content,
      created_at: nowIso(),
      ...(o.deviceId ? { device_id: o.deviceId } : {}),
      ...(parentId !== undefined ? { parent_id: parentId } : {}),
    };
    // The question and its chat's activity time; a chat deleted meanwhile wins (store.addQuestion).
    const stored = parentId === undefined ? await store.addQuestion(owner, message) : await storeInBranch(owner, message);
    if (stored === "exists") {
      // Stored before, perhaps by a process that died before announcing it: every replica reads
      // this chat's messages again rather than trust what it kept (src/chat/recent.ts).
      bus.publish({ type: "messages_changed", chatId });
      return { stored: false as const, message };
    }
    if (stored === "gone") throw chatNotFound(chatId);
    bus.publish({ type: "user_message", owner, message, origin: o.origin });
    // An edit starts a branch: the owner's other sockets watching the chat reload it.
    if (o.parentId !== undefined) needs.branches.announce(owner, chatId, message.id, o.origin);
    return { stored: true as const, message };
  }

  /**
   * Stores a question, then answers it: at once, or after the replies already running or waiting
   * in that chat, in order. The question is durable before the model is asked. A question id
   * stored before is answered only if it has no reply and none is on its way (a resend after a
   * crash); otherwise it is a duplicate.
   */
  async function send(o: SendRequest, client?: ChatClient): Promise<SendResult> {
    // Only the owner may watch a chat: settled before the watch, or another user's socket would get
    // the chat's live frames while the check's store read runs (the answer is remembered, so
    // sendOnce's own check reads nothing more).
    if (client) await needs.requireOwned(o.owner, o.chatId);
    // Watch first: the reply may start streaming before send returns.
    const unwatch = client?.watch(o.chatId);
    try {
      return await sendOnce(o, client?.id);
    } catch (e) {
      // Refused (no such chat, a limit, shutting down) or failed: nothing will stream, so the
      // socket keeps watching what it watched.
      unwatch?.();
      throw e;
    }
  }

  async function sendOnce(o: SendRequest, origin: string | undefined): Promise<SendResult> {
    const id = o.messageId ?? crypto.randomUUID();
    // Ownership before anything else: the lane would otherwise tell a duplicate in someone else's chat.
    await needs.requireOwned(o.owner, o.chatId);
    // An edit's place (and that it edits a question) is settled before a place in the lane is taken.
    const parentId = o.editOf === undefined ? undefined : await needs.branches.editParent(o.owner, o.chatId, o.editOf);
    const ticket = await lanes.admit(o.chatId, id);
    if (ticket === "duplicate") return { duplicate: true, message: questionOf(o, id), reply: lanes.pending(o.chatId, id) };
    let answered: Message | undefined;
    let q: Awaited<ReturnType<typeof storeQuestion>>;
    try {
      // A question the model's window cannot hold even alone is refused before it is stored.
      await checkQuestionFits(
        { store, owner: o.owner, defaultModel: ctx.model.name, defaultSystemPrompt: options.systemPrompt, budget: options.context },
        o.content,
      );
      q = await storeQuestion({
        owner: o.owner,
        chatId: o.chatId,
        content: o.content,
        messageId: id,
        deviceId: o.deviceId,
        origin,
        parentId,
      });
      if (!q.stored) answered = await store.findReply(o.chatId, id);
      if (answered && o.retryCutShort && cutShort(answered)) answered = undefined;
    } catch (e) {
      lanes.release(ticket);
      throw e;
    }
    if (answered) {
      lanes.release(ticket);
      return {
        duplicate: true,
        message: q.message,
        reply: Promise.resolve({ message: answered, ...(answered.status ? { status: answered.status } : {}) }),
      };
    }
    const { queued } = await lanes.start(ticket, {
      owner: o.owner,
      chatId: o.chatId,
      traceId: ticket.traceId,
      question: q.message,
      origin,
      ...(o.deviceId ? { deviceId: o.deviceId } : {}),
      ...(o.context ? { context: o.context } : {}),
      ...(q.message.parent_id !== undefined ? { branched: true } : {}),
    });
    if (options.autoTitle && ctx.model.kind !== "offline") titleAfter(ticket, o.owner, q.message);
    return { duplicate: false, message: q.message, traceId: ticket.traceId, queued, reply: ticket.result };
  }

  /** Answers a job in its generation: the prompt is read when its turn comes. */
  const run = (spec: JobSpec, g: Generation) =>
    needs.answer({
      question: spec.question,
      deviceId: spec.deviceId,
      prompt: () => promptFor(spec.question, spec),
      usage: { userId: spec.owner, kind: spec.laneKey ? "regeneration" : spec.deviceId ? "device" : "reply" },
    })(g);

  /** The model's input, read when the reply starts: history up to this question, and the owner's settings. */
  async function promptFor(question: Message, o: { owner: string; context?: Turn[]; branched?: boolean; deviceId?: string }) {
    const [earlier, settings] = await Promise.all([
      // A branched chat's question is shown the path above it in the tree, not other branches.
      o.context
        ? []
        : o.branched
          ? needs.branches.pathFor(question)
          : ctx.recent.newest(question.chat_id, options.historyMaxMessages).then((p) => p.items),
      getSettingsOf(store, o.owner),
    ]);
    const history = o.context
      ? [...o.context, { role: "user" as const, content: question.content }]
      : o.branched
        ? earlier
        : upTo(earlier, question);
    return {
      turns: buildPrompt(
        await tokenizerFor(settings.model ?? ctx.model.name),
        // A voice device's question gets the spoken-style prompt (the user's own, else the server's).
        o.deviceId
          ? (settings.deviceSystemPrompt ?? options.deviceSystemPrompt ?? options.systemPrompt)
          : (settings.systemPrompt ?? options.systemPrompt),
        history,
        options.context,
      ),
      temperature: settings.temperature,
      model: settings.model,
      // The owner's: a device's question is answered in its owner's time zone.
      tools: { owner: o.owner, timeZone: settings.timeZone, toolsOff: settings.toolsOff },
    };
  }

  function titleAfter(ticket: Ticket, owner: string, question: Message) {
    void ticket.result.then(async (r) => {
      if (!r.message || r.status || !needs.mayNeedTitle(question.chat_id)) return;
      const chat = await store.getChat(owner, question.chat_id).catch(() => undefined);
      if (chat) needs.titleLater(owner, chat, [question, r.message]);
    });
  }

  return { send, storeQuestion, run };
}

type QuestionToStore = {
  owner: string;
  chatId: string;
  content: string;
  messageId?: string;
  deviceId?: string;
  origin?: string;
  /** The question's tree parent, given for an edit (src/chat/branches.ts). */
  parentId?: string;
};

/** Messages from the oldest up to and including the question (later ones wait their turn). */
function upTo(messages: Message[], question: Message): Message[] {
  const i = messages.findIndex((m) => m.id === question.id);
  return i < 0 ? [...messages, question] : messages.slice(0, i + 1);
}

const questionOf = (o: SendRequest, id: string): Message => ({
  id,
  chat_id: o.chatId,
  role: "user",
  content: o.content,
  created_at: nowIso(),
  ...(o.deviceId ? { device_id: o.deviceId } : {}),
});
