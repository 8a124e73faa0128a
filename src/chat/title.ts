import type { Chat, Message } from "../records";
import { DEFAULT_CHAT_NAME } from "./known-chats";
import type { ChatContext } from "./context";

const TITLE_PROMPT =
  "Write a short title (at most six words) for a conversation that starts like this. Reply with the title only, no quotes.";

/**
 * Names a chat still called by its default name from its first exchange, and announces it as
 * CHAT_UPDATED. Best effort: a failure leaves the default name (and the next send tries again); a
 * title that comes back empty, like a chat found named already, is told to `noTitle`, so neither costs a
 * record read or a model call on every later send.
 */
export async function titleChat(
  deps: ChatContext,
  rename: (o: { owner: string; chatId: string; name: string }) => Promise<Chat>,
  noTitle: (chatId: string) => void,
  owner: string,
  chat: Chat,
  exchange: [Message, Message],
): Promise<Chat | undefined> {
  if (deps.model.kind === "offline") return undefined;
  if (chat.name !== DEFAULT_CHAT_NAME) return void noTitle(chat.id); // named since: known from now on
  try {
    // A title is a model call like any: it counts in MODEL_CALLS_PER_MINUTE and in the user's usage.
    await deps.lanes.admitModelCall?.();
    let title = "";
    const signal = AbortSignal.timeout(deps.options.modelIdleTimeoutMs);
    for await (const delta of deps.model.stream(
      [{ role: "system", content: TITLE_PROMPT }, ...exchange.map((m) => ({ role: m.role, content: m.content.slice(0, 2000) }))],
      { signal, temperature: 0.2, usage: { userId: owner, chatId: chat.id, messageId: exchange[1].id, kind: "title" } },
    )) {
      title += delta;
      if (title.length > 200) break;
    }
    const clean = title
      .replace(/^["'\s#*]+|["'\s.*]+$/g, "")
      .replace(/\s+/g, " ")
      .slice(0, 60);
    if (!clean) {
      noTitle(chat.id);
      return undefined;
    }
    // Someone may have renamed it meanwhile; theirs wins.
    const current = await deps.store.getChat(owner, chat.id);
    if (!current || current.name !== DEFAULT_CHAT_NAME) return undefined;
    return await rename({ owner, chatId: chat.id, name: clean });
  } catch (e) {
    deps.log.warn("could not title the chat", { chatId: chat.id, error: e });
    return undefined;
  }
}
