import type { Turn } from "../../model/model";
import type { Message } from "../../records";
import type { Store } from "../../store/store";
import type { ChatOptions } from "../context";
import type { RecentMessages } from "../recent";
import type { JobSpec } from "./replies";
import { getSettingsOf } from "../settings";
import { tokenizerFor } from "../tokenizer";
import type { PromptInput } from "./generate";
import { buildPrompt, systemPromptOf } from "./window";

/**
 * A reply's prompt, built when its turn comes (after any reply queued before it): the chat's
 * history up to its question (a branched chat: the path above it in the tree; a device's own
 * context when it sent one), fitted to the model's window, with the owner's settings.
 */
export function promptBuilder(o: {
  store: Store;
  recent: RecentMessages;
  options: ChatOptions;
  modelName: string;
  /** The question and the path above it in a branched chat (src/chat/branches.ts). */
  pathFor(question: Message): Promise<Message[]>;
}) {
  const { store, options } = o;
  return async function promptFor(spec: JobSpec): Promise<PromptInput> {
    const question = spec.question;
    const [earlier, settings] = await Promise.all([
      spec.context
        ? []
        : spec.branched
          ? o.pathFor(question)
          : o.recent.newest(question.chat_id, options.historyMaxMessages).then((p) => p.items),
      getSettingsOf(store, spec.owner),
    ]);
    const history = spec.context
      ? [...spec.context, { role: "user" as const, content: question.content }]
      : spec.branched
        ? earlier
        : upTo(earlier, question);
    return {
      turns: buildPrompt(
        await tokenizerFor(settings.model ?? o.modelName),
        systemPromptOf(settings, options, spec.deviceId),
        history,
        options.context,
      ),
      temperature: settings.temperature,
      model: settings.model,
      // The owner's: a device's question is answered in its owner's time zone.
      tools: { owner: spec.owner, timeZone: settings.timeZone, toolsOff: settings.toolsOff },
    };
  };
}

/** Messages from the oldest up to and including the question (later ones wait their turn). */
function upTo(messages: Message[], question: Message): Message[] {
  const i = messages.findIndex((m) => m.id === question.id);
  return i < 0 ? [...messages, question] : messages.slice(0, i + 1);
}
