// What the admin commands (users.ts, devices.ts) share: the server's own configuration and store,
// so they act on the same SQLite file or Cosmos DB account, and one way to fail.
import { ConfigError, loadConfig } from "../src/config";
import { storeFromConfig } from "../src/store";
import type { Store } from "../src/store/store";

/** A refusal the person can fix (unknown user, taken name): its message, exit code 1. */
export class AdminError extends Error {}
/** A command used wrongly: its message and the usage, exit code 2. */
export class UsageError extends Error {}

/** Runs `fn` on the configured store and exits: 0 done, 1 refused or failed, 2 usage. */
export async function runAdmin(usage: string, fn: (store: Store, args: string[]) => Promise<void>): Promise<never> {
  const args = Bun.argv.slice(2);
  if (args.length === 0 || args[0] === "-h" || args[0] === "--help") {
    console.error(usage);
    process.exit(args.length === 0 ? 2 : 0);
  }
  let store: Store | undefined;
  try {
    const config = loadConfig();
    store = await storeFromConfig(config, undefined, (m) => console.error(`warning: ${m}`));
    await fn(store, args);
    await store.close();
    process.exit(0);
  } catch (e) {
    await store?.close().catch(() => {});
    if (e instanceof UsageError) {
      console.error(`${e.message}\n${usage}`);
      process.exit(2);
    }
    const known = e instanceof AdminError || e instanceof ConfigError;
    console.error(`error: ${known ? (e as Error).message : e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
    process.exit(1);
  }
}

/** Exactly `n` arguments after the command, or a usage error. */
export function expectArgs(args: string[], n: number): string[] {
  const rest = args.slice(1);
  if (rest.length !== n) throw new UsageError(`${args[0]}: expects ${n} argument${n === 1 ? "" : "s"}`);
  return rest;
}
