// Users and their personal API tokens, on the store the server uses (same env / .env).
//
//   bun run users add <name>      create a user; prints their first token alone on stdout's last line
//   bun run users token <name>    issue another token
//   bun run users revoke <name>   revoke all of the user's tokens (their open sockets close within AUTH_RECHECK_MS)
//   bun run users list
//
// A token is shown once: the store keeps only its SHA-256. A running server accepts a new token at once.
import { LEGACY_USER_ID } from "../src/auth/identity";
import { hashToken, newPersonalToken } from "../src/auth/tokens";
import type { Store } from "../src/store/store";
import { AdminError, expectArgs, runAdmin, UsageError } from "./admin";

const USAGE = `usage: bun run users add <name> | token <name> | revoke <name> | list
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
    default:
      throw new UsageError(`unknown command "${args[0]}"`);
  }
});
