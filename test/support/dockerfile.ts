import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync } from "node:fs";
import { basename, dirname, isAbsolute, join, relative, resolve } from "node:path";

// A Dockerfile played without Docker, for test/image.test.ts: every stage in a directory of its own standing
// for its file system, COPY from the build context (filtered by .dockerignore) or from an earlier stage,
// RUN for `bun` commands, and the rest recorded. It knows only the forms our Dockerfile uses and throws on
// anything else, so the Dockerfile cannot change without the test learning it.

export type Stage = {
  name: string;
  image: string;
  root: string;
  workdir: string;
  env: Record<string, string>;
  user?: string;
  cmd?: string[];
  healthcheck?: string[];
  expose: string[];
  /** Every path a COPY wrote into this stage, as seen inside the container. */
  copied: string[];
};

/** Docker's .dockerignore, for the forms ours uses: exact paths and `*`; the last matching rule wins. */
function contextFilter(context: string): (path: string) => boolean {
  const rules = readFileSync(join(context, ".dockerignore"), "utf8")
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith("#"))
    .map((l) => ({ include: l.startsWith("!"), pattern: l.replace(/^!/, "").replace(/\/$/, "") }));
  return (path) => {
    let included = true;
    for (const r of rules) {
      if (r.pattern === "*" || path === r.pattern || path.startsWith(`${r.pattern}/`)) included = r.include;
    }
    return included;
  };
}

function instructions(text: string) {
  return text
    .replace(/\\\n/g, " ")
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith("#"))
    .map((l) => ({ op: l.split(/\s+/)[0]!.toUpperCase(), args: l.replace(/^\S+\s*/, "") }));
}

/** Plays `<context>/Dockerfile` with `context` as the build context; stage file systems go under `work`. */
export function playDockerfile(context: string, work: string): Stage[] {
  const inContext = contextFilter(context);
  const stages: Stage[] = [];
  let current: Stage | undefined;
  const at = (stage: Stage, p: string) => join(stage.root, isAbsolute(p) ? p : join(stage.workdir, p));
  for (const { op, args } of instructions(readFileSync(join(context, "Dockerfile"), "utf8"))) {
    if (op === "FROM") {
      const [image, as, name] = args.split(/\s+/);
      const root = join(work, `stage-${stages.length}`);
      mkdirSync(root, { recursive: true });
      current = {
        name: as?.toUpperCase() === "AS" ? name! : String(stages.length),
        image: image!,
        root,
        workdir: "/",
        env: {},
        expose: [],
        copied: [],
      };
      stages.push(current);
      continue;
    }
    const stage = current;
    if (!stage) throw new Error(`Dockerfile: ${op} before FROM`);
    switch (op) {
      case "WORKDIR":
        stage.workdir = resolve(stage.workdir, args);
        mkdirSync(at(stage, stage.workdir), { recursive: true });
        break;
      case "COPY": {
        const words = args.split(/\s+/);
        const from = words.find((w) => w.startsWith("--from="))?.slice("--from=".length);
        const paths = words.filter((w) => !w.startsWith("--"));
        const dest = paths.pop()!;
        const source = from === undefined ? undefined : stages.find((x) => x.name === from);
        if (from !== undefined && !source) throw new Error(`Dockerfile: COPY --from=${from}: no such stage`);
        for (const p of paths) {
          if (!source && !inContext(p)) throw new Error(`Dockerfile: COPY ${p}: excluded from the build context by .dockerignore`);
          const src = source ? at(source, p) : join(context, p);
          if (!existsSync(src)) throw new Error(`Dockerfile: COPY ${p}: not found`);
          // A directory's contents go to dest; a file goes into dest/ when dest ends with "/" or there are several.
          const into = statSync(src).isDirectory() || (!dest.endsWith("/") && paths.length === 1) ? dest : join(dest, basename(p));
          const target = at(stage, into);
          mkdirSync(dirname(target), { recursive: true });
          cpSync(src, target, { recursive: true, filter: (f) => source !== undefined || inContext(relative(context, f)) });
          stage.copied.push(resolve(stage.workdir, into));
        }
        break;
      }
      case "RUN": {
        const dataDir = /^mkdir -p (\/\S+) && chown \d+:\d+ \1$/.exec(args);
        if (dataDir) {
          // A directory for the runtime user; owning it needs root, which a test does not have.
          mkdirSync(at(stage, dataDir[1]!), { recursive: true });
        } else if (/^bun [\w\s=-]+$/.test(args)) {
          const r = Bun.spawnSync([process.execPath, ...args.split(/\s+/).slice(1)], {
            cwd: at(stage, stage.workdir),
            stdout: "pipe",
            stderr: "pipe",
            env: { ...process.env, PATH: `${dirname(process.execPath)}:${process.env.PATH}` },
          });
          if (r.exitCode !== 0) throw new Error(`Dockerfile: RUN ${args} failed (${r.exitCode}):\n${r.stdout}\n${r.stderr}`);
        } else {
          throw new Error(`Dockerfile: no way to play RUN "${args}"`);
        }
        break;
      }
      case "ENV":
        for (const m of args.matchAll(/(\w+)=(\S+)/g)) stage.env[m[1]!] = m[2]!;
        break;
      case "USER":
        stage.user = args;
        break;
      case "EXPOSE":
        stage.expose.push(...args.split(/\s+/));
        break;
      case "CMD":
        stage.cmd = JSON.parse(args);
        break;
      case "HEALTHCHECK":
        stage.healthcheck = JSON.parse(/\bCMD (\[.+\])$/.exec(args)?.[1] ?? "null");
        break;
      case "VOLUME":
        break;
      default:
        throw new Error(`Dockerfile: no way to play ${op}`);
    }
  }
  return stages;
}

/** Files under dir, relative to it, sorted. */
export const filesUnder = (dir: string): string[] =>
  readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => relative(dir, join(e.parentPath, e.name)))
    .sort();

/** Their total size in bytes. */
export const bytesUnder = (dir: string) => filesUnder(dir).reduce((n, f) => n + statSync(join(dir, f)).size, 0);
