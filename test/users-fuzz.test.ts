import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { startCosmosServer, type CosmosTestServer } from "./support/cosmos-server";
import { formatUsersReport, runUsersFuzz, startUsersFuzzTarget, type UsersFuzzTarget } from "./support/fuzz/users";

// Four users (legacy, two personal tokens, one JWT), two sockets each, random own and foreign-id
// commands at once against the real server on each store; the checker counts every frame a user must
// not see (zero), and every command on a foreign id must be answered as on a missing one. Reproduce
// with the printed seed: USERS_FUZZ_SEED=1234 bun test test/users-fuzz.test.ts, or longer with
// `bun scripts/users-fuzz.ts --seed 1234 --seconds 300 [--store cosmos]`.

const SEED = Number(process.env.USERS_FUZZ_SEED ?? 1234);
const SECONDS = { sqlite: 8, cosmos: 12 };
// Each of the 12 probe kinds is missed by 120 probes with odds of (11/12)^120, about 3e-5.
const MIN_PROBES = 120;

let cosmos: CosmosTestServer;
beforeAll(async () => {
  cosmos = await startCosmosServer();
});
afterAll(async () => {
  await cosmos?.stop();
});

for (const kind of ["sqlite", "cosmos"] as const) {
  describe(`multi-user load on ${kind} (seed ${SEED}, ${SECONDS[kind]} s)`, () => {
    let target: UsersFuzzTarget;
    beforeAll(async () => {
      target = await startUsersFuzzTarget({ store: kind, cosmos });
    });
    afterAll(async () => {
      await target?.stop();
    });

    test("no user sees another's ids or content; foreign ids are answered as missing ones; nothing a probe does shows", async () => {
      const report = await runUsersFuzz(target, { seed: SEED, seconds: SECONDS[kind], minForeignProbes: MIN_PROBES });
      console.log(formatUsersReport(report));
      expect(report.violations).toEqual([]);
      expect(report.forbiddenFrames).toBe(0);
      // The load reached what it is for: foreign probes of every kind, replies streaming and stopped.
      expect(report.foreignProbes).toBeGreaterThanOrEqual(MIN_PROBES);
      for (const op of ["history", "send", "rename", "delete", "stop-trace", "resume", "watch"])
        expect(report.byOp[`foreign:${op}`] ?? 0).toBeGreaterThan(0);
      expect(report.answers["foreign:CHAT_NOT_FOUND"] ?? 0).toBeGreaterThan(0);
      expect(report.answers["foreign:NO_GENERATION"] ?? 0).toBeGreaterThan(0);
      expect(report.repliesEnded.done ?? 0).toBeGreaterThan(10);
      expect(report.framesByType.FIRST_MESSAGE ?? 0).toBeGreaterThan(0);
    }, 60_000);
  });
}
