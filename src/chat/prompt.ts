import type { Turn } from "../model/model";
import type { Message } from "../records";

/**
 * The system prompt, then as much recent history as fits in `budgetChars`, newest kept. The
 * latest turn always goes, cut from the front if it alone is over budget, so the model sees the question.
 */
export function buildPrompt(systemPrompt: string, history: readonly (Message | Turn)[], budgetChars: number): Turn[] {
  const turns: Turn[] = [];
  let used = 0;
  for (let i = history.length - 1; i >= 0; i--) {
    const { role, content } = history[i]!;
    if (!content) continue;
    if (turns.length > 0 && used + content.length > budgetChars) break;
    const kept = turns.length === 0 && content.length > budgetChars ? content.slice(-Math.max(budgetChars, 1)) : content;
    turns.push({ role, content: kept });
    used += kept.length;
  }
  return [{ role: "system", content: systemPrompt }, ...turns.reverse()];
}
