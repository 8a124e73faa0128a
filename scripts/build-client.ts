import { writeFileSync } from "node:fs";
import { join } from "node:path";

// client/ as one ES module file with no imports: `bun run build:client` writes it to src/http/page/client.js,
// where the built-in page loads it from (/page/client.js) and scripts/build.ts copies it with the page
// (`-- --outfile <path>` writes it elsewhere, to ship the client on its own).
// test/client-build.test.ts fails when the checked-in file is not what this builds.

const root = join(import.meta.dir, "..");
export const CLIENT_BUNDLE = join(root, "src", "http", "page", "client.js");

export async function buildClient(): Promise<string> {
  const result = await Bun.build({ entrypoints: [join(root, "client", "index.ts")], target: "browser", format: "esm", minify: false });
  if (!result.success) throw new AggregateError(result.logs, "client build failed");
  const code = await result.outputs[0]!.text();
  return `// Built by \`bun run build:client\` from client/ (the typed PiChat client): do not edit by hand.\n${code}`;
}

if (import.meta.main) {
  // `--outfile <path>` writes the same file elsewhere (to ship the client on its own).
  const at = process.argv.indexOf("--outfile");
  const outfile = at > 0 && process.argv[at + 1] ? process.argv[at + 1]! : CLIENT_BUNDLE;
  const code = await buildClient();
  writeFileSync(outfile, code);
  console.log(`build:client: ${outfile} (${(code.length / 1024).toFixed(1)} KiB)`);
}
