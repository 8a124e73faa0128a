// Every key of one chat carries the hash tag {c:<chatId>}, so a chat's lane, queue, question marks
// and reply streams live in one Cluster slot and one Lua script may touch them together.
const tag = (chatId: string) => `pichat:{c:${chatId}}`;

export const keys = {
  /** Which replica answers the chat's questions now (value: replica id; expires unless renewed). */
  lane: (chatId: string) => `${tag(chatId)}:lane`,
  /** Questions waiting for the lane, oldest first (JSON job specs). */
  queue: (chatId: string) => `${tag(chatId)}:queue`,
  /** A question waiting or being answered somewhere (so two replicas never both answer it). */
  question: (chatId: string, questionId: string) => `${tag(chatId)}:q:${questionId}`,
  /** The reply's chunks as they streamed (seq, content), for replicas that join mid-stream. */
  stream: (chatId: string, traceId: string) => `${tag(chatId)}:r:${traceId}`,
  /** Chats that may have questions waiting (a hint for the takeover sweep; one slot of its own). */
  queued: "pichat:queued",
  /** Chats being answered, scored by lease expiry: the service-wide MAX_GENERATIONS. */
  active: "pichat:active",
  /** Model requests in the current minute, service-wide. */
  modelCalls: (minute: number) => `pichat:model-calls:${minute}`,
  /** One user's send bucket (RATE_LIMIT_MESSAGES_PER_MINUTE across their sockets and replicas). */
  userSends: (userId: string) => `pichat:{u:${userId}}:sends`,
  /** One user's replies at once (MAX_GENERATIONS_PER_USER), scored by lease end. */
  userGenerations: (userId: string) => `pichat:{u:${userId}}:generations`,
  /** One user's export or import running now (one at a time, across replicas), and their start bucket. */
  userTransfer: (userId: string) => `pichat:{u:${userId}}:transfer`,
  userTransfers: (userId: string) => `pichat:{u:${userId}}:transfers`,
  /** One user's admitted and unrecorded tokens (budgets), a member per call, scored by lease end. */
  userReservations: (userId: string) => `pichat:{u:${userId}}:reserved`,
};

/** The sharded pub/sub channel every replica publishes chat events on and listens to. */
export const EVENTS_CHANNEL = "pichat:{events}";
