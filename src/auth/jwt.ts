import { createHash } from "node:crypto";
import { createRemoteJWKSet, jwtVerify, type JWTPayload } from "jose";
import type { Config } from "../config";
import type { Identity } from "./identity";

// OpenID Connect access tokens (Microsoft Entra ID or any issuer with a JWKS), checked with `jose`:
// signature against the issuer's published keys, issuer, audience, exp/nbf with some clock skew.

export type JwtSettings = {
  jwksUrl: URL;
  /** Accepted `iss` values. */
  issuers: string[];
  audiences: string[];
  clockToleranceS: number;
  /** At most one JWKS refetch per this for a key id the cache lacks (rotation without a restart, bounded). */
  cooldownMs: number;
};

/** Asymmetric algorithms only: HS256 (a shared secret) and "none" are refused whatever the header says. */
export const JWT_ALGORITHMS = ["RS256", "ES256"];

/** The settings from config, or undefined when sign-in by JWT is not configured. */
export function jwtSettings(c: Config): JwtSettings | undefined {
  const common = { audiences: [...c.AUTH_AUDIENCE], clockToleranceS: c.AUTH_CLOCK_SKEW_S, cooldownMs: c.AUTH_JWKS_COOLDOWN_S * 1000 };
  if (c.AUTH_ENTRA_TENANT_ID) {
    const tid = c.AUTH_ENTRA_TENANT_ID.toLowerCase();
    return {
      ...common,
      jwksUrl: new URL(`https://login.microsoftonline.com/${tid}/discovery/v2.0/keys`),
      // v2.0 tokens, and v1.0 ones for APIs that still get those (accessTokenAcceptedVersion unset): same tenant, same keys.
      issuers: [`https://login.microsoftonline.com/${tid}/v2.0`, `https://sts.windows.net/${tid}/`],
    };
  }
  if (c.AUTH_JWKS_URL && c.AUTH_ISSUER) return { ...common, jwksUrl: new URL(c.AUTH_JWKS_URL), issuers: [c.AUTH_ISSUER] };
  return undefined;
}

/** Three base64url parts: worth trying as a JWT (personal tokens and the legacy token never look like this). */
export const looksLikeJwt = (token: string): boolean => /^[\w-]+\.[\w-]+\.[\w-]*$/.test(token);

/**
 * A stable id per person that two issuers cannot share: the subject (`oid`, the same for a user
 * across an Entra tenant's apps, else `sub`) hashed with the tenant (`tid`) or, without one, the issuer.
 */
export function jwtUserId(scope: string, subject: string): string {
  return "oidc-" + createHash("sha256").update(`${scope}\n${subject}`, "utf8").digest("base64url").slice(0, 32);
}

const claim = (p: JWTPayload, name: string): string | undefined => {
  const value = p[name];
  return typeof value === "string" && value.trim() !== "" ? value : undefined;
};

export type JwtVerifier = (token: string) => Promise<Identity>;

/** Throws (a jose error, whose `code` says why) for any token that does not pass. */
export function createJwtVerifier(s: JwtSettings): JwtVerifier {
  const keys = createRemoteJWKSet(s.jwksUrl, { cooldownDuration: s.cooldownMs, timeoutDuration: 5_000 });
  return async (token) => {
    const { payload } = await jwtVerify(token, keys, {
      algorithms: JWT_ALGORITHMS,
      issuer: s.issuers,
      audience: s.audiences,
      clockTolerance: s.clockToleranceS,
      // exp is what closes the socket later: a token without one is not accepted.
      requiredClaims: ["exp"],
    });
    const subject = claim(payload, "oid") ?? claim(payload, "sub");
    const scope = claim(payload, "tid") ?? claim(payload, "iss");
    if (!subject || !scope) throw Object.assign(new Error("the token names no subject"), { code: "ERR_JWT_NO_SUBJECT" });
    const name = claim(payload, "name") ?? claim(payload, "preferred_username") ?? claim(payload, "email") ?? subject;
    // The socket lives as long as the token would still be accepted: exp plus the tolerated skew.
    const expiresAt = ((payload.exp as number) + s.clockToleranceS) * 1000;
    return { userId: jwtUserId(scope, subject), name, via: "jwt", expiresAt };
  };
}
