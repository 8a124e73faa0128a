import type { Chat } from "../records";
import type { Bus } from "./events";
import { ChatError, chatNotFound } from "./errors";
import type { Store } from "../store/store";

// Temporary chats: stored with an expiry (a mark beside the chat, src/store/store.ts), left out of
// the chat list, search, export and sharing, and deleted, messages and all, when its owner's last
// socket (on any replica) has closed or TEMPORARY_CHAT_TTL_S has passed, whichever comes first.
// KEEP_CHAT turns one into a normal chat before then.
//
// "Connected" is a lease in the store: every replica holding a socket of the owner renews the owner's
// temporary chats' `alive_until` (RENEW_MS apart, ALIVE_MS ahead). When the owner's last socket on a
// replica closes, that replica shortens the lease to LEAVE_MS and says so on the bus; a replica still
// holding a socket of theirs renews at once. Every replica sweeps what is due (SWEEP_MS apart while it
// knows of a temporary chat, IDLE_SWEEP_MS otherwise, and at start-up): a chat
// whose lease ran out or whose TTL passed is deleted like DELETE_CHAT. With every replica down, the
// first one up sweeps them.

export const TICK_MS = 1_000;
export const RENEW_MS = 10_000;
export const ALIVE_MS = 30_000;
export const LEAVE_MS = 3_000;
export const SWEEP_MS = 2_000;
/** While this replica knows of no temporary chat: a sweep now and then for those whose replicas all went away. */
export const IDLE_SWEEP_MS = 60_000;

export type TemporaryOptions = {
  ttlS: number;
  /** The owners with a socket on this replica now (src/ws/connections.ts, wired by server.ts). */
  ownersHere?: () => Iterable<string>;
};

const iso = (ms: number) => new Date(ms).toISOString();

export function temporaryChats(
  o: {
    store: Store;
    bus: Bus;
    createChat(a: { owner: string; name?: string; origin?: string; id?: string; announce?: boolean }): Promise<Chat>;
    requireChat(owner: string, chatId: string): Promise<Chat>;
    deleteChat(a: { owner: string; chatId: string }): Promise<void>;
    onError(what: string, e: unknown): void;
  },
  opts: TemporaryOptions,
) {
  const { store, bus } = o;
  // What this replica knows: temporary chat ids by owner (from the bus, and the store the first time an owner is seen here).
  const byOwner = new Map<string, Set<string>>();
  const chatOwner = new Map<string, string>();
  const checked = new Set<string>();
  const renewedAt = new Map<string, number>();
  let present = new Set<string>();
  let ownersHere = opts.ownersHere ?? (() => []);

  const note = (owner: string, chatId: string, temporary: boolean) => {
    let set = byOwner.get(owner);
    if (temporary) {
      if (!set) byOwner.set(owner, (set = new Set()));
      set.add(chatId);
      chatOwner.set(chatId, owner);
    } else {
      set?.delete(chatId);
      if (set?.size === 0) byOwner.delete(owner);
      chatOwner.delete(chatId);
    }
  };

  async function renew(owner: string, now = Date.now()) {
    renewedAt.set(owner, now);
    await store.renewTemporary(owner, iso(now + ALIVE_MS));
  }

  const unsubscribe = bus.subscribe((e) => {
    if (e.type === "temporary_chat") note(e.owner, e.chatId, e.temporary);
    if (e.type === "chat_deleted") note(e.owner, e.chatId, false);
    // Someone's last socket elsewhere closed: if they still have one here, their chats stay.
    if (e.type === "owner_left" && present.has(e.owner) && byOwner.has(e.owner))
      void renew(e.owner).catch((err) => o.onError("could not renew temporary chats", err));
    if (e.type === "resync") checked.clear();
  });

  async function tick() {
    const now = Date.now();
    const here = new Set(ownersHere());
    for (const owner of here) {
      if (!checked.has(owner)) {
        checked.add(owner);
        for (const m of await store.listMarks(owner)) if (m.expires_at) note(owner, m.chat_id, true);
      }
      if (byOwner.has(owner) && now - (renewedAt.get(owner) ?? 0) >= RENEW_MS) await renew(owner, now);
    }
    const left = [...present].filter((owner) => !here.has(owner));
    // Before the word goes out: this replica hears its own owner_left, and must not renew for someone gone from here.
    present = here;
    for (const owner of left) {
      checked.delete(owner);
      renewedAt.delete(owner);
      if (!byOwner.has(owner)) continue;
      // Gone from here: the lease shortened first, then the word on the bus, so a renewal it prompts lands after.
      await store.renewTemporary(owner, iso(now + LEAVE_MS));
      bus.publish({ type: "owner_left", owner });
    }
  }

  async function sweep() {
    for (const due of await store.dueTemporary(iso(Date.now()))) {
      try {
        await o.deleteChat({ owner: due.owner, chatId: due.chat_id });
      } catch (e) {
        // Another replica swept it first, or it was never made: its mark goes anyway.
        if (!(e instanceof ChatError && e.code === "CHAT_NOT_FOUND")) throw e;
        await store.forgetChat(due.owner, due.chat_id);
      }
      bus.publish({ type: "temporary_chat", owner: due.owner, chatId: due.chat_id, temporary: false });
    }
  }

  let lastSweep = 0;
  let lastLogged = 0;
  let running = false;
  const timer = setInterval(() => {
    if (running) return;
    running = true;
    const sweeping = Date.now() - lastSweep >= (byOwner.size > 0 ? SWEEP_MS : IDLE_SWEEP_MS);
    if (sweeping) lastSweep = Date.now();
    void (async () => {
      try {
        await tick();
        if (sweeping) await sweep();
      } catch (e) {
        // Once a minute at most: a store outage would otherwise say so every tick.
        if (Date.now() - lastLogged >= 60_000) {
          lastLogged = Date.now();
          o.onError("temporary chats: a renewal or sweep failed; the next tick tries again", e);
        }
      } finally {
        running = false;
      }
    })();
  }, TICK_MS);
  timer.unref?.();

  return {
    /** CREATE_CHAT {temporary: true}: marked before it exists, so it is never a normal chat for a moment. */
    async create(a: { owner: string; name?: string; origin?: string }): Promise<Chat & { temporary: true; expiresAt: string }> {
      const id = crypto.randomUUID();
      const now = Date.now();
      const expiresAt = iso(now + opts.ttlS * 1000);
      await store.markTemporary(a.owner, id, expiresAt, iso(now + ALIVE_MS));
      note(a.owner, id, true);
      renewedAt.set(a.owner, now);
      bus.publish({ type: "temporary_chat", owner: a.owner, chatId: id, temporary: true });
      const chat = await o.createChat({ ...a, id, announce: false });
      return { ...chat, temporary: true, expiresAt };
    },

    /** KEEP_CHAT: a normal chat from now on, listed and told to the owner's other sockets. */
    async keep(a: { owner: string; chatId: string; origin?: string }): Promise<Chat> {
      const chat = await o.requireChat(a.owner, a.chatId);
      if (await store.unmarkTemporary(a.owner, a.chatId)) {
        bus.publish({ type: "temporary_chat", owner: a.owner, chatId: a.chatId, temporary: false });
        bus.publish({ type: "chat_created", owner: a.owner, chat, origin: a.origin });
      }
      return chat;
    },

    /** Whether this replica knows the chat as temporary (list frames about it go to nobody). */
    isTemporary: (chatId: string) => chatOwner.has(chatId),

    /** Refuses what would keep a temporary chat beyond its life (export, a shared link). */
    async refuseIfTemporary(owner: string, chatId: string, what: string) {
      const mark = (await store.listMarks(owner)).find((m) => m.chat_id === chatId);
      if (mark?.expires_at) throw new ChatError("INVALID_ARGUMENT", `a temporary chat cannot be ${what}; keep it first (KEEP_CHAT)`);
    },

    /** server.ts hands in who is connected here once the sockets exist. */
    attach(ownersHereNow: () => Iterable<string>) {
      ownersHere = ownersHereNow;
    },

    /** Runs one renewal and sweep now (start-up, tests). */
    async settle() {
      await tick();
      await sweep();
    },

    notFound: chatNotFound,
    close() {
      clearInterval(timer);
      unsubscribe();
    },
  };
}
export type TemporaryChats = ReturnType<typeof temporaryChats>;
