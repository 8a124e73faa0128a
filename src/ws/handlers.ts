import * as v from "valibot";
import type { ChatService } from "../chat/service";
import type { Socket, SocketClient } from "./connections";
import { admitSend, CHAT_PAGE_SIZE, type SocketLimits, type UserSends } from "./limits";
import { FrameError } from "./errors";
import { frames, inbound, type Args, type InboundType } from "./protocol";

export type HandlerContext = {
  ws: Socket;
  chat: ChatService;
  /** This socket, as the chat service sees it, plus its explicit watches. */
  client: SocketClient;
  limits: SocketLimits;
  /** The signed-in user's sends per minute, across their sockets (and replicas). */
  userSends: UserSends;
  requestId?: string;
  /** Sends to this socket only, echoing the frame's requestId. */
  reply(frame: object): void;
};

type Handler<T extends InboundType> = { schema: (typeof inbound)[T]; run(ctx: HandlerContext, args: Args<T>): Promise<void> };
const handler = <T extends InboundType>(type: T, run: Handler<T>["run"]): Handler<T> => ({ schema: inbound[type], run });

/** One entry per inbound frame type: the schema that checks it and the chat service call it makes. */
export const handlers: { [T in InboundType]: Handler<T> } = {
  GET_CHATS: handler("GET_CHATS", async (c, a) =>
    c.reply(
      frames.chatList(
        await c.chat.listChats(c.client.owner, {
          limit: a.limit ?? CHAT_PAGE_SIZE,
          cursor: a.cursor ?? undefined,
          folderId: a.folderId ?? undefined,
          pinned: a.pinned ?? undefined,
          temporary: a.temporary ?? undefined,
        }),
      ),
    ),
  ),
  CREATE_CHAT: handler("CREATE_CHAT", async (c, a) =>
    c.reply(
      frames.newChat(
        await (a.temporary ? c.chat.createTemporaryChat : c.chat.createChat)({ owner: c.client.owner, name: a.name, origin: c.client.id }),
      ),
    ),
  ),
  GET_CHAT_HISTORY: handler("GET_CHAT_HISTORY", async (c, a) =>
    c.reply(
      frames.chatHistory(
        await c.chat.history(
          { chatId: a.chatId, limit: a.limit ?? undefined, before: a.before ?? undefined, cursor: a.cursor ?? undefined },
          c.client,
        ),
      ),
    ),
  ),
  DELETE_CHAT: handler("DELETE_CHAT", async (c, a) =>
    c.reply(frames.chatDeleted((await c.chat.deleteChat({ owner: c.client.owner, chatId: a.chatId, origin: c.client.id }), a.chatId))),
  ),
  RENAME_CHAT: handler("RENAME_CHAT", async (c, a) =>
    c.reply(frames.chatUpdated(await c.chat.renameChat({ owner: c.client.owner, chatId: a.chatId, name: a.name, origin: c.client.id }))),
  ),
  STOP_GENERATION: handler("STOP_GENERATION", async (c, a) =>
    c.reply(
      frames.generationStopped(
        await c.chat.stop({ owner: c.client.owner, chatId: a.chatId ?? undefined, traceId: a.traceId ?? undefined }),
      ),
    ),
  ),
  RESUME: handler("RESUME", async (c, a) => c.reply(frames.resumed(await c.chat.resume(a, c.client)))),
  GET_SETTINGS: handler("GET_SETTINGS", async (c) => c.reply(frames.settings(await c.chat.getSettings(c.client.owner), c.chat.defaults))),
  GET_TOOLS: handler("GET_TOOLS", async (c) => c.reply(frames.toolList(await c.chat.listTools(c.client.owner)))),
  UPDATE_SETTINGS: handler("UPDATE_SETTINGS", async (c, a) =>
    c.reply(frames.settings(await c.chat.updateSettings(c.client.owner, a), c.chat.defaults)),
  ),
  GET_USAGE: handler("GET_USAGE", async (c, a) => c.reply(frames.usage(await c.chat.usage(c.client.owner, a.days ?? 7)))),
  WATCH: handler("WATCH", async (c, a) =>
    c.reply(frames.watching(await c.client.watchExplicitly(a.chatIds, (ids) => c.chat.requireChats(c.client.owner, ids)))),
  ),
  UNWATCH: handler("UNWATCH", async (c, a) => c.reply(frames.watching(c.client.unwatchExplicitly(a.chatIds)))),
  SEARCH: handler("SEARCH", async (c, a) =>
    c.reply(
      frames.searchResults(
        await c.chat.search(c.client.owner, {
          query: a.query,
          limit: a.limit ?? undefined,
          cursor: a.cursor ?? undefined,
          folderId: a.folderId ?? undefined,
        }),
      ),
    ),
  ),
  // Branches: REGENERATE and EDIT_MESSAGE start a reply and count as sends (limits.ts); see src/chat/branches.ts.
  REGENERATE: handler("REGENERATE", async (c, a) => {
    const track = await admitSend(c.limits, c.ws.data.budget, "", () => c.userSends(c.client.owner));
    const r = await c.chat.regenerate({ chatId: a.chatId, questionId: a.questionId ?? undefined }, c.client);
    c.reply(frames.regenerating(r));
    if (!r.queued) track(r.reply);
  }),
  EDIT_MESSAGE: handler("EDIT_MESSAGE", async (c, a) => {
    const track = await admitSend(c.limits, c.ws.data.budget, a.content, () => c.userSends(c.client.owner));
    const r = await c.chat.send({ ...a, owner: c.client.owner }, c.client);
    // Always answered: the sender learns the new question's id (and the reply's traceId) here.
    c.reply(frames.messageAccepted(a.chatId, r));
    if (!r.duplicate && !r.queued) track(r.reply);
  }),
  GET_BRANCHES: handler("GET_BRANCHES", async (c, a) => c.reply(frames.branches(await c.chat.branches({ ...a, owner: c.client.owner })))),
  SELECT_BRANCH: handler("SELECT_BRANCH", async (c, a) => c.reply(frames.chatHistory(await c.chat.selectBranch(a, c.client)))),
  // Pins and folders (src/chat/organise.ts).
  PIN_CHAT: handler("PIN_CHAT", async (c, a) =>
    c.reply(frames.chatUpdated(await c.chat.pinChat({ owner: c.client.owner, chatId: a.chatId, pinned: a.pinned, origin: c.client.id }))),
  ),
  MOVE_CHAT: handler("MOVE_CHAT", async (c, a) =>
    c.reply(
      frames.chatUpdated(await c.chat.moveChat({ owner: c.client.owner, chatId: a.chatId, folderId: a.folderId, origin: c.client.id })),
    ),
  ),
  KEEP_CHAT: handler("KEEP_CHAT", async (c, a) =>
    c.reply(frames.chatUpdated(await c.chat.keepChat({ owner: c.client.owner, chatId: a.chatId, origin: c.client.id }))),
  ),
  GET_FOLDERS: handler("GET_FOLDERS", async (c) => c.reply(frames.folders(await c.chat.folders(c.client.owner)))),
  CREATE_FOLDER: handler("CREATE_FOLDER", async (c, a) => {
    const r = await c.chat.createFolder({ owner: c.client.owner, name: a.name, origin: c.client.id });
    c.reply(frames.folders(r.folders, r.folder));
  }),
  RENAME_FOLDER: handler("RENAME_FOLDER", async (c, a) => {
    const r = await c.chat.renameFolder({ owner: c.client.owner, folderId: a.folderId, name: a.name, origin: c.client.id });
    c.reply(frames.folders(r.folders, r.folder));
  }),
  DELETE_FOLDER: handler("DELETE_FOLDER", async (c, a) =>
    c.reply(frames.folders((await c.chat.deleteFolder({ owner: c.client.owner, folderId: a.folderId, origin: c.client.id })).folders)),
  ),
  RATE_REPLY: handler("RATE_REPLY", async (c, a) =>
    c.reply(
      frames.feedback(
        await c.chat.rateReply({
          owner: c.client.owner,
          chatId: a.chatId,
          messageId: a.messageId,
          rating: a.rating,
          comment: a.comment ?? undefined,
        }),
      ),
    ),
  ),
  // Shared links (src/chat/shares.ts).
  SHARE_CHAT: handler("SHARE_CHAT", async (c, a) =>
    c.reply(
      frames.share(
        await c.chat.shareChat({ owner: c.client.owner, chatId: a.chatId, upTo: a.upTo ?? undefined, public: a.public ?? undefined }),
      ),
    ),
  ),
  GET_SHARES: handler("GET_SHARES", async (c, a) => c.reply(frames.shares(await c.chat.shares(c.client.owner, a.chatId ?? undefined)))),
  REVOKE_SHARE: handler("REVOKE_SHARE", async (c, a) => {
    await c.chat.revokeShare(c.client.owner, a.shareId);
    c.reply(frames.shareRevoked(a.shareId));
  }),
  SEND_MESSAGE: handler("SEND_MESSAGE", async (c, a) => {
    const track = await admitSend(c.limits, c.ws.data.budget, a.content, () => c.userSends(c.client.owner));
    const r = await c.chat.send({ ...a, owner: c.client.owner }, c.client);
    // The sender learns of a new reply from its stream; MESSAGE_ACCEPTED when it asked (requestId),
    // for a duplicate, and for a question that waits behind another reply.
    if (r.duplicate || c.requestId || r.queued) c.reply(frames.messageAccepted(a.chatId, r));
    // A queued reply is not streaming yet; the chat's lane streams one at a time anyway.
    if (!r.duplicate && !r.queued) track(r.reply);
  }),
  GET_DEVICES: handler("GET_DEVICES", async (c) => c.reply(frames.devices(await c.chat.devices.list(c.client.owner)))),
  // Counted as one of the user's sends (and, in the chat service, in the hub's C2D budget).
  SEND_TO_DEVICE: handler("SEND_TO_DEVICE", async (c, a) => {
    const allowed = await c.userSends(c.client.owner);
    if (!allowed.ok) throw new FrameError("RATE_LIMITED", "too many messages; slow down", { retryAfterMs: allowed.retryAfterMs });
    c.reply(frames.deviceMessageSent(await c.chat.devices.say(c.client.owner, a.deviceId, a.text, c.client.id)));
  }),
};

export const isInboundType = (t: string): t is InboundType => Object.hasOwn(handlers, t);

export function parseArgs<T extends InboundType>(type: T, raw: Record<string, unknown>) {
  return v.safeParse(handlers[type].schema, raw);
}
