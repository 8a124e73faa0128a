import type { Hono } from "hono";
import type { Identity } from "../auth/identity";
import type { Logger } from "../log";
import type { Chat } from "../records";
import { originAllowed } from "./auth";
import type { TransferGate } from "./throttle";

// A chat as a file over HTTP: GET /api/chats/:id/export and POST /api/chats/import
// (docs/protocol.md, "Export and import"). Signed in exactly as the socket is; the chat service does
// the rest. There are no cookies: a request carries its token itself, so a page on another origin
// that has no token reads nothing, and one the Origin rules refuse gets no CORS headers at all.
// What the routes need of the chat layer comes in as plain functions (src/server.ts builds them):
// http/ never imports src/chat.

/** POST /api/chats/import bodies past this are refused with 413, before or while they are read. */
export const IMPORT_MAX_BYTES = 10 * 1024 * 1024;

/** The file formats an export is offered in. */
export type ExportFormat = "json" | "md";

/** The chat layer's part in export and import. */
export type ChatFiles = {
  /** The chat's name and its file in `format`, piece by piece; throws as the chat service does (CHAT_NOT_FOUND, ...). */
  exportChat(owner: string, chatId: string, format: ExportFormat): Promise<{ name: string; pieces: AsyncGenerator<string> }>;
  /** A new chat for the owner from a parsed export. */
  importChat(owner: string, data: unknown): Promise<Chat>;
  /** What a failure may tell the client: its code and a message safe to show. */
  describeFailure(e: unknown): { code: string; message: string };
};

export type ChatRoutes = {
  chats: ChatFiles;
  /** The identity behind the request's token, or the answer refusing it (src/app.ts). */
  signIn(req: Request, address: string): Promise<{ user: Identity } | { refuse: Response }>;
  /** The peer address of a request (failed sign-ins are throttled per address). */
  addressOf(c: { env: unknown; req: { raw: Request } }): string;
  /** Each user's exports and imports: one at a time, and a rate (src/http/throttle.ts). */
  transfers: TransferGate;
  allowedOrigins: readonly string[];
  production: boolean;
  log: Logger;
};

const FORMATS: Record<ExportFormat, { type: string; ext: string }> = {
  json: { type: "application/json; charset=utf-8", ext: "json" },
  md: { type: "text/markdown; charset=utf-8", ext: "md" },
};

/** One body for a missing id and another user's: nothing in it tells them apart (not even the id). */
const NOT_FOUND = { error: "there is no such chat", code: "CHAT_NOT_FOUND" } as const;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

const fail = (status: number, code: string, error: string, headers: Record<string, string> = {}) =>
  Response.json({ error, code }, { status, headers: { "Cache-Control": "no-store", ...headers } });

/**
 * CORS headers for an origin the socket would accept (src/http/auth.ts originAllowed), none for a
 * request without Origin, or "refused". No Allow-Credentials: there is nothing ambient to send.
 */
function cors(req: Request, o: ChatRoutes): Record<string, string> | "refused" {
  const origin = req.headers.get("origin");
  if (!origin) return {};
  if (!originAllowed(req, { allowed: o.allowedOrigins, production: o.production })) return "refused";
  return { "Access-Control-Allow-Origin": origin, "Access-Control-Expose-Headers": "Content-Disposition", Vary: "Origin" };
}

export function registerChatRoutes(app: Hono<any>, o: ChatRoutes) {
  /** Signs in, then checks the origin (the socket's order); the CORS headers for the answer. */
  async function admit(c: {
    env: unknown;
    req: { raw: Request };
  }): Promise<{ user: Identity; headers: Record<string, string> } | { refuse: Response }> {
    const req = c.req.raw;
    const signed = await o.signIn(req, o.addressOf(c));
    if ("refuse" in signed) return signed;
    const headers = cors(req, o);
    if (headers === "refused") return { refuse: fail(403, "ORIGIN_NOT_ALLOWED", "this origin may not use this route") };
    return { user: signed.user, headers };
  }

  /** A failure of the chat service as an HTTP answer; only what describeFailure lets out. */
  function failure(e: unknown, headers: Record<string, string>, what: string): Response {
    const f = o.chats.describeFailure(e);
    if (f.code === "CHAT_NOT_FOUND") return Response.json(NOT_FOUND, { status: 404, headers: { "Cache-Control": "no-store", ...headers } });
    if (f.code === "INVALID_ARGUMENT") return fail(400, f.code, f.message, headers);
    if (f.code === "STORE_UNAVAILABLE") return fail(503, f.code, f.message, { ...headers, "Retry-After": "2" });
    o.log.error(what, { error: e });
    return fail(500, f.code, f.message, headers);
  }

  /** A slot for one export or import of the user's, or the 429 that says when to come back. */
  async function slot(userId: string, headers: Record<string, string>): Promise<{ release: () => void } | { refuse: Response }> {
    const r = await o.transfers.admit(userId);
    if ("release" in r) return r;
    const error =
      r.reason === "busy"
        ? "another export or import of yours is still running; retry when it ends"
        : "too many exports and imports; slow down";
    return { refuse: fail(429, "TOO_MANY_TRANSFERS", error, { ...headers, "Retry-After": String(r.retryAfterS) }) };
  }

  // Preflight for pages on another origin that send the token in an Authorization header.
  const preflight = (req: Request) => {
    const headers = cors(req, o);
    if (headers === "refused") return fail(403, "ORIGIN_NOT_ALLOWED", "this origin may not use this route");
    return new Response(null, {
      status: 204,
      headers: {
        ...headers,
        "Access-Control-Allow-Methods": "GET, POST",
        "Access-Control-Allow-Headers": "Authorization, Content-Type",
        "Access-Control-Max-Age": "600",
      },
    });
  };
  app.options("/api/chats/:id/export", (c) => preflight(c.req.raw));
  app.options("/api/chats/import", (c) => preflight(c.req.raw));

  app.get("/api/chats/:id/export", async (c) => {
    const admitted = await admit(c);
    if ("refuse" in admitted) return admitted.refuse;
    const { user, headers } = admitted;
    const name = c.req.query("format") ?? "json";
    if (!Object.hasOwn(FORMATS, name)) return fail(400, "INVALID_ARGUMENT", "format must be json or md", headers);
    const format = FORMATS[name as ExportFormat];
    const id = c.req.param("id");
    // Not a UUID: no chat can have it (chat ids are UUIDs), so no store read tells anything.
    if (!UUID.test(id)) return Response.json(NOT_FOUND, { status: 404, headers: { "Cache-Control": "no-store", ...headers } });
    const held = await slot(user.userId, headers);
    if ("refuse" in held) return held.refuse;
    let exported: Awaited<ReturnType<ChatFiles["exportChat"]>>;
    try {
      exported = await o.chats.exportChat(user.userId, id, name as ExportFormat);
    } catch (e) {
      held.release();
      return failure(e, headers, "export failed");
    }
    // The slot is held until the download ends, fails or is cut: pages are read as the client reads.
    return new Response(
      textStream(exported.pieces, (e) => o.log.warn("export stopped midway", { chatId: id, error: e }), held.release),
      {
        status: 200,
        headers: {
          ...headers,
          "Content-Type": format.type,
          "Content-Disposition": attachment(exported.name, format.ext),
          "Cache-Control": "no-store",
          "X-Content-Type-Options": "nosniff",
        },
      },
    );
  });

  app.post("/api/chats/import", async (c) => {
    const admitted = await admit(c);
    if ("refuse" in admitted) return admitted.refuse;
    const { user, headers } = admitted;
    const type = c.req.header("content-type")?.split(";")[0]?.trim().toLowerCase();
    if (type !== "application/json")
      return fail(415, "UNSUPPORTED_MEDIA_TYPE", "send the export as Content-Type: application/json", headers);
    const tooLarge = () =>
      fail(413, "PAYLOAD_TOO_LARGE", `an import may be at most ${IMPORT_MAX_BYTES} bytes`, { ...headers, Connection: "close" });
    const declared = Number(c.req.header("content-length") ?? "0");
    if (declared > IMPORT_MAX_BYTES) return tooLarge();
    // Before the body is read: a refused import holds none of it.
    const held = await slot(user.userId, headers);
    if ("refuse" in held) return held.refuse;
    try {
      return await importBody(c.req.raw, user.userId, headers, tooLarge);
    } finally {
      held.release();
    }
  });

  async function importBody(req: Request, userId: string, headers: Record<string, string>, tooLarge: () => Response) {
    const bytes = await readAtMost(req, IMPORT_MAX_BYTES);
    if (!bytes) return tooLarge();
    let data: unknown;
    try {
      // As on the socket: a lone surrogate becomes U+FFFD, so what is stored is valid Unicode.
      data = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes), (_k, v) => (typeof v === "string" ? v.toWellFormed() : v));
    } catch {
      return fail(400, "BAD_JSON", "the body is not valid UTF-8 JSON", headers);
    }
    try {
      const chat = await o.chats.importChat(userId, data);
      return Response.json({ chat }, { status: 201, headers: { ...headers, "Cache-Control": "no-store" } });
    } catch (e) {
      return failure(e, headers, "import failed");
    }
  }
}

/** The body, or undefined as soon as it passes `max` bytes (a chunked body has no length to check first). */
async function readAtMost(req: Request, max: number): Promise<Uint8Array | undefined> {
  if (!req.body) return new Uint8Array();
  const parts: Uint8Array[] = [];
  let size = 0;
  const reader = req.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > max) {
      await reader.cancel().catch(() => {});
      return undefined;
    }
    parts.push(value);
  }
  const out = new Uint8Array(size);
  let at = 0;
  for (const p of parts) out.set(p, at), (at += p.byteLength);
  return out;
}

/**
 * Pieces of text as a byte stream, pulled as the client reads (a slow reader holds one piece, not
 * the chat). A failure midway errors the stream, so the download is cut, never a short file that looks whole.
 */
function textStream(pieces: AsyncGenerator<string>, onError: (e: unknown) => void, onEnd: () => void): ReadableStream<Uint8Array> {
  const encoder = new TextEncoder();
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        try {
          const next = await pieces.next();
          if (next.done) {
            onEnd();
            controller.close();
          } else controller.enqueue(encoder.encode(next.value));
        } catch (e) {
          onEnd();
          onError(e);
          controller.error(e);
        }
      },
      async cancel() {
        onEnd();
        await pieces.return(undefined);
      },
    },
    { highWaterMark: 1 },
  );
}

/**
 * `attachment` with the chat's name as the file name (RFC 6266): an ASCII `filename` for old
 * clients and the exact name as UTF-8 in `filename*`; characters no file system takes, control
 * characters and leading dots are replaced, and the name is cut to 100 characters.
 */
export function attachment(name: string, ext: string): string {
  const safe =
    [
      ...name
        .normalize("NFC")
        .replace(/[\u0000-\u001f\u007f-\u009f"*/:<>?\\|\u2028\u2029]/g, "_")
        .replace(/\s+/g, " ")
        .trim()
        .replace(/^\.+/, ""),
    ]
      .slice(0, 100)
      .join("")
      .trim() || "chat";
  const ascii = safe.replace(/[^\x20-\x7e]/gu, "_").replace(/%/g, "_");
  const encoded = encodeURIComponent(`${safe}.${ext}`).replace(/['()*]/g, (ch) => `%${ch.charCodeAt(0).toString(16).toUpperCase()}`);
  return `attachment; filename="${ascii}.${ext}"; filename*=UTF-8''${encoded}`;
}
