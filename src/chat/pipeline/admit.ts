import type { Turn } from "../../model/model";
import type { Chat, Message } from "../../records";
import type { BranchCommands } from "../branches";
import { nowIso } from "../clock";
import type { ChatClient, ChatContext } from "../context";
import { cutShort, settledReply } from "../lease";
import type { Ticket } from "./replies";
import type { ReplyResult } from "./generate";
import type { questionStore } from "./question";
import { checkQuestionFits } from "./window";

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
   * lapsed) does not count as an answer: answer again. One still streaming under a lease that runs
   * is waited for until it is finished (the answer) or its lease lapses (answered again). Devices use
   * it; a voice user cannot read half a reply.
   */
  retryCutShort?: boolean;
  /** EDIT_MESSAGE: the question this one is an edit of. It goes beside it, as a new branch that becomes current. */
  editOf?: string;
};

type Needs = {
  requireOwned(owner: string, chatId: string): Promise<void>;
  /** False for a chat known to be named already (no record read to find out). */
  mayNeedTitle(chatId: string): boolean;
  /** Called with the first exchange of a chat that may want a title. */
  titleLater(owner: string, chat: Chat, exchange: [Message, Message]): void;
  storeQuestion: ReturnType<typeof questionStore>;
  branches: Pick<BranchCommands, "editParent">;
};

/**
 * A question in (SEND_MESSAGE, EDIT_MESSAGE, a device's message): ownership, a place in the chat's
 * lane, the question stored, then its reply started or queued behind the chat's running one. The
 * reply's own life is src/chat/pipeline/generate.ts, run by the lane when its turn comes.
 */
export function sendCommands(ctx: ChatContext, needs: Needs) {
  const { store, lanes, options } = ctx;
  const storeQuestion = needs.storeQuestion;

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
        { store, owner: o.owner, defaultModel: ctx.model.name, options, budget: options.context, deviceId: o.deviceId },
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
      // A reply still under its lease is neither an answer nor cut short yet: wait until it is one.
      if (answered && o.retryCutShort) answered = await settledReply(() => store.findReply(o.chatId, id), answered);
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

  function titleAfter(ticket: Ticket, owner: string, question: Message) {
    void ticket.result.then(async (r) => {
      if (!r.message || r.status || !needs.mayNeedTitle(question.chat_id)) return;
      const chat = await store.getChat(owner, question.chat_id).catch(() => undefined);
      if (chat) needs.titleLater(owner, chat, [question, r.message]);
    });
  }

  return { send };
}

const questionOf = (o: SendRequest, id: string): Message => ({
  id,
  chat_id: o.chatId,
  role: "user",
  content: o.content,
  created_at: nowIso(),
  ...(o.deviceId ? { device_id: o.deviceId } : {}),
});
