import { serveChild } from "../lib/proc";

// The baseline: a bare Bun.serve WebSocket server doing the least work a scenario allows. This is
// the physical limit of the stack (Bun's HTTP/WebSocket server, the kernel's loopback, the client).
//
//   /echo            replies to each frame with the frame itself
//   /echo?bytes=N    replies to each frame with a prebuilt frame of N bytes (the size of our reply)
//   /sub?topic=T     subscribes to T on open; receives what is published
//   /pub?topic=T     each frame it sends is server.publish()ed to T, unchanged
//   anything else    an idle socket (for the memory scenario)

type Data = { mode: "echo" | "sub" | "pub" | "idle"; reply?: string; topic: string };

const replies = new Map<number, string>();
function replyOf(bytes: number): string {
  let r = replies.get(bytes);
  if (!r) {
    // A JSON frame of exactly `bytes` bytes, like the frames it stands in for.
    const head = '{"type":"ECHO","pad":"';
    r = `${head}${"x".repeat(Math.max(0, bytes - head.length - 2))}"}`;
    replies.set(bytes, r);
  }
  return r;
}

const server = Bun.serve<Data>({
  port: 0,
  hostname: "127.0.0.1",
  fetch(req, srv) {
    const url = new URL(req.url);
    const topic = url.searchParams.get("topic") ?? "t";
    const bytes = Number(url.searchParams.get("bytes") ?? 0);
    const mode = url.pathname === "/echo" ? "echo" : url.pathname === "/sub" ? "sub" : url.pathname === "/pub" ? "pub" : "idle";
    const data: Data = { mode, topic, ...(bytes > 0 ? { reply: replyOf(bytes) } : {}) };
    return srv.upgrade(req, { data }) ? undefined : new Response("expected a WebSocket upgrade", { status: 426 });
  },
  websocket: {
    open(ws) {
      if (ws.data.mode === "sub") ws.subscribe(ws.data.topic);
    },
    message(ws, msg) {
      const d = ws.data;
      if (d.mode === "echo") ws.send(d.reply ?? msg);
      else if (d.mode === "pub") server.publish(d.topic, msg);
    },
  },
});

serveChild(
  { port: server.port, url: `ws://127.0.0.1:${server.port}` },
  {
    mem: (a: { gc?: boolean } = {}) => {
      if (a?.gc) Bun.gc(true);
      return { ...process.memoryUsage(), conns: server.pendingWebSockets };
    },
    stop: () => server.stop(true),
  },
);
