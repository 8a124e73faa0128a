// Users and their personal API tokens, on the store the server uses (same env / .env).
//
//   bun run users add <name>      create a user; prints their first token alone on stdout's last line
//   bun run users token <name>    issue another token
//   bun run users revoke <name>   revoke all of the user's tokens (their open sockets close within AUTH_RECHECK_MS)
//   bun run users list
//   bun run users limit <name> --tokens-per-day N|none|default
//                                 the user's own budget (none: no limit; default: USER_TOKENS_PER_DAY)
//   bun run users usage [name] [--since YYYY-MM-DD] [--json]
//                                 tokens per user, day and model since the date (default: today, UTC)
//
// A token is shown once: the store keeps only its SHA-256. A running server accepts a new token at once.
import { LEGACY_USER_ID } from "../src/auth/identity";
import { hashToken, newPersonalToken } from "../src/auth/tokens";
import type { Store } from "../src/store/store";
import { AdminError, expectArgs, runAdmin, UsageError } from "./admin";

const USAGE = `usage: bun run users add <name> | token <name> | revoke <name> | list
       bun run users limit <name> --tokens-per-day N|none|default
       bun run users usage [name] [--since YYYY-MM-DD] [--json]
  names: 1 to 64 letters, digits, and . _ - @ ("${LEGACY_USER_ID}" is the API_TOKEN's user)`;

const NAME = /^[\p{L}\p{N}][\p{L}\p{N}._@-]{0,63}$/u;

async function userNamed(store: Store, name: string) {
  const user = await store.findUser(name);
  if (!user) throw new AdminError(`no user named "${name}" (bun run users list)`);
  return user;
}

/** Issues a token; the person reads the note on stderr, a script takes stdout's last line. */
async function issue(store: Store, userId: string, note: string) {
  const token = newPersonalToken();
  await store.addToken(userId, hashToken(token));
  console.error(note);
  console.error("Their token, shown only this once (use it as the API token: ?token=, Authorization: Bearer, or the page's sign-in):");
  console.log(token);
}

await runAdmin(USAGE, async (store, args) => {
  switch (args[0]) {
    case "add": {
      const [name] = expectArgs(args, 1) as [string];
      if (!NAME.test(name)) throw new UsageError(`"${name}" is not a valid user name`);
      if (name === LEGACY_USER_ID) throw new AdminError(`"${LEGACY_USER_ID}" is the API_TOKEN's user; choose another name`);
      const user = { id: `u-${crypto.randomUUID()}`, name, created_at: new Date().toISOString() };
      if (!(await store.createUser(user))) throw new AdminError(`the name "${name}" is taken`);
      await issue(store, user.id, `Created user ${name} (${user.id}).`);
      return;
    }
    case "token": {
      const [name] = expectArgs(args, 1) as [string];
      const user = await userNamed(store, name);
      await issue(store, user.id, `New token for ${name}.`);
      return;
    }
    case "revoke": {
      const [name] = expectArgs(args, 1) as [string];
      const user = await userNamed(store, name);
      const n = await store.revokeTokens(user.id);
      console.log(
        `Revoked ${n} token${n === 1 ? "" : "s"} of ${name}; sockets signed in with them close within seconds (AUTH_RECHECK_MS).`,
      );
      return;
    }
    case "list": {
      expectArgs(args, 0);
      const users = await store.listUsers();
      if (users.length === 0) console.error("No users yet: bun run users add <name>");
      for (const u of users) console.log(`${u.name}\t${u.id}\t${u.created_at}`);
      return;
    }
    case "limit": {
      const [name, flag, value] = expectArgs(args, 3) as [string, string, string];
      if (flag !== "--tokens-per-day") throw new UsageError("limit: expects --tokens-per-day N|none|default");
      const tokens = value === "none" ? null : value === "default" ? undefined : /^\d{1,12}$/.test(value) ? Number(value) : NaN;
      if (Number.isNaN(tokens)) throw new UsageError(`limit: "${value}" is not a whole number of tokens, none or default`);
      const userId = name === LEGACY_USER_ID ? LEGACY_USER_ID : (await userNamed(store, name)).id;
      await store.setTokensPerDay(userId, tokens);
      console.log(
        tokens === undefined
          ? `${name} now has the server's budget (USER_TOKENS_PER_DAY).`
          : tokens === null
            ? `${name} now has no token budget.`
            : `${name} may now use ${tokens} tokens per UTC day; running servers apply it within 10 seconds.`,
      );
      return;
    }
    case "usage": {
      const rest = args.slice(1);
      const json = rest.includes("--json");
      const at = rest.indexOf("--since");
      const since = at >= 0 ? rest[at + 1] : new Date().toISOString().slice(0, 10);
      if (!since || !/^\d{4}-\d{2}-\d{2}$/.test(since) || Number.isNaN(Date.parse(since)))
        throw new UsageError("usage: --since expects a date, YYYY-MM-DD (UTC)");
      const names = rest.filter((a, i) => !a.startsWith("--") && i !== at + 1);
      if (names.length > 1) throw new UsageError("usage: at most one user name");
      const users = new Map((await store.listUsers()).map((u) => [u.id, u.name] as const));
      users.set(LEGACY_USER_ID, LEGACY_USER_ID);
      const userId =
        names[0] === undefined ? undefined : names[0] === LEGACY_USER_ID ? LEGACY_USER_ID : (await userNamed(store, names[0])).id;
      const rows = new Map<
        string,
        { user: string; date: string; model: string; prompt: number; completion: number; calls: number; estimated: number }
      >();
      for (const r of await store.listUsage({ userId, since: new Date(`${since}T00:00:00.000Z`).toISOString() })) {
        const user = users.get(r.user_id) ?? r.user_id;
        const key = `${user}\u0000${r.created_at.slice(0, 10)}\u0000${r.model}`;
        const row = rows.get(key) ?? {
          user,
          date: r.created_at.slice(0, 10),
          model: r.model,
          prompt: 0,
          completion: 0,
          calls: 0,
          estimated: 0,
        };
        row.prompt += r.prompt_tokens;
        row.completion += r.completion_tokens;
        row.calls += 1;
        if (r.estimated) row.estimated += 1;
        rows.set(key, row);
      }
      const sorted = [...rows.values()].sort((a, b) => (a.user + a.date + a.model < b.user + b.date + b.model ? -1 : 1));
      if (json) return void console.log(JSON.stringify(sorted));
      if (sorted.length === 0) console.error(`No usage since ${since}.`);
      for (const r of sorted)
        console.log(
          `${r.user}\t${r.date}\t${r.model}\tprompt ${r.prompt}\tcompletion ${r.completion}\tcalls ${r.calls}${r.estimated ? `\testimated ${r.estimated}` : ""}`,
        );
      return;
    }
    default:
      throw new UsageError(`unknown command "${args[0]}"`);
  }
});
