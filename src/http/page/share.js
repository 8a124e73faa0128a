// A shared chat's page (/s/<id>): a read-only snapshot from GET /api/shares/<id>. Questions are shown as
// text; replies go through the same Markdown renderer and sanitiser as the chat page (markdown.js), under
// the same CSP. A link for signed-in users asks for a token (kept in this tab, as the chat page keeps it).

import { renderMarkdown } from "/page/markdown.js";
import { adoptLinkToken } from "/page/signin.js";

const TOKEN_KEY = "pichat.token";
const $ = (id) => document.getElementById(id);
const el = (tag, className = "", text = "") => Object.assign(document.createElement(tag), { className, textContent: text });
const shareId = decodeURIComponent(location.pathname.split("/").pop() ?? "");

await adoptLinkToken(TOKEN_KEY);

function show(text) {
  Object.assign($("notice"), { textContent: text, hidden: false });
  $("messages").dataset.empty = "";
}

function askToken(why) {
  const form = $("token-form");
  form.querySelector("p").textContent = why;
  form.hidden = false;
  $("messages").dataset.empty = "";
  $("token").focus();
}

$("token-form").onsubmit = (e) => {
  e.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
  $("token-form").hidden = true;
  load();
};

function render(share) {
  document.title = `${share.name} · shared · PiChat`;
  $("share-title").textContent = share.name;
  $("share-when").textContent = `shared ${new Date(share.created_at).toLocaleString()}${share.public ? " · public link" : ""}`;
  $("messages").dataset.empty = "This shared chat has no messages.";
  $("messages").replaceChildren(
    ...share.messages.map((m) => {
      const li = el("li", `msg ${m.role}`);
      li.dataset.id = m.id;
      if (m.role === "user") li.append(el("div", "text", m.content));
      else {
        const text = el("div", "text");
        renderMarkdown(text, m.content);
        li.append(text);
      }
      if (m.status) li.append(el("small", "status", m.status));
      return li;
    }),
  );
}

async function load() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  let res;
  try {
    res = await fetch(`/api/shares/${encodeURIComponent(shareId)}`, {
      headers: token ? { Authorization: `Bearer ${token}` } : {},
      cache: "no-store",
    });
  } catch {
    return show("The server could not be reached. Reload to try again.");
  }
  if (res.status === 401)
    return askToken(token ? "That token was refused. Sign in to read this shared chat." : "Sign in to read this shared chat.");
  if (res.status === 404) return show("This shared chat is not available: the link was revoked, or the chat was deleted.");
  if (!res.ok) return show("The shared chat could not be loaded. Reload to try again.");
  render((await res.json()).share);
}

load();
