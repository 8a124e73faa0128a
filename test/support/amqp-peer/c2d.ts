import rhea, { type Container, type EventContext, type Message } from "rhea";
import { acceptLink } from "./listener.ts";
import { answerCbs, requestNode } from "./request-reply.ts";

export type C2DMessage = {
  deviceId: string;
  messageId: string | undefined;
  /** Parsed JSON when the payload is JSON, else the payload as UTF-8 text. */
  body: unknown;
  properties: Record<string, unknown>;
  raw: Message;
  /** When the peer accepted it (epoch ms, sub-millisecond: performance.timeOrigin + performance.now()). */
  at: number;
};
/** "drop-once": the next C2D message is neither settled nor kept; its connection is cut mid-send, then "accept". */
export type C2DMode = "accept" | "reject-not-found" | "reject" | "drop-once";

const DEVICEBOUND = "/messages/devicebound";
const TO = /^\/devices\/([^/]+)\/messages\/devicebound$/;

// Each rejection maps to a specific azure-iothub error: not-found → DeviceNotFoundError,
// resource-limit-exceeded → DeviceMaximumQueueDepthExceededError (the per-device C2D queue is full).
// IoT Hub's 429 (throttled) is com.microsoft:device-container-throttled → ThrottlingError; its 403004 is
// resource-limit-exceeded.
const REJECTIONS = {
  "reject-not-found": { condition: "amqp:not-found", description: "Device not found" },
  reject: { condition: "amqp:resource-limit-exceeded", description: "Device queue is full" },
  throttle: { condition: "com.microsoft:device-container-throttled", description: "Throttled (429)" },
} as const;
/** A refusal for the next few C2D messages: "throttle" (429) or "queue-full" (403004). */
export type C2DRefusal = "throttle" | "queue-full";

type Waiter = { pred: (m: C2DMessage) => boolean; resolve: (m: C2DMessage) => void };

export function createC2DEndpoint() {
  const c2d: C2DMessage[] = [];
  const waiters = new Set<Waiter>();
  let mode: C2DMode = "accept";
  const refusals: C2DRefusal[] = [];
  const refused: { kind: C2DRefusal; at: number; deviceId: string }[] = [];
  const container: Container = rhea.create_container({ id: "iot-hub-peer" });

  function deliver(ctx: EventContext): void {
    const msg = ctx.message!;
    const device = TO.exec(String(msg.to ?? ""));
    if (!device) {
      return ctx.delivery?.reject({ condition: "com.microsoft:argument-error", description: `bad 'to': ${msg.to}` });
    }
    if (mode === "drop-once") {
      mode = "accept";
      return void (ctx.connection as unknown as { socket?: { destroy(): void } }).socket?.destroy();
    }
    if (mode !== "accept") return ctx.delivery?.reject(REJECTIONS[mode]);
    const refusal = refusals.shift();
    if (refusal) {
      refused.push({ kind: refusal, at: Date.now(), deviceId: decodeURIComponent(device[1]!) });
      return ctx.delivery?.reject(REJECTIONS[refusal === "throttle" ? "throttle" : "reject"]);
    }
    const m: C2DMessage = {
      deviceId: decodeURIComponent(device[1]!),
      messageId: idString(msg.message_id),
      body: parseBody(msg.body),
      properties: msg.application_properties ?? {},
      raw: msg,
      at: performance.timeOrigin + performance.now(),
    };
    c2d.push(m);
    ctx.delivery?.accept();
    for (const w of waiters) if (w.pred(m)) waiters.delete(w), w.resolve(m);
  }

  function waitForC2D(pred: (m: C2DMessage) => boolean = () => true, timeoutMs = 5000): Promise<C2DMessage> {
    const seen = c2d.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        waiters.delete(w);
        reject(new Error(`no matching C2D message within ${timeoutMs} ms (received ${c2d.length})`));
      }, timeoutMs);
      const w: Waiter = { pred, resolve: (m) => (clearTimeout(timer), resolve(m)) };
      waiters.add(w);
    });
  }

  container.on("receiver_open", (ctx: EventContext) => {
    const node = ctx.receiver!.target?.address;
    if (node !== "$cbs" && node !== DEVICEBOUND) {
      return void ctx.receiver!.close({ condition: "amqp:not-found", description: `no node '${node}'` });
    }
    acceptLink(ctx.receiver!);
  });
  container.on("sender_open", (ctx: EventContext) => acceptLink(ctx.sender!));
  container.on("message", (ctx: EventContext) => (requestNode(ctx) === "$cbs" ? answerCbs(ctx) : deliver(ctx)));

  return {
    container,
    c2d,
    waitForC2D,
    setC2DMode: (m: C2DMode) => void (mode = m),
    refuseNext: (kind: C2DRefusal, count = 1) => void refusals.push(...Array<C2DRefusal>(count).fill(kind)),
    stopRefusing: () => void refusals.splice(0),
    refused,
  };
}

// The SDK sends a UUID-shaped message id as an AMQP uuid, which rhea decodes to 16 raw bytes.
function idString(id: unknown): string | undefined {
  if (id === undefined || id === null) return undefined;
  if (Buffer.isBuffer(id) && id.length === 16) return rhea.uuid_to_string(id);
  return String(id);
}

function parseBody(body: unknown): unknown {
  const content = body && typeof body === "object" && "content" in body ? (body as { content: unknown }).content : body;
  const text = Buffer.isBuffer(content) ? content.toString("utf8") : String(content ?? "");
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}
