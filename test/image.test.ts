import { expect, test } from "bun:test";
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { until } from "./support/until";

// No Docker engine runs here, so this does what the Dockerfile does, read from the Dockerfile
// itself: the same install command in a clean directory holding only what the image copies,
// then the same start command with the image's environment, and the same health check.

const root = new URL("..", import.meta.url).pathname;
const dockerfile = readFileSync(join(root, "Dockerfile"), "utf8");

function fromDockerfile() {
  const install = /^RUN (bun install [^\n]+)$/m.exec(dockerfile)?.[1];
  const cmd = JSON.parse(/^CMD (\[.+\])$/m.exec(dockerfile)?.[1] ?? "null") as string[] | null;
  const copies = [...dockerfile.matchAll(/^COPY (?!--from)(.+) \.\/?\S*$/gm)].flatMap((m) => m[1]!.split(/\s+/));
  const env = Object.fromEntries([...(/^ENV ([\s\S]+?)\n(?!\s)/m.exec(dockerfile)?.[1] ?? "").matchAll(/(\w+)=(\S+)/g)].map((m) => [m[1]!, m[2]!]));
  const user = /^USER (\S+)$/m.exec(dockerfile)?.[1];
  return { install, cmd, copies, env, user };
}

test("the Dockerfile's install and start commands give a working production server", async () => {
  const d = fromDockerfile();
  expect(d.install).toStartWith("bun install --frozen-lockfile --production");
  expect(d.cmd).toEqual(["bun", "src/index.ts"]);
  expect(d.copies).toEqual(expect.arrayContaining(["package.json", "bun.lock", "tsconfig.json", "src"]));
  expect(d.env.ENVIRONMENT).toBe("production");
  expect(d.user).not.toMatch(/^(0|root)(:|$)/);
  expect(dockerfile).toMatch(/^EXPOSE 8080$/m);
  expect(dockerfile).toMatch(/^HEALTHCHECK /m);

  const dir = mkdtempSync(join(tmpdir(), "pichat-image-"));
  let proc: ReturnType<typeof Bun.spawn> | undefined;
  try {
    for (const path of d.copies) cpSync(join(root, path), join(dir, path), { recursive: true });
    const [bin, ...args] = d.install!.split(" ");
    const install = Bun.spawnSync([bin === "bun" ? process.execPath : bin!, ...args], { cwd: dir, stdout: "pipe", stderr: "pipe" });
    expect(install.exitCode).toBe(0);
    // Production dependencies only: no test or build tooling in the image.
    for (const dev of ["typescript", "@typescript", "playwright-core", "@vercel/cosmosdb-server", "bun-types", "azure-iot-device"]) {
      expect(existsSync(join(dir, "node_modules", dev))).toBe(false);
    }
    expect(existsSync(join(dir, "node_modules", "hono"))).toBe(true);
    expect(existsSync(join(dir, "test"))).toBe(false);

    const port = String(30_000 + Math.floor(Math.random() * 20_000));
    proc = Bun.spawn([process.execPath, ...d.cmd!.slice(1)], {
      cwd: dir,
      env: { PATH: process.env.PATH, ...d.env, SERVER_PORT: port, HOST: "127.0.0.1", SQLITE_PATH: join(dir, "data", "pichat.db"), API_TOKEN: "f".repeat(8) + "3c9a7d5e2b4c1a8f6e0d9b7c" },
      stdout: "pipe", stderr: "pipe",
    });
    const base = `http://127.0.0.1:${port}`;
    await until(() => fetch(`${base}/health/live`).then((r) => r.ok, () => false), "the server to answer /health/live", 15_000);
    const health = await (await fetch(`${base}/health`)).json() as any;
    expect(health).toMatchObject({ status: "ok", services: { store: { kind: "sqlite", ok: true } } });
    proc.kill("SIGTERM");
    expect(await proc.exited).toBe(0);
    const out = await new Response(proc.stdout as ReadableStream).text();
    // Production logs are one JSON object per line.
    const lines = out.trim().split("\n");
    expect(lines.length).toBeGreaterThan(1);
    for (const line of lines) expect(JSON.parse(line).level).toMatch(/^(debug|info|warn|error)$/);
  } finally {
    proc?.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  }
});
