import type { Logger } from "../log";
import type { Store } from "../store/store";
import { legacyIdentity, type Identity } from "./identity";
import type { JwtVerifier } from "./jwt";
import { looksLikeJwt } from "./jwt";
import { hashToken, isPersonalToken, tokensMatch } from "./tokens";

// Who a presented token belongs to: the legacy API_TOKEN, a personal token (looked up by its hash on
// every sign-in, so a new one works at once and a revoked one at once stops), or a JWT. Nothing is
// cached: a miss is never remembered, and a hit is rechecked while the socket lives (revocation.ts).

export type Authenticator = {
  /** The identity, or undefined for anything that does not pass (the caller answers 401, whatever the reason). */
  authenticate(token: string | undefined): Promise<Identity | undefined>;
  /** Whether a signed-in identity still holds: its personal token not revoked, its JWT not expired. */
  stillValid(identity: Identity): Promise<boolean>;
  /** Who someone without a token is: the legacy user on an open server, else nobody (a reader of a public share, say); never logged. */
  anonymous(): Identity | undefined;
};

export function createAuthenticator(o: {
  apiToken?: string;
  jwt?: JwtVerifier;
  store: Pick<Store, "userOfToken">;
  /** Production never runs open, whatever else is configured. */
  production?: boolean;
  log?: Logger;
}): Authenticator {
  // Today's development mode: no secret configured, no sign-in needed (everyone is the legacy user).
  const open = !o.apiToken && !o.jwt && !o.production;

  const refused = (via: string, reason: string) => {
    o.log?.info("sign-in refused", { via, reason }); // never the token
    return undefined;
  };

  async function authenticate(token: string | undefined): Promise<Identity | undefined> {
    if (token === undefined || token === "") return open ? legacyIdentity : refused("none", "no token");
    if (o.apiToken && tokensMatch(token, o.apiToken)) return legacyIdentity;
    if (isPersonalToken(token)) {
      // Checked even when open: a personal token never quietly becomes someone else.
      const tokenHash = hashToken(token);
      const user = await o.store.userOfToken(tokenHash);
      return user ? { userId: user.id, name: user.name, via: "token", tokenHash } : refused("token", "unknown or revoked");
    }
    if (o.jwt && looksLikeJwt(token)) {
      try {
        return await o.jwt(token);
      } catch (e) {
        return refused("jwt", String((e as { code?: string }).code ?? (e as Error).name ?? "invalid"));
      }
    }
    // Open mode ignores a token it has no use for, as it always did.
    return open ? legacyIdentity : refused("unknown", "not a token this server accepts");
  }

  async function stillValid(identity: Identity): Promise<boolean> {
    if (identity.via === "token") {
      if (!identity.tokenHash) return false;
      return (await o.store.userOfToken(identity.tokenHash))?.id === identity.userId;
    }
    if (identity.via === "jwt") return identity.expiresAt === undefined || identity.expiresAt > Date.now();
    return true;
  }

  return { authenticate, stillValid, anonymous: () => (open ? legacyIdentity : undefined) };
}
