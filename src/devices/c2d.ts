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

export type C2DReply = { response: string; conversation_id: string; message_id: string; timestamp: string; error?: string };

export type C2DSender = {
  send(deviceId: string, reply: C2DReply, o: { correlationId: string; expiresInMs: number }): Promise<void>;
  close(): Promise<void>;
};

// Errors that another try cannot fix.
const FINAL = new Set(["DeviceNotFoundError", "DeviceMaximumQueueDepthExceededError", "UnauthorizedError", "ArgumentError"]);

/**
 * Cloud-to-device replies through the IoT Hub service API. `Transport` defaults to AMQP over TLS;
 * tests pass one that trusts their certificate. Retries are few and quick: a device stops waiting
 * after 30 s, so a reply that cannot go out soon is better logged than queued for minutes.
 */
export type C2DAccess = { connectionString: string } | { hostName: string; credential: TokenCredential };

export function createC2DSender(o: { access: C2DAccess; Transport?: typeof Amqp; attempts?: number; retryDelayMs?: number }): C2DSender {
  const client =
    "connectionString" in o.access
      ? Client.fromConnectionString(o.access.connectionString, o.Transport ?? Amqp)
      : Client.fromTokenCredential(o.access.hostName, o.access.credential, o.Transport ?? Amqp);
  const attempts = o.attempts ?? 3;
  const delay = o.retryDelayMs ?? 250;
  client.setRetryPolicy({
    shouldRetry: (err: Error) => !FINAL.has(err?.name),
    nextRetryTimeout: (retryCount: number) => (retryCount >= attempts - 1 ? -1 : delay * 2 ** retryCount),
  } as Parameters<Client["setRetryPolicy"]>[0]);

  return {
    async send(deviceId, reply, { correlationId, expiresInMs }) {
      const message = new Message(JSON.stringify(reply));
      message.messageId = reply.message_id;
      message.correlationId = correlationId;
      message.contentType = "application/json";
      message.contentEncoding = "utf-8";
      message.expiryTimeUtc = Date.now() + expiresInMs;
      await client.send(deviceId, message);
    },
    async close() {
      await client.close().catch(() => {});
    },
  };
}
