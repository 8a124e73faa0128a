import type { TokenCredential } from "@azure/identity";
import type { Amqp } from "azure-iothub";
import { azureCredential } from "../azure-auth";
import type { Config } from "../config";
import type { C2DAccess } from "./c2d";
import type { ConsumerOptions, EventHubAccess } from "./consumer";

export type DeviceBridgeOptions = {
  /** The Event Hub-compatible endpoint: a connection string, or a namespace + hub with Azure identity. */
  eventHub: EventHubAccess;
  /** The IoT Hub service API for C2D: a connection string, or a host name with Azure identity. */
  iotHub: C2DAccess;
  consumerGroup: string;
  replyMaxAgeMs: number;
  /** DEVICE_REPLY_DEADLINE_S: a one-message device hears what is ready by then. */
  replyDeadlineMs: number;
  /** IOT_HUB_C2D_PER_MINUTE, when this process counts alone (no shared budget given). */
  c2dPerMinute: number;
  processedTtlS: number;
  claimLeaseMs: number;
  /** DEVICE_ID_FROM_BODY: a device id from the body when IoT Hub's property is missing. */
  deviceIdFromBody: boolean;
  /** Seams for tests against the local AMQP peer; production leaves them unset. */
  c2dTransport?: typeof Amqp;
  retryDelayMs?: number;
  loadBalancing?: ConsumerOptions["loadBalancing"];
};

/** Keys where configured; Azure identity for whatever has none (config.ts checked one of the two is there). */
export async function deviceBridgeOptions(
  c: Config,
  credential: () => Promise<TokenCredential> = azureCredential,
): Promise<DeviceBridgeOptions> {
  return {
    eventHub: c.EVENT_HUB_COMPATIBLE_CONN_STR
      ? { connectionString: c.EVENT_HUB_COMPATIBLE_CONN_STR }
      : {
          fullyQualifiedNamespace: c.EVENT_HUB_FULLY_QUALIFIED_NAMESPACE!,
          eventHubName: c.EVENT_HUB_NAME!,
          credential: await credential(),
        },
    iotHub: c.IOT_HUB_CONNECTION_STRING
      ? { connectionString: c.IOT_HUB_CONNECTION_STRING }
      : { hostName: c.IOT_HUB_HOST_NAME!, credential: await credential() },
    consumerGroup: c.IOT_HUB_CONSUMER_GROUP,
    replyMaxAgeMs: c.DEVICE_REPLY_MAX_AGE_S * 1000,
    replyDeadlineMs: c.DEVICE_REPLY_DEADLINE_S * 1000,
    c2dPerMinute: c.IOT_HUB_C2D_PER_MINUTE,
    processedTtlS: c.PROCESSED_MESSAGE_TTL_DAYS * 86_400,
    claimLeaseMs: c.DEVICE_CLAIM_LEASE_S * 1000,
    deviceIdFromBody: c.DEVICE_ID_FROM_BODY,
    // How replicas share the hub's partitions through our checkpoint store, and how soon a dead
    // replica's partitions are taken over (its ownership records expire).
    loadBalancing: {
      strategy: c.IOT_HUB_LOAD_BALANCING,
      updateIntervalInMs: c.IOT_HUB_LOAD_BALANCING_INTERVAL_MS,
      partitionOwnershipExpirationIntervalInMs: c.IOT_HUB_PARTITION_EXPIRY_MS,
    },
  };
}
