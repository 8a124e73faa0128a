// A seeded multi-user load for /ws: several users (the legacy API_TOKEN user, personal-token users,
// a JWT user), each with two sockets, run random valid commands on their own chats and the same
// commands on other users' ids (and on ids that exist nowhere), concurrently, against the real
// server. The checker sees every frame every socket receives and counts each one its user must not
// see: a frame naming another user's chat, reply or message id (other than the echo of a probe's own
// ids), or carrying another user's content (each user's text holds a marker of theirs, and the model
// echoes the question's marker). That count must be zero; every command on a foreign id must be
// answered as the same command on a missing id (CHAT_NOT_FOUND, or NO_GENERATION for a stop); and
// nothing a probe did may show: no owner's chat gone, renamed, written to or stopped by someone else.
//
// Used by test/users-fuzz.test.ts (short) and scripts/users-fuzz.ts (long). Each socket's choices
// come from its own seeded Rng; which socket goes first is up to the scheduler, so a seed replays
// the same command mix, not the same interleaving.

import { encodeMessageCursor } from "../../../src/store/cursor";
import type { Store } from "../../../src/store/store";
import { openTestCosmosStore, type CosmosTestServer } from "../cosmos-server";
import { startTestServer, type TestServer } from "../harness";
import { startIdentityProvider } from "../jwks";
import { lastUserTurn, startSseModel } from "../sse-model";
import { addUser } from "../users";
import { connect } from "../ws-client";
import { Rng } from "./rng";

type Frame = Record<string, any>;

const LEGACY_TOKEN = "users-fuzz-legacy-token-5d2c8e0b7a41";
const UUID = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g;
const MARKER = /mk\dq[a-z]{8}/;

/** The server under load: the real one on SQLite or the Cosmos test server, a local SSE model, a loopback JWKS. */
export async function startUsersFuzzTarget(o: { store: "sqlite" | "cosmos"; cosmos?: CosmosTestServer }) {
  const model = await startSseModel();
  // The reply names the question's marker, so a leaked reply is recognisable; "[long]" streams longer (stop and resume land mid-reply).
  model.setScript((req) => {
    const q = lastUserTurn(req);
    const marker = MARKER.exec(q)?.[0] ?? "plain";
    const n = q.includes("[long]") ? 24 : 4;
    return { tokens: [`re ${marker}`, ...Array.from({ length: n }, (_, i) => ` ${marker}:${i}`)], delayMs: q.includes("[long]") ? 4 : 1 };
  });
  const idp = await startIdentityProvider();
  const store: Store | undefined = o.store === "cosmos" ? await openTestCosmosStore(o.cosmos!, "pichat-users-fuzz") : undefined;
  const srv = await startTestServer(
    {
      API_TOKEN: LEGACY_TOKEN,
      ...idp.env,
      OPENAI_BASE_URL: `${model.url}/v1`,
      OPENAI_MODEL: "fuzz-model",
      OPENAI_API_KEY: "sk-fuzz",
      CHAT_TITLES: "false",
      RATE_LIMIT_FRAMES_PER_SECOND: "100000",
      RATE_LIMIT_MESSAGES_PER_MINUTE: "100000",
    },
    { store },
  );
  if (o.store === "cosmos") await warmUp(srv);
  return {
    srv,
    model,
    idp,
    kind: o.store,
    async stop() {
      await srv.close();
      await store?.close();
      model.stop();
      idp.stop();
    },
  };
}
export type UsersFuzzTarget = Awaited<ReturnType<typeof startUsersFuzzTarget>>;

/**
 * The Cosmos test server compiles each query shape once, taking seconds (cold requests then time
 * out as STORE_UNAVAILABLE): every path the load takes is run once before it starts.
 */
async function warmUp(srv: TestServer) {
  const c = await connect(srv.wsUrl, { token: LEGACY_TOKEN });
  try {
    const chat = (await c.request({ type: "CREATE_CHAT" }, "NEW_CHAT", 30_000)).chat;
    c.send({ type: "SEND_MESSAGE", chatId: chat.id, content: "warm up" });
    const { traceId } = await c.reply(chat.id, 30_000);
    for (const frame of [
      { type: "GET_CHAT_HISTORY", chatId: chat.id, limit: 1 },
      { type: "GET_CHATS" },
      { type: "GET_SETTINGS" },
      { type: "RESUME", chatId: chat.id, traceId, fromSeq: 0 },
      { type: "STOP_GENERATION", chatId: chat.id },
      { type: "RENAME_CHAT", chatId: chat.id, name: "warm" },
      { type: "DELETE_CHAT", chatId: chat.id },
    ]) {
      const requestId = crypto.randomUUID();
      c.send({ ...frame, requestId });
      await c.next((f) => f.requestId === requestId, 30_000);
    }
  } finally {
    c.close();
  }
}

export type UsersFuzzOptions = {
  seed: number;
  /** How long the load runs. */
  seconds: number;
  socketsPerUser?: number;
  /** Go on past `seconds` (up to three times as long) until this many foreign-id probes were made: coverage on a busy machine. */
  minForeignProbes?: number;
  /** A line now and then (standalone runs). */
  progress?: (line: string) => void;
};

type User = { k: number; label: string; id: string; token: string; marker: string };
type ChatEntry = {
  id: string;
  owner: number;
  ownerTriedDelete: boolean;
  ownerTriedStop: boolean;
  messages: string[];
  traces: string[];
  cursor?: string;
};
type Kind = "own" | "foreign" | "missing";
type Command = { op: string; kind: Kind; frame: Frame; chatId?: string; probeIds: string[] };

export type UsersFuzzReport = {
  seed: number;
  store: string;
  seconds: number;
  users: number;
  sockets: number;
  commands: number;
  byOp: Record<string, number>;
  answers: Record<string, number>;
  framesReceived: number;
  framesByType: Record<string, number>;
  repliesEnded: Record<string, number>;
  /** Frames a user must not see that reached them: must be 0. */
  forbiddenFrames: number;
  foreignProbes: number;
  missingProbes: number;
  modelRequests: number;
  chats: { created: number; live: number };
  violations: string[];
};

const inc = (o: Record<string, number>, k: string, by = 1) => (o[k] = (o[k] ?? 0) + by);

/** Codes an own command may meet through the user's own concurrency (two sockets, replies in flight) or a limit. */
const OWN_CODES: Record<string, string[]> = {
  send: ["TOO_MANY_GENERATIONS", "QUEUE_FULL"],
  stop: ["NO_GENERATION"],
  resume: ["GENERATION_NOT_FOUND"],
  watch: ["TOO_MANY_WATCHES"],
};

export async function runUsersFuzz(target: UsersFuzzTarget, o: UsersFuzzOptions): Promise<UsersFuzzReport> {
  const { srv, model, idp } = target;
  const perUser = o.socketsPerUser ?? 2;
  const setup = new Rng(o.seed);
  const mk = (k: number) => `mk${k}q${setup.ascii(8, "abcdefghijklmnopqrstuvwxyz")}`;
  const [t1, t2] = [
    await addUser(srv.store, `fuzz-a-${o.seed}-${setup.ascii(6)}`),
    await addUser(srv.store, `fuzz-b-${o.seed}-${setup.ascii(6)}`),
  ];
  const j = await idp.user(`fuzz-oid-${o.seed}-${setup.ascii(8)}`);
  const users: User[] = [
    { k: 0, label: "legacy", id: "default", token: LEGACY_TOKEN, marker: mk(0) },
    { k: 1, label: "token-a", id: t1.id, token: t1.token, marker: mk(1) },
    { k: 2, label: "token-b", id: t2.id, token: t2.token, marker: mk(2) },
    { k: 3, label: "jwt", id: j.id, token: j.token, marker: mk(3) },
  ];

  /** While true, a socket closing is a violation. */
  let running = true;
  const violations: string[] = [];
  const violate = (msg: string) => {
    if (violations.length < 200) violations.push(msg);
  };
  let forbiddenFrames = 0;
  const forbid = (msg: string) => {
    forbiddenFrames++;
    violate(`FORBIDDEN ${msg}`);
  };
  const report: UsersFuzzReport = {
    seed: o.seed,
    store: target.kind,
    seconds: o.seconds,
    users: users.length,
    sockets: users.length * perUser,
    commands: 0,
    byOp: {},
    answers: {},
    framesReceived: 0,
    framesByType: {},
    repliesEnded: {},
    forbiddenFrames: 0,
    foreignProbes: 0,
    missingProbes: 0,
    modelRequests: 0,
    chats: { created: 0, live: 0 },
    violations,
  };

  // Who owns which id: chats (from NEW_CHAT), replies (MESSAGE_ACCEPTED), questions (their ids are ours).
  const owners = new Map<string, number>();
  const chats = new Map<string, ChatEntry>();
  const chatsOf = (k: number) => [...chats.values()].filter((c) => c.owner === k);
  const liveChatsOf = (k: number) => chatsOf(k).filter((c) => !c.ownerTriedDelete);
  const traceChat = new Map<string, string>();
  /** What each op answered for foreign and for missing ids, normalised: the two sets must be one and the same. */
  const shapes = { foreign: new Map<string, Set<string>>(), missing: new Map<string, Set<string>>() };

  type Sock = {
    user: User;
    tag: string;
    ws: WebSocket;
    rng: Rng;
    n: number;
    closed: boolean;
    pending?: { requestId: string; cmd: Command; resolve: (f: Frame) => void };
    /** Frames not yet checked (checked once every owner has had time to learn its ids). */
    inbox: { at: number; f: Frame; text: string; probeIds?: string[] }[];
  };

  async function open(user: User, i: number, seed: number): Promise<Sock> {
    const ws = new WebSocket(srv.wsUrl, { headers: { Authorization: `Bearer ${user.token}` } } as any);
    const s: Sock = { user, tag: `${user.label}#${i}`, ws, rng: new Rng(seed), n: 0, closed: false, inbox: [] };
    ws.addEventListener("message", (e) => onFrame(s, String(e.data)));
    ws.addEventListener("close", (e) => {
      s.closed = true;
      if (running) violate(`[${s.tag}] socket closed (${e.code} ${e.reason})`);
    });
    await new Promise<void>((resolve, reject) => {
      ws.addEventListener("open", () => resolve(), { once: true });
      ws.addEventListener("error", () => reject(new Error(`${s.tag}: could not connect`)), { once: true });
    });
    return s;
  }

  function onFrame(s: Sock, text: string) {
    const f = JSON.parse(text) as Frame;
    report.framesReceived++;
    inc(report.framesByType, f.type);
    const me = s.user.k;
    const p = s.pending;
    const isAnswer = p !== undefined && f.requestId === p.requestId;
    if (isAnswer) {
      s.pending = undefined;
      learn(s, p.cmd, f);
      p.resolve(f);
    } else if (f.type === "MESSAGE") {
      const chat = chats.get(f.chatId);
      if (chat?.owner === me && typeof f.traceId === "string") {
        owners.set(f.traceId, me);
        traceChat.set(f.traceId, f.chatId);
        if (f.end) {
          inc(report.repliesEnded, f.reason ?? "done");
          if (f.reason === "stopped" && !chat.ownerTriedStop && !chat.ownerTriedDelete)
            violate(`[${s.tag}] a reply in ${f.chatId} ended stopped, though its owner never stopped it nor deleted the chat`);
          if (f.reason !== undefined && f.reason !== "stopped") violate(`[${s.tag}] a reply ended ${f.reason}: ${text.slice(0, 200)}`);
        }
      }
    } else if (f.type === "ERROR" && f.requestId === undefined) {
      violate(`[${s.tag}] an ERROR nobody asked for: ${text.slice(0, 200)}`);
    }
    s.inbox.push({ at: performance.now(), f, text, probeIds: isAnswer && p.cmd.kind !== "own" ? p.cmd.probeIds : undefined });
  }

  /** What an answer to an own command teaches about ownership. */
  function learn(s: Sock, cmd: Command, f: Frame) {
    const me = s.user.k;
    if (cmd.kind !== "own") return;
    if (f.type === "NEW_CHAT") {
      owners.set(f.chat.id, me);
      chats.set(f.chat.id, { id: f.chat.id, owner: me, ownerTriedDelete: false, ownerTriedStop: false, messages: [], traces: [] });
      report.chats.created++;
    } else if (f.type === "MESSAGE_ACCEPTED" && typeof f.traceId === "string") {
      owners.set(f.traceId, me);
      traceChat.set(f.traceId, f.chatId);
      chats.get(f.chatId)?.traces.push(f.traceId);
    } else if (f.type === "CHAT_HISTORY" && f.cursor) {
      const c = chats.get(f.chatId);
      if (c) c.cursor = f.cursor;
    }
  }

  /** Checks frames that arrived at least `ageMs` ago (all with 0). */
  function checkInbox(s: Sock, ageMs: number) {
    const now = performance.now();
    const me = s.user.k;
    let i = 0;
    for (; i < s.inbox.length && now - s.inbox[i]!.at >= ageMs; i++) {
      const { f, text, probeIds } = s.inbox[i]!;
      for (const u of users) if (u.k !== me && text.includes(u.marker)) forbid(`[${s.tag}] ${u.label}'s content: ${text.slice(0, 200)}`);
      for (const id of text.match(UUID) ?? []) {
        const owner = owners.get(id);
        if (owner === undefined || owner === me || probeIds?.includes(id)) continue;
        forbid(`[${s.tag}] ${f.type} names ${users[owner]!.label}'s id ${id}: ${text.slice(0, 200)}`);
      }
    }
    s.inbox.splice(0, i);
  }

  const iso = () => new Date(Date.now() - 1000).toISOString();

  /** The next command of socket `s`, from its Rng. */
  function plan(s: Sock): Command {
    const r = s.rng;
    const me = s.user.k;
    const mine = liveChatsOf(me);
    const text = () => `${s.user.marker} ${r.ascii(r.int(1, 12))}`;
    const op = r.weighted<string>([
      [mine.length < 8 ? 6 : 1, "create"],
      [4, "rename"],
      [mine.length > 3 ? 4 : 1, "delete"],
      [14, "send"],
      [4, "send-long"],
      [7, "history"],
      [3, "history-cursor"],
      [3, "watch"],
      [1, "unwatch"],
      [4, "stop"],
      [3, "resume"],
      [3, "list"],
      [2, "get-settings"],
      [2, "update-settings"],
      [22, "foreign"],
      [10, "missing"],
    ]);
    if (op === "foreign" || op === "missing") {
      const others = users.filter((u) => u.k !== me && chatsOf(u.k).length > 0);
      if (op === "foreign" && others.length === 0) return own(s, "list", undefined);
      const victim = op === "foreign" ? r.pick(chatsOf(r.pick(others).k)) : undefined;
      const chatId = victim?.id ?? r.uuid();
      const traceId = (victim?.traces.length ? r.pick(victim.traces) : undefined) ?? r.uuid();
      const msgId = (victim?.messages.length ? r.pick(victim.messages) : undefined) ?? r.uuid();
      const probe = r.pick([
        "history",
        "history-cursor",
        "history-before",
        "send",
        "send-msgid",
        "rename",
        "delete",
        "stop-chat",
        "stop-trace",
        "stop-both",
        "resume",
        "watch",
      ] as const);
      const cursor = encodeMessageCursor(chatId, { created_at: iso(), id: r.uuid() });
      const frames: Record<typeof probe, Frame> = {
        history: { type: "GET_CHAT_HISTORY", chatId },
        "history-cursor": { type: "GET_CHAT_HISTORY", chatId, limit: 2, cursor: victim?.cursor ?? cursor },
        "history-before": { type: "GET_CHAT_HISTORY", chatId, before: iso() },
        send: { type: "SEND_MESSAGE", chatId, content: text() },
        "send-msgid": { type: "SEND_MESSAGE", chatId, message: { content: text(), id: msgId } },
        rename: { type: "RENAME_CHAT", chatId, name: text() },
        delete: { type: "DELETE_CHAT", chatId },
        "stop-chat": { type: "STOP_GENERATION", chatId },
        "stop-trace": { type: "STOP_GENERATION", traceId },
        "stop-both": { type: "STOP_GENERATION", chatId, traceId },
        resume: { type: "RESUME", chatId, traceId, fromSeq: r.int(0, 3) },
        watch: { type: "WATCH", chatIds: [chatId] },
      };
      return { op: probe, kind: op, frame: frames[probe], chatId, probeIds: [chatId, traceId, msgId] };
    }
    return own(s, op, mine.length ? r.pick(mine) : undefined);
  }

  function own(s: Sock, op: string, chat: ChatEntry | undefined): Command {
    const r = s.rng;
    const text = (extra = "") => `${extra}${s.user.marker} ${r.ascii(r.int(1, 12))}`;
    const cmd = (frame: Frame): Command => ({ op, kind: "own", frame, chatId: chat?.id, probeIds: [] });
    if (!chat && !["create", "list", "get-settings", "update-settings"].includes(op)) op = "create";
    switch (op) {
      case "create":
        return { op, kind: "own", frame: { type: "CREATE_CHAT", ...(r.chance(0.5) ? { name: text() } : {}) }, probeIds: [] };
      case "rename":
        return cmd({ type: "RENAME_CHAT", chatId: chat!.id, name: text() });
      case "delete":
        chat!.ownerTriedDelete = true;
        return cmd({ type: "DELETE_CHAT", chatId: chat!.id });
      case "send":
      case "send-long": {
        const id = r.uuid();
        owners.set(id, s.user.k);
        chat!.messages.push(id);
        return cmd({ type: "SEND_MESSAGE", chatId: chat!.id, message: { id, content: text(op === "send-long" ? "[long] " : "") } });
      }
      case "history":
        return cmd({ type: "GET_CHAT_HISTORY", chatId: chat!.id, ...(r.chance(0.3) ? { limit: r.int(1, 5) } : {}) });
      case "history-cursor":
        return cmd({ type: "GET_CHAT_HISTORY", chatId: chat!.id, limit: 2, ...(chat!.cursor ? { cursor: chat!.cursor } : {}) });
      case "watch":
        return cmd({ type: "WATCH", chatIds: [chat!.id] });
      case "unwatch":
        return cmd({ type: "UNWATCH", chatIds: [chat!.id] });
      case "stop": {
        chat!.ownerTriedStop = true;
        const t = chat!.traces.at(-1);
        return cmd(t && r.chance(0.5) ? { type: "STOP_GENERATION", traceId: t } : { type: "STOP_GENERATION", chatId: chat!.id });
      }
      case "resume": {
        const t = chat!.traces.at(-1);
        return t
          ? cmd({ type: "RESUME", chatId: chat!.id, traceId: t, fromSeq: r.int(0, 3) })
          : cmd({ type: "GET_CHAT_HISTORY", chatId: chat!.id });
      }
      case "list":
        return { op, kind: "own", frame: { type: "GET_CHATS" }, probeIds: [] };
      case "get-settings":
        return { op, kind: "own", frame: { type: "GET_SETTINGS" }, probeIds: [] };
      default:
        return {
          op: "update-settings",
          kind: "own",
          frame: { type: "UPDATE_SETTINGS", systemPrompt: `system of ${s.user.marker}` },
          probeIds: [],
        };
    }
  }

  /** Sends one command and checks its answer. */
  async function run(s: Sock, cmd: Command) {
    const requestId = `${s.tag}-${s.n++}`;
    const answer = new Promise<Frame>((resolve) => (s.pending = { requestId, cmd, resolve }));
    report.commands++;
    inc(report.byOp, `${cmd.kind}:${cmd.op}`);
    s.ws.send(JSON.stringify({ ...cmd.frame, requestId }));
    const f = await Promise.race([answer, Bun.sleep(15_000).then(() => undefined)]);
    if (!f) throw new Error(`${s.tag}: no answer within 15 s to ${JSON.stringify(cmd.frame).slice(0, 200)}`);
    inc(report.answers, `${cmd.kind}:${f.type === "ERROR" ? f.code : f.type}`);
    if (cmd.kind !== "own") {
      cmd.kind === "foreign" ? report.foreignProbes++ : report.missingProbes++;
      const expected = cmd.op.startsWith("stop") ? "NO_GENERATION" : "CHAT_NOT_FOUND";
      // A send over the caller's own limit is refused before any chat is looked at, foreign or missing alike.
      const ownLimit = cmd.op.startsWith("send") && f.code === "TOO_MANY_GENERATIONS";
      if (f.type !== "ERROR" || (f.code !== expected && !ownLimit))
        violate(`[${s.tag}] ${cmd.kind} ${cmd.op} answered ${JSON.stringify(f).slice(0, 200)}, not ${expected}`);
      // The caller's limit says nothing about the chat: only answers about the chat are compared.
      if (ownLimit) return;
      let norm = JSON.stringify({ ...f, requestId: "<r>" });
      for (const [i, id] of cmd.probeIds.entries()) norm = norm.replaceAll(id, `<id${i}>`);
      const set = shapes[cmd.kind].get(cmd.op) ?? shapes[cmd.kind].set(cmd.op, new Set()).get(cmd.op)!;
      set.add(norm);
      return;
    }
    if (f.type === "ERROR") {
      const chat = cmd.chatId ? chats.get(cmd.chatId) : undefined;
      if (f.code === "CHAT_NOT_FOUND" && chat && !chat.ownerTriedDelete)
        violate(`[${s.tag}] own chat ${chat.id} not found, though its owner never deleted it (${cmd.op})`);
      else if (f.code !== "CHAT_NOT_FOUND" && !(OWN_CODES[cmd.op.replace("-long", "")] ?? []).includes(f.code))
        violate(`[${s.tag}] own ${cmd.op} answered ${JSON.stringify(f).slice(0, 200)}`);
    } else if (
      f.type === "SETTINGS" &&
      f.settings?.systemPrompt !== undefined &&
      !String(f.settings.systemPrompt).includes(s.user.marker)
    ) {
      violate(`[${s.tag}] GET/UPDATE_SETTINGS shows another's systemPrompt ${JSON.stringify(f.settings.systemPrompt)}`);
    } else if (f.type === "CHAT_LIST") {
      for (const c of f.chats) if (owners.has(c.id) && owners.get(c.id) !== s.user.k) forbid(`[${s.tag}] CHAT_LIST holds ${c.id}`);
    }
  }

  // Sockets, then the load.
  const socks: Sock[] = [];
  for (const u of users)
    for (let i = 0; i < perUser; i++) socks.push(await open(u, i, (o.seed * 1000003 + (u.k * perUser + i) * 7919) >>> 0));
  const t0 = performance.now();
  const deadline = t0 + o.seconds * 1000;
  const checker = setInterval(() => socks.forEach((s) => checkInbox(s, 1500)), 500);
  const progress = setInterval(
    () =>
      o.progress?.(
        `${Math.round((performance.now() - t0) / 1000)} s: ${report.commands} commands, ${report.framesReceived} frames, ${report.foreignProbes} foreign probes, ${forbiddenFrames} forbidden frames, ${violations.length} violations`,
      ),
    10_000,
  );
  const hardDeadline = t0 + o.seconds * 3000;
  const more = () => performance.now() < deadline || (report.foreignProbes < (o.minForeignProbes ?? 0) && performance.now() < hardDeadline);
  const results = await Promise.allSettled(
    socks.map(async (s) => {
      while (more() && !s.closed) await run(s, plan(s));
    }),
  );
  report.seconds = Math.round((performance.now() - t0) / 1000);
  clearInterval(progress);
  for (const r of results)
    if (r.status === "rejected") violate(`a socket's loop failed: ${r.reason instanceof Error ? r.reason.message : r.reason}`);

  // Let every reply end, then a round trip on each socket: everything sent to it is in.
  await Promise.race([srv.chat.replies.idle(), Bun.sleep(30_000)]);
  for (const s of socks)
    if (!s.closed)
      await run(s, { op: "barrier", kind: "own", frame: { type: "GET_CHATS", limit: 1 }, probeIds: [] }).catch((e) => violate(String(e)));
  running = false;
  clearInterval(checker);
  for (const s of socks) checkInbox(s, 0);

  // A foreign id and a missing one are answered alike, op by op.
  for (const [op, seen] of shapes.foreign) {
    const missing = shapes.missing.get(op);
    if (!missing) continue;
    const f = [...seen].sort().join("\n");
    const m = [...missing].sort().join("\n");
    if (f !== m) violate(`${op}: a foreign id was answered ${f.slice(0, 300)}; a missing one ${m.slice(0, 300)}`);
  }

  // Nothing a probe did shows: each owner's chats not deleted by them are there, named by them, holding only their text.
  for (const u of users) {
    const listed = new Set<string>();
    let cursor: string | undefined;
    do {
      const page = await srv.store.listChats(u.id, { limit: 500, cursor });
      for (const c of page.items) listed.add(c.id);
      cursor = page.cursor;
    } while (cursor);
    for (const id of listed) if (owners.has(id) && owners.get(id) !== u.k) violate(`[store] ${u.label}'s chats hold ${id}`);
    for (const c of chatsOf(u.k)) {
      if (c.ownerTriedDelete) continue;
      report.chats.live++;
      const stored = await srv.store.getChat(u.id, c.id);
      if (!stored || !listed.has(c.id)) {
        violate(`[store] ${u.label}'s chat ${c.id} is gone, though they never deleted it`);
        continue;
      }
      if (stored.name !== "New Chat" && !stored.name.includes(u.marker))
        violate(`[store] ${u.label}'s chat ${c.id} is named ${JSON.stringify(stored.name)}`);
      for (const m of await srv.store.listMessages(c.id, { limit: 10_000 })) {
        for (const other of users)
          if (other.k !== u.k && m.content.includes(other.marker))
            violate(`[store] ${u.label}'s chat ${c.id} holds ${other.label}'s text: ${m.content.slice(0, 100)}`);
      }
    }
    const settings = await srv.store.getSettings(u.id);
    const prompt = settings?.systemPrompt;
    if (prompt !== undefined && !String(prompt).includes(u.marker))
      violate(`[store] ${u.label}'s systemPrompt is ${JSON.stringify(prompt)}`);
  }
  // Each model request carries its asker's settings: the system prompt's marker is the question's.
  for (const req of model.requests) {
    report.modelRequests++;
    const q = MARKER.exec(lastUserTurn(req))?.[0];
    const system = req.body?.messages?.[0]?.role === "system" ? String(req.body.messages[0].content) : "";
    const sys = MARKER.exec(system)?.[0];
    if (q && sys && q !== sys) violate(`[model] a question of ${q} was asked with the system prompt of ${sys}`);
  }
  const errors = srv.log.lines.filter((l) => l.includes('"level":"error"'));
  for (const l of errors.slice(0, 5)) violate(`error logged: ${l.slice(0, 300)}`);

  for (const s of socks) s.ws.close();
  report.forbiddenFrames = forbiddenFrames;
  return report;
}

/** One screenful. */
export function formatUsersReport(r: UsersFuzzReport): string {
  const sorted = (o: Record<string, number>) =>
    Object.entries(o)
      .sort((a, b) => b[1] - a[1])
      .map(([k, n]) => `${k}=${n}`)
      .join(" ");
  return [
    `users fuzz seed=${r.seed} store=${r.store}: ${r.users} users x ${r.sockets / r.users} sockets, ${r.seconds} s, ${r.commands} commands (${Math.round(r.commands / r.seconds)}/s), ${r.framesReceived} frames received`,
    `  FORBIDDEN FRAMES (another user's ids or content): ${r.forbiddenFrames}`,
    `  probes: ${r.foreignProbes} on foreign ids, ${r.missingProbes} on missing ids`,
    `  commands: ${sorted(r.byOp)}`,
    `  answers: ${sorted(r.answers)}`,
    `  frames: ${sorted(r.framesByType)}`,
    `  replies ended: ${sorted(r.repliesEnded)}; model requests ${r.modelRequests}; chats created ${r.chats.created}, live at the end ${r.chats.live}`,
    r.violations.length
      ? `  VIOLATIONS (${r.violations.length}):\n${r.violations.map((x) => `    - ${x}`).join("\n")}`
      : "  violations: none",
  ].join("\n");
}
