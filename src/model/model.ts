import * as v from "valibot";

export const TurnSchema = v.object({
  role: v.picklist(["system", "user", "assistant"]),
  content: v.string(),
});
export type Turn = v.InferOutput<typeof TurnSchema>;

export type ModelKind = "azure-openai" | "openai-compatible" | "offline";

export type StreamOptions = { signal: AbortSignal; temperature?: number; model?: string };

/** A streaming chat model: yields text deltas in order; aborting the signal cancels upstream. */
export type Model = {
  readonly kind: ModelKind;
  readonly name: string;
  stream(turns: Turn[], options: StreamOptions): AsyncIterable<string>;
};

/** Thrown for upstream failures; `code` is the ERROR frame code, `message` is safe to show. */
export class ModelError extends Error {
  override name = "ModelError";
  constructor(
    readonly code: "MODEL_ERROR" | "MODEL_TIMEOUT",
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}
