import { Amqp } from "azure-iothub";
import { Amqp as AmqpBase, type AmqpBaseTransportConfig } from "azure-iothub/dist/common-amqp/amqp.js";

/**
 * An azure-iothub transport constructor that trusts `caPem` (in place of the system roots) for its TLS
 * connection. Pass it where a Transport is accepted: `Client.fromConnectionString(cs, amqpTrusting(ca))`.
 *
 * Why this shape: the service Amqp transport builds its connect config internally (uri + user agent only),
 * but its constructor takes the lower-level AMQP client as an optional second argument, and that client's
 * connect() already forwards `sslOptions.ca` to the TLS socket. NODE_EXTRA_CA_CERTS also works, but only
 * when set before the process starts, which a test cannot do for itself.
 */
export function amqpTrusting(caPem: string): typeof Amqp {
  class AmqpBaseWithCa extends AmqpBase {
    override connect(config: AmqpBaseTransportConfig, done: Parameters<AmqpBase["connect"]>[1]): void {
      super.connect({ ...config, sslOptions: { ...config.sslOptions, ca: caPem } }, done);
    }
  }
  return class AmqpWithCa extends Amqp {
    constructor(config: ConstructorParameters<typeof Amqp>[0]) {
      // true: the service transport auto-settles, as its default constructor does.
      super(config, new AmqpBaseWithCa(true));
    }
  };
}
