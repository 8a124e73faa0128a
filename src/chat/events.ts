import type { Chat, Folder, Message, MessageStatus, ToolCallRecord } from "../records";
import type { DeviceInfo } from "./devices";

// What happened to chats, for whoever shows it: this process's sockets, and other replicas' through
// the Redis bus. Plain JSON values only, so an event crosses a process boundary unchanged.
// `origin` is the connection that caused it, so the sender can be answered differently. `owner`
// is the user whose chat it is: only that user's sockets are shown it. Reply frames go only to
// sockets watching the chat, and only its owner can watch it.
export type ChatEvent =
  | { type: "chat_created"; owner: string; chat: Chat; origin?: string }
  | { type: "chat_updated"; owner: string; chat: Chat; origin?: string }
  | { type: "chat_deleted"; owner: string; chatId: string; origin?: string }
  | { type: "user_message"; owner: string; message: Message; origin?: string }
  /** A chat's current branch changed (REGENERATE, EDIT_MESSAGE, SELECT_BRANCH): it is branched from now on. */
  | { type: "branch_selected"; owner: string; chatId: string; messageId: string; origin?: string }
  /** A reply began generating (on some replica): every replica mirrors it from here. */
  | {
      type: "reply_start";
      chatId: string;
      traceId: string;
      createdAt: string;
      /** The question it answers, and the device that asked: what another replica stores if this one dies. */
      questionId?: string;
      deviceId?: string;
    }
  /** The replica generating a reply is alive (sent while the model is silent): src/chat/lease.ts. */
  | { type: "reply_alive"; chatId: string; traceId: string; questionId?: string; seq: number }
  | { type: "reply_delta"; chatId: string; traceId: string; seq: number; content: string }
  /**
   * A reply's tool call started (`call` has no `ok` yet) or finished. It takes a `seq` of its own
   * among the reply's deltas (an empty chunk in the reply's text), so clients get them in order.
   */
  | { type: "reply_tool"; chatId: string; traceId: string; seq: number; call: ToolCallEvent }
  | {
      type: "reply_end";
      chatId: string;
      traceId: string;
      seq: number;
      status?: MessageStatus;
      error?: { code: string; message: string };
      /** The reply as stored, when it was (a device on another replica sends it on). */
      message?: Message;
    }
  /** Asks the replica generating `traceId` to stop it (STOP_GENERATION or DELETE_CHAT elsewhere). */
  | { type: "stop_request"; chatId: string; traceId: string }
  /** A chat's stored messages may differ from what replicas kept of them: read them again (src/chat/recent.ts). */
  | { type: "messages_changed"; chatId: string }
  /** A user's folders changed (created, renamed, deleted): their sockets show the new list (src/chat/organise.ts). */
  | { type: "folders_changed"; owner: string; folders: Folder[]; origin?: string }
  /** A chat became temporary (made so) or stopped being (kept, or gone): src/chat/temporary.ts. */
  | { type: "temporary_chat"; owner: string; chatId: string; temporary: boolean }
  /** The owner's last socket on some replica closed: replicas still holding one renew their temporary chats at once. */
  | { type: "owner_left"; owner: string }
  /** A user's rating in a chat changed: every replica drops what it knows of that chat's ratings (src/chat/feedback.ts). */
  | { type: "feedback_changed"; owner: string; chatId: string }
  /** A user's settings changed: every replica drops its copy (src/chat/settings-cache.ts). */
  | { type: "settings_updated"; owner: string }
  /** Something about one of the owner's devices changed (a question, IoT Hub's connection state); absent fields did not. */
  | { type: "device_updated"; owner: string; device: DeviceInfo }
  /** This replica may have missed other replicas' events (the shared bus was down): clients should reload. */
  | { type: "resync"; reason: string };

/** A tool call as clients see it: at its start without `ok`/`result`/`ms`; the result shortened for display. */
export type ToolCallEvent = Pick<ToolCallRecord, "id" | "name" | "arguments"> & Partial<Omit<ToolCallRecord, "id" | "name" | "arguments">>;

export type Bus = {
  publish(event: ChatEvent): void;
  /** To this replica's listeners only (an end another replica already announced, for sockets here that missed it). */
  publishHere(event: ChatEvent): void;
  /** False while a shared bus cannot hear the other replicas (Redis down): silence then proves nothing. */
  hearing?(): boolean;
  /** Returns the unsubscribe function. */
  subscribe(listener: (event: ChatEvent) => void): () => void;
};

/** Delivers in-process, synchronously and in order. A listener that throws cannot starve the others. */
export function localBus(onListenerError: (e: unknown) => void = () => {}): Bus {
  const listeners = new Set<(event: ChatEvent) => void>();
  const publish = (event: ChatEvent) => {
    for (const l of listeners) {
      try {
        l(event);
      } catch (e) {
        onListenerError(e);
      }
    }
  };
  return {
    publish,
    publishHere: publish,
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
  };
}
