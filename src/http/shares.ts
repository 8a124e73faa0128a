import type { Hono } from "hono";
import type { Identity } from "../auth/identity";
import type { Logger } from "../log";
import { presentedToken } from "./auth";

// A shared chat over HTTP: GET /api/shares/:id, what the page at /s/<id> (src/http/page/share.js) shows.
// Read-only, nothing but the snapshot: the owner is never named. Without a token only a public share
// answers; any other id (private, revoked or never made) gets the same 401, so a stranger learns
// nothing about which ids exist. Signed in, a missing, revoked or deleted chat's share is one 404.
// What it needs of the chat layer comes in as plain functions (src/server.ts): http/ never imports src/chat.

export type SharedMessage = { id: string; role: string; content: string; created_at: string; status?: string };
export type ShareView = { id: string; name: string; created_at: string; public: boolean; messages: SharedMessage[] };

export type ShareRoutes = {
  /** The snapshot, "missing", or "sign-in" (the viewer must sign in first); `viewer` is a user id or undefined. */
  view(shareId: string, viewer: string | undefined): Promise<ShareView | "missing" | "sign-in">;
  /** The identity behind the request's token, or the answer refusing it (src/app.ts). */
  signIn(req: Request, address: string): Promise<{ user: Identity } | { refuse: Response }>;
  /** Who a request without a token is: the open server's user, or nobody. */
  anonymous(): Identity | undefined;
  addressOf(c: { env: unknown; req: { raw: Request } }): string;
  describeFailure(e: unknown): { code: string; message: string };
  log: Logger;
};

const HEADERS = { "Cache-Control": "no-store", "X-Robots-Tag": "noindex", "Referrer-Policy": "no-referrer" };
const NOT_FOUND = { error: "there is no such shared chat (it may have been revoked or deleted)", code: "SHARE_NOT_FOUND" } as const;
const SIGN_IN = { error: "sign in to read this shared chat", code: "UNAUTHORIZED" } as const;

export function registerShareRoutes(app: Hono<any>, o: ShareRoutes) {
  app.get("/api/shares/:id", async (c) => {
    const req = c.req.raw;
    let viewer: string | undefined;
    if (presentedToken(req).token) {
      const signed = await o.signIn(req, o.addressOf(c));
      if ("refuse" in signed) return signed.refuse;
      viewer = signed.user.userId;
    } else viewer = o.anonymous()?.userId;
    try {
      const shown = await o.view(c.req.param("id"), viewer);
      if (shown === "sign-in") return Response.json(SIGN_IN, { status: 401, headers: { ...HEADERS, "WWW-Authenticate": "Bearer" } });
      if (shown === "missing") return Response.json(NOT_FOUND, { status: 404, headers: HEADERS });
      // Only what a reader needs: no owner, no chat id, no lease, no device.
      const messages = shown.messages.map((m) => ({
        id: m.id,
        role: m.role,
        content: m.content,
        created_at: m.created_at,
        ...(m.status ? { status: m.status } : {}),
      }));
      return Response.json({ share: { ...shown, messages } }, { headers: HEADERS });
    } catch (e) {
      const f = o.describeFailure(e);
      if (f.code === "STORE_UNAVAILABLE")
        return Response.json({ error: f.message, code: f.code }, { status: 503, headers: { ...HEADERS, "Retry-After": "2" } });
      o.log.error("a shared chat could not be read", { error: e });
      return Response.json({ error: f.message, code: f.code }, { status: 500, headers: HEADERS });
    }
  });
}
