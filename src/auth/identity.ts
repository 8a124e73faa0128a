import * as v from "valibot";

// Who is on the other end of a socket or an HTTP request, once their token has been checked.
// `userId` is the owner of everything they create; it never changes for a person.

/** The user the legacy API_TOKEN signs in as: it owns every chat stored before users existed. */
export const LEGACY_USER_ID = "default";

export const IdentitySchema = v.object({
  userId: v.string(),
  /** For display: the personal token's user name, the JWT's name claim, or "default". */
  name: v.string(),
  via: v.picklist(["api_token", "token", "jwt"]),
  /** Personal tokens: the stored hash, rechecked while the socket is open (revocation). */
  tokenHash: v.optional(v.string()),
  /** JWTs: when the token expires (epoch ms); the socket is closed then. */
  expiresAt: v.optional(v.number()),
});
export type Identity = v.InferOutput<typeof IdentitySchema>;

export const legacyIdentity: Identity = { userId: LEGACY_USER_ID, name: "default", via: "api_token" };
