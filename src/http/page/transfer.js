// Export and import of a chat over HTTP (GET /api/chats/:id/export, POST /api/chats/import). The page
// signs these requests with the Authorization header (no cookies exist to send), so a plain link cannot
// download: the file is fetched, then handed to the browser as a Blob behind a temporary <a download>.

/** The file name the server chose (RFC 6266: `filename*` in UTF-8 first), else `fallback`. */
export function fileName(disposition, fallback) {
  const star = /filename\*\s*=\s*UTF-8''([^;]+)/i.exec(disposition ?? "");
  if (star) {
    try {
      return clean(decodeURIComponent(star[1].trim())) || fallback;
    } catch {
      // not valid percent-encoding: try the plain name
    }
  }
  const plain = /filename\s*=\s*"([^"]*)"/i.exec(disposition ?? "");
  return clean(plain?.[1] ?? "") || fallback;
}
// The server already strips path separators and control characters; a name is never a path here either.
const clean = (name) => name.replace(/[\u0000-\u001f\u007f/\\]/g, "_").trim();

/** Hands `blob` to the browser's download as `name`, and lets go of the object URL once it has started. */
export function saveFile(blob, name) {
  const url = URL.createObjectURL(blob);
  const a = Object.assign(document.createElement("a"), { href: url, download: name, hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  // The download reads the Blob after the click returns; a URL revoked at once can fail it in some browsers.
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/** The `error` of a JSON error body, or a sentence with the status. */
export async function errorText(res, what) {
  const body = await res.json().catch(() => null);
  return typeof body?.error === "string" ? `${what}: ${body.error}` : `${what} (HTTP ${res.status}).`;
}
