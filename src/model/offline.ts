import type { Model, Turn } from "./model";

export const OFFLINE_LABEL = "[offline model]";

/**
 * Used when no model is configured, so a fresh clone shows the whole flow working. The reply is
 * labelled so nobody mistakes it for an AI answer, and streams word by word like a real one.
 */
export function offlineModel({ delayMs }: { delayMs: number }): Model {
  return {
    kind: "offline",
    name: "offline",
    async *stream(turns: Turn[], { signal }) {
      const question = turns.findLast((t) => t.role === "user")?.content ?? "";
      const quoted = question.length > 200 ? `${question.slice(0, 200)}…` : question;
      const text =
        `${OFFLINE_LABEL} No AI model is configured, so this is a canned reply. You said: "${quoted}". ` +
        "Set AZURE_OPENAI_* or OPENAI_BASE_URL and OPENAI_MODEL to get real answers.";
      for (const word of text.split(/(?<= )/)) {
        if (delayMs > 0) await Bun.sleep(delayMs);
        signal.throwIfAborted();
        yield word;
      }
    },
  };
}
