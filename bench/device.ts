import { now, sleep, within } from "./lib/clock";
import { cpuWindow, spawnChild, type Child } from "./lib/proc";
import { ratio, runAlone, type Row, type Scenario } from "./lib/report";
import { round, summarize } from "./lib/stats";
import { startIotHubPeer, type C2DMessage, type IotHubPeer } from "../test/support/amqp-peer";
import { makeLocalhostCert, type LocalhostCert } from "../test/support/tls-cert";

// 5. Device path: telemetry enqueued on the local AMQP peer (playing IoT Hub) until the peer accepts
// the C2D reply, with the instant local model. Two loads, both bounded by count and time:
//   - one device, one message at a time (the latency a lone device sees);
//   - DEVICES devices, each sending its next message as soon as its reply arrives, MESSAGES in all
//     (p50/p99 and messages/s under load).
// Beside it the baseline: the same SDKs consuming the same peer and answering every event with a
// C2D message at once (bench/servers/device-echo.ts), so the SDKs' own batching is visible as such.
// The peer runs in the bench process; the server (or the baseline) in a child.

const MESSAGES = Number(process.env.BENCH_DEVICE_MESSAGES ?? 500);
const DEVICES = Number(process.env.BENCH_DEVICE_DEVICES ?? 20);
const SERIAL = Number(process.env.BENCH_DEVICE_SERIAL ?? 50);
const PARTITIONS = 2;

const correlation = (m: C2DMessage) => String(m.raw.correlation_id ?? "");

/** Sends `count` messages from `devices` devices, each waiting for its reply before the next. */
async function drive(peer: IotHubPeer, tag: string, devices: number, count: number) {
  const latencies: number[] = [];
  let next = 0;
  const t0 = now();
  const deadline = Date.now() + 120_000;
  await Promise.all(
    Array.from({ length: devices }, async (_, d) => {
      const deviceId = `${tag}-dev-${d}`;
      while (next < count) {
        if (Date.now() > deadline) throw new Error(`the device load took longer than 120 s (${next} of ${count} sent)`);
        const n = next++;
        const messageId = `${tag}-${n}`;
        const reply = peer.waitForC2D((m) => correlation(m) === messageId, 30_000);
        const sent = now();
        peer.sendTelemetry({
          deviceId,
          messageId,
          contentType: "application/json",
          body: { message: `question ${n} tokens=5`, timestamp: Date.now() / 1000 },
        });
        const m = await reply;
        latencies.push(now() - sent);
        if (m.deviceId !== deviceId) throw new Error(`reply for ${messageId} went to ${m.deviceId}`);
      }
    }),
  );
  const seconds = (now() - t0) / 1000;
  return { latencies, seconds, perS: count / seconds };
}

async function runSide(cert: LocalhostCert, start: (peer: IotHubPeer) => Promise<Child>, tag: string) {
  const peer = await startIotHubPeer({ tls: cert, partitions: PARTITIONS });
  let server: Child | undefined;
  try {
    server = await start(peer);
    // Warm-up: the first messages open the C2D link and the SDKs' code paths.
    await drive(peer, `${tag}w`, 2, 10);
    const serial = await drive(peer, `${tag}s`, 1, SERIAL);
    await sleep(100);
    const cpu = cpuWindow([{ name: "server", cpuSeconds: () => server!.cpuSeconds() }]);
    const loaded = await drive(peer, `${tag}l`, DEVICES, MESSAGES);
    return { serial, loaded, cpu: cpu() };
  } finally {
    await server?.stop();
    await peer.stop();
  }
}

export const scenario: Scenario = {
  name: "device",
  title: "device telemetry in → C2D reply out, vs the SDKs answering at once",
  timeoutMs: 240_000,
  async run() {
    const cert = await makeLocalhostCert();
    const sse = await spawnChild<{ url: string }>("servers/sse-model.ts", { name: "sse-model" });
    try {
      const b = await runSide(
        cert,
        (peer) =>
          spawnChild("servers/device-echo.ts", {
            name: "device-echo",
            env: {
              BENCH_DEVICE_ECHO: JSON.stringify({
                eventHub: peer.eventHubConnectionString,
                iotHub: peer.iotHubConnectionString,
                certPath: cert.certPath,
                partitions: PARTITIONS,
              }),
            },
          }),
        "b",
      );
      console.log(`   baseline: serial p50 ${round(summarize(b.serial.latencies).p50)} ms, loaded ${Math.round(b.loaded.perS)} msg/s`);
      const o = await runSide(
        cert,
        (peer) =>
          spawnChild("servers/app.ts", {
            name: "app",
            env: {
              BENCH_APP_ENV: JSON.stringify({
                OPENAI_BASE_URL: `${sse.info.url}/v1`,
                OPENAI_MODEL: "bench",
                IOT_HUB_ENABLE: "true",
                EVENT_HUB_COMPATIBLE_CONN_STR: peer.eventHubConnectionString,
                IOT_HUB_CONNECTION_STRING: peer.iotHubConnectionString,
                // The path's cost, not IoT Hub's send budget (one S1 unit: 100 a minute) is measured here.
                IOT_HUB_C2D_PER_MINUTE: "1000000",
              }),
              BENCH_DEVICES: JSON.stringify({ certPath: cert.certPath, partitions: PARTITIONS }),
            },
          }),
        "o",
      );
      console.log(`   ours: serial p50 ${round(summarize(o.serial.latencies).p50)} ms, loaded ${Math.round(o.loaded.perS)} msg/s`);

      const s = (x: typeof o) => ({ serial: summarize(x.serial.latencies), loaded: summarize(x.loaded.latencies) });
      const os = s(o),
        bs = s(b);
      const rows: Row[] = [
        {
          metric: "1 device, serial: round trip p50",
          unit: "ms",
          ours: os.serial.p50,
          baseline: bs.serial.p50,
          ratio: ratio(os.serial.p50, bs.serial.p50),
          better: "lower",
          note: `${SERIAL} messages`,
        },
        {
          metric: "1 device, serial: round trip p99",
          unit: "ms",
          ours: os.serial.p99,
          baseline: bs.serial.p99,
          ratio: ratio(os.serial.p99, bs.serial.p99),
          better: "lower",
        },
        {
          metric: `${DEVICES} devices: round trip p50`,
          unit: "ms",
          ours: os.loaded.p50,
          baseline: bs.loaded.p50,
          ratio: ratio(os.loaded.p50, bs.loaded.p50),
          better: "lower",
          note: `${MESSAGES} messages, each device closed-loop`,
        },
        {
          metric: `${DEVICES} devices: round trip p99`,
          unit: "ms",
          ours: os.loaded.p99,
          baseline: bs.loaded.p99,
          ratio: ratio(os.loaded.p99, bs.loaded.p99),
          better: "lower",
        },
        {
          metric: `${DEVICES} devices: messages/s`,
          unit: "msg/s",
          ours: o.loaded.perS,
          baseline: b.loaded.perS,
          ratio: ratio(o.loaded.perS, b.loaded.perS),
          better: "higher",
          note: `cpu: server ${o.cpu.server}%, bench+peer ${o.cpu.bench}% (base: ${b.cpu.server}% / ${b.cpu.bench}%)`,
        },
      ];
      const pick = (x: ReturnType<typeof s>, y: typeof o) => ({
        serial: { p50: round(x.serial.p50), p99: round(x.serial.p99), max: round(x.serial.max), n: x.serial.n },
        loaded: {
          p50: round(x.loaded.p50),
          p99: round(x.loaded.p99),
          max: round(x.loaded.max),
          n: x.loaded.n,
          perS: round(y.loaded.perS, 1),
        },
        cpuPercent: y.cpu,
      });
      return { rows, data: { messages: MESSAGES, devices: DEVICES, serialMessages: SERIAL, ours: pick(os, o), baseline: pick(bs, b) } };
    } finally {
      await within(sse.stop(), 10_000, "the model to stop").catch(() => {});
    }
  },
};

if (import.meta.main) await runAlone(scenario);
