import { createHash, randomBytes, timingSafeEqual } from "node:crypto";

// Personal API tokens (`bun run users`): shown once, stored only as their SHA-256. 32 random bytes
// leave nothing to guess, so a plain (unsalted) hash is enough and lets the store look a token up.

export const PERSONAL_TOKEN_PREFIX = "pc_";

/** A new personal token: "pc_" + 32 random bytes in base64url. */
export const newPersonalToken = (): string => PERSONAL_TOKEN_PREFIX + randomBytes(32).toString("base64url");

export const isPersonalToken = (token: string): boolean => token.startsWith(PERSONAL_TOKEN_PREFIX);

/** What the store keeps instead of the token: its SHA-256, hex. */
export const hashToken = (token: string): string => createHash("sha256").update(token, "utf8").digest("hex");

// Hashing first gives equal lengths, so the comparison time says nothing about the token.
const digest = (s: string) => createHash("sha256").update(s).digest();
/** Constant-time comparison of a presented secret with the expected one. */
export const tokensMatch = (presented: string | undefined, expected: string): boolean =>
  presented !== undefined && timingSafeEqual(digest(presented), digest(expected));
