import type { Message } from "../records";
import { decodeMessageCursor, encodeMessageCursor } from "../store/cursor";

// A chat as a tree of messages, for branched chats only (REGENERATE, EDIT_MESSAGE, SELECT_BRANCH):
// pure functions over the messages a store returns, oldest first. A chat that was never branched is
// never read through here: its history stays the stored order, page by page.
//
// Each message's place in the tree (its tree parent):
// - `parent_id` when it has one: a reply's question, or (branched chats) the message a question
//   follows; "" is the top of the chat (an edit of the first question).
// - otherwise (a question stored before the chat was first branched) the message before it in
//   (created_at, id) order: a chat without edits is one path, exactly the stored order.
// - a question whose tree parent would be another question follows that question's first answer
//   when it has one: it was asked while that answer was on its way (queued behind it), and the
//   conversation it belongs to has the answer before it.

/** The tree parent of a chat's first message(s). */
export const TOP = "";

/** A message as a branched chat's history shows it: how many siblings it has, and which one it is (1-based, oldest first). */
export type Placed = Message & { siblings?: number; sibling?: number };

export type Tree = {
  byId: Map<string, Message>;
  /** Message id → its tree parent's id (TOP for the first). */
  parent: Map<string, string>;
  /** Tree parent id → its children, oldest first. */
  children: Map<string, Message[]>;
};

export const byPosition = (a: { created_at: string; id: string }, b: { created_at: string; id: string }) =>
  a.created_at < b.created_at ? -1 : a.created_at > b.created_at ? 1 : a.id < b.id ? -1 : a.id > b.id ? 1 : 0;

/** `messages` in any order; a parent outside them (older than the loaded window) counts as the top. */
export function buildTree(messages: readonly Message[]): Tree {
  const sorted = [...messages].sort(byPosition);
  const byId = new Map(sorted.map((m) => [m.id, m] as const));
  const firstAnswer = new Map<string, Message>();
  for (const m of sorted) if (m.role === "assistant" && m.parent_id && !firstAnswer.has(m.parent_id)) firstAnswer.set(m.parent_id, m);
  const parent = new Map<string, string>();
  const children = new Map<string, Message[]>();
  sorted.forEach((m, i) => {
    let p = m.parent_id !== undefined ? m.parent_id : i > 0 ? sorted[i - 1]!.id : TOP;
    if (p !== TOP && !byId.has(p)) p = TOP;
    if (m.role === "user" && p !== TOP && byId.get(p)!.role === "user") p = firstAnswer.get(p)?.id ?? p;
    parent.set(m.id, p);
    const kids = children.get(p);
    if (kids) kids.push(m);
    else children.set(p, [m]);
  });
  return { byId, parent, children };
}

/** The messages from the top down to `id`, inclusive (empty when it is not in the tree). */
export function pathTo(t: Tree, id: string): Message[] {
  const path: Message[] = [];
  const seen = new Set<string>();
  // Parents point at older messages, so this ends; `seen` guards against clocks of several replicas disagreeing.
  for (let m = t.byId.get(id); m && !seen.has(m.id); m = t.byId.get(t.parent.get(m.id) ?? TOP)) {
    seen.add(m.id);
    path.push(m);
  }
  return path.reverse();
}

/**
 * The current branch: the path down to `selected`, then below it the newest child at every step
 * down to a leaf. Without `selected` (or when it is not loaded), the newest child from the top.
 */
export function currentBranch(t: Tree, selected?: string): Message[] {
  const path = selected && t.byId.has(selected) ? pathTo(t, selected) : [];
  const seen = new Set(path.map((m) => m.id));
  for (let kids = t.children.get(path.at(-1)?.id ?? TOP); kids?.length; ) {
    const next = kids.at(-1)!;
    if (seen.has(next.id)) break;
    seen.add(next.id);
    path.push(next);
    kids = t.children.get(next.id);
  }
  return path;
}

/** `id` and the other children of its tree parent, oldest first. */
export const siblingsOf = (t: Tree, id: string): Message[] => t.children.get(t.parent.get(id) ?? TOP) ?? [];

/** Marks the messages that have siblings with `siblings` and `sibling`; the others stay as stored. */
export function placed(t: Tree, path: readonly Message[]): Placed[] {
  return path.map((m) => {
    const sibs = siblingsOf(t, m.id);
    return sibs.length > 1 ? { ...m, siblings: sibs.length, sibling: sibs.indexOf(m) + 1 } : m;
  });
}

/**
 * One page of a branch, newest last, with the same cursor a stored history page has: `cursor`
 * names the oldest message of the previous page (a branch switched since: the position it had),
 * `before` a created_at. The cursor is there only when older messages exist on the branch.
 */
export function pageOfBranch<M extends Message>(
  path: readonly M[],
  chatId: string,
  q: { limit: number; cursor?: string; before?: string },
): { items: M[]; cursor?: string } {
  let end = path.length;
  if (q.cursor !== undefined) {
    const at = decodeMessageCursor(q.cursor, chatId);
    const i = path.findIndex((m) => m.id === at.id);
    end = i >= 0 ? i : path.filter((m) => byPosition(m, at) < 0).length;
  } else if (q.before !== undefined) {
    const before = q.before;
    end = path.filter((m) => m.created_at < before).length;
  }
  const start = Math.max(0, end - q.limit);
  const items = path.slice(start, end);
  return start > 0 && items[0] ? { items, cursor: encodeMessageCursor(chatId, items[0]) } : { items };
}
