import type { Bus, ChatEvent } from "../chat/events";
import type { Connections } from "./connections";
import type { ErrorCode } from "./errors";
import { frames } from "./protocol";

/**
 * Shows chat events to the browsers of this process. The connection that caused an event is
 * skipped where its handler already answered it (NEW_CHAT, CHAT_DELETED with its requestId...).
 */
export function showEventsOnSockets(
  bus: Bus,
  conns: Connections,
  /** A temporary chat (src/chat/temporary.ts): no list frame about it goes anywhere (the original web UI never sees one). */
  unlisted: (chatId: string) => boolean,
): () => void {
  return bus.subscribe((e: ChatEvent) => {
    switch (e.type) {
      // Chat-list changes go to the owner's sockets only; nobody else may learn the chat exists.
      case "chat_created":
        if (unlisted(e.chat.id)) return;
        return conns.toOwner(e.owner, frames.chatCreated(e.chat), { except: e.origin });
      case "chat_updated":
        if (unlisted(e.chat.id)) return;
        return conns.toOwner(e.owner, frames.chatUpdated(e.chat), { except: e.origin });
      case "chat_deleted":
        conns.toOwner(e.owner, frames.chatDeleted(e.chatId), { except: e.origin });
        return conns.forgetChat(e.chatId);
      case "folders_changed":
        return conns.toOwner(e.owner, frames.folders(e.folders), { except: e.origin });
      case "user_message":
        // The sender already shows what it typed; everyone else sees it arrive.
        return conns.toChat(e.message.chat_id, frames.firstMessage(e.message), { except: e.origin, owner: e.owner });
      case "branch_selected":
        // The sender has its answer; the owner's other sockets showing the chat reload it.
        return conns.toChat(e.chatId, frames.branchSelected(e.chatId, e.messageId), { except: e.origin, owner: e.owner });
      case "reply_delta":
        return conns.toChat(e.chatId, frames.delta(e), { delta: e });
      case "reply_tool":
        return conns.toChat(e.chatId, frames.toolCall(e));
      case "reply_end":
        conns.toChat(e.chatId, frames.end(e));
        // "ends the stream with an ERROR frame": after end:true, so the UI has closed the bubble.
        if (e.error)
          conns.toChat(
            e.chatId,
            frames.error(e.error.code as ErrorCode /* a chat-layer code, maybe from another replica */, e.error.message, {
              chatId: e.chatId,
              traceId: e.traceId,
            }),
          );
        return;
      case "device_updated":
        return conns.toOwner(e.owner, frames.deviceUpdated(e.device));
      case "resync":
        return conns.toAll(frames.resync(e.reason));
      case "reply_start":
      case "reply_alive":
      case "stop_request":
      case "settings_updated":
      case "messages_changed":
      case "feedback_changed":
      case "temporary_chat":
      case "owner_left":
        return; // between replicas only
    }
  });
}
