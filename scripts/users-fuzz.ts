// The multi-user load (test/support/fuzz/users.ts) as a longer standalone run: starts its own server
// (SQLite in a temp dir, or the Cosmos test server in-process), a local SSE model and a loopback
// JWKS, runs four users with two sockets each for --seconds, prints a summary, and exits non-zero
// on any violation (a forbidden frame, a foreign id answered unlike a missing one, a change a probe
// made). The same load runs briefly in the suite as test/users-fuzz.test.ts.
//
//   bun scripts/users-fuzz.ts [--seed 1234] [--seconds 300] [--store sqlite|cosmos] [--sockets 2]

import { parseArgs } from "node:util";
import { startCosmosServer } from "../test/support/cosmos-server";
import { formatUsersReport, runUsersFuzz, startUsersFuzzTarget } from "../test/support/fuzz/users";

const { values } = parseArgs({
  options: {
    seed: { type: "string", default: process.env.FUZZ_SEED ?? String(Date.now() % 100_000) },
    seconds: { type: "string", default: "300" },
    store: { type: "string", default: "sqlite" },
    sockets: { type: "string", default: "2" },
    help: { type: "boolean", short: "h", default: false },
  },
});
if (values.help) {
  console.log("usage: bun scripts/users-fuzz.ts [--seed N] [--seconds N] [--store sqlite|cosmos] [--sockets N]");
  process.exit(0);
}
const num = (name: string, raw: string, min: number) => {
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min) {
    console.error(`users-fuzz: --${name} must be a whole number >= ${min} (got ${JSON.stringify(raw)})`);
    process.exit(2);
  }
  return n;
};
const seed = num("seed", values.seed, 0);
const seconds = num("seconds", values.seconds, 1);
const sockets = num("sockets", values.sockets, 1);
if (values.store !== "sqlite" && values.store !== "cosmos") {
  console.error(`users-fuzz: --store must be sqlite or cosmos (got ${JSON.stringify(values.store)})`);
  process.exit(2);
}

console.log(`users fuzz: seed ${seed} (rerun with --seed ${seed}), ${seconds} s on ${values.store}`);
const cosmos = values.store === "cosmos" ? await startCosmosServer() : undefined;
const target = await startUsersFuzzTarget({ store: values.store, cosmos });
let failed = false;
try {
  const report = await runUsersFuzz(target, { seed, seconds, socketsPerUser: sockets, progress: (line) => console.log(`  ${line}`) });
  console.log(formatUsersReport(report));
  failed = report.violations.length > 0;
} catch (e) {
  console.error(`users fuzz seed=${seed}: the run itself failed:`, e);
  failed = true;
} finally {
  await target.stop();
  await cosmos?.stop();
}
if (failed) {
  console.error(`users fuzz: violations; rerun with --seed ${seed} to reproduce`);
  process.exit(1);
}
console.log("users fuzz: clean");
process.exit(0);
