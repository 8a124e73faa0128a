import type { Logger } from "../../log";
import type { Message } from "../../records";
import type { Store } from "../../store/store";
import type { BranchCommands } from "../branches";
import { nowIso } from "../clock";
import { chatNotFound } from "../errors";
import type { Bus } from "../events";

export type QuestionToStore = {
  owner: string;
  chatId: string;
  content: string;
  messageId?: string;
  deviceId?: string;
  origin?: string;
  /** The question's tree parent, given for an edit (src/chat/branches.ts). */
  parentId?: string;
};

/** Storing and announcing a question: browsers, devices and stale device messages alike. */
export function questionStore(o: {
  store: Store;
  bus: Bus;
  log: Logger;
  /** From memory for a chat this process knows (the hot path reads nothing more). */
  isBranched(owner: string, chatId: string): Promise<boolean>;
  branches: Pick<BranchCommands, "leaf" | "serial" | "announce">;
}) {
  const { store, bus, log } = o;
  const needs = o;

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

  return storeQuestion;
}
