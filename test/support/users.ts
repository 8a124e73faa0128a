import { hashToken, newPersonalToken } from "../../src/auth/tokens";
import type { Store } from "../../src/store/store";

/**
 * A user with a personal token, made the way `bun run users add` makes one (that command itself is
 * tested in users-cli.test.ts): the token to sign in with, and the id that owns their chats.
 */
export async function addUser(store: Store, name = `user-${crypto.randomUUID().slice(0, 8)}`) {
  const user = { id: `u-${crypto.randomUUID()}`, name, created_at: new Date().toISOString() };
  if (!(await store.createUser(user))) throw new Error(`the name ${name} is taken`);
  const token = newPersonalToken();
  await store.addToken(user.id, hashToken(token));
  return { ...user, token };
}
