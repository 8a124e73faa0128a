import { StoreUnavailableError } from "../errors";

// How Cosmos failures reach the rest of the server: "unreachable or try later" becomes
// StoreUnavailableError, anything else passes through as it was thrown.

export const status = (e: unknown): number | string | undefined => (e as { code?: number | string } | null)?.code;

const UNAVAILABLE_STATUS = new Set<number | string>([408, 429, 449, 502, 503, 504]);
const UNAVAILABLE_CODES = new Set<number | string>([
  "ECONNREFUSED",
  "ECONNRESET",
  "ECONNABORTED",
  "ETIMEDOUT",
  "EPIPE",
  "ENOTFOUND",
  "EAI_AGAIN",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ERR_SOCKET_CLOSED",
  "REQUEST_SEND_ERROR",
  "TimeoutError",
]);

/** Network failures and "try later" answers; never echoes request details, which carry auth. */
export function toUnavailable(e: unknown): StoreUnavailableError | undefined {
  if (e instanceof StoreUnavailableError) return e;
  const code = status(e);
  const name = (e as { name?: string } | null)?.name;
  const down =
    (code !== undefined && (UNAVAILABLE_STATUS.has(code) || UNAVAILABLE_CODES.has(code))) ||
    name === "AbortError" ||
    name === "TimeoutError";
  if (!down) return undefined;
  const cause = Object.assign(new Error(e instanceof Error ? e.message : String(e)), { code });
  return new StoreUnavailableError(`Cosmos DB is unavailable (${code ?? name})`, { cause });
}

export const guard =
  <A extends unknown[], R>(fn: (...a: A) => Promise<R>) =>
  async (...a: A): Promise<R> => {
    try {
      return await fn(...a);
    } catch (e) {
      throw toUnavailable(e) ?? e;
    }
  };
