import { startTestServer, type TestServer } from "../harness";
import { startSseModel, type SseModel } from "../sse-model";

// The server a fuzz run attacks: the real one, SQLite, a local SSE model whose every reply is the same.

/** The model's reply to everything in a fuzz session; unicode so the stream and the store are checked byte for byte. */
export const FUZZ_MODEL_TOKENS = ["Bonjour", " —", " héllo", " 👋🏽", " 世界", ",", " مرحبا", " \u200d", "\n", "fin", "."];
export const FUZZ_MODEL_TEXT = FUZZ_MODEL_TOKENS.join("");

/** Env for a fuzz target: a small frame limit (fast), limits high enough not to mask everything else. */
export const FUZZ_ENV = {
  MAX_FRAME_BYTES: "4096",
  MAX_MESSAGE_CHARS: "1000",
  RATE_LIMIT_FRAMES_PER_SECOND: "100000",
  RATE_LIMIT_MESSAGES_PER_MINUTE: "100000",
  MAX_GENERATIONS_PER_CONNECTION: "2",
  // Titles are a second, background model call that renames chats; off, so the store check is exact.
  CHAT_TITLES: "false",
};

/** The real server with SQLite and a local SSE model, configured for fuzzing. */
export async function startFuzzTarget(): Promise<{ srv: TestServer; model: SseModel; stop(): Promise<void> }> {
  const model = await startSseModel({ tokens: FUZZ_MODEL_TOKENS, delayMs: 1 });
  const srv = await startTestServer({
    ...FUZZ_ENV,
    OPENAI_BASE_URL: `${model.url}/v1`,
    OPENAI_MODEL: "fuzz-model",
    OPENAI_API_KEY: "sk-fuzz",
  });
  return {
    srv,
    model,
    async stop() {
      await srv.close();
      model.stop();
    },
  };
}
