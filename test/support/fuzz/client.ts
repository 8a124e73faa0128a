import * as v from "valibot";
import { ChatSchema, MessageSchema, type Chat } from "../../../src/records";
import { answerProblem, describeFrame, type Ledger } from "./checker";
import { REPLY_TYPES, sameText, type Expect, type FuzzFrame } from "./generators";
import type { Stats } from "./report";

// A fuzzing client: one socket that pipelines frames, matches each direct answer to the frame it
// answers (in order), tells broadcasts and stream frames apart, and keeps the ledger of what it was told.

type Pending = { frame: FuzzFrame };

const inc = (o: Record<string, number>, k: string, by = 1) => (o[k] = (o[k] ?? 0) + by);

export class FuzzClient {
  ws!: WebSocket;
  pending: Pending[] = [];
  ownChats: Chat[] = [];
  private waiters = new Set<() => void>();
  private closeInfo: { code: number; reason: string } | undefined;
  private expectingClose = false;
  /** Bad-only clients: every ERROR without traceId, counted apart from the in-order matching. */
  errorsReceived = 0;
  badSentOnSocket = 0;
  /** Replies whose end:true this socket saw: an ERROR naming one of them (and no requestId) ends that stream. */
  private ended = new Set<string>();

  constructor(
    readonly tag: string,
    readonly url: string,
    readonly stats: Stats,
    readonly ledger: Ledger,
    readonly violations: string[],
  ) {}

  private violate(msg: string) {
    if (this.violations.length < 200) this.violations.push(`[${this.tag}] ${msg}`);
  }

  async open(): Promise<void> {
    this.closeInfo = undefined;
    this.expectingClose = false;
    const ws = new WebSocket(this.url);
    this.ws = ws;
    ws.binaryType = "arraybuffer";
    ws.addEventListener("message", (e) => this.onMessage(e.data));
    ws.addEventListener("close", (e) => {
      if (ws !== this.ws) return;
      this.closeInfo = { code: e.code, reason: e.reason };
      if (!this.expectingClose) {
        this.violate(`socket closed unexpectedly (${e.code} ${e.reason}) with ${this.pending.length} frames unanswered`);
      }
      this.wake();
    });
    await new Promise<void>((resolve, reject) => {
      ws.addEventListener("open", () => resolve(), { once: true });
      ws.addEventListener("error", () => reject(new Error(`${this.tag}: could not connect to ${this.url}`)), { once: true });
    });
  }

  private wake() {
    for (const w of this.waiters) w();
  }

  private onMessage(data: unknown) {
    if (typeof data !== "string") return this.violate("server sent a binary frame");
    let f: Record<string, unknown>;
    try {
      f = JSON.parse(data);
    } catch {
      return this.violate(`server sent non-JSON: ${data.slice(0, 80)}`);
    }
    if (typeof f !== "object" || f === null || typeof f.type !== "string")
      return this.violate(`server frame without a string type: ${data.slice(0, 120)}`);
    if (f.type === "error" || (f.type !== "ERROR" && f.type.toUpperCase() === "ERROR"))
      this.violate(`lowercase error frame: ${data.slice(0, 120)}`);
    if (f.type === "ERROR" && (typeof f.code !== "string" || typeof f.error !== "string" || !f.code || !f.error)) {
      this.violate(`ERROR without string code and error: ${data.slice(0, 200)}`);
    }
    const direct = this.isDirect(f);
    if (!direct) {
      if (f.type === "MESSAGE" && f.end === true && typeof f.traceId === "string") this.ended.add(f.traceId);
      if (f.type === "MESSAGE" || f.type === "ERROR") {
        this.stats.streamFramesSeen++;
        if (f.type === "ERROR") this.violate(`a reply stream ended with an error: ${data.slice(0, 200)}`);
        // "stopped" is a reply cut short by DELETE_CHAT of its chat, which the fuzz does; nothing else may end one early.
        if (f.type === "MESSAGE" && f.end === true && f.reason !== undefined && f.reason !== "stopped")
          this.violate(`a reply ended early: ${data.slice(0, 200)}`);
      } else if (["CHAT_CREATED", "CHAT_UPDATED", "CHAT_DELETED", "FIRST_MESSAGE"].includes(f.type)) {
        this.stats.broadcastsSeen++;
      } else {
        this.violate(`unexpected frame type ${JSON.stringify(f.type)}: ${data.slice(0, 120)}`);
      }
      return;
    }
    if (f.type === "ERROR") {
      inc(this.stats.errorCodes, String(f.code));
      this.errorsReceived++;
    } else inc(this.stats.replies, f.type);
    const p = this.pending.shift();
    if (!p) return this.violate(`an answer to no frame: ${data.slice(0, 200)}`);
    this.check(p.frame, f, data);
    this.wake();
  }

  /** A frame answering one of ours, as opposed to a broadcast or part of a reply stream. */
  private isDirect(f: Record<string, unknown>): boolean {
    // A reply that fails ends with end:true and then an ERROR with its traceId, sent to its watchers.
    // Other ERRORs may name a traceId too (STOP_GENERATION of an unknown one): those answer a frame.
    if (f.type === "ERROR") return !(typeof f.traceId === "string" && this.ended.has(f.traceId) && f.requestId === undefined);
    if (f.type === "CHAT_UPDATED" || f.type === "CHAT_DELETED")
      return typeof f.requestId === "string" && f.requestId.startsWith(`${this.tag}-`);
    return (REPLY_TYPES as readonly string[]).includes(f.type as string);
  }

  private check(frame: FuzzFrame, f: Record<string, any>, data: string) {
    if (frame.expect.kind === "error" && f.type === "ERROR") this.stats.errorsForBadFrames++;
    const problem = answerProblem(frame, f, data);
    if (problem) return this.violate(problem);
    this.record(frame.expect, f, describeFrame(frame));
  }

  /** Bookkeeping of what now exists, for the store check. */
  private record(e: Expect, f: Record<string, any>, what: string) {
    if (f.type === "NEW_CHAT") {
      const chat = f.chat as Chat;
      if (!v.is(ChatSchema, chat)) this.violate(`${what}: NEW_CHAT carries an invalid chat ${JSON.stringify(chat).slice(0, 200)}`);
      this.ownChats.push(chat);
      this.ledger.chats.set(chat.id, { chat, name: chat.name, deleted: false, sent: [], stopped: new Set() });
      if (e.kind === "ok" && e.own?.op === "create" && !sameText(chat.name, e.own.name ?? "New Chat")) {
        this.violate(`${what}: chat created with name ${JSON.stringify(chat.name)}`);
      }
      return;
    }
    if (e.kind !== "ok" || !e.own) return;
    const own = e.own;
    if (f.type === "CHAT_HISTORY" && own.op === "history") {
      for (const m of f.messages ?? []) {
        const { streaming: _s, seq: _q, ...rest } = m;
        if (!v.is(MessageSchema, rest) || rest.chat_id !== own.chatId)
          this.violate(`${what}: history has an invalid message ${JSON.stringify(m).slice(0, 200)}`);
      }
    } else if (f.type === "CHAT_UPDATED" && own.op === "rename") {
      const entry = this.ledger.chats.get(own.chatId);
      if (entry) entry.name = f.chat.name;
      if (!sameText(f.chat?.name, own.name)) this.violate(`${what}: renamed to ${JSON.stringify(f.chat?.name)}`);
    } else if (f.type === "CHAT_DELETED" && own.op === "delete") {
      const entry = this.ledger.chats.get(own.chatId);
      if (entry) entry.deleted = true;
      this.ownChats = this.ownChats.filter((c) => c.id !== own.chatId);
    } else if (f.type === "GENERATION_STOPPED" && own.op === "stop") {
      if (f.chatId !== own.chatId || typeof f.traceId !== "string") this.violate(`${what}: bad GENERATION_STOPPED ${JSON.stringify(f)}`);
      this.ledger.chats.get(own.chatId)?.stopped.add(f.traceId);
    } else if (f.type === "MESSAGE_ACCEPTED" && own.op === "send") {
      if (f.chatId !== own.chatId || typeof f.messageId !== "string") this.violate(`${what}: bad MESSAGE_ACCEPTED ${JSON.stringify(f)}`);
      if (own.messageId !== undefined && f.messageId !== own.messageId) this.violate(`${what}: MESSAGE_ACCEPTED for ${f.messageId}`);
      const entry = this.ledger.chats.get(own.chatId);
      if (f.duplicate === false) {
        if (typeof f.traceId !== "string") this.violate(`${what}: MESSAGE_ACCEPTED without traceId`);
        entry?.sent.push({ id: f.messageId, content: own.content, traceId: f.traceId });
      } else if (f.duplicate === true) {
        if (!entry?.sent.some((s) => s.id === f.messageId)) this.violate(`${what}: duplicate of a message never accepted`);
      } else this.violate(`${what}: MESSAGE_ACCEPTED without duplicate flag`);
    }
  }

  /** Resolves once at most `n` frames are unanswered. */
  waitPending(n: number, timeoutMs: number): Promise<void> {
    return this.waitFor(
      () => this.pending.length <= n,
      timeoutMs,
      () => `${this.pending.length} frames still unanswered`,
    );
  }

  private waitFor(cond: () => boolean, timeoutMs: number, describe: () => string): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = () => {
        if (cond()) {
          done();
          resolve();
        } else if (this.closeInfo) {
          done();
          reject(new Error(`${this.tag}: socket closed (${this.closeInfo.code}) while waiting: ${describe()}`));
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`${this.tag}: timed out after ${timeoutMs} ms: ${describe()}`));
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      this.waiters.add(check);
      check();
    });
  }

  send(frame: FuzzFrame) {
    this.stats.framesSent++;
    this.stats.bytesSent += frame.bytes;
    inc(this.stats.byCategory, frame.category);
    if (frame.expect.kind === "error") {
      this.stats.badFramesSent++;
      this.badSentOnSocket++;
    }
    if (frame.expect.kind !== "close") this.pending.push({ frame });
    this.ws.send(frame.data);
  }

  /** Sends a frame the server must answer by closing the socket; checks the code and reconnects. */
  async sendExpectingClose(frame: FuzzFrame & { expect: { kind: "close" } }, timeoutMs: number) {
    await this.waitPending(0, timeoutMs);
    this.expectingClose = true;
    this.send(frame);
    this.stats.badFramesSent++;
    await this.waitFor(
      () => this.closeInfo !== undefined,
      timeoutMs,
      () => "the server did not close the socket",
    ).catch(() => {});
    const code = this.closeInfo?.code;
    inc(this.stats.closes, String(code ?? "none"));
    if (code !== frame.expect.code)
      this.violate(`${frame.category} (${frame.bytes} bytes): closed with ${code}, expected ${frame.expect.code}`);
    this.checkBadCount();
    this.stats.reconnects++;
    await this.open();
  }

  /** On a bad-only client every frame sent on this socket so far must have drawn one ERROR. */
  checkBadCount() {
    if (this.tag.startsWith("bad") && this.errorsReceived !== this.badSentOnSocket) {
      this.violate(`bad-only client: ${this.badSentOnSocket} bad frames sent, ${this.errorsReceived} ERRORs received`);
    }
    this.errorsReceived = 0;
    this.badSentOnSocket = 0;
  }

  close(): Promise<void> {
    this.expectingClose = true;
    if (this.closeInfo) return Promise.resolve();
    const closed = new Promise<void>((resolve) => this.ws.addEventListener("close", () => resolve(), { once: true }));
    this.ws.close();
    return closed;
  }
}
