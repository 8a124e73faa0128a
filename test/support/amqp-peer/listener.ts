import { once } from "node:events";
import type { Server, Socket } from "node:net";
import type { Connection, Container, Receiver, Sender } from "rhea";

export type Listener = {
  readonly port: number;
  /** Destroy every accepted socket, handshaking or open; keep listening. */
  dropConnections(): void;
  stop(): Promise<void>;
  /** Listen again on the same port. */
  restart(): Promise<void>;
};

export type ListenOptions = { tls?: { cert: string; key: string } };

/**
 * Listens for one endpoint on 127.0.0.1. Sockets are tracked from the raw "connection" event so that
 * connections still in the TLS handshake are dropped too, not only those rhea has already opened.
 */
export async function listen(container: Container, opts: ListenOptions): Promise<Listener> {
  const sockets = new Set<Socket>();
  // Clients hanging up is routine here; without a listener rhea console.warns every one of them.
  container.on("disconnected", () => {});
  let server: Server | undefined;
  let port = 0;

  async function start(): Promise<void> {
    // Every receiver settles by hand: C2D answers per mode, CBS/$management accept after replying.
    const common = { host: "127.0.0.1", port, autoaccept: false };
    const s: Server = opts.tls
      ? container.listen({ ...common, transport: "tls", cert: opts.tls.cert, key: opts.tls.key })
      : container.listen({ ...common, transport: "tcp" });
    s.on("connection", (sock: Socket) => {
      sockets.add(sock);
      sock.once("close", () => sockets.delete(sock));
    });
    if (!s.listening) await Promise.race([once(s, "listening"), once(s, "error").then(([e]) => Promise.reject(e))]);
    port = (s.address() as { port: number }).port;
    server = s;
  }

  function dropConnections(): void {
    for (const sock of sockets) sock.destroy();
    sockets.clear();
  }

  async function stop(): Promise<void> {
    const s = server;
    server = undefined;
    dropConnections();
    if (s) await new Promise<void>((resolve) => s.close(() => resolve()));
  }

  await start();
  return {
    get port() {
      return port;
    },
    dropConnections,
    stop,
    restart: () => (server ? Promise.resolve() : start()),
  };
}

/**
 * rhea only notices a peer hanging up ('end'), not us destroying the socket, so endpoint state tied to a
 * connection is released on the socket's 'close', which fires in both cases.
 */
export function onConnectionGone(connection: Connection, cleanup: () => void): void {
  const socket = (connection as unknown as { socket?: Socket }).socket;
  if (!socket || socket.destroyed) return cleanup();
  socket.once("close", cleanup);
}

/**
 * rhea answers a peer's attach with null source/target, which AMQP reads as "refused"; echo the addresses so
 * the attach is a proper acceptance. rhea sends the attach after this event, so setting them here is in time.
 */
export function acceptLink(link: Sender | Receiver): void {
  if (link.source) link.set_source({ address: link.source.address });
  if (link.target) link.set_target({ address: link.target.address });
}
