// The database could not be reached or did not answer in time. Handlers turn this into the
// STORE_UNAVAILABLE error code and /health into a 503; anything else is a bug or bad data.
export class StoreUnavailableError extends Error {
  override name = "StoreUnavailableError";
  constructor(message = "the store is unavailable", options?: { cause?: unknown }) {
    super(message, options);
  }
}

export const isStoreUnavailable = (e: unknown): e is StoreUnavailableError => e instanceof StoreUnavailableError;
