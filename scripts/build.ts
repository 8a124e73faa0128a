import { copyFileSync, cpSync, mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { isBuiltin } from "node:module";
import { join, relative, resolve } from "node:path";
import type { BunPlugin } from "bun";
import { VENDOR, vendorPath } from "../src/http/page";

// The production bundle: src/index.ts and every dependency it loads in one file, `dist/index.js`, run with
// `bun --no-install dist/index.js` and nothing else beside it but its source map and the built-in page (with its two libraries).
// `bun run build` runs this; the image's build stage runs `bun run build` (Dockerfile), and so does
// test/image.test.ts. `--outdir <dir>` writes elsewhere (bench/startup.ts uses it).

const root = resolve(import.meta.dir, "..");
const argOutdir = process.argv.indexOf("--outdir");
const outdir = resolve(argOutdir > 0 ? process.argv[argOutdir + 1]! : join(root, "dist"));
const src = join(root, "src");

/**
 * `createRequire(import.meta.url)("pkg/file.js")` loads a module at run time from node_modules, which the
 * image does not have: the bundler cannot see through it and leaves it as is. In our own sources such a
 * call with a string literal becomes `require("pkg/file.js")`, which the bundler does resolve and bundle.
 * That is also what makes src/devices/c2d.ts's crash guard work from the bundle: `require` returns the
 * very exports object the bundled azure-iothub reads `translateError` from, so the patch lands there.
 */
const rewritten: string[] = [];
const visibleCreateRequire: BunPlugin = {
  name: "visible-createRequire",
  setup(build) {
    const escaped = src.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    build.onLoad({ filter: new RegExp(`^${escaped}/.*\\.tsx?$`) }, async ({ path }) => {
      const text = await Bun.file(path).text();
      const contents = text.replace(/createRequire\(import\.meta\.url\)\(\s*("[^"]+"|'[^']+')\s*\)/g, (_, spec: string) => {
        rewritten.push(`${relative(root, path)}: ${spec}`);
        return `require(${spec})`;
      });
      if (/createRequire\(import\.meta\.url\)\(/.test(contents)) {
        throw new Error(
          `${relative(root, path)}: createRequire(import.meta.url)(…) with a computed name cannot be bundled; use a string literal`,
        );
      }
      return { contents, loader: path.endsWith(".tsx") ? "tsx" : "ts" };
    });
  },
};

rmSync(outdir, { recursive: true, force: true });
const result = await Bun.build({
  entrypoints: [join(src, "index.ts")],
  outdir,
  target: "bun",
  format: "esm",
  // keepNames: SDKs branch on class names (azure-iothub's error translation switches on
  // `err.constructor.name`, @azure/* log and match by it); mangled names would change their behaviour.
  minify: { whitespace: true, syntax: true, identifiers: false, keepNames: true },
  sourcemap: "linked",
  plugins: [visibleCreateRequire],
  throw: false,
});
if (!result.success) {
  for (const log of result.logs) console.error(log);
  process.exit(1);
}

// What the bundle still loads at run time must come with the runtime itself: Node's and Bun's built-in
// modules (Bun also serves `node-fetch` itself). Anything else would need node_modules, which the image
// lacks. A module the bundler could not find is already a throwing stub (the optional `supports-color`).
// Bun's own scanner lists them (its bundle calls `__require`, an alias of import.meta.require, for CommonJS).
const code = await Bun.file(join(outdir, "index.js")).text();
const alias = /var ([\w$]+)=import\.meta\.require[;,]/.exec(code)?.[1];
const scanned = new Bun.Transpiler({ loader: "js" }).scanImports(alias ? code.replaceAll(`${alias}(`, "require(") : code);
const external = new Set(scanned.map((i) => i.path));
const BUN_PROVIDED = new Set(["node-fetch"]);
const missing = [...external].filter((s) => !isBuiltin(s) && !s.startsWith("bun:") && !BUN_PROVIDED.has(s));
if (missing.length) {
  console.error(`build: the bundle would load these at run time, and they are not built into Bun: ${missing.join(", ")}`);
  process.exit(1);
}

// The source map maps stack traces back to src/ and node_modules/ file:line:column. The sources' full
// text (sourcesContent, three quarters of the map) is not needed for that and stays out of the image.
const mapPath = join(outdir, "index.js.map");
const map = JSON.parse(await Bun.file(mapPath).text()) as { sources: string[]; sourcesContent?: (string | null)[] };
map.sourcesContent = map.sources.map(() => null); // Bun rejects a map without the field; null entries are valid
writeFileSync(mapPath, JSON.stringify(map));

// The built-in page is read at start-up from `page/` beside the module that serves it
// (src/http/page.ts: `join(import.meta.dir, "page", …)`); in the bundle that module's directory is outdir.
cpSync(join(src, "http", "page"), join(outdir, "page"), { recursive: true });
// The page's libraries come from node_modules, which the image lacks: beside it in dist/page/vendor/.
mkdirSync(join(outdir, "page", "vendor"));
for (const name of Object.keys(VENDOR)) copyFileSync(vendorPath(name), join(outdir, "page", "vendor", name));

const sizes = readdirSync(outdir, { recursive: true, withFileTypes: true })
  .filter((e) => e.isFile())
  .map((e) => ({ path: relative(outdir, join(e.parentPath, e.name)), bytes: Bun.file(join(e.parentPath, e.name)).size }));
const total = sizes.reduce((n, f) => n + f.bytes, 0);
console.log(`build: ${relative(process.cwd(), outdir) || "."}/ ${(total / 1e6).toFixed(2)} MB`);
for (const f of sizes) console.log(`  ${f.path.padEnd(26)} ${(f.bytes / 1e6).toFixed(3)} MB`);
for (const r of rewritten) console.log(`  bundled createRequire: ${r}`);
console.log(`  left to the runtime: ${[...external].sort().join(", ")}`);
