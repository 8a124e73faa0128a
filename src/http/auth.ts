// Browsers cannot set headers on a WebSocket, so the token may come three ways.
// A subprotocol entry looks like "bearer.<token>"; the reply names a non-secret entry when one was offered.
const PROTOCOL_PREFIX = "bearer.";

export type Presented = { token?: string; protocols: string[] };

export function presentedToken(req: Request): Presented {
  const protocols = (req.headers.get("sec-websocket-protocol") ?? "")
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
  const fromProtocol = protocols.find((p) => p.startsWith(PROTOCOL_PREFIX))?.slice(PROTOCOL_PREFIX.length);
  const auth = req.headers.get("authorization");
  const fromHeader = auth?.match(/^Bearer\s+(.+)$/i)?.[1]?.trim();
  const fromQuery = new URL(req.url).searchParams.get("token") ?? undefined;
  return { token: fromHeader ?? fromProtocol ?? fromQuery, protocols };
}

/** The subprotocol to answer with: a browser drops the socket unless we echo one it offered. */
export function chosenProtocol(protocols: string[]): string | undefined {
  return protocols.find((p) => !p.startsWith(PROTOCOL_PREFIX)) ?? protocols[0];
}

/** Constant-time token comparison; it lives with the other token rules in src/auth. */
export { tokensMatch } from "../auth/tokens";

/**
 * Listed origins are allowed. In production with a list, nothing else is: an `Origin` equal to
 * the `Host` header proves nothing there, since a DNS-rebinding page sends exactly that (its own
 * name, now pointing at us). Without a list, or outside production, same-origin pages are allowed
 * too, and outside production with no list anything goes.
 */
export function originAllowed(req: Request, o: { allowed: readonly string[]; production: boolean }): boolean {
  const origin = req.headers.get("origin");
  if (!origin) return true; // not a browser: the token is what guards it
  if (o.allowed.includes(origin) || o.allowed.includes("*")) return true;
  if (o.production && o.allowed.length > 0) return false;
  const open = !o.production && o.allowed.length === 0;
  try {
    return new URL(origin).host === req.headers.get("host") || open;
  } catch {
    return open; // "null" from file:// pages and sandboxed frames
  }
}
