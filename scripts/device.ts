// A stand-in for the Raspberry Pi voice client: sends one question as device-to-cloud telemetry
// exactly as the Pi does, waits for the cloud-to-device reply, prints it.
//
//   bun run device -- "What's the weather like?"
//   bun run device -- --device-id pi-1 --timeout 30 "Tell me a joke"
//   bun run device -- --parts "Tell me a story"      asks for the reply in parts (docs/protocol.md §7):
//                                                    prints each part with its arrival time, drops repeats
//   bun run device -- --original "What time is it?"  exactly the original Pi client: the FIRST C2D message
//                                                    is the answer, whatever it answers; 30 s wait
//
// Needs DEVICE_CONNECTION_STRING (IoT Hub → Devices → <device> → Primary connection string),
// or --connection-string. The device id comes from the connection string; --device-id must match it.
import { parseArgs } from "node:util";
import { Client, Message } from "azure-iot-device";
import { Amqp } from "azure-iot-device-amqp";

const { values, positionals } = parseArgs({
  args: Bun.argv.slice(2),
  allowPositionals: true,
  options: {
    "connection-string": { type: "string" },
    "device-id": { type: "string" },
    timeout: { type: "string", default: "30" },
    parts: { type: "boolean", default: false },
    original: { type: "boolean", default: false },
    help: { type: "boolean", short: "h" },
  },
});

const question = positionals.join(" ").trim();
const connectionString = values["connection-string"] ?? process.env.DEVICE_CONNECTION_STRING;
if (values.help || !question || !connectionString) {
  console.error('usage: bun run device -- [--parts | --original] [--device-id ID] [--timeout S] [--connection-string CS] "question"');
  console.error("       (or set DEVICE_CONNECTION_STRING)");
  process.exit(values.help ? 0 : 2);
}
const deviceId = /DeviceId=([^;]+)/i.exec(connectionString)?.[1];
if (!deviceId) {
  console.error("the connection string has no DeviceId=...; use the device's connection string, not the hub's");
  process.exit(2);
}
if (values["device-id"] && values["device-id"] !== deviceId) {
  console.error(`--device-id ${values["device-id"]} does not match the connection string's DeviceId ${deviceId}`);
  process.exit(2);
}
if (values.parts && values.original) {
  console.error("--parts and --original are two different clients: pick one");
  process.exit(2);
}
const timeoutS = Number(values.timeout);

const client = Client.fromConnectionString(connectionString, Amqp);
// The SDK's default policy retries a failing connect (bad certificate, wrong host, bad key) silently for
// up to 4 minutes; a one-shot tool should say what is wrong at once. Three quick attempts, then the error.
client.setRetryPolicy({
  shouldRetry: () => true,
  nextRetryTimeout: (retryCount: number) => (retryCount >= 2 ? -1 : 200 * 2 ** retryCount),
} as Parameters<Client["setRetryPolicy"]>[0]);

// The original client also sends its own history; it starts empty here.
const body = values.original
  ? { message: question, conversation: [], timestamp: Date.now() / 1000, device_id: deviceId }
  : { message: question, timestamp: Date.now() / 1000, device_id: deviceId, ...(values.parts ? { reply_in_parts: true } : {}) };
const message = new Message(JSON.stringify(body));
message.messageId = crypto.randomUUID();
message.contentType = "application/json";
message.contentEncoding = "utf-8";

const host = /HostName=([^;]+)/i.exec(connectionString)?.[1];
const fail = async (what: string, err: unknown) => {
  console.error(`${what} (${host} as ${deviceId}): ${(err as Error)?.message ?? err}`);
  await client.close().catch(() => {});
  process.exit(1);
};
// Without a listener, a failure to (re)attach the C2D link later is an unhandled 'error' event.
client.on("error", (err: Error) => console.error(`IoT Hub client error: ${err.message}`));
// A TLS failure (untrusted certificate) surfaces from the SDK only as "rhea: connection disconnected".
await client.open().catch((err) => fail("could not connect to IoT Hub", err));

type Reply = { response?: unknown; conversation_id?: unknown; message_id?: unknown; part?: unknown; last?: unknown; offset?: unknown };
const parse = (msg: Message): Reply => {
  try {
    return JSON.parse(msg.getData().toString());
  } catch {
    return { response: msg.getData().toString() };
  }
};
const since = () => Math.round(performance.now() - started);

// --parts: every part of this question's reply, each printed as it arrives; a part already heard (a
// resend after a server crash, same message_id and offset) is dropped, and one that overlaps what was
// heard is spoken from where it left off. Done at the part marked last.
const heard = new Map<string, number>();
function hear(r: Reply): boolean {
  const id = String(r.message_id ?? "");
  const offset = Number(r.offset ?? 0);
  const text = [...String(r.response ?? "")];
  const upTo = heard.get(id) ?? 0;
  const fresh = text.slice(Math.max(0, upTo - offset)).join("");
  if (heard.size > 0 && !heard.has(id)) console.error(`(a new reply ${id}: the server started again)`);
  heard.set(id, Math.max(upTo, offset + text.length));
  if (fresh) {
    console.error(`[${since()} ms] part ${r.part}${r.last ? " (last)" : ""}, offset ${offset}`);
    process.stdout.write(fresh);
  } else console.error(`[${since()} ms] part ${r.part}: a repeat, dropped`);
  return r.last === true;
}

// The hub keeps C2D messages queued while the device is away, so a reply to an earlier question (one that
// timed out) can arrive first: only the reply correlated with this question's message id is the answer.
// The original client does not check: the first message it receives is the answer.
const reply = new Promise<Reply>((resolve) => {
  let first: Reply | undefined;
  client.on("message", (msg: Message) => {
    void client.complete(msg).catch(() => {});
    if (values.original) {
      if (!first) resolve((first = parse(msg)));
      return;
    }
    if (msg.correlationId !== message.messageId) {
      console.error(`ignoring a reply to an earlier message (${msg.correlationId ?? "no correlation id"})`);
      return;
    }
    const r = parse(msg);
    first ??= r;
    if (!values.parts || r.part === undefined || hear(r)) resolve(first);
  });
});

const started = performance.now();
await client.sendEvent(message).catch((err) => fail("could not send the question", err));
console.error(`sent as ${deviceId} (message ${message.messageId}); waiting up to ${timeoutS} s for the reply…`);

const answer = await Promise.race([reply, Bun.sleep(timeoutS * 1000).then(() => undefined)]);
await client.close();
if (!answer) {
  // The original client's words when nothing came.
  console.error(values.original ? "I'm sorry, I didn't receive a response from the backend in time." : `no reply within ${timeoutS} s`);
  process.exit(1);
}
if (values.parts && answer.part !== undefined) process.stdout.write("\n");
else console.log(String(answer.response ?? ""));
console.error(`(chat ${answer.conversation_id}, ${since()} ms)`);
process.exit(0);
