// A TCP relay in front of one server or another: `cut()` drops every connection through it at once (a
// network failure, no close frame), `stall()` before it loses the answers to what is sent meanwhile, `to(port)` sends the connections made from then on to another server
// (a load balancer moving a client to another replica). The bytes pass through untouched.

type Conn = { upstream?: Bun.Socket<undefined>; pending: Uint8Array[]; closed: boolean };

export function startSwitchRelay(port: number) {
  let target = port;
  let connections = 0;
  let stalled = false;
  const clients = new Set<Bun.Socket<Conn>>();
  const relay = Bun.listen<Conn>({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      async open(client) {
        client.data = { pending: [], closed: false };
        clients.add(client);
        connections++;
        try {
          const upstream = await Bun.connect({
            hostname: "127.0.0.1",
            port: target,
            socket: { data: (_, d) => void (stalled || client.write(d)), close: () => void client.end(), error: () => void client.end() },
          });
          if (client.data.closed) return void upstream.end();
          client.data.upstream = upstream;
          for (const d of client.data.pending.splice(0)) upstream.write(d);
        } catch {
          client.end(); // nothing listens there (a server being restarted): the client sees a failed connect
        }
      },
      data(client, d) {
        if (client.data.upstream) client.data.upstream.write(d);
        else client.data.pending.push(new Uint8Array(d));
      },
      close(client) {
        client.data.closed = true;
        clients.delete(client);
        client.data.upstream?.end();
      },
    },
  });
  return {
    port: relay.port,
    url: `ws://127.0.0.1:${relay.port}/ws`,
    /** Connections accepted so far. */
    connections: () => connections,
    /** Connections open through it now. */
    open: () => clients.size,
    to(p: number) {
      target = p;
    },
    /** Drops what servers send from now until the next cut: requests still arrive, their answers are lost. */
    stall() {
      stalled = true;
    },
    /** Cuts every connection through the relay now, both ways. */
    cut() {
      stalled = false;
      for (const c of clients) {
        c.data.upstream?.terminate();
        c.terminate();
      }
      clients.clear();
    },
    stop: () => relay.stop(true),
  };
}
