import type { TokenCredential } from "@azure/identity";
import { createRequire } from "node:module";
import { Amqp, Client } from "azure-iothub";
import { Message } from "azure-iothub/dist/common-core/message.js";

// azure-iothub 1.16.6: when the connection drops during a send, translateError returns the
// NotConnectedError itself with `amqpError` pointing at itself; the SDK's debug formatting then
// recurses until the stack overflows inside a socket handler and takes the process down.
// Break the self-reference once, where the SDK looks the function up on each call.
const serviceErrors = createRequire(import.meta.url)("azure-iothub/dist/amqp_service_errors.js") as {
  translateError: (message: string, amqpError: unknown) => Error & { amqpError?: unknown };
  __pichatGuarded?: true;
};
if (!serviceErrors.__pichatGuarded) {
  const original = serviceErrors.translateError;
  serviceErrors.translateError = (message, amqpError) => {
    const error = original(message, amqpError);
    if (error.amqpError === error) error.amqpError = undefined;
    return error;
  };
  serviceErrors.__pichatGuarded = true;
}

export type C2DReply = {
  response: string;
  conversation_id: string;
  message_id: string;
  timestamp: string;
  error?: string;
  /** Replies in parts only (a device that asked for them): the part's number from 0, */
  part?: number;
  /** whether it is the reply's last part, */
  last?: boolean;
  /** and how many code points of the reply's spoken text come before it (a device drops what it has heard). */
  offset?: number;
  /** SEND_TO_DEVICE: said to the device, not an answer to a question. */
  announcement?: true;
};

export type C2DSender = {
  /** Sends one message; hub throttling (429) and a full device queue (403004) are retried with backoff until `deadline`. */
  send(deviceId: string, reply: C2DReply, o: { correlationId: string; expiresInMs: number; deadline?: number }): Promise<void>;
  close(): Promise<void>;
};

/** The hub said "not now": worth another try after a pause, as long as the device still waits. */
const BUSY = new Set(["ThrottlingError", "DeviceMaximumQueueDepthExceededError"]);

// Errors that another try cannot fix.
const FINAL = new Set(["DeviceNotFoundError", "UnauthorizedError", "ArgumentError"]);

/**
 * Cloud-to-device replies through the IoT Hub service API. `Transport` defaults to AMQP over TLS;
 * tests pass one that trusts their certificate. Retries are few and quick: a device stops waiting
 * after 30 s, so a reply that cannot go out soon is better logged than queued for minutes.
 */
export type C2DAccess = { connectionString: string } | { hostName: string; credential: TokenCredential };

export function createC2DSender(o: {
  access: C2DAccess;
  Transport?: typeof Amqp;
  attempts?: number;
  retryDelayMs?: number;
  /** Called once for each 429 or 403004 the hub answers. */
  onBusy?: (kind: "throttled" | "queue_full") => void;
}): C2DSender {
  const client =
    "connectionString" in o.access
      ? Client.fromConnectionString(o.access.connectionString, o.Transport ?? Amqp)
      : Client.fromTokenCredential(o.access.hostName, o.access.credential, o.Transport ?? Amqp);
  const attempts = o.attempts ?? 3;
  const delay = o.retryDelayMs ?? 250;
  const busyBackoffMs = Math.max(delay, 200);
  client.setRetryPolicy({
    // Busy answers are retried below, with a longer backoff than a dropped connection needs.
    shouldRetry: (err: Error) => !FINAL.has(err?.name) && !BUSY.has(err?.name),
    nextRetryTimeout: (retryCount: number) => (retryCount >= attempts - 1 ? -1 : delay * 2 ** retryCount),
  } as Parameters<Client["setRetryPolicy"]>[0]);

  return {
    async send(deviceId, reply, { correlationId, expiresInMs, deadline = Date.now() + expiresInMs }) {
      for (let attempt = 0; ; attempt++) {
        const message = new Message(JSON.stringify(reply));
        // One id per message: a part's is the reply's id and its offset.
        message.messageId = reply.part === undefined ? reply.message_id : `${reply.message_id}:${reply.offset ?? 0}`;
        message.correlationId = correlationId;
        message.contentType = "application/json";
        message.contentEncoding = "utf-8";
        message.expiryTimeUtc = Date.now() + expiresInMs;
        try {
          return void (await client.send(deviceId, message));
        } catch (e) {
          const name = (e as Error)?.name;
          if (!BUSY.has(name)) throw e;
          o.onBusy?.(name === "ThrottlingError" ? "throttled" : "queue_full");
          const pause = Math.min(busyBackoffMs * 2 ** attempt, 8_000) * (0.75 + Math.random() / 2);
          if (Date.now() + pause > deadline) throw e;
          await Bun.sleep(pause);
        }
      }
    },
    async close() {
      await client.close().catch(() => {});
    },
  };
}
