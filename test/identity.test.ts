import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { exportSPKI, type JWTPayload, SignJWT } from "jose";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jwtSettings, jwtUserId } from "../src/auth/jwt";
import { ConfigError, loadConfig } from "../src/config";
import { StoreUnavailableError } from "../src/store/errors";
import { openSqliteStore } from "../src/store/sqlite";
import type { Store } from "../src/store/store";
import { hashToken, newPersonalToken } from "../src/auth/tokens";
import { UPGRADE_HEADERS } from "./support/fixtures";
import { type Key, makeKey, sign, startJwks } from "./support/jwks";
import { startTestServer, type TestServer } from "./support/harness";
import { until, within } from "./support/until";
import { connect } from "./support/ws-client";

// Sign-in by OpenID Connect access token, against a JWKS this test serves on loopback with keys made
// here (RS256 and ES256): what passes, everything that must be refused with 401 before the upgrade,
// the three ways a token travels, key rotation and a bounded refetch for unknown key ids.

const ISSUER = "https://login.test.example/tenant-1/v2.0";
const AUDIENCE = "api://pichat-test";
const TENANT = "11111111-2222-3333-4444-555555555555";
const LEGACY = "0f3c9a7d5e2b4c1a8f6e0d9b7c5a3e1f";

const now = () => Math.floor(Date.now() / 1000);
const claims = (over: JWTPayload = {}): JWTPayload => ({
  iss: ISSUER,
  aud: AUDIENCE,
  sub: "pairwise-sub-1",
  oid: "object-id-1",
  tid: TENANT,
  name: "Ada Lovelace",
  iat: now(),
  exp: now() + 600,
  ...over,
});
const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString("base64url");

let rsa: Key;
let ec: Key;
let jwks: ReturnType<typeof startJwks>;
let srv: TestServer;
const used: string[] = []; // every token sent, to check none was logged

beforeAll(async () => {
  rsa = await makeKey("rsa-1", "RS256");
  ec = await makeKey("ec-1", "ES256");
  jwks = startJwks([rsa.jwk, ec.jwk]);
  srv = await startTestServer({
    API_TOKEN: LEGACY,
    AUTH_JWKS_URL: jwks.url,
    AUTH_ISSUER: ISSUER,
    AUTH_AUDIENCE: AUDIENCE,
    AUTH_CLOCK_SKEW_S: "0",
    AUTH_JWKS_COOLDOWN_S: "1",
    AUTH_RECHECK_MS: "100",
  });
});
afterAll(async () => {
  await srv?.close();
  jwks?.stop();
});

type Transport = "header" | "protocol" | "query";
const TRANSPORTS: Transport[] = ["header", "protocol", "query"];
const carry = (how: Transport, token: string, base: string) => {
  used.push(token);
  if (how === "header") return { url: base, headers: { Authorization: `Bearer ${token}` } as Record<string, string> };
  if (how === "protocol") return { url: base, headers: { "Sec-WebSocket-Protocol": `pichat, bearer.${token}` } as Record<string, string> };
  return { url: `${base}?token=${encodeURIComponent(token)}`, headers: {} as Record<string, string> };
};

async function me(token: string | undefined, how: Transport = "header") {
  const { url, headers } = token === undefined ? { url: `${srv.url}/api/me`, headers: {} } : carry(how, token, `${srv.url}/api/me`);
  const res = await fetch(url, { headers });
  return { status: res.status, body: (await res.json()) as Record<string, unknown>, headers: res.headers };
}

async function upgrade(token: string, how: Transport = "header") {
  const { url, headers } = carry(how, token, `${srv.url}/ws`);
  const res = await fetch(url, { headers: { ...UPGRADE_HEADERS, ...headers } });
  return { status: res.status, body: (await res.json()) as Record<string, unknown>, headers: res.headers };
}

async function open(token: string, how: Transport = "header") {
  const { url, headers } = carry(how, token, srv.wsUrl);
  if (how === "protocol") return connect(url, { protocols: ["pichat", `bearer.${token}`] });
  return connect(url, { headers });
}

const ADA = () => jwtUserId(TENANT, "object-id-1");

describe("JWT sign-in", () => {
  // First, on a server that has not fetched the JWKS yet: the fetch count is exact.
  test("an unknown kid does not hammer the JWKS: 40 such tokens at once cause one fetch, and all get 401", async () => {
    const ghost = await makeKey("ghost", "RS256");
    const token = await sign(ghost, claims());
    const before = jwks.fetches();
    const results = await Promise.all(Array.from({ length: 40 }, (_, i) => (i % 2 ? me(token) : upgrade(token))));
    for (const r of results) expect(r.status).toBe(401);
    expect(jwks.fetches() - before).toBe(1);
    // Sequential ones within the cooldown fetch nothing more.
    for (let i = 0; i < 10; i++) expect((await me(token)).status).toBe(401);
    expect(jwks.fetches() - before).toBeLessThanOrEqual(2);
  });

  test("a valid RS256 token opens /ws and /api/me names the user (id from tid + oid, name claim)", async () => {
    const token = await sign(rsa, claims());
    const who = await me(token);
    expect(who.status).toBe(200);
    expect(who.body).toEqual({ id: ADA(), name: "Ada Lovelace", via: "jwt" });
    const c = await open(token);
    expect((await c.request({ type: "GET_CHATS" }, "CHAT_LIST")).type).toBe("CHAT_LIST");
    c.close();
  });

  test("a valid ES256 token works on each of the three transports (header, bearer.<token> subprotocol, ?token=)", async () => {
    const token = await sign(ec, claims({ name: undefined, preferred_username: "ada@example.com" }));
    for (const how of TRANSPORTS) {
      const who = await me(token, how);
      expect(who.status).toBe(200);
      expect(who.body).toEqual({ id: ADA(), name: "ada@example.com", via: "jwt" });
      const c = await open(token, how);
      if (how === "protocol") expect(c.ws.protocol).toBe("pichat");
      expect((await c.request({ type: "GET_CHATS" }, "CHAT_LIST")).type).toBe("CHAT_LIST");
      c.close();
    }
  });

  test("the user id is sub when there is no oid, scoped by tenant (or issuer): two issuers' same subject are two users", async () => {
    const bySub = await me(await sign(rsa, claims({ oid: undefined, sub: "s-42" })));
    expect(bySub.body.id).toBe(jwtUserId(TENANT, "s-42"));
    const noTid = await me(await sign(rsa, claims({ oid: undefined, tid: undefined, sub: "s-42" })));
    expect(noTid.body.id).toBe(jwtUserId(ISSUER, "s-42"));
    expect(noTid.body.id).not.toBe(bySub.body.id);
    expect(String(bySub.body.id)).toMatch(/^oidc-[\w-]{32}$/);
  });

  test("refused with 401 before the upgrade, the same body and headers as a wrong API token, on every transport", async () => {
    const other = await makeKey("rsa-1", "RS256"); // the trusted kid, someone else's key
    const pem = new TextEncoder().encode(await exportSPKI(rsa.publicKey));
    const hs = await new SignJWT(claims()).setProtectedHeader({ alg: "HS256", kid: rsa.kid }).sign(pem);
    const valid = await sign(rsa, claims());
    const [h, p] = valid.split(".");
    const cases: Record<string, string> = {
      "wrong audience": await sign(rsa, claims({ aud: "api://someone-else" })),
      "wrong issuer": await sign(rsa, claims({ iss: "https://evil.example/v2.0" })),
      expired: await sign(rsa, claims({ exp: now() - 5 })),
      "nbf in the future": await sign(rsa, claims({ nbf: now() + 600 })),
      "no exp": await sign(rsa, claims({ exp: undefined })),
      "bad signature (another key, trusted kid)": await sign(other, claims()),
      "tampered payload": `${h}.${b64(claims({ oid: "someone-else" }))}.${valid.split(".")[2]}`,
      "alg none": `${b64({ alg: "none", typ: "JWT", kid: rsa.kid })}.${p}.`,
      "HS256 with the public key as secret": hs,
      "no subject": await sign(rsa, claims({ oid: undefined, sub: undefined })),
      "unknown personal token": newPersonalToken(),
      garbage: "not-a-token",
    };
    for (const [what, token] of Object.entries(cases)) {
      for (const how of TRANSPORTS) {
        const r = await upgrade(token, how);
        expect({ what, how, status: r.status }).toEqual({ what, how, status: 401 });
        expect(r.body).toEqual({ error: "a valid API token is required", code: "UNAUTHORIZED" });
        expect(r.headers.get("www-authenticate")).toBe("Bearer");
        expect({ what, how, me: (await me(token, how)).status }).toEqual({ what, how, me: 401 });
      }
      await expect(open(token)).rejects.toThrow();
    }
    expect((await me(undefined)).status).toBe(401);
  });

  test("key rotation: a token signed with a kid the JWKS gained later works without a restart", async () => {
    const rotated = await makeKey("rsa-2", "RS256");
    const token = await sign(rotated, claims({ name: "After Rotation" }));
    const before = jwks.fetches();
    jwks.keys.push(rotated.jwk);
    // Within the 1 s cooldown a refetch may be deferred; it must happen by the deadline.
    const who = await until(
      async () => {
        const r = await me(token);
        return r.status === 200 ? r : false;
      },
      "the rotated key to be accepted",
      5_000,
    );
    expect(who.body).toEqual({ id: ADA(), name: "After Rotation", via: "jwt" });
    expect(jwks.fetches() - before).toBeGreaterThanOrEqual(1);
    expect(jwks.fetches() - before).toBeLessThanOrEqual(6); // once per cooldown at most
    const c = await open(token, "query");
    expect((await c.request({ type: "GET_CHATS" }, "CHAT_LIST")).type).toBe("CHAT_LIST");
    c.close();
  });

  test('a JWT socket is closed with 1008 "token expired" when its token expires', async () => {
    const token = await sign(ec, claims({ exp: now() + 2 }));
    const c = await open(token);
    const closed = await within(c.closed, 5_000, "the expired token's socket to close");
    expect(closed).toEqual({ code: 1008, reason: "token expired" });
    expect((await upgrade(token)).status).toBe(401);
  });

  test("the legacy API_TOKEN and a personal token still sign in, as themselves", async () => {
    expect((await me(LEGACY)).body).toEqual({ id: "default", name: "default", via: "api_token" });
    const user = { id: `u-${crypto.randomUUID()}`, name: "grace", created_at: new Date().toISOString() };
    await srv.store.createUser(user);
    const token = newPersonalToken();
    await srv.store.addToken(user.id, hashToken(token));
    expect((await me(token, "query")).body).toEqual({ id: user.id, name: "grace", via: "token" });
  });

  test("no token used here appears in the server's log", () => {
    expect(used.length).toBeGreaterThan(50);
    const log = srv.log.lines.join("\n");
    for (const t of new Set(used)) if (t.length > 16) expect(log).not.toContain(t);
    expect(log).toContain("sign-in refused");
  });
});

describe("clock skew", () => {
  let skewed: TestServer;
  beforeAll(async () => {
    skewed = await startTestServer({ API_TOKEN: LEGACY, AUTH_JWKS_URL: jwks.url, AUTH_ISSUER: ISSUER, AUTH_AUDIENCE: AUDIENCE });
  });
  afterAll(() => skewed?.close());

  test("with the default AUTH_CLOCK_SKEW_S (60) a token expired 30 s ago or valid from 30 s ahead passes; 120 s does not", async () => {
    const status = async (over: JWTPayload) =>
      (await fetch(`${skewed.url}/api/me`, { headers: { Authorization: `Bearer ${await sign(rsa, claims(over))}` } })).status;
    expect(await status({ exp: now() - 30 })).toBe(200);
    expect(await status({ nbf: now() + 30 })).toBe(200);
    expect(await status({ exp: now() - 120 })).toBe(401);
    expect(await status({ nbf: now() + 120 })).toBe(401);
  });
});

describe("a personal token while the store is down", () => {
  test("is answered 503 STORE_UNAVAILABLE (not 401), before the upgrade", async () => {
    const dir = mkdtempSync(join(tmpdir(), "pichat-id-"));
    const base = openSqliteStore(join(dir, "down.db"));
    const down: Store = {
      ...base,
      userOfToken: async () => {
        throw new StoreUnavailableError("down for the test");
      },
    };
    const s = await startTestServer({ API_TOKEN: LEGACY }, { store: down });
    try {
      for (const path of ["/ws", "/api/me"]) {
        const res = await fetch(`${s.url}${path}?token=${newPersonalToken()}`, { headers: UPGRADE_HEADERS });
        expect(res.status).toBe(503);
        expect(res.headers.get("retry-after")).toBe("2");
        expect(((await res.json()) as { code: string }).code).toBe("STORE_UNAVAILABLE");
      }
      // The legacy token needs no store.
      expect((await fetch(`${s.url}/api/me?token=${LEGACY}`)).status).toBe(200);
    } finally {
      await s.close();
      await base.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("configuration", () => {
  const fails = (env: Record<string, string>) => {
    try {
      loadConfig(env);
    } catch (e) {
      expect(e).toBeInstanceOf(ConfigError);
      return (e as Error).message;
    }
    throw new Error("expected a ConfigError");
  };
  const tid = "11111111-2222-3333-4444-555555555555";

  test("half-configured sign-in is refused with the variable named", () => {
    expect(fails({ AUTH_ENTRA_TENANT_ID: tid })).toStartWith("AUTH_AUDIENCE:");
    expect(fails({ AUTH_JWKS_URL: "https://idp.example/keys", AUTH_AUDIENCE: "api://x" })).toStartWith("AUTH_ISSUER:");
    expect(fails({ AUTH_ISSUER: "https://idp.example/" })).toStartWith("AUTH_ISSUER:");
    expect(fails({ AUTH_AUDIENCE: "api://x" })).toStartWith("AUTH_AUDIENCE:");
    expect(fails({ AUTH_ENTRA_TENANT_ID: "contoso.onmicrosoft.com", AUTH_AUDIENCE: "api://x" })).toStartWith("AUTH_ENTRA_TENANT_ID:");
    expect(
      fails({ AUTH_ENTRA_TENANT_ID: tid, AUTH_JWKS_URL: "https://idp.example/keys", AUTH_ISSUER: "i", AUTH_AUDIENCE: "a" }),
    ).toStartWith("AUTH_JWKS_URL:");
  });

  test("Entra ID: the tenant's JWKS and issuers; audiences may be a list", () => {
    const s = jwtSettings(loadConfig({ AUTH_ENTRA_TENANT_ID: tid, AUTH_AUDIENCE: "api://pichat, 0000-client-id" }))!;
    expect(s.jwksUrl.href).toBe(`https://login.microsoftonline.com/${tid}/discovery/v2.0/keys`);
    expect(s.issuers).toContain(`https://login.microsoftonline.com/${tid}/v2.0`);
    expect(s.audiences).toEqual(["api://pichat", "0000-client-id"]);
    expect(s.clockToleranceS).toBe(60);
    expect(jwtSettings(loadConfig({}))).toBeUndefined();
  });

  test("production: a JWT issuer may replace API_TOKEN (then METRICS_TOKEN is required); a placeholder API_TOKEN is still refused", () => {
    const jwt = { ENVIRONMENT: "production", AUTH_ENTRA_TENANT_ID: tid, AUTH_AUDIENCE: "api://pichat" };
    expect(fails(jwt)).toStartWith("METRICS_TOKEN:");
    expect(loadConfig({ ...jwt, METRICS_TOKEN: "m".repeat(8) + "3f9c0a7e5b1d" }).API_TOKEN).toBeUndefined();
    expect(fails({ ...jwt, METRICS_TOKEN: "3f9c0a7e5b1d4c2a", API_TOKEN: "change-me-to-a-long-random-string" })).toStartWith("API_TOKEN:");
    expect(fails({ ENVIRONMENT: "production" })).toStartWith("API_TOKEN:");
    expect(
      fails({
        ENVIRONMENT: "production",
        API_TOKEN: LEGACY,
        AUTH_JWKS_URL: "http://idp.example/keys",
        AUTH_ISSUER: "i",
        AUTH_AUDIENCE: "a",
      }),
    ).toStartWith("AUTH_JWKS_URL:");
  });
});
