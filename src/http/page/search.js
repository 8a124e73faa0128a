// Search over the signed-in person's chats (SEARCH / SEARCH_RESULTS): a box above the chat list, results
// in its place while a query is typed. A hit's snippet is plain text from the server; its highlight
// offsets become <mark> elements built here with DOM calls, so nothing the server sends is parsed as HTML.

const DEBOUNCE_MS = 250;
const LIMIT = 20;
const WORD = /[\p{L}\p{N}]/u; // the server ignores everything else, and refuses a query without one

/**
 * `snippet` as text nodes with each [start, end) of `highlights` in a <mark>. Offsets are UTF-16 indices;
 * any that overlap, run backwards or fall outside the snippet are skipped, never trusted.
 */
export function snippetNodes(snippet, highlights) {
  const text = String(snippet ?? "");
  const nodes = [];
  let at = 0;
  for (const h of Array.isArray(highlights) ? highlights : []) {
    if (!Array.isArray(h) || !Number.isInteger(h[0]) || !Number.isInteger(h[1])) continue;
    const start = Math.max(at, h[0]);
    const end = Math.min(text.length, h[1]);
    if (end <= start) continue;
    if (start > at) nodes.push(document.createTextNode(text.slice(at, start)));
    const mark = document.createElement("mark");
    mark.textContent = text.slice(start, end);
    nodes.push(mark);
    at = end;
  }
  if (at < text.length) nodes.push(document.createTextNode(text.slice(at)));
  return nodes;
}

const ROLE = { user: "You", assistant: "Reply" };

/**
 * Wires the search box. `send(frame)` sends on the socket (false when offline); `open(hit)` shows a hit's
 * chat. Returns the handlers for SEARCH_RESULTS and for an ERROR answering a search, and `reset`.
 */
export function createSearch({ input, panel, status, list, more, chatList, send, open }) {
  let query = ""; // the query whose results are shown (or awaited)
  let cursor = null;
  let count = 0;
  let timer = 0;

  const show = (searching) => {
    panel.hidden = !searching;
    chatList.hidden = searching;
  };
  const say = (text) => (status.textContent = text);

  function run() {
    clearTimeout(timer);
    const q = input.value.trim();
    if (q === query) return;
    query = q;
    cursor = null;
    count = 0;
    list.replaceChildren();
    more.hidden = true;
    if (!q) return show(false);
    show(true);
    if (!WORD.test(q)) return say("Type a letter or a digit to search.");
    say(send({ type: "SEARCH", query: q, limit: LIMIT }) ? "Searching…" : "Offline: search needs a connection.");
  }

  input.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(run, DEBOUNCE_MS);
  });
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter") run();
    if (e.key === "Escape" && input.value) {
      input.value = "";
      run();
    }
  });
  more.addEventListener("click", () => {
    if (cursor && send({ type: "SEARCH", query, limit: LIMIT, cursor })) {
      more.disabled = true;
      say("Searching…");
    }
  });

  function item(hit) {
    const li = document.createElement("li");
    const b = Object.assign(document.createElement("button"), { type: "button", className: "hit", onclick: () => open(hit) });
    const head = Object.assign(document.createElement("span"), { className: "hit-head" });
    head.append(Object.assign(document.createElement("span"), { className: "hit-chat", textContent: hit.chatName }));
    head.append(
      Object.assign(document.createElement("small"), {
        className: "hit-role",
        textContent: hit.messageId ? (ROLE[hit.role] ?? hit.role ?? "") : "Chat name",
      }),
    );
    const snippet = Object.assign(document.createElement("span"), { className: "snippet" });
    snippet.append(...snippetNodes(hit.snippet, hit.highlights));
    b.append(head, snippet);
    li.append(b);
    return li;
  }

  return {
    results(f) {
      if (f.query !== query) return; // an answer to a query typed over since
      const hits = Array.isArray(f.hits) ? f.hits : [];
      list.append(...hits.map(item));
      count += hits.length;
      cursor = f.cursor ?? null;
      more.hidden = !cursor;
      more.disabled = false;
      say(count ? `${count} result${count === 1 ? "" : "s"}${cursor ? " so far" : ""}` : `Nothing found for “${query}”.`);
    },
    failed(f) {
      more.disabled = false;
      say(f.error ?? "The search failed.");
    },
    /** Forgets the query and its results (signed out). */
    reset() {
      input.value = "";
      query = "";
      cursor = null;
      count = 0;
      list.replaceChildren();
      more.hidden = true;
      show(false);
    },
  };
}
