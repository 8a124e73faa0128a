// The database could not be reached or did not answer in time. The chat layer turns this into
// the STORE_UNAVAILABLE code and /health into a 503; anything else is a bug or bad data.
export class StoreUnavailableError extends Error {
  override name = "StoreUnavailableError";
  constructor(message = "the store is unavailable", options?: { cause?: unknown }) {
    super(message, options);
  }
}

export const isStoreUnavailable = (e: unknown): e is StoreUnavailableError => e instanceof StoreUnavailableError;

/** A page cursor this store did not issue (or no longer understands). */
export class InvalidCursorError extends Error {
  override name = "InvalidCursorError";
  constructor(readonly field = "cursor") {
    super(`${field}: not a cursor this server issued; omit it to start from the first page`);
  }
}
