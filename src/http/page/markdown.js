// Replies as formatted text: Markdown parsed by marked, then sanitised by DOMPurify into DOM nodes.
// Both libraries are served from this origin (/page/vendor/, see src/http/page.ts), no build step.
// Three layers keep a reply inert, each enough on its own for script: raw HTML in the Markdown is shown
// as text (never parsed), DOMPurify keeps only the tags and attributes Markdown produces and only
// http(s)/mailto links, and the CSP allows no inline script and needs Trusted Types for every HTML sink.

import { Marked } from "/page/vendor/marked.esm.js";
import DOMPurify from "/page/vendor/purify.es.mjs";

const escapeHtml = (s) => s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

const marked = new Marked({
  gfm: true,
  renderer: {
    // Raw HTML is text, as typed: a reply about HTML shows its tags, and none of them runs.
    html: ({ text, block }) => (block ? `<p>${escapeHtml(text)}</p>` : escapeHtml(text)),
    // Images become links: an image would load as the reply renders, and a URL chosen by the model (or by
    // a prompt injection) could carry the conversation out in its query string. A link waits for a click.
    image: ({ href, text }) => `<a href="${escapeHtml(href)}">${escapeHtml(text || href)}</a>`,
  },
});

const ALLOWED_TAGS = [
  "p",
  "br",
  "hr",
  "h1",
  "h2",
  "h3",
  "h4",
  "h5",
  "h6",
  "strong",
  "em",
  "del",
  "s",
  "code",
  "pre",
  "blockquote",
  "ul",
  "ol",
  "li",
  "input",
  "table",
  "thead",
  "tbody",
  "tr",
  "th",
  "td",
  "a",
];
const PURIFY = {
  ALLOWED_TAGS,
  // No class or style (a reply could dress itself as the page's own UI), no data-*, no event handlers.
  ALLOWED_ATTR: ["href", "title", "align", "start", "type", "checked", "disabled"],
  ALLOW_DATA_ATTR: false,
  ALLOWED_URI_REGEXP: /^(?:https?:|mailto:)/i, // also drops relative links, data: and javascript:
  // DOMPurify checks every attribute not listed here against that pattern too; these hold no URL.
  ADD_URI_SAFE_ATTR: ["align", "start", "type", "checked", "disabled"],
  RETURN_DOM_FRAGMENT: true,
};

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A" && node.hasAttribute("href")) {
    node.setAttribute("target", "_blank"); // away from the chat, and without a handle back to it
    node.setAttribute("rel", "noopener noreferrer");
  }
  if (node.tagName === "INPUT") {
    // GFM task lists are the only inputs Markdown makes: a checkbox that cannot be changed.
    node.setAttribute("type", "checkbox");
    node.setAttribute("disabled", "");
  }
});

/** Markdown (already lexed, or text) as sanitised DOM nodes, each code block with a copy button. */
function toFragment(tokensOrText) {
  const html = typeof tokensOrText === "string" ? marked.parse(tokensOrText) : marked.parser(tokensOrText);
  const frag = DOMPurify.sanitize(html, PURIFY);
  for (const pre of frag.querySelectorAll("pre")) {
    const copy = document.createElement("button");
    Object.assign(copy, { type: "button", className: "copy", textContent: "Copy" });
    copy.setAttribute("aria-label", "Copy code");
    pre.prepend(copy);
  }
  return frag;
}

/** Markdown text as sanitised DOM nodes, whole (for one-off rendering). */
export const markdownFragment = (text) => toFragment(text);

// What each element shows: its top-level blocks (raw Markdown and the nodes made of it), and the
// reference-link definitions they were rendered with.
const rendered = new WeakMap();

/**
 * Renders Markdown `text` into `el`, in place. The text is split into top-level blocks; blocks whose
 * Markdown is unchanged since the last call keep their nodes, and only the rest is parsed, sanitised and
 * replaced. A streaming reply re-rendered on every frame so costs its growing last block, not the whole
 * reply, does not flicker, and a selection or a finished code block above the growing end stays put.
 */
export function renderMarkdown(el, text) {
  const tokens = marked.lexer(text);
  // A reference definition arriving later changes how earlier blocks render: then nothing is reused.
  const links = JSON.stringify(tokens.links ?? {});
  let state = rendered.get(el);
  if (!state || state.links !== links || !state.blocks.every((b) => b.nodes.every((n) => n.parentNode === el))) {
    state = { links, blocks: [] };
    el.replaceChildren();
  }
  let same = 0;
  while (same < tokens.length && same < state.blocks.length && state.blocks[same].raw === tokens[same].raw) same++;
  for (const b of state.blocks.splice(same)) for (const n of b.nodes) n.remove();
  for (const token of tokens.slice(same)) {
    const blockTokens = Object.assign([token], { links: tokens.links });
    const nodes = [...toFragment(blockTokens).childNodes];
    el.append(...nodes);
    state.blocks.push({ raw: token.raw, nodes });
  }
  rendered.set(el, state);
}

// One listener for every copy button, present and future (the buttons are rebuilt as a reply streams).
document.addEventListener("click", async (e) => {
  const button = e.target instanceof Element ? e.target.closest("pre > button.copy") : null;
  if (!button) return;
  const code = button.parentElement.querySelector("code");
  const text = code?.textContent ?? "";
  const done = (state) => {
    button.dataset.copied = state;
    button.textContent = state === "yes" ? "Copied" : "Select and copy";
  };
  try {
    await navigator.clipboard.writeText(text); // absent outside a secure context (plain http off localhost)
    done("yes");
  } catch {
    // Without the clipboard API: select the code so the person can copy it, and try the old command.
    const range = document.createRange();
    range.selectNodeContents(code ?? button.parentElement);
    getSelection()?.removeAllRanges();
    getSelection()?.addRange(range);
    done(document.execCommand?.("copy") ? "yes" : "no");
  }
});
