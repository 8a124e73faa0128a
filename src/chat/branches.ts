import type { Store } from "../store/store";
import type { Chat, Message } from "../records";
import type { ChatContext } from "./context";
import { ChatError, chatNotFound } from "./errors";
import type { ReplyOutcome } from "./pipeline/replies";
import { buildTree, currentBranch, pageOfBranch, pathTo, placed, siblingsOf, TOP, type Placed, type Tree } from "./tree";

// Regenerate, edit and branch (REGENERATE, EDIT_MESSAGE, GET_BRANCHES, SELECT_BRANCH): a chat as a
// tree (src/chat/tree.ts), whose current branch is chosen by the chat's `selected` message. Only a
// chat that was ever branched pays for it: it is read whole (up to BRANCH_MAX_MESSAGES) to find its
// current branch; every other chat keeps the stored order and its one-query pages.

/** How many of a branched chat's newest messages are read to find its current branch (and a question's path for the prompt). */
export const BRANCH_MAX_MESSAGES = 2000;
/** GET_BRANCHES shows this many characters (code points) of each sibling. */
const PREVIEW_CHARS = 200;

export type BranchInfo = {
  chatId: string;
  messageId: string;
  siblings: { id: string; role: Message["role"]; created_at: string; preview: string }[];
  /** The sibling the current branch passes through; null when it passes none of them. */
  current: string | null;
};

export type Regenerated = { chatId: string; questionId: string; traceId: string; queued: boolean; reply: Promise<ReplyOutcome> };

type Needs = {
  requireChat(owner: string, chatId: string): Promise<Chat>;
  /** This process (and, through the bus, every replica) now treats the chat as branched. */
  markBranched(chatId: string): void;
};

/**
 * A branched chat's history page: its current branch, paged like stored history, each message that
 * has siblings marked. `streaming` is a regeneration this process is answering that has no stored
 * text yet: it is placed under its question, where its live entry is shown. `offBranch`: the ids
 * read that are not on the current branch (a reply streaming there is not shown).
 */
export function branchHistory(
  chat: Chat,
  stored: Message[],
  q: { limit: number; cursor?: string; before?: string },
  streaming?: { traceId: string; questionId: string; createdAt: string },
): { messages: Placed[]; hasMore: boolean; cursor?: string; offBranch: Set<string> } {
  let messages = stored;
  if (streaming && !stored.some((m) => m.id === streaming.traceId)) {
    // A stand-in for the reply's first checkpoint, replaced by its live entry (never by its lease).
    messages = [
      ...stored,
      {
        id: streaming.traceId,
        chat_id: chat.id,
        role: "assistant",
        content: "",
        created_at: streaming.createdAt,
        parent_id: streaming.questionId,
        status: "streaming",
        lease: { owner: "", until: Number.MAX_SAFE_INTEGER, seq: 0 },
      },
    ];
  }
  const tree = buildTree(messages);
  const branch = placed(tree, currentBranch(tree, chat.selected));
  const on = new Set(branch.map((m) => m.id));
  const page = pageOfBranch(branch, chat.id, q);
  return {
    messages: page.items,
    hasMore: page.cursor !== undefined,
    ...(page.cursor ? { cursor: page.cursor } : {}),
    offBranch: new Set(messages.filter((m) => !on.has(m.id)).map((m) => m.id)),
  };
}

/** The question and the path above it, oldest first: what the model is shown for a reply in a branched chat. */
export async function branchPath(store: Store, question: Message): Promise<Message[]> {
  const stored = await store.listMessages(question.chat_id, { limit: BRANCH_MAX_MESSAGES });
  const tree = buildTree(stored.some((m) => m.id === question.id) ? stored : [...stored, question]);
  // The path down to the question only: replies and questions after it belong to other turns.
  return pathTo(tree, question.id);
}

export function branchCommands(ctx: ChatContext, needs: Needs) {
  const { store, bus, lanes } = ctx;
  // Regenerations this process has admitted and not finished: traceId → the question they answer.
  const regenerating = new Map<string, string>();
  // Questions stored in one branched chat by this process, one at a time: each follows the leaf the one before made.
  const chains = new Map<string, Promise<unknown>>();

  async function load(owner: string, chatId: string): Promise<{ chat: Chat; tree: Tree; stored: Message[] }> {
    // The chat first: another owner's id ends here, after the same read as a missing one.
    const chat = await needs.requireChat(owner, chatId);
    const stored = await store.listMessages(chatId, { limit: BRANCH_MAX_MESSAGES });
    return { chat, tree: buildTree(stored), stored };
  }

  /** What the chat reads as: its current branch, or (never branched) the stored order. */
  const branchOf = (chat: Chat, tree: Tree, stored: Message[]) =>
    chat.selected !== undefined ? currentBranch(tree, chat.selected) : stored;

  function find(tree: Tree, chatId: string, messageId: string, question = false): Message {
    const m = tree.byId.get(messageId);
    if (!m) throw new ChatError("MESSAGE_NOT_FOUND", `there is no message with id ${messageId} in this chat`, { chatId, messageId });
    if (question && m.role !== "user")
      throw new ChatError("NOT_A_QUESTION", `message ${messageId} is not a question (a user message)`, { chatId, messageId });
    return m;
  }

  /** Tells this and every other replica (and the owner's other sockets watching the chat) which message is now current. */
  function announce(owner: string, chatId: string, messageId: string, origin?: string) {
    needs.markBranched(chatId);
    bus.publish({ type: "branch_selected", owner, chatId, messageId, origin });
  }

  return {
    regeneratingQuestion: (traceId: string) => regenerating.get(traceId),
    announce,

    /** Where an edit of `messageId` goes: beside it, under its tree parent (TOP for the first question). */
    async editParent(owner: string, chatId: string, messageId: string): Promise<string> {
      const { tree } = await load(owner, chatId);
      return tree.parent.get(find(tree, chatId, messageId, true).id) ?? TOP;
    },

    /** The current branch's last message in a branched chat: what a new question follows (TOP in an empty chat). */
    async leaf(owner: string, chatId: string): Promise<string> {
      const { chat, tree } = await load(owner, chatId);
      return currentBranch(tree, chat.selected).at(-1)?.id ?? TOP;
    },

    /** Runs `fn` after the previous one for the same chat in this process. */
    serial<T>(chatId: string, fn: () => Promise<T>): Promise<T> {
      const run = (chains.get(chatId) ?? Promise.resolve()).then(fn, fn);
      const tail = run.then(
        () => {},
        () => {},
      );
      chains.set(chatId, tail);
      void tail.then(() => chains.get(chatId) === tail && chains.delete(chatId));
      return run;
    },

    /**
     * A new reply to a question (by default the last question on the current branch), answered like
     * any reply: in the chat's lane (behind a running one), streamed, checkpointed, stoppable. The
     * earlier replies stay as other versions; the question becomes the chat's selected message, so the
     * newest version (this one, once stored) is current.
     */
    async regenerate(o: { owner: string; chatId: string; questionId?: string; origin?: string }): Promise<Regenerated> {
      const { chat, tree, stored } = await load(o.owner, o.chatId);
      let question: Message | undefined;
      if (o.questionId !== undefined) question = find(tree, o.chatId, o.questionId, true);
      else question = branchOf(chat, tree, stored).findLast((m) => m.role === "user");
      if (!question) throw new ChatError("MESSAGE_NOT_FOUND", "this chat has no question to answer again", { chatId: o.chatId });
      // Its own place in the lane, not the question's: a question may have several versions on their way,
      // and a resend of the question itself is still a duplicate (src/chat/pipeline/admit.ts), never a regeneration.
      const key = `regenerate:${crypto.randomUUID()}`;
      const ticket = await lanes.admit(o.chatId, key);
      if (ticket === "duplicate") throw new ChatError("INTERNAL_ERROR", "could not take a place for the reply");
      try {
        // The chat is still there (delete wins) and the question is current.
        if (!(await store.patchChat(o.owner, o.chatId, { selected: question.id }))) throw chatNotFound(o.chatId);
      } catch (e) {
        lanes.release(ticket);
        throw e;
      }
      regenerating.set(ticket.traceId, question.id);
      void ticket.result.finally(() => regenerating.delete(ticket.traceId));
      announce(o.owner, o.chatId, question.id, o.origin);
      const { queued } = await lanes.start(ticket, {
        owner: o.owner,
        chatId: o.chatId,
        traceId: ticket.traceId,
        question,
        origin: o.origin,
        laneKey: key,
        branched: true,
      });
      return { chatId: o.chatId, questionId: question.id, traceId: ticket.traceId, queued, reply: ticket.result };
    },

    /** `messageId` and its siblings (the versions of an answer, or the branches at a question). */
    async branches(o: { owner: string; chatId: string; messageId: string }): Promise<BranchInfo> {
      const { chat, tree, stored } = await load(o.owner, o.chatId);
      find(tree, o.chatId, o.messageId);
      const on = new Set(branchOf(chat, tree, stored).map((m) => m.id));
      const siblings = siblingsOf(tree, o.messageId);
      return {
        chatId: o.chatId,
        messageId: o.messageId,
        siblings: siblings.map((m) => ({
          id: m.id,
          role: m.role,
          created_at: m.created_at,
          preview: Array.from(m.content.slice(0, 2 * PREVIEW_CHARS))
            .slice(0, PREVIEW_CHARS)
            .join(""),
        })),
        current: siblings.find((m) => on.has(m.id))?.id ?? null,
      };
    },

    /** Makes the branch through `messageId` current (and the chat branched). */
    async select(o: { owner: string; chatId: string; messageId: string; origin?: string }): Promise<void> {
      const { tree } = await load(o.owner, o.chatId);
      find(tree, o.chatId, o.messageId);
      if (!(await store.patchChat(o.owner, o.chatId, { selected: o.messageId }))) throw chatNotFound(o.chatId);
      announce(o.owner, o.chatId, o.messageId, o.origin);
    },
  };
}
export type BranchCommands = ReturnType<typeof branchCommands>;
