/**
 * A local AMQP 1.0 peer playing Azure IoT Hub's endpoints, so the real SDK clients run over loopback:
 * the Event Hub-compatible endpoint (plain TCP, read by @azure/event-hubs consumers), the IoT Hub
 * service endpoint (TLS, written to by azure-iothub's Client for cloud-to-device messages), and the
 * device endpoint (TLS, used by azure-iot-device's AMQP transport: its telemetry lands on the Event
 * Hub-compatible endpoint, and the C2D messages the service endpoint accepted are delivered to it).
 */
import { randomBytes } from "node:crypto";
import { createC2DEndpoint, type C2DMessage, type C2DMode, type C2DRefusal } from "./amqp-peer/c2d.ts";
import { createDeviceEndpoint, type D2CMessage } from "./amqp-peer/device.ts";
import { createEventHubEndpoint, type Enqueued, type ReceiverAttach, type Telemetry } from "./amqp-peer/event-hub.ts";
import { listen } from "./amqp-peer/listener.ts";

export { amqpTrusting } from "./amqp-peer/iothub-transport.ts";
export type { C2DMessage, C2DMode, C2DRefusal, D2CMessage, Enqueued, ReceiverAttach, Telemetry };

export type PeerOptions = {
  /** Partition count of the Event Hub-compatible endpoint. Default 2. */
  partitions?: number;
  /** EntityPath of the Event Hub-compatible endpoint. Default "hub". */
  hubName?: string;
  /** Certificate for the IoT Hub endpoint; it must be valid for `localhost` (see tls-cert.ts). */
  tls: { cert: string; key: string };
};

export type IotHubPeer = {
  /** Plain TCP AMQP port of the Event Hub-compatible endpoint. */
  readonly eventHubPort: number;
  /** TLS AMQP port of the IoT Hub service endpoint. */
  readonly iotHubPort: number;
  /**
   * TLS AMQP port of the device endpoint. A separate listener from the service endpoint's (same certificate):
   * the service endpoint refuses links it does not serve, so the two cannot share one rhea container.
   */
  readonly devicePort: number;
  /** UseDevelopmentEmulator=true is what makes @azure/event-hubs use plain TCP and honour the port. */
  readonly eventHubConnectionString: string;
  /** The host must stay `localhost`: Bun refuses TLS with an IP address as the server name. */
  readonly iotHubConnectionString: string;
  /** Enqueue a device-to-cloud event; the partition defaults to a stable hash of deviceId. */
  sendTelemetry(ev: Telemetry): Enqueued;
  /** C2D messages the peer accepted, in order. */
  readonly c2d: readonly C2DMessage[];
  /** The first accepted C2D message matching pred, received already or later; rejects after timeoutMs (5000). */
  waitForC2D(pred?: (m: C2DMessage) => boolean, timeoutMs?: number): Promise<C2DMessage>;
  /** "accept" (default), "reject-not-found" (→ DeviceNotFoundError), "reject" (→ DeviceMaximumQueueDepthExceededError). */
  setC2DMode(mode: C2DMode): void;
  /** Refuse the next `count` C2D messages as IoT Hub does when busy: "throttle" (429) or "queue-full" (403004). */
  refuseNext(kind: C2DRefusal, count?: number): void;
  /** Drops the refusals refuseNext queued that are still to come. */
  stopRefusing(): void;
  /** The C2D messages refused by refuseNext, in order. */
  readonly refused: readonly { kind: C2DRefusal; at: number; deviceId: string }[];
  /** Every receiver link the Event Hub endpoint saw attach, with its selector, in order. */
  readonly receiverAttaches: readonly ReceiverAttach[];
  /**
   * A device connection string for azure-iot-device (`Client.fromConnectionString(cs, Amqp)`); any device id
   * works, none has to be registered. It needs the test certificate trusted: NODE_EXTRA_CA_CERTS=<certPath>
   * in the environment of the process that uses it, set before that process starts.
   */
  deviceConnectionString(deviceId: string): string;
  /** Telemetry the device endpoint accepted from devices (and enqueued on the Event Hub endpoint), in order. */
  readonly d2c: readonly D2CMessage[];
  /** C2D messages queued for a device that it has not completed or rejected yet. */
  pendingC2D(deviceId: string): number;
  /** Destroy all open connections on every endpoint but keep listening: a network drop. */
  dropConnections(): void;
  /** Stop listening and destroy all connections. */
  stop(): Promise<void>;
  /** Listen again on the same ports; enqueued events are kept. */
  restart(): Promise<void>;
};

export async function startIotHubPeer(opts: PeerOptions): Promise<IotHubPeer> {
  const hubName = opts.hubName ?? "hub";
  const hub = createEventHubEndpoint({ hubName, partitions: opts.partitions ?? 2 });
  const iot = createC2DEndpoint();
  const device = createDeviceEndpoint({ enqueue: hub.enqueue });
  // Every C2D message the service endpoint accepts also goes to the device's queue. The C2D endpoint's own
  // "message" handler was registered first and records synchronously, so new entries are there by now.
  let forwarded = 0;
  iot.container.on("message", () => {
    while (forwarded < iot.c2d.length) device.pushC2D(iot.c2d[forwarded++]!);
  });
  const [ehListener, iotListener, deviceListener] = await Promise.all([
    listen(hub.container, {}),
    listen(iot.container, { tls: opts.tls }),
    listen(device.container, { tls: opts.tls }),
  ]);
  const listeners = [ehListener, iotListener, deviceListener];
  // The peer checks no signatures; the key only has to be well-formed base64 for the SDKs to sign with.
  const key = randomBytes(32).toString("base64");
  return {
    eventHubPort: ehListener.port,
    iotHubPort: iotListener.port,
    devicePort: deviceListener.port,
    eventHubConnectionString:
      `Endpoint=sb://localhost:${ehListener.port}/;SharedAccessKeyName=service;SharedAccessKey=${key};` +
      `EntityPath=${hubName};UseDevelopmentEmulator=true`,
    iotHubConnectionString: `HostName=localhost:${iotListener.port};SharedAccessKeyName=service;SharedAccessKey=${key}`,
    sendTelemetry: hub.enqueue,
    c2d: iot.c2d,
    waitForC2D: iot.waitForC2D,
    setC2DMode: iot.setC2DMode,
    refuseNext: iot.refuseNext,
    stopRefusing: iot.stopRefusing,
    refused: iot.refused,
    receiverAttaches: hub.receiverAttaches,
    deviceConnectionString: (deviceId) => `HostName=localhost:${deviceListener.port};DeviceId=${deviceId};SharedAccessKey=${key}`,
    d2c: device.d2c,
    pendingC2D: device.pendingC2D,
    dropConnections: () => listeners.forEach((l) => l.dropConnections()),
    stop: async () => void (await Promise.all(listeners.map((l) => l.stop()))),
    restart: async () => void (await Promise.all(listeners.map((l) => l.restart()))),
  };
}
