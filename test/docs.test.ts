import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { handlers } from "../src/ws/handlers";

// docs/protocol.md against the code it describes: the frame types it counts and documents, and an
// error-table row for every code the server raises. A frame or a code added without its docs fails here.

const ROOT = join(import.meta.dir, "..");
const protocol = readFileSync(join(ROOT, "docs/protocol.md"), "utf8");
const types = Object.keys(handlers).sort();
const WORDS = [
  "zero",
  "one",
  "two",
  "three",
  "four",
  "five",
  "six",
  "seven",
  "eight",
  "nine",
  "ten",
  "eleven",
  "twelve",
  "thirteen",
  "fourteen",
  "fifteen",
  "sixteen",
  "seventeen",
  "eighteen",
  "nineteen",
  "twenty",
  ...["one", "two", "three", "four", "five", "six", "seven", "eight", "nine"].map((n) => `twenty-${n}`),
  "thirty",
  ...["one", "two", "three", "four", "five", "six", "seven", "eight", "nine"].map((n) => `thirty-${n}`),
];

/** The text of one `## n.` section. */
const section = (n: number) => {
  const start = protocol.indexOf(`\n## ${n}. `);
  const end = protocol.indexOf("\n## ", start + 1);
  if (start < 0) throw new Error(`docs/protocol.md has no section ${n}`);
  return protocol.slice(start, end < 0 ? undefined : end);
};
/** Rows of the §6 table: code and the "Raised by" cell. */
const errorRows = [...section(6).matchAll(/^\| `([A-Z_]+)` \| ([^|]+) \|/gm)].map((m) => ({ code: m[1]!, raisedBy: m[2]! }));

describe("docs/protocol.md matches the code", () => {
  test("§4 counts the frame types the server handles, and has one section for each", () => {
    const counted = /There are ([\w-]+) frame types/.exec(section(4))?.[1];
    expect(counted).toBe(WORDS[types.length]);
    const headings = [...section(4).matchAll(/^### ([A-Z_]+)$/gm)].map((m) => m[1]!).sort();
    expect(headings).toEqual(types);
  });

  test("§6 counts the same frame types for UNKNOWN_TYPE", () => {
    const row = errorRows.find((r) => r.code === "UNKNOWN_TYPE");
    expect(/one of the ([\w-]+) frames/.exec(section(6))?.[1]).toBe(WORDS[types.length]);
    expect(row).toBeDefined();
  });

  test("§6 has a row for every error code the server raises", () => {
    const raised = new Set<string>(["STORE_UNAVAILABLE", "INTERNAL_ERROR", "MODEL_ERROR", "MODEL_TIMEOUT"]);
    for (const file of new Bun.Glob("src/**/*.ts").scanSync(ROOT)) {
      for (const m of readFileSync(join(ROOT, file), "utf8").matchAll(/new (?:ChatError|FrameError)\("([A-Z_]+)"/g)) raised.add(m[1]!);
    }
    const documented = new Set(errorRows.map((r) => r.code));
    expect([...raised].filter((code) => !documented.has(code)).sort()).toEqual([]);
    expect(raised.size).toBeGreaterThan(10); // the scan found the codes
  });

  test("§6: SHUTTING_DOWN is listed as a SEND_MESSAGE error, as well as the upgrade's", () => {
    const rows = errorRows.filter((r) => r.code === "SHUTTING_DOWN").map((r) => r.raisedBy);
    expect(rows.some((r) => r.includes("SEND_MESSAGE"))).toBe(true);
    expect(rows.some((r) => r.includes("HTTP upgrade"))).toBe(true);
  });
});
