import type { EventContext, Message, Sender } from "rhea";

/** The node a request arrived at: the address of the client's sender link ($cbs, $management, ...). */
export function requestNode(ctx: EventContext): string | undefined {
  return ctx.receiver?.target?.address;
}

/**
 * Answers a request/response call ($cbs, $management). Clients attach their reply receiver from the same
 * node; azure-iothub sets reply_to "cbs", which names no link, so matching by node is the fallback.
 */
export function reply(ctx: EventContext, status: { code: number; description: string }, body?: unknown): void {
  const request = ctx.message as Message;
  const node = requestNode(ctx);
  const fromNode = (l: Sender) => l.source?.address === node;
  const sender =
    ctx.connection.find_sender((l: Sender) => fromNode(l) && l.target?.address === request.reply_to) ??
    ctx.connection.find_sender(fromNode);
  ctx.delivery?.accept();
  if (!sender) return;
  sender.send({
    correlation_id: request.message_id,
    to: request.reply_to,
    // azure-iothub compares status-code with !== 200: it must be the number, not "200".
    application_properties: { "status-code": status.code, "status-description": status.description },
    body: body ?? null,
  });
}

/**
 * put-token always succeeds: the peer does not check SAS signatures, tests exercise transport behaviour,
 * not key management.
 */
export function answerCbs(ctx: EventContext): void {
  reply(ctx, { code: 200, description: "OK" });
}
