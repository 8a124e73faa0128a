import rhea, { type Container, type EventContext, type Message, type Sender } from "rhea";
import { acceptLink, onConnectionGone } from "./listener.ts";
import { answerCbs, reply, requestNode } from "./request-reply.ts";

export type Telemetry = {
  deviceId: string;
  /** Buffer and string are the raw payload bytes, as a device sends them; anything else is sent as JSON. */
  body: unknown;
  messageId?: string;
  contentType?: string;
  partitionId?: string;
  enqueuedTime?: Date;
  properties?: Record<string, unknown>;
  /** Posted straight to the Event Hub, not through IoT Hub: no iothub-connection-device-id (deviceId then only picks the partition). */
  noDeviceProperty?: boolean;
};
export type Enqueued = { partitionId: string; sequenceNumber: number; offset: string };
export type ReceiverAttach = { partitionId: string; consumerGroup: string; filter: string };

type StoredEvent = { sequenceNumber: number; offset: string; enqueuedTime: Date; message: Message };
type Partition = { id: string; events: StoredEvent[]; nextOffset: number };
type Subscription = { sender: Sender; partition: Partition; next: number; consumerGroup: string; epoch?: number };

// Offsets are byte positions in a log where each record also takes a fixed header, so they always grow
// and never equal the sequence number: code that mixes the two up fails against this peer.
const RECORD_HEADER_BYTES = 64;
const FILTER = /^amqp\.annotation\.(x-opt-offset|x-opt-sequence-number|x-opt-enqueued-time)\s*(>=?)\s*'([^']*)'$/;

export function createEventHubEndpoint(opts: { hubName: string; partitions: number }) {
  const partitions: Partition[] = Array.from({ length: opts.partitions }, (_, i) => ({ id: String(i), events: [], nextOffset: 0 }));
  const subscriptions = new Map<Sender, Subscription>();
  const receiverAttaches: ReceiverAttach[] = [];
  const createdAt = new Date();
  const container: Container = rhea.create_container({ id: "event-hub-peer" });

  function flush(sub: Subscription): void {
    while (sub.next < sub.partition.events.length && sub.sender.sendable()) {
      sub.sender.send(sub.partition.events[sub.next++]!.message);
    }
  }

  function enqueue(ev: Telemetry): Enqueued {
    const partition = ev.partitionId === undefined ? partitions[hash(ev.deviceId) % partitions.length]! : byId(ev.partitionId);
    if (!partition) throw new Error(`no partition ${ev.partitionId} (the peer has ${partitions.length})`);
    const bytes = Buffer.isBuffer(ev.body) ? ev.body : Buffer.from(typeof ev.body === "string" ? ev.body : JSON.stringify(ev.body));
    const sequenceNumber = partition.events.length;
    const offset = String(partition.nextOffset);
    partition.nextOffset += RECORD_HEADER_BYTES + bytes.length;
    const enqueuedTime = ev.enqueuedTime ?? new Date();
    const message: Message = {
      message_id: ev.messageId,
      content_type: ev.contentType,
      body: rhea.message.data_section(bytes),
      application_properties: ev.properties,
      message_annotations: {
        "x-opt-sequence-number": rhea.types.wrap_long(sequenceNumber),
        "x-opt-offset": offset,
        "x-opt-enqueued-time": enqueuedTime,
        ...(ev.noDeviceProperty ? {} : { "iothub-connection-device-id": ev.deviceId }),
        "iothub-enqueuedtime": enqueuedTime,
        "iothub-message-source": "Telemetry",
      },
    };
    partition.events.push({ sequenceNumber, offset, enqueuedTime, message });
    for (const sub of subscriptions.values()) if (sub.partition === partition) flush(sub);
    return { partitionId: partition.id, sequenceNumber, offset };
  }

  const byId = (id: unknown) => partitions.find((p) => p.id === String(id));

  function subscribe(ctx: EventContext): void {
    const sender = ctx.sender!;
    const address: string = sender.source?.address ?? "";
    const m = /^(.+)\/ConsumerGroups\/([^/]+)\/Partitions\/([^/]+)$/i.exec(address);
    const partition = m && m[1] === opts.hubName ? byId(m[3]) : undefined;
    if (!m || !partition) {
      return void sender.close({ condition: "amqp:not-found", description: `no entity at '${address}'` });
    }
    const filter = selectorOf(sender.source);
    receiverAttaches.push({ partitionId: partition.id, consumerGroup: m[2]!, filter });
    const start = startIndex(partition.events, filter);
    if (start === undefined) {
      return void sender.close({ condition: "amqp:not-implemented", description: `unsupported filter '${filter}'` });
    }
    // Epoch receivers, as Event Hubs does: a receiver attached with an epoch (the SDK's ownerLevel,
    // sent when a checkpoint store balances partitions) takes the partition from any earlier one of
    // that consumer group with an equal or lower epoch, which is detached as "link stolen".
    const rawEpoch = (sender as unknown as { remote?: { attach?: { properties?: Record<string, unknown> } } }).remote?.attach?.properties?.[
      "com.microsoft:epoch"
    ];
    const epoch = rawEpoch === undefined ? undefined : Number(rawEpoch);
    if (epoch !== undefined) {
      for (const other of [...subscriptions.values()]) {
        if (other.partition !== partition || other.consumerGroup !== m[2] || other.epoch === undefined || other.epoch > epoch) continue;
        subscriptions.delete(other.sender);
        other.sender.close({ condition: "amqp:link:stolen", description: `a receiver with epoch ${epoch} took partition ${partition.id}` });
      }
    }
    const sub: Subscription = { sender, partition, next: start, consumerGroup: m[2]!, ...(epoch === undefined ? {} : { epoch }) };
    subscriptions.set(sender, sub);
    flush(sub);
  }

  function management(ctx: EventContext): void {
    const props = ctx.message?.application_properties ?? {};
    if (props.operation !== "READ") return reply(ctx, { code: 501, description: `unsupported operation ${props.operation}` });
    if (props.type === "com.microsoft:eventhub") {
      return reply(
        ctx,
        { code: 200, description: "OK" },
        {
          name: opts.hubName,
          type: props.type,
          created_at: createdAt,
          partition_ids: partitions.map((p) => p.id),
        },
      );
    }
    if (props.type === "com.microsoft:partition") {
      const p = byId(props.partition);
      if (!p) return reply(ctx, { code: 404, description: `no partition ${props.partition}` });
      const last = p.events.at(-1);
      return reply(
        ctx,
        { code: 200, description: "OK" },
        {
          name: opts.hubName,
          type: props.type,
          partition: p.id,
          begin_sequence_number: rhea.types.wrap_long(0),
          last_enqueued_sequence_number: rhea.types.wrap_long(last?.sequenceNumber ?? -1),
          last_enqueued_offset: last?.offset ?? "-1",
          last_enqueued_time_utc: last?.enqueuedTime ?? new Date(0),
          is_partition_empty: !last,
        },
      );
    }
    reply(ctx, { code: 404, description: `unknown type ${props.type}` });
  }

  container.on("connection_open", (ctx: EventContext) => {
    const conn = ctx.connection;
    onConnectionGone(conn, () => {
      for (const s of subscriptions.keys()) if (s.connection === conn) subscriptions.delete(s);
    });
  });
  container.on("receiver_open", (ctx: EventContext) => acceptLink(ctx.receiver!));
  container.on("sender_open", (ctx: EventContext) => {
    acceptLink(ctx.sender!);
    const node = ctx.sender!.source?.address;
    if (node !== "$cbs" && node !== "$management") subscribe(ctx);
  });
  container.on("sendable", (ctx: EventContext) => {
    const sub = subscriptions.get(ctx.sender!);
    if (sub) flush(sub);
  });
  container.on("sender_close", (ctx: EventContext) => void subscriptions.delete(ctx.sender!));
  container.on("message", (ctx: EventContext) => {
    const node = requestNode(ctx);
    if (node === "$cbs") return answerCbs(ctx);
    if (node === "$management") return management(ctx);
    ctx.delivery?.reject({ condition: "amqp:not-implemented", description: "this peer only serves consumers" });
  });

  return { container, enqueue, receiverAttaches };
}

/** The selector string of a receiver's source, whether rhea hands it over described or bare. */
function selectorOf(source: unknown): string {
  const filters = (source as { filter?: Record<string, unknown> } | undefined)?.filter ?? {};
  const raw = filters["apache.org:selector-filter:string"] ?? Object.values(filters)[0];
  const value = raw && typeof raw === "object" && "value" in raw ? (raw as { value: unknown }).value : raw;
  return value === undefined ? "" : String(value);
}

/** Index of the first event the filter lets through; no filter means from the start. */
function startIndex(events: StoredEvent[], filter: string): number | undefined {
  if (filter === "") return 0;
  const m = FILTER.exec(filter);
  if (!m) return undefined;
  const [, field, op, value] = m;
  if (value === "@latest") return events.length;
  const key =
    field === "x-opt-offset"
      ? (e: StoredEvent) => Number(e.offset)
      : field === "x-opt-sequence-number"
        ? (e: StoredEvent) => e.sequenceNumber
        : (e: StoredEvent) => e.enqueuedTime.getTime();
  const bound = Number(value);
  const i = events.findIndex((e) => (op === ">=" ? key(e) >= bound : key(e) > bound));
  return i === -1 ? events.length : i;
}

// Stable across runs so a test can predict where a device's events land.
function hash(s: string): number {
  let h = 0;
  for (let i = 0; i < s.length; i++) h = (h * 31 + s.charCodeAt(i)) >>> 0;
  return h;
}
