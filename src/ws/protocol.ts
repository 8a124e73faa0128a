import type { InboundType } from "./client-frames";
import type { OutboundType } from "./server-frames";

// Every frame of /ws, in and out: `inbound` (what a client sends), `outbound` (what the server sends) and
// `answers` (which frame answers which request). docs/protocol.md describes them with examples;
// `bun run protocol` turns them into docs/asyncapi.yaml (src/ws/asyncapi.ts), and client/ takes its types from here.
export * from "./client-frames";
export * from "./server-frames";
export * from "./frame-builders";

/**
 * What the original React web UI relies on (docs/protocol.md §8 is its session): the frames it sends
 * (arguments in `payload`, no requestId), the frames it handles (it ignores every other type and field),
 * and the rules it needs kept. In docs/asyncapi.yaml as x-original-web-ui; test/asyncapi.test.ts plays its session.
 */
export const originalWebUi = {
  sends: ["GET_CHATS", "CREATE_CHAT", "GET_CHAT_HISTORY", "SEND_MESSAGE", "DELETE_CHAT"],
  handles: ["CHAT_LIST", "NEW_CHAT", "CHAT_CREATED", "CHAT_UPDATED", "CHAT_DELETED", "CHAT_HISTORY", "FIRST_MESSAGE", "MESSAGE", "ERROR"],
  rules: [
    'MESSAGE: the UI appends whatever `content` arrives, so an end frame (end: true) has content ""',
    "MESSAGE and FIRST_MESSAGE: the UI ignores `chatId`; it ignores most ERROR frames, and every frame type and field it does not know",
    "ERROR: `type` is always the uppercase ERROR (a lowercase `error` frame freezes the UI); an ERROR about a reply comes after its end frame",
    "NEW_CHAT answers CREATE_CHAT (the creator only); CHAT_CREATED goes to the user's other connections",
    "Arguments inside `payload`; SEND_MESSAGE as {chatId, message: {content, id}}; no requestId",
  ],
} as const satisfies { sends: readonly InboundType[]; handles: readonly OutboundType[]; rules: readonly string[] };

/**
 * How the server closes a socket on purpose (src/auth/revocation.ts, src/ws/connections.ts, src/server.ts).
 * `reconnect: false`: connecting again with the same token is refused, so a client stops and reports the reason.
 */
export const closes = [
  { code: 1001, reason: "server shutting down", reconnect: true, when: "graceful stop, after replies in flight end" },
  { code: 1008, reason: "client too slow", reconnect: true, when: "more than SEND_BUFFER_LIMIT_BYTES waits for the client" },
  { code: 1008, reason: "token revoked", reconnect: false, when: "the personal token this socket signed in with was revoked" },
  { code: 1008, reason: "token expired", reconnect: false, when: "the JWT this socket signed in with expired" },
  { code: 1009, reason: "Received too big message", reconnect: true, when: "a frame larger than 4 × MAX_FRAME_BYTES" },
] as const;
