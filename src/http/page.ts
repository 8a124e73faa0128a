import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import type { Env, Hono } from "hono";

// The built-in chat page at `/`: static files (src/http/page/), read once at start-up, and the two
// libraries it renders replies with, served from this origin at /page/vendor/. No build step and nothing
// fetched from elsewhere, so it works offline.

// A host as a browser sends it in Host: a name or an IPv4/IPv6 address, and a port. Anything else
// (it would land in a header) gets no WebSocket source at all.
const HOST = /^(?:[a-z0-9.-]+|\[[0-9a-f:.]+\])(?::\d{1,5})?$/i;

/**
 * The page talks only to where it came from: fetch to 'self', its socket to ws(s)://<this host>. Not
 * 'self' alone for the socket: not every browser counts ws: as 'self' (CSP Level 3 does, older engines
 * do not), so the host is named, from the request. Both schemes: behind a TLS proxy the request here is
 * http while the page is https. Trusted Types: the page's own code never hands a string to an HTML sink
 * (innerHTML and the like); only DOMPurify's policy may, and it only passes its own sanitised output through.
 */
export function pageCsp(host: string | undefined): string {
  const socket = host && HOST.test(host) ? ` ws://${host} wss://${host}` : "";
  return [
    "default-src 'self'",
    "script-src 'self'",
    "object-src 'none'",
    `connect-src 'self'${socket}`,
    "img-src 'self' data:",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
    "require-trusted-types-for 'script'",
    "trusted-types dompurify",
  ].join("; ");
}

/**
 * The browser builds of the page's libraries (exact versions pinned in package.json): URL name -> module
 * in node_modules. scripts/build.ts copies them to dist/page/vendor/, since the image has no node_modules.
 */
export const VENDOR: Record<string, string> = {
  "marked.esm.js": "marked/lib/marked.esm.js",
  "purify.es.mjs": "dompurify/dist/purify.es.mjs",
};

const pageDir = join(import.meta.dir, "page");
const read = (name: string) => readFileSync(join(pageDir, name), "utf8");

/**
 * Beside the bundle in dist/page/vendor/; from source, straight from node_modules (looked up by path:
 * the packages' `exports` do not list these files, so module resolution would refuse them).
 */
export function vendorPath(name: string): string {
  const copied = join(pageDir, "vendor", name);
  if (existsSync(copied)) return copied;
  for (let dir = import.meta.dir; ; dir = dirname(dir)) {
    const file = join(dir, "node_modules", VENDOR[name]!);
    if (existsSync(file)) return file;
    if (dirname(dir) === dir) throw new Error(`the page's library ${VENDOR[name]} is not in node_modules: run bun install`);
  }
}
// The source map comment only makes DevTools ask for a file we do not serve.
const readVendor = (name: string) => readFileSync(vendorPath(name), "utf8").replace(/\n\/\/# sourceMappingURL=\S+\s*$/, "\n");

const JS = "text/javascript; charset=utf-8";
const files: Record<string, { body: string; type: string }> = {
  "/": { body: read("index.html"), type: "text/html; charset=utf-8" },
  "/page/app.js": { body: read("app.js"), type: JS },
  "/page/markdown.js": { body: read("markdown.js"), type: JS },
  "/page/search.js": { body: read("search.js"), type: JS },
  "/page/signin.js": { body: read("signin.js"), type: JS },
  "/page/devices.js": { body: read("devices.js"), type: JS },
  "/page/usage.js": { body: read("usage.js"), type: JS },
  "/page/transfer.js": { body: read("transfer.js"), type: JS },
  "/page/organise.js": { body: read("organise.js"), type: JS },
  "/page/share.js": { body: read("share.js"), type: JS },
  // The typed client (client/), built into one file by `bun run build:client`.
  "/page/client.js": { body: read("client.js"), type: JS },
  "/page/style.css": { body: read("style.css"), type: "text/css; charset=utf-8" },
  ...Object.fromEntries(Object.keys(VENDOR).map((name) => [`/page/vendor/${name}`, { body: readVendor(name), type: JS }])),
};

// A shared chat's page (/s/<id>): the same kind of static shell, under the same CSP; share.js fetches the snapshot.
const sharePage = { body: read("share.html"), type: "text/html; charset=utf-8" };

export function registerPage<E extends Env>(app: Hono<E>) {
  for (const [path, f] of [...Object.entries(files), ["/s/:id", sharePage] as const]) {
    app.get(path, (c) =>
      c.body(f.body, 200, {
        "Content-Type": f.type,
        "Content-Security-Policy": pageCsp(c.req.header("host")),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
      }),
    );
  }
}
