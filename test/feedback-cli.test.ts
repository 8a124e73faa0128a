import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startTestServer, type TestServer } from "./support/harness";
import { reapOnExit } from "./support/reaper";
import { within } from "./support/until";
import { addUser } from "./support/users";
import type { Frame } from "./support/ws-client";

// `bun run feedback export` as the operator runs it: a separate process on the SQLite file of a
// running server, listing what was rated, by model and date (the store's listFeedback is checked on
// both stores by the store contract).

const REPO = join(import.meta.dir, "..");
let srv: TestServer;
let cwd: string;

beforeAll(async () => {
  srv = await startTestServer({ API_TOKEN: "legacy-token-feedback-cli-8e0a2c4b", CHAT_TITLES: "false" });
  cwd = mkdtempSync(join(tmpdir(), "pichat-feedback-cli-"));
});
afterAll(async () => {
  await srv?.close();
  rmSync(cwd, { recursive: true, force: true });
});

async function run(...args: string[]) {
  const proc = Bun.spawn([process.execPath, join(REPO, "scripts", "feedback.ts"), ...args], {
    cwd,
    env: { PATH: process.env.PATH ?? "", HOME: cwd, ENVIRONMENT: "test", SQLITE_PATH: srv.config.SQLITE_PATH },
    stdout: "pipe",
    stderr: "pipe",
  });
  reapOnExit(proc);
  const [stdout, stderr, code] = await within(
    Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]),
    20_000,
    `feedback ${args.join(" ")}`,
  );
  return { stdout, stderr, code };
}

test("lists every rating with its model and date, as JSON lines or CSV, with a summary by model and day", async () => {
  const u = await addUser(srv.store);
  const c = await srv.connect({ token: u.token });
  const chat = (await c.request({ type: "CREATE_CHAT" }, "NEW_CHAT")).chat as Frame;
  const rated: string[] = [];
  for (const rating of ["up", "down"]) {
    c.send({ type: "SEND_MESSAGE", chatId: chat.id, content: `question ${rating}` });
    const { traceId } = await c.reply(chat.id);
    const comment = rating === "down" ? 'too long, "really"' : undefined;
    await c.request({ type: "RATE_REPLY", chatId: chat.id, messageId: traceId, rating, ...(comment ? { comment } : {}) }, "FEEDBACK");
    rated.push(traceId);
  }
  const json = await run("export");
  expect(json.code).toBe(0);
  const lines = json.stdout
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as Frame);
  const mine = lines.filter((l) => l.chat_id === chat.id);
  expect(mine.map((l) => [l.message_id, l.rating, l.model])).toEqual([
    [rated[0], "up", srv.config.OPENAI_MODEL ?? "offline"],
    [rated[1], "down", srv.config.OPENAI_MODEL ?? "offline"],
  ]);
  expect(mine[1]!.comment).toBe('too long, "really"');
  expect(json.stderr).toMatch(/\d{4}-\d{2}-\d{2}: 1 up, 1 down/);

  const csv = await run("export", "--format", "csv", "--since", "2000-01-01");
  expect(csv.code).toBe(0);
  const rows = csv.stdout.trim().split("\n");
  expect(rows[0]).toBe("updated_at,created_at,model,rating,comment,user_id,chat_id,message_id");
  expect(rows.some((r) => r.includes('"too long, ""really"""') && r.includes(rated[1]!))).toBe(true);

  // Nothing since tomorrow; a wrong option is a usage error.
  const none = await run("export", "--since", new Date(Date.now() + 86_400_000).toISOString());
  expect(none.stdout).toBe("");
  expect((await run("export", "--format", "xml")).code).toBe(2);
  c.close();
}, 60_000);
