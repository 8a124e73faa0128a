import { rmSync } from "node:fs";

// Child processes and temp dirs that must not outlive the test process, whatever way it ends: a
// failing test, a timeout that skips afterAll, Ctrl-C. "exit" handlers must be synchronous, so the
// children are killed with SIGKILL (kill(2) is synchronous) and the dirs removed with rmSync.

type Killable = { kill(signal?: number | NodeJS.Signals): void; exited: Promise<unknown> };

const children = new Set<Killable>();
const dirs = new Set<string>();

function reapAll() {
  for (const c of children) {
    try {
      c.kill("SIGKILL");
    } catch {
      // Already gone.
    }
  }
  children.clear();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
  dirs.clear();
}

let installed = false;
function install() {
  if (installed) return;
  installed = true;
  process.once("exit", reapAll);
  // A signal would end the process without "exit": reap, then die of the same signal's usual code.
  for (const [signal, code] of [
    ["SIGINT", 130],
    ["SIGTERM", 143],
    ["SIGHUP", 129],
  ] as const) {
    process.once(signal, () => {
      reapAll();
      process.exit(code);
    });
  }
}

/** Kills `child` with SIGKILL when the test process exits, unless it has exited by then. */
export function reapOnExit(child: Killable) {
  install();
  children.add(child);
  void child.exited.then(() => children.delete(child));
}

/** Removes `dir` (recursively) when the test process exits. */
export function removeOnExit(dir: string) {
  install();
  dirs.add(dir);
}
