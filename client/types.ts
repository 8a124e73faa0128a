// The client's types, derived from the frame schemas the server validates with (src/ws/protocol.ts).
// Type-only imports: nothing of valibot or the server ends up in the built client.
import type * as v from "valibot";
import type { answers, InboundType, inbound, OutboundType, outbound } from "../src/ws/protocol";

/** A frame type a client sends: each is a request the server answers. */
export type RequestType = InboundType;
/** A request's arguments, as the client writes them (before the server's defaults and transforms). */
export type RequestArgs<T extends RequestType> = v.InferInput<(typeof inbound)[T]>;
export type ServerFrameType = OutboundType;
/** A frame the server sends, by its type. */
export type ServerFrame<T extends ServerFrameType = ServerFrameType> = v.InferOutput<(typeof outbound)[T]>;
/** The frame that answers a request of type T (an ERROR rejects it instead). */
export type AnswerOf<T extends RequestType> = ServerFrame<(typeof answers)[T]>;
export type ErrorCode = ServerFrame<"ERROR">["code"];
export type Chat = ServerFrame<"NEW_CHAT">["chat"];
export type Message = ServerFrame<"CHAT_HISTORY">["messages"][number];

/** Where a client stands: it reconnects by itself until `stopped` (the token is no longer accepted) or `closed` (close()). */
export type ConnectionState = "connecting" | "open" | "reconnecting" | "stopped" | "closed";
