// A TCP relay for test/image.test.ts: it sits in front of a TLS endpoint (the bytes pass through untouched)
// and can cut a client's connection at the moment it writes, while what it wrote is still unanswered.

type Conn = { upstream?: Bun.Socket<undefined>; pending: Uint8Array[] };

export function startRelay(port: number) {
  let stalled = false;
  let onStalledWrite: (() => void) | undefined;
  const clients = new Set<Bun.Socket<Conn>>();
  const relay = Bun.listen<Conn>({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      async open(client) {
        client.data = { pending: [] };
        clients.add(client);
        const upstream = await Bun.connect({
          hostname: "127.0.0.1",
          port,
          socket: { data: (_, d) => void (stalled || client.write(d)), close: () => void client.end() },
        });
        client.data.upstream = upstream;
        for (const d of client.data.pending.splice(0)) upstream.write(d);
      },
      data(client, d) {
        if (stalled) return onStalledWrite?.();
        if (client.data.upstream) client.data.upstream.write(d);
        else client.data.pending.push(new Uint8Array(d));
      },
      close(client) {
        clients.delete(client);
        client.data.upstream?.end();
      },
    },
  });
  return {
    port: relay.port,
    /**
     * Stops relaying in both directions; the next bytes a client sends are dropped and every client connection
     * is cut at once. Resolves then; new connections are relayed again.
     */
    cutNextWrite(): Promise<void> {
      stalled = true;
      return new Promise((resolve) => {
        onStalledWrite = () => {
          onStalledWrite = undefined;
          for (const c of clients) c.terminate();
          stalled = false;
          resolve();
        };
      });
    },
    stop: () => relay.stop(true),
  };
}
