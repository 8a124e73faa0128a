import rhea, { type Connection, type Container, type Delivery, type EventContext, type Message, type Sender } from "rhea";
import type { C2DMessage } from "./c2d.ts";
import type { Enqueued, Telemetry } from "./event-hub.ts";
import { acceptLink, onConnectionGone } from "./listener.ts";
import { reply, requestNode } from "./request-reply.ts";

/** A device-to-cloud message the device endpoint accepted and handed to the Event Hub-compatible endpoint. */
export type D2CMessage = {
  deviceId: string;
  messageId: string | undefined;
  contentType: string | undefined;
  /** The payload bytes exactly as the device sent them. */
  body: Buffer;
  properties: Record<string, unknown>;
  enqueued: Enqueued;
};

// The links azure-iot-device (AMQP transport) attaches for a device; module paths are not served.
const EVENTS = /^\/devices\/([^/]+)\/messages\/events$/;
const DEVICEBOUND = /^\/devices\/([^/]+)\/messages\/devicebound$/;
// put-token audience: `<host>/devices/<id>`, URL-encoded by the SDK (`localhost%3A1234%2Fdevices%2Fpi-1`).
const AUDIENCE = /\/devices\/([^/]+)$/;

// IoT Hub's default max delivery count: a message abandoned this often is dead-lettered (dropped here).
const MAX_DELIVERY_COUNT = 10;

/** One C2D message in a device's queue: waiting, or on its way to the device until the device settles it. */
type Queued = { message: Message; deliveryCount: number; inFlight?: Sender };

/**
 * The device-facing IoT Hub endpoint, as azure-iot-device's AMQP transport uses it:
 * - CBS put-token with a device audience authorises that device on the connection (no signature check);
 * - the device's sender link to `/devices/<id>/messages/events` is telemetry, enqueued on the Event
 *   Hub-compatible endpoint with `iothub-connection-device-id` = the link's device, then accepted;
 * - the device's receiver link from `/devices/<id>/messages/devicebound` gets that device's C2D queue.
 *   Like IoT Hub, a message stays queued until the device completes (accepts) or rejects it; an abandon
 *   (released/modified) or a link lost with the message unsettled puts it back, up to 10 deliveries; expired
 *   messages are dropped.
 */
export function createDeviceEndpoint(opts: { enqueue: (t: Telemetry) => Enqueued }) {
  const container: Container = rhea.create_container({ id: "iot-hub-device-peer" });
  const d2c: D2CMessage[] = [];
  const queues = new Map<string, Queued[]>();
  const c2dLinks = new Map<Sender, string>();
  const inFlight = new Map<Delivery, { deviceId: string; entry: Queued }>();
  const authorised = new WeakMap<Connection, Set<string>>();

  const queueOf = (deviceId: string) => {
    let q = queues.get(deviceId);
    if (!q) queues.set(deviceId, (q = []));
    return q;
  };

  function flush(deviceId: string): void {
    const q = queues.get(deviceId);
    if (!q) return;
    const now = Date.now();
    for (let i = 0; i < q.length; ) {
      const expiry = q[i]!.message.absolute_expiry_time;
      if (!q[i]!.inFlight && expiry instanceof Date && expiry.getTime() <= now) q.splice(i, 1);
      else i++;
    }
    for (const [sender, id] of c2dLinks) {
      if (id !== deviceId) continue;
      for (const entry of q) {
        if (entry.inFlight) continue;
        if (!sender.sendable()) break;
        entry.deliveryCount++;
        entry.inFlight = sender;
        const delivery = sender.send({ ...entry.message, delivery_count: entry.deliveryCount - 1 });
        inFlight.set(delivery, { deviceId, entry });
      }
    }
  }

  /** A C2D message the service side accepted for `deviceId`: queue it and deliver it when the device listens. */
  function pushC2D(m: C2DMessage): void {
    const raw = m.raw;
    queueOf(m.deviceId).push({
      deliveryCount: 0,
      message: {
        message_id: raw.message_id,
        correlation_id: raw.correlation_id,
        user_id: raw.user_id,
        to: `/devices/${encodeURIComponent(m.deviceId)}/messages/devicebound`,
        content_type: raw.content_type,
        content_encoding: raw.content_encoding,
        absolute_expiry_time: raw.absolute_expiry_time,
        application_properties: raw.application_properties,
        message_annotations: { "iothub-enqueuedtime": new Date() },
        body: raw.body,
      },
    });
    flush(m.deviceId);
  }

  /** Settled by the device: completed/rejected leave the queue; abandoned comes back for redelivery. */
  function settled(ctx: EventContext, keep: boolean): void {
    const hit = ctx.delivery && inFlight.get(ctx.delivery);
    if (!hit) return;
    inFlight.delete(ctx.delivery!);
    hit.entry.inFlight = undefined;
    if (!keep || hit.entry.deliveryCount >= MAX_DELIVERY_COUNT) {
      const q = queueOf(hit.deviceId);
      q.splice(q.indexOf(hit.entry), 1);
    }
    flush(hit.deviceId);
  }

  /** A C2D link gone: whatever it had unsettled goes back in the queue. */
  function unlink(sender: Sender): void {
    const deviceId = c2dLinks.get(sender);
    if (deviceId === undefined) return;
    c2dLinks.delete(sender);
    for (const [delivery, hit] of inFlight) {
      if (hit.entry.inFlight !== sender) continue;
      inFlight.delete(delivery);
      hit.entry.inFlight = undefined;
    }
    flush(deviceId);
  }

  function deviceOf(address: string | undefined, pattern: RegExp): string | undefined {
    const m = pattern.exec(address ?? "");
    return m ? decodeURIComponent(m[1]!) : undefined;
  }

  function isAuthorised(connection: Connection, deviceId: string): boolean {
    return authorised.get(connection)?.has(deviceId) ?? false;
  }

  function putToken(ctx: EventContext): void {
    const props = ctx.message?.application_properties ?? {};
    if (props.operation !== "put-token") return reply(ctx, { code: 400, description: `unsupported operation ${props.operation}` });
    let audience = String(props.name ?? "");
    try {
      audience = decodeURIComponent(audience);
    } catch {
      // not URL-encoded after all
    }
    const deviceId = deviceOf(audience, AUDIENCE);
    if (!deviceId) return reply(ctx, { code: 401, description: `not a device audience: '${audience}'` });
    let set = authorised.get(ctx.connection);
    if (!set) authorised.set(ctx.connection, (set = new Set()));
    set.add(deviceId);
    reply(ctx, { code: 200, description: "OK" });
  }

  function telemetry(ctx: EventContext): void {
    const deviceId = deviceOf(ctx.receiver?.target?.address, EVENTS)!;
    const msg = ctx.message!;
    const body = bodyBytes(msg.body);
    const messageId = idString(msg.message_id);
    const contentType = msg.content_type === undefined ? undefined : String(msg.content_type);
    const properties = { ...(msg.application_properties ?? {}) };
    const enqueued = opts.enqueue({
      deviceId,
      body,
      messageId,
      contentType,
      properties: Object.keys(properties).length ? properties : undefined,
    });
    d2c.push({ deviceId, messageId, contentType, body, properties, enqueued });
    ctx.delivery?.accept();
  }

  container.on("connection_open", (ctx: EventContext) => {
    const conn = ctx.connection;
    onConnectionGone(conn, () => {
      for (const s of [...c2dLinks.keys()]) if (s.connection === conn) unlink(s);
    });
  });
  container.on("receiver_open", (ctx: EventContext) => {
    const receiver = ctx.receiver!;
    const node = receiver.target?.address;
    if (node === "$cbs") return acceptLink(receiver);
    const deviceId = deviceOf(node, EVENTS);
    if (deviceId === undefined) return void receiver.close({ condition: "amqp:not-found", description: `no node '${node}'` });
    if (!isAuthorised(ctx.connection, deviceId)) {
      return void receiver.close({ condition: "amqp:unauthorized-access", description: `no token for device '${deviceId}'` });
    }
    acceptLink(receiver);
  });
  container.on("sender_open", (ctx: EventContext) => {
    const sender = ctx.sender!;
    const node = sender.source?.address;
    if (node === "$cbs") return acceptLink(sender);
    const deviceId = deviceOf(node, DEVICEBOUND);
    if (deviceId === undefined) return void sender.close({ condition: "amqp:not-found", description: `no node '${node}'` });
    if (!isAuthorised(ctx.connection, deviceId)) {
      return void sender.close({ condition: "amqp:unauthorized-access", description: `no token for device '${deviceId}'` });
    }
    acceptLink(sender);
    c2dLinks.set(sender, deviceId);
    flush(deviceId);
  });
  container.on("sendable", (ctx: EventContext) => {
    const deviceId = c2dLinks.get(ctx.sender!);
    if (deviceId !== undefined) flush(deviceId);
  });
  container.on("sender_close", (ctx: EventContext) => unlink(ctx.sender!));
  container.on("accepted", (ctx: EventContext) => settled(ctx, false));
  container.on("rejected", (ctx: EventContext) => settled(ctx, false));
  container.on("released", (ctx: EventContext) => settled(ctx, true));
  container.on("modified", (ctx: EventContext) => settled(ctx, true));
  container.on("message", (ctx: EventContext) => (requestNode(ctx) === "$cbs" ? putToken(ctx) : telemetry(ctx)));

  return {
    container,
    d2c: d2c as readonly D2CMessage[],
    pushC2D,
    /** C2D messages queued for the device and not yet completed or rejected by it. */
    pendingC2D: (deviceId: string): number => queues.get(deviceId)?.length ?? 0,
  };
}

// The device SDK sends a UUID-shaped message id as an AMQP uuid, which rhea decodes to 16 raw bytes.
function idString(id: unknown): string | undefined {
  if (id === undefined || id === null) return undefined;
  if (Buffer.isBuffer(id) && id.length === 16) return rhea.uuid_to_string(id);
  return String(id);
}

/** The payload bytes of a message: the SDK sends a data section; anything else is taken as text or JSON. */
function bodyBytes(body: unknown): Buffer {
  const content = body && typeof body === "object" && "content" in body ? (body as { content: unknown }).content : body;
  if (Buffer.isBuffer(content)) return content;
  if (content instanceof Uint8Array) return Buffer.from(content);
  if (typeof content === "string") return Buffer.from(content);
  return Buffer.from(JSON.stringify(content ?? null));
}
