import { type CryptoKey, exportJWK, generateKeyPair, type JWK, type JWTPayload, SignJWT } from "jose";
import { jwtUserId } from "../../src/auth/jwt";

// An OpenID Connect identity provider on loopback for tests: signing keys made at test time (RS256
// or ES256), the JWKS endpoint that publishes them, and tokens signed with them.

export type Key = { kid: string; alg: "RS256" | "ES256"; privateKey: CryptoKey; publicKey: CryptoKey; jwk: JWK };

export const makeKey = async (kid: string, alg: Key["alg"]): Promise<Key> => {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  return { kid, alg, privateKey, publicKey, jwk: { ...(await exportJWK(publicKey)), kid, alg, use: "sig" } };
};

/** The identity provider's key endpoint: serves `keys` (push to rotate), counts fetches. */
export function startJwks(keys: JWK[]) {
  let fetches = 0;
  const server = Bun.serve({
    port: 0,
    hostname: "127.0.0.1",
    fetch: () => {
      fetches++;
      return Response.json({ keys });
    },
  });
  return { url: `http://127.0.0.1:${server.port}/keys`, keys, fetches: () => fetches, stop: () => server.stop(true) };
}

export const sign = (key: Key, payload: JWTPayload, header: Record<string, unknown> = {}) =>
  new SignJWT(payload).setProtectedHeader({ alg: key.alg, kid: key.kid, typ: "JWT", ...header }).sign(key.privateKey);

/**
 * One issuer with one RS256 key and its JWKS: `env` configures a server to trust it, `user(oid)`
 * signs a ten-minute access token for that user and names the user id the server gives them.
 */
export async function startIdentityProvider(o: { issuer?: string; audience?: string; tenant?: string } = {}) {
  const issuer = o.issuer ?? "https://login.test.example/tenant-users/v2.0";
  const audience = o.audience ?? "api://pichat-users-test";
  const tenant = o.tenant ?? "99999999-8888-7777-6666-555555555555";
  const key = await makeKey("users-rsa-1", "RS256");
  const jwks = startJwks([key.jwk]);
  const now = () => Math.floor(Date.now() / 1000);
  return {
    env: { AUTH_JWKS_URL: jwks.url, AUTH_ISSUER: issuer, AUTH_AUDIENCE: audience },
    jwks,
    async user(oid: string, name = `jwt ${oid}`) {
      const token = await sign(key, {
        iss: issuer,
        aud: audience,
        sub: `sub-${oid}`,
        oid,
        tid: tenant,
        name,
        iat: now(),
        exp: now() + 600,
      });
      return { id: jwtUserId(tenant, oid), token };
    },
    stop: () => jwks.stop(),
  };
}
