import type { Store } from "../store";
import { status } from "./failures";
import { type Cosmos, ETAG_ATTEMPTS, matchEtag, query, read, safeId, tolerate } from "./requests";

// Device messages handled once: the processed-message records (claimProcessed, purgeProcessed) and
// the leased claims on them (claimMessage, renewClaim, completeClaim), all in one container.

type ClaimOps = Pick<Store, "claimProcessed" | "claimMessage" | "renewClaim" | "completeClaim" | "purgeProcessed">;

type ClaimDoc = { id: string; expires_at: number; ttl: number; owner?: string; lease_until?: number; done?: boolean; _etag?: string };
/** Records written by claimProcessed carry no `done`: they are finished work. */
const isDone = (d: ClaimDoc) => d.done !== false;
// A held record outlives its lease by a minute: real Cosmos TTL then removes an abandoned claim.
const heldDoc = (id: string, owner: string, until: number, leaseMs: number): ClaimDoc => ({
  id,
  owner,
  lease_until: until,
  done: false,
  expires_at: until,
  ttl: Math.ceil(leaseMs / 1000) + 60,
});

export function claimOps(k: Cosmos): ClaimOps {
  const { c, o } = k;

  const claimProcessed = async (messageId: string, ttlSeconds: number) => {
    const id = safeId(messageId);
    const now = Date.now();
    // expires_at decides; `ttl` (whole seconds only) lets real Cosmos delete the record itself.
    const doc = { id, expires_at: now + ttlSeconds * 1000, ttl: Math.max(1, Math.ceil(ttlSeconds)) };
    // Create is the atomic guard (409 on a duplicate). An expired record that TTL has not yet
    // removed (or never will, on the test server) is taken over by an etag-guarded replace.
    for (let attempt = 0; attempt < 3; attempt++) {
      if (await tolerate(async () => (await c.processedMessages.items.create(doc, o()), true), [409], false)) return true;
      const existing = await read<{ expires_at: number }>(k, c.processedMessages, id, id);
      if (!existing) continue; // removed since our create: create again
      if (existing.expires_at > now) return false;
      try {
        await c.processedMessages.item(id, id).replace(doc, { ...o(), ...matchEtag(String(existing._etag)) });
        return true;
      } catch (e) {
        if (status(e) === 412) return false; // another caller took it over first (and got true)
        if (status(e) !== 404) throw e; // 404: purged meanwhile, so create again
      }
    }
    return false;
  };

  const purgeProcessed = async () => {
    // Maintenance, not the hot path: the one cross-partition query (real Cosmos TTL does this anyway).
    const expired = await query<{ id: string }>(k, c.processedMessages, {
      query: "SELECT c.id FROM c WHERE c.expires_at <= @now",
      parameters: [{ name: "@now", value: Date.now() }],
    });
    let purged = 0;
    for (const { id } of expired) {
      if (await tolerate(async () => (await c.processedMessages.item(id, id).delete(o()), true), [404], false)) purged++;
    }
    return purged;
  };

  const readClaim = (id: string) => read<ClaimDoc>(k, c.processedMessages, id, id);
  /** Replace only if the record is still the version we read; false when someone else changed (412) or removed (404) it. */
  const replaceClaim = (doc: ClaimDoc, etag: unknown) =>
    tolerate(
      async () => (await c.processedMessages.item(doc.id, doc.id).replace(doc, { ...o(), ...matchEtag(String(etag)) }), true),
      [404, 412],
      false,
    );
  const createClaim = (doc: ClaimDoc) => tolerate(async () => (await c.processedMessages.items.create(doc, o()), true), [409], false);

  const claimMessage = async (messageId: string, owner: string, leaseMs: number): Promise<"claimed" | "held" | "done"> => {
    const id = safeId(messageId);
    for (let attempt = 0; attempt < ETAG_ATTEMPTS; attempt++) {
      const now = Date.now();
      const held = heldDoc(id, owner, now + leaseMs, leaseMs);
      if (await createClaim(held)) return "claimed";
      const existing = await readClaim(id);
      if (!existing) continue; // removed since our create: create again
      if (isDone(existing) && existing.expires_at > now) return "done";
      if (!isDone(existing) && existing.owner !== owner && (existing.lease_until ?? 0) >= now) return "held";
      // Expired, lapsed, or ours already: take it over, unless someone else does first (then look again).
      if (await replaceClaim(held, existing._etag)) return "claimed";
    }
    return "held";
  };

  const renewClaim = async (messageId: string, owner: string, leaseMs: number) => {
    const id = safeId(messageId);
    for (let attempt = 0; attempt < ETAG_ATTEMPTS; attempt++) {
      const existing = await readClaim(id);
      if (!existing || isDone(existing) || existing.owner !== owner) return false;
      const until = Date.now() + leaseMs;
      if (await replaceClaim({ ...heldDoc(id, owner, until, leaseMs), expires_at: Math.max(existing.expires_at, until) }, existing._etag))
        return true;
    }
    return false;
  };

  const completeClaim = async (messageId: string, owner: string, ttlSeconds: number) => {
    const id = safeId(messageId);
    for (let attempt = 0; attempt < ETAG_ATTEMPTS; attempt++) {
      const done: ClaimDoc = { id, owner, done: true, expires_at: Date.now() + ttlSeconds * 1000, ttl: Math.max(1, Math.ceil(ttlSeconds)) };
      const existing = await readClaim(id);
      if (!existing) {
        if (await createClaim(done)) return;
        continue;
      }
      // Taken over after our lease lapsed: finishing it is the new owner's business.
      if (existing.owner !== owner) return;
      if (await replaceClaim(done, existing._etag)) return;
    }
  };

  return { claimProcessed, claimMessage, renewClaim, completeClaim, purgeProcessed };
}
