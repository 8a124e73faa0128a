import type { Container, SqlQuerySpec } from "@azure/cosmos";
import type { ContainerName } from "./config";
import { status } from "./failures";

/** What every part of the store works with: the open containers, and the options each request carries. */
export type Cosmos = {
  c: Record<ContainerName, Container>;
  /** Fresh per request: the abort signal caps that one call. */
  o: () => { abortSignal: AbortSignal };
};

const SYSTEM_FIELDS = ["_rid", "_self", "_etag", "_attachments", "_ts"];

/** Attempts at a read-then-conditional-write before giving up as contention (each lost attempt means another writer won). */
export const ETAG_ATTEMPTS = 10;

/** Records must read back equal to what was written: drop what Cosmos or we added. */
export function strip<T>(doc: Record<string, unknown>, extra: readonly string[] = []): T {
  const out = { ...doc };
  for (const k of [...SYSTEM_FIELDS, ...extra]) delete out[k];
  return out as T;
}

/** Cosmos ids may not contain / \ ? #; device message ids are not ours to constrain. */
export const safeId = (id: string) => (/[/\\?#]|^b64:/.test(id) ? `b64:${Buffer.from(id).toString("base64url")}` : id);

export const matchEtag = (etag: string) => ({ accessCondition: { type: "IfMatch", condition: etag } });

/** Every query names its partition key twice: in the WHERE (the test server ignores the
 *  feed option) and as the feed option (so real Cosmos routes it to one partition). */
export const query = async <T>({ o }: Cosmos, container: Container, spec: SqlQuerySpec, partitionKey?: string): Promise<T[]> =>
  (await container.items.query<T>(spec, { ...o(), ...(partitionKey === undefined ? {} : { partitionKey }) }).fetchAll()).resources;

/** Point read: undefined when absent (the SDK resolves 404 for reads rather than throwing). */
export const read = async <T>(
  { o }: Cosmos,
  container: Container,
  id: string,
  pk: string,
): Promise<(T & Record<string, unknown>) | undefined> => (await container.item(id, pk).read<T & Record<string, unknown>>(o())).resource;

/** Runs a write; the listed statuses become `fallback` instead of an error. */
export const tolerate = async <T>(op: () => Promise<T>, statuses: number[], fallback: T): Promise<T> => {
  try {
    return await op();
  } catch (e) {
    const s = status(e);
    if (typeof s === "number" && statuses.includes(s)) return fallback;
    throw e;
  }
};
