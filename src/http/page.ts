import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { Env, Hono } from "hono";

// The built-in chat page at `/`: three static files (src/http/page/), read once at start-up.
// No build step and nothing fetched from elsewhere, so it works offline.

const CSP = [
  "default-src 'self'",
  "connect-src 'self' ws: wss:",
  "img-src 'self' data:",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join("; ");

const read = (name: string) => readFileSync(join(import.meta.dir, "page", name), "utf8");
const files: Record<string, { body: string; type: string }> = {
  "/": { body: read("index.html"), type: "text/html; charset=utf-8" },
  "/page/app.js": { body: read("app.js"), type: "text/javascript; charset=utf-8" },
  "/page/style.css": { body: read("style.css"), type: "text/css; charset=utf-8" },
};

export function registerPage<E extends Env>(app: Hono<E>) {
  for (const [path, f] of Object.entries(files)) {
    app.get(path, (c) =>
      c.body(f.body, 200, {
        "Content-Type": f.type,
        "Content-Security-Policy": CSP,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
      }),
    );
  }
}
