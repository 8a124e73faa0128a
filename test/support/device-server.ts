import { loadConfig } from "../../src/config";
import { startDeviceBridge } from "../../src/devices/bridge";
import { deviceBridgeOptions } from "../../src/devices/options";
import type { Model } from "../../src/model/model";
import type { Store } from "../../src/store/store";
import { amqpTrusting, type IotHubPeer } from "./amqp-peer";
import { startTestServer } from "./harness";
import type { LocalhostCert } from "./tls-cert";
import { until } from "./until";

/**
 * The real server with the device bridge on, reading from the local AMQP peer and sending C2D to
 * it over TLS (trusting the test certificate). Waits until the consumer owns every partition.
 */
export async function startDeviceServer(o: {
  peer: IotHubPeer;
  cert: LocalhostCert;
  env?: Record<string, string>;
  store?: Store;
  iotHubConnectionString?: string;
  partitions?: number;
  /** Passed to startTestServer (e.g. to hold a reply in flight). */
  wrapModel?: (m: Model) => Model;
}) {
  const env = {
    IOT_HUB_ENABLE: "true",
    EVENT_HUB_COMPATIBLE_CONN_STR: o.peer.eventHubConnectionString,
    IOT_HUB_CONNECTION_STRING: o.iotHubConnectionString ?? o.peer.iotHubConnectionString,
    ...o.env,
  };
  const bridge = await deviceBridgeOptions(srvConfig(env));
  const srv = await startTestServer(env, {
    store: o.store,
    wrapModel: o.wrapModel,
    startDevices: (parts) =>
      startDeviceBridge(parts, {
        ...bridge,
        c2dTransport: amqpTrusting(o.cert.cert),
        retryDelayMs: 200,
        loadBalancing: { strategy: "greedy", updateIntervalInMs: 200 },
      }),
  });
  await until(() => {
    const s = srv.devices?.status();
    return s?.status === "running" && s.partitions.length === (o.partitions ?? 2) && s;
  }, "the device consumer to own every partition");
  return srv;
}

// The bridge options come from the same env the server is configured with.
const srvConfig = (env: Record<string, string>) => loadConfig({ ENVIRONMENT: "test", ...env });
