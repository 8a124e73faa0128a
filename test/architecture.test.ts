import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";

// The layering docs/architecture.md describes, checked on the source itself: every import of
// ours in src/, resolved to the layer it lands in.

const SRC = join(import.meta.dir, "..", "src");
const files = [...new Bun.Glob("**/*.ts").scanSync(SRC)];

/** "chat", "ws", ... for folders; the file's name for top-level modules ("records", "config"). */
const layerOf = (path: string) => (path.includes("/") ? path.split("/")[0]! : path.replace(/\.ts$/, ""));

type Edge = { from: string; to: string; file: string; spec: string };
const edges: Edge[] = [];
for (const file of files) {
  const text = readFileSync(join(SRC, file), "utf8");
  for (const m of text.matchAll(/(?:from\s+|import\s*\(\s*)["'](\.[^"']+)["']/g)) {
    const target = relative(SRC, join(SRC, dirname(file), m[1]!));
    if (target.startsWith("..")) continue; // package.json
    edges.push({ from: layerOf(file), to: layerOf(target), file, spec: m[1]! });
  }
}
const crossing = edges.filter((e) => e.from !== e.to);

/** Leaf modules: everyone may use them, and they use nothing of ours but each other. */
const LEAVES = new Set(["records", "config", "log", "azure-auth", "bounded"]);

// [from, to, why]
const FORBIDDEN: [string, string, string][] = [
  ["store", "chat", "storage knows records, not the chat service"],
  ["store", "ws", "storage knows nothing of sockets"],
  ["model", "ws", "the model knows nothing of sockets"],
  ["model", "chat", "the model knows turns, not chats"],
  ["chat", "ws", "the chat service is shared by browsers and devices"],
  ["chat", "devices", "the chat service is shared by browsers and devices"],
  ["chat", "http", "the chat service knows nothing of HTTP"],
  ["ws", "devices", "adapters do not know each other"],
  ["devices", "ws", "adapters do not know each other"],
  ["devices", "http", "health reads the bridge's status, not the other way round"],
  ["chat", "redis", "the chat service sees shared lanes and the bus through its own interfaces"],
  ["store", "redis", "storage knows nothing of the shared bus"],
  ["redis", "ws", "the shared bus carries chat events, not frames"],
  ["redis", "devices", "the shared bus knows nothing of devices"],
  ["redis", "http", "the shared bus knows nothing of HTTP"],
  ["auth", "chat", "who signed in is decided before any chat is touched"],
  ["auth", "ws", "identity knows tokens, not sockets (revocation takes them as a plain iterable)"],
  ["auth", "devices", "identity knows nothing of devices"],
  ["auth", "http", "identity knows tokens, not how HTTP carries them"],
  ["auth", "model", "identity knows nothing of the model"],
  ["auth", "redis", "identity knows nothing of the shared bus"],
  ["http", "chat", "HTTP routes get what they need of the chat layer as plain functions (src/server.ts)"],
  ["http", "ws", "adapters do not know each other"],
  ["http", "devices", "adapters do not know each other"],
  ["tools", "chat", "tools know calls and results, not chats"],
  ["tools", "ws", "tools know nothing of sockets"],
  ["tools", "devices", "tools know nothing of devices"],
  ["tools", "http", "tools know nothing of HTTP"],
  ["tools", "store", "tools keep nothing: the reply stores its calls"],
  ["model", "tools", "the model streams calls; running them is the reply's job"],
];

// The table "Allowed imports" in docs/architecture.md, read as written: for each layer, what it may
// import ("(types)" after a layer: type-only imports), and what it must never import.
const DOC = readFileSync(join(import.meta.dir, "..", "docs", "architecture.md"), "utf8");
type Rule = { layers: string[]; may: Map<string, "any" | "types">; never: string[]; row: string };
const nameOf = (s: string) => s.replace(/\/$/, "").replace(/\.ts$/, "");
const rules: Rule[] = (() => {
  const section = DOC.split("## Allowed imports")[1]?.split("\n## ")[0] ?? "";
  return section
    .split("\n")
    .filter((l) => l.startsWith("| `"))
    .map((row) => {
      const [first, may, never] = row
        .split("|")
        .slice(1, 4)
        .map((c) => c.trim()) as [string, string, string];
      const layers = [...first.matchAll(/`([^`]+)`/g)].map((m) => nameOf(m[1]!));
      const allowed = new Map<string, "any" | "types">();
      for (const m of may.matchAll(/`([^`]+)`(\s*\(([^)]*)\))?|\b(leaves|each other|everything)\b/g)) {
        const kind = m[3] && /^types\b/.test(m[3]) ? "types" : "any";
        if (m[1]) allowed.set(nameOf(m[1]), kind);
        else if (m[4] === "leaves") for (const leaf of LEAVES) allowed.set(leaf, "any");
        else if (m[4] === "each other") for (const l of layers) allowed.set(l, "any");
        else allowed.set("*", "any");
      }
      return { layers, may: allowed, never: [...never.matchAll(/`([^`]+)`/g)].map((m) => nameOf(m[1]!)), row };
    });
})();
/** Whether an import statement of `file` naming `spec` brings in types only (`import type`, `export type`). */
const typeOnly = (file: string, spec: string) => {
  const text = readFileSync(join(SRC, file), "utf8");
  const statements = [...text.matchAll(/^(import|export)\b[^;]*?from\s+["']([^"']+)["']/gm)].filter((m) => m[2] === spec);
  return statements.length > 0 && statements.every((m) => /^(import|export)\s+type\b/.test(m[0]));
};

describe("import rules (docs/architecture.md)", () => {
  test("the scan sees the whole tree", () => {
    expect(files.length).toBeGreaterThan(30);
    expect(crossing.some((e) => e.from === "ws" && e.to === "chat")).toBe(true);
  });

  for (const [from, to, why] of FORBIDDEN) {
    test(`${from} → ${to} is forbidden: ${why}`, () => {
      expect(crossing.filter((e) => e.from === from && e.to === to).map((e) => `${e.file} imports ${e.spec}`)).toEqual([]);
    });
  }

  test("docs/architecture.md names every layer of src/ in its import table", () => {
    expect(rules.length).toBeGreaterThan(8);
    const named = new Set(rules.flatMap((r) => r.layers));
    const layers = [...new Set(files.map(layerOf))].sort();
    expect(layers.filter((l) => !named.has(l))).toEqual([]);
    expect([...named].filter((l) => !layers.includes(l))).toEqual([]);
  });

  test("each layer imports only what its row in docs/architecture.md allows", () => {
    const broken: string[] = [];
    for (const e of crossing) {
      const rule = rules.find((r) => r.layers.includes(e.from));
      if (!rule || rule.may.has("*")) continue;
      const kind = rule.may.get(e.to);
      if (!kind) broken.push(`${e.file} imports ${e.spec} (${e.to} is not allowed for ${e.from})`);
      else if (kind === "types" && !typeOnly(e.file, e.spec)) broken.push(`${e.file} imports ${e.spec} (types only)`);
    }
    expect(broken).toEqual([]);
  });

  test("no row allows what it also forbids, and every forbidden edge is absent", () => {
    for (const r of rules) {
      expect(r.never.filter((n) => r.may.has(n))).toEqual([]);
      const bad = crossing.filter((e) => r.layers.includes(e.from) && r.never.includes(e.to));
      expect(bad.map((e) => `${e.file} imports ${e.spec}`)).toEqual([]);
    }
  });

  test("store/ and model/ import only leaf modules (records, config, log, azure-auth)", () => {
    const bad = crossing.filter((e) => (e.from === "store" || e.from === "model") && !LEAVES.has(e.to));
    expect(bad.map((e) => `${e.file} imports ${e.spec}`)).toEqual([]);
  });

  test("auth/ imports only leaf modules, and the store for its types", () => {
    const bad = crossing.filter((e) => e.from === "auth" && !LEAVES.has(e.to) && e.to !== "store");
    expect(bad.map((e) => `${e.file} imports ${e.spec}`)).toEqual([]);
    const valueImports = files
      .filter((f) => f.startsWith("auth/"))
      .flatMap((f) =>
        [...readFileSync(join(SRC, f), "utf8").matchAll(/^import (?!type )[^;]*from\s+["'](\.\.\/store[^"']*)["']/gm)].map(
          (m) => `${f} imports ${m[1]}`,
        ),
      );
    expect(valueImports).toEqual([]);
  });

  test("leaf modules import no other layer", () => {
    const bad = crossing.filter((e) => LEAVES.has(e.from) && !LEAVES.has(e.to));
    expect(bad.map((e) => `${e.file} imports ${e.spec}`)).toEqual([]);
  });

  test("records.ts imports nothing of ours", () => {
    expect(edges.filter((e) => e.file === "records.ts").map((e) => e.spec)).toEqual([]);
  });

  test("only server.ts and index.ts know both adapters", () => {
    const knowsBoth = [...new Set(edges.map((e) => e.file))].filter(
      (f) => edges.some((e) => e.file === f && e.to === "ws") && edges.some((e) => e.file === f && e.to === "devices"),
    );
    expect(knowsBoth.filter((f) => layerOf(f) !== "ws" && layerOf(f) !== "devices").sort()).toEqual(["server.ts"]);
  });

  test("no cycle between layers", () => {
    const graph = new Map<string, Set<string>>();
    for (const e of crossing) (graph.get(e.from) ?? graph.set(e.from, new Set()).get(e.from)!).add(e.to);
    const cycles: string[] = [];
    const visit = (node: string, path: string[]) => {
      if (path.includes(node)) return void cycles.push([...path.slice(path.indexOf(node)), node].join(" → "));
      for (const next of graph.get(node) ?? []) visit(next, [...path, node]);
    };
    for (const node of graph.keys()) visit(node, []);
    expect(cycles).toEqual([]);
  });
});
