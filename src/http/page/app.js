// PiChat's built-in page: plain JavaScript, no framework, no build. It speaks /ws only through the typed
// client (/page/client.js, built from client/), which reconnects, resumes replies and resends questions.
// Everything the server sends is shown with textContent, never parsed as HTML, except a reply's
// Markdown, which goes through renderMarkdown (markdown.js: parsed, then sanitised into DOM nodes).

import { createClient } from "/page/client.js";
import { renderMarkdown } from "/page/markdown.js";
import { createDevices } from "/page/devices.js";
import { createOrganise } from "/page/organise.js";
import { createSearch } from "/page/search.js";
import { adoptLinkToken } from "/page/signin.js";
import { errorText, fileName, saveFile } from "/page/transfer.js";
import { createUsage } from "/page/usage.js";

const $ = (id) => document.getElementById(id);
const ui = {
  conn: $("conn"),
  chats: $("chats"),
  title: $("title"),
  del: $("delete"),
  messages: $("messages"),
  composer: $("composer"),
  input: $("input"),
  send: $("send"),
  stop: $("stop"),
  notice: $("notice"),
  tokenForm: $("token-form"),
  token: $("token"),
  who: $("who"),
  signOut: $("sign-out"),
  chatMenu: $("chat-menu"),
  chatMenuItems: $("chat-menu-items"),
  importButton: $("import"),
  importFile: $("import-file"),
};
const TOKEN_KEY = "pichat.token";
const KINDS = { api_token: "API token", token: "personal token", jwt: "Entra ID" };

let client = null; // the connection (client.js), from the first connect until a sign-out
let session = 0; // bumped at every sign-out: a connect still under way for an older one gives up
let chats = []; // as the server lists them, most recently active first
let current = location.hash.slice(1) || null; // the chat on screen; kept in the URL so a reload shows it again
let streaming = null; // traceId of the reply streaming into it ("pending" just after a send)
let mine = null; // the bubble of a question sent or edited here, until MESSAGE_ACCEPTED names its id
let reloadOnEnd = false; // a regenerated or edited branch: its history (with the version counts) once answered
let keepScroll = false; // the next history re-renders the chat on screen: leave the view where it is
let refocus = null; // {index, act}: the switcher button to focus again once a branch switch re-rendered
let findAfterLoad = null; // a search hit's message, to show once its chat's history is on screen
const bubbles = new Map(); // message id or traceId -> its <li>
const sources = new WeakMap(); // a reply's .text element -> its Markdown so far

const el = (tag, className = "", text = "") => Object.assign(document.createElement(tag), { className, textContent: text });
const button = (text, label, onclick) => {
  const b = Object.assign(el("button", "act", text), { type: "button", onclick });
  if (label) b.setAttribute("aria-label", label);
  return b;
};

// The token: from a ?token= link (signin.js: out of the address bar at once, never another user unasked), then kept in sessionStorage.
await adoptLinkToken(TOKEN_KEY);
const token = () => sessionStorage.getItem(TOKEN_KEY);
const authHeaders = () => (token() ? { Authorization: `Bearer ${token()}` } : {});

// ---- signing in: who the token is, and signing out ----

/** Asks the server who the token signs in as: "ok" (and shown), "refused" (401), or "unknown" (unreachable). */
async function whoAmI() {
  let res;
  try {
    res = await fetch("/api/me", { headers: authHeaders(), cache: "no-store" });
  } catch {
    return "unknown";
  }
  if (res.status === 401) return "refused";
  const me = res.ok ? await res.json().catch(() => null) : null;
  if (!me?.name) return "unknown";
  const kind = token() ? (KINDS[me.via] ?? me.via) : "no sign-in needed";
  ui.who.querySelector(".user-name").textContent = me.name;
  ui.who.querySelector(".user-kind").textContent = kind;
  ui.who.title = `Signed in as ${me.name} (${kind})`;
  ui.who.hidden = false;
  ui.signOut.hidden = !token(); // an open server (development) has nothing to sign out of
  updateControls();
  return "ok";
}

/** Forgets the token and everything shown with it, and asks for a token, saying why. */
function signedOut(why) {
  session++;
  sessionStorage.removeItem(TOKEN_KEY);
  client?.close();
  client = null;
  ui.who.hidden = ui.signOut.hidden = true;
  chats = [];
  renderChats();
  showHistory([]);
  search.reset();
  setConn("offline");
  askToken(why);
}

function askToken(why) {
  ui.tokenForm.querySelector("p").textContent = why;
  ui.tokenForm.hidden = false;
  ui.token.value = "";
  ui.token.focus();
}

/** fetch with the token; a 401 signs out (the token no longer works), a network failure is a notice. Null then. */
async function api(path, init = {}) {
  let res;
  try {
    res = await fetch(path, { ...init, headers: { ...init.headers, ...authHeaders() }, cache: "no-store" });
  } catch {
    notify("The server could not be reached.");
    return null;
  }
  if (res.status !== 401) return res;
  signedOut("Your sign-in is no longer accepted. Sign in again with a valid token.");
  return null;
}

// ---- connection: the client keeps one socket open, reconnecting with backoff ----

const online = () => client?.state === "open";

async function connect() {
  const mySession = session;
  setConn("connecting");
  const presented = token();
  const who = await whoAmI();
  if (mySession !== session) return;
  if (who === "refused") return signedOut(presented ? "That token was refused." : "This server needs an API token.");
  client = createClient({
    url: `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`,
    token, // read at every reconnect; browsers send it as a "bearer.<token>" subprotocol
    reconnect: { minMs: 500, maxMs: 10_000 },
  });
  for (const [type, fn] of Object.entries(on)) client.on(type, fn);
  client.onState((state, why) => {
    if (mySession !== session) return;
    if (state === "open") {
      send({ type: "GET_CHATS" }); // CHAT_LIST then re-opens the current chat
      organise.opened(); // folders (organise.js)
      devices.refresh();
      usage.refresh();
      if (ui.who.hidden) whoAmI().then(updateControls); // unanswered before the socket opened
    }
    setConn(state === "open" ? "online" : state === "connecting" ? "connecting" : "offline");
    // Revoked or expired while connected, or refused at the upgrade: reconnecting would only be refused again.
    if (state !== "stopped") return;
    if (why.code === 1008) signedOut(`Signed out: ${why.reason}. Sign in again with a valid token.`);
    else if (why.code === 0) signedOut("That token has characters a browser cannot send.");
    else signedOut(presented ? "That token was refused." : "This server needs an API token.");
  });
}

/**
 * Sends a request through the client; false (and nothing sent) while offline. Its answer comes as the
 * frame's event (the `on` table); an ERROR answer goes to `failed`.
 */
function send({ type, ...args }, failed = onError) {
  if (!online()) return false;
  client.request(type, args).catch((e) => e.frame && failed(e.frame));
  return true;
}

/** A request whose answer the caller awaits: the answer, or the ERROR frame that refused it; null while offline. */
const request = ({ type, ...args }) => (online() ? client.request(type, args).catch((e) => e.frame ?? null) : Promise.resolve(null));

function setConn(state) {
  ui.conn.dataset.state = state;
  ui.conn.textContent = state;
  updateControls();
}

// ---- frames from the server ----

// One entry per frame type the page cares about, like the server's handler table; the client passes
// every frame it receives (answers included) to these, and the page ignores the rest.
const on = {
  CHAT_LIST(f) {
    chats = f.chats;
    // (Re)open the chat on screen; after a reconnect its history brings back a reply mid-stream.
    select(chats.some((c) => c.id === current) ? current : (chats[0]?.id ?? null));
  },
  NEW_CHAT(f) {
    upsert(f.chat);
    select(f.chat.id);
  },
  CHAT_CREATED: (f) => upsert(f.chat), // another browser's, a device's first message, or an import
  CHAT_UPDATED: (f) => upsert(f.chat),
  CHAT_DELETED: (f) => forget(f.chatId),
  CHAT_HISTORY(f) {
    if (f.chatId !== current) return;
    showHistory(f.messages, keepScroll);
    keepScroll = false;
    afterHistory();
  },
  FIRST_MESSAGE: (f) => f.chatId === current && addMessage(f.message), // asked elsewhere, shown live
  MESSAGE_ACCEPTED(f) {
    if (f.chatId === current && f.traceId) replyBubble(f.traceId).dataset.parent = f.messageId;
  },
  REGENERATING: (f) => f.chatId === current && (replyBubble(f.traceId).dataset.parent = f.questionId),
  // Another tab switched versions, regenerated or edited here: show the chat's current branch, and again
  // once a reply ends (its first deltas may have raced the history asked for now).
  BRANCH_SELECTED(f) {
    if (f.chatId !== current) return;
    reloadHistory();
    reloadOnEnd = true;
  },
  MESSAGE: (f) => (f.end && usage.soon(), f.chatId === current && onDelta(f)),
  SEARCH_RESULTS: (f) => search.results(f),
  DEVICES: (f) => devices.receive(f),
  DEVICE_UPDATED: (f) => devices.receive(f),
  // A request's ERROR (it has a requestId) goes to that request's handler: these are a reply's failures.
  ERROR: (f) => f.requestId || onError(f),
};

function onDelta(f) {
  const li = replyBubble(f.traceId);
  if (f.seq <= Number(li.dataset.seq)) return; // already in the history we were sent
  li.dataset.seq = f.seq;
  const text = li.querySelector(".text");
  // A reply the client fetched whole once it had ended (RESUME) carries its stored text.
  sources.set(text, f.message ? f.message.content : (sources.get(text) ?? "") + f.content);
  if (!f.end) return renderSoon(text);
  renderNow(text);
  li.classList.remove("streaming");
  if (!li.querySelector("[data-rating]")) organise.decorateMessage(li, { id: f.traceId, role: "assistant" });
  if (f.reason) li.querySelector(".actions").before(el("small", "status", f.reason));
  if (streaming === f.traceId) streaming = null;
  updateControls();
  // A new version or branch: its history says how many there are now, and which this is.
  if (reloadOnEnd && !streaming) reloadHistory();
}

function onError(f) {
  if (f.traceId && f.traceId === streaming) {
    streaming = null;
    updateControls();
  }
  if (f.code === "CHAT_NOT_FOUND" && f.chatId) forget(f.chatId);
  notify(f.error);
}

/** A question, an edit or a regeneration refused: nothing streams for it. */
function askFailed(f, reload) {
  streaming = null;
  updateControls();
  // What is on screen was cut for an edit or a regeneration: show the chat as stored.
  if (reload) reloadHistory();
  onError(f);
}

/** A question sent or edited here gets its real id from MESSAGE_ACCEPTED: from then on it can be edited. */
function ask(type, args, reload) {
  if (!online()) return false;
  client.request(type, args).then(
    (accepted) => {
      if (accepted.type === "MESSAGE_ACCEPTED" && mine && accepted.chatId === current) {
        rekey(mine, accepted.messageId);
        mine = null;
      }
    },
    (e) => e.frame && askFailed(e.frame, reload),
  );
  return true;
}

function reloadHistory() {
  reloadOnEnd = false;
  if (!current) return;
  keepScroll = true;
  send({ type: "GET_CHAT_HISTORY", chatId: current });
}

// ---- what is on screen ----

function upsert(chat) {
  const i = chats.findIndex((c) => c.id === chat.id);
  if (i >= 0)
    chats[i] = { ...chats[i], ...chat }; // a rename names no pin or folder: those stay
  else chats.unshift(chat);
  renderChats();
}

function forget(chatId) {
  chats = chats.filter((c) => c.id !== chatId);
  if (chatId === current) select(chats[0]?.id ?? null);
  else renderChats();
}

function renderChats() {
  ui.chats.replaceChildren(
    ...organise.arrange(chats).map((c) => {
      const li = el("li", c.id === current ? "current" : "");
      li.dataset.id = c.id;
      const b = Object.assign(el("button", "chat"), { type: "button", onclick: () => select(c.id) });
      b.append(el("span", "name", c.name));
      organise.decorateChat(b, c);
      if (c.device_id) b.append(Object.assign(el("span", "badge", "device"), { title: `device ${c.device_id}` }));
      li.append(b);
      return li;
    }),
  );
  if (document.activeElement !== ui.title) ui.title.value = chats.find((c) => c.id === current)?.name ?? "";
}

function select(id) {
  current = id;
  keepScroll = false;
  reloadOnEnd = false;
  showHistory([]); // until the server sends it
  ui.messages.dataset.empty = id ? "No messages yet. Say hello." : "No chat yet. Create one to start.";
  history.replaceState(null, "", location.pathname + location.search + (id ? `#${id}` : ""));
  // Opening a chat also moves the socket's one watch to it: the server stops streaming the chat
  // shown before, so the page needs no WATCH (it shows one chat; the list comes by CHAT_* frames).
  if (id) send({ type: "GET_CHAT_HISTORY", chatId: id });
  toggleMenu(false);
  renderChats();
  updateControls();
}

function showHistory(messages, keep = false) {
  const m = ui.messages;
  const top = m.scrollTop;
  const atBottom = m.scrollHeight - m.scrollTop - m.clientHeight < 60;
  streaming = null;
  mine = null;
  bubbles.clear();
  m.replaceChildren();
  for (const msg of messages) {
    if (msg.streaming)
      replyBubble(msg.id, msg.content, msg.seq); // a reply still being written
    else addMessage(msg);
  }
  m.scrollTop = keep && !atBottom ? top : m.scrollHeight;
}

/** After a history is on screen: focus the switcher that asked for it, or show the message a search found. */
function afterHistory() {
  if (refocus) {
    const li = ui.messages.children[refocus.index];
    const other = refocus.act === "prev" ? "next" : "prev";
    (li?.querySelector(`[data-act="${refocus.act}"]:enabled`) ?? li?.querySelector(`[data-act="${other}"]:enabled`))?.focus();
    refocus = null;
  }
  if (findAfterLoad) {
    const li = bubbles.get(findAfterLoad);
    findAfterLoad = null;
    if (li) {
      li.classList.add("found");
      li.scrollIntoView({ block: "center" });
    }
  }
}

function addMessage(m) {
  const li = el("li", `msg ${m.role}`);
  li.dataset.id = m.id;
  if (m.parent_id) li.dataset.parent = m.parent_id;
  if (m.device_id && m.role === "user") li.append(el("span", "badge", m.device_id)); // asked on a device
  if (m.role === "user")
    li.append(el("div", "text", m.content)); // what a person typed stays plain text
  else {
    const text = el("div", "text");
    sources.set(text, m.content);
    renderMarkdown(text, m.content);
    li.append(text);
  }
  if (m.status) li.append(el("small", "status", m.status));
  li.append(actions(m));
  organise.decorateMessage(li, m); // 👍 / 👎 on a reply
  enableActions(li);
  stickToBottom(() => ui.messages.append(li));
  bubbles.set(m.id, li);
  return li;
}

/**
 * A message's buttons: "‹ i/n ›" when it has siblings (an answer's versions, a question's branches),
 * Regenerate on a reply, Edit on a question typed here (known by its id once the server named it).
 */
function actions(m) {
  const bar = el("div", "actions");
  if (m.siblings > 1 && m.sibling >= 1) {
    const what = m.role === "user" ? "branch" : "version";
    const prev = button("‹", `Previous ${what}`, () => switchSibling(bar.parentElement, -1, "prev"));
    const next = button("›", `Next ${what}`, () => switchSibling(bar.parentElement, 1, "next"));
    prev.dataset.act = "prev";
    next.dataset.act = "next";
    if (m.sibling <= 1) prev.dataset.edge = "";
    if (m.sibling >= m.siblings) next.dataset.edge = "";
    // A named group: "version 2 of 3" is read out with the arrows (a bare "2/3" says little).
    const switcher = el("span", "switcher");
    switcher.setAttribute("role", "group");
    switcher.setAttribute("aria-label", `${what} ${m.sibling} of ${m.siblings}`);
    switcher.append(prev, el("span", "count", `${m.sibling}/${m.siblings}`), next);
    bar.append(switcher);
  }
  if (m.role === "assistant")
    bar.append(
      Object.assign(
        button("↻ Regenerate", "", () => regenerate(bar.parentElement)),
        { title: "Answer this question again (the current reply is kept as a version)" },
      ),
    );
  if (m.role === "user" && !m.device_id && !String(m.id).startsWith("mine-")) {
    const edit = button("✎ Edit", "", () => editMessage(bar.parentElement));
    edit.dataset.act = "edit";
    edit.title = "Edit and ask again (the original stays as another branch)";
    bar.append(edit);
  }
  return bar;
}

/** A question sent here gets its real id (MESSAGE_ACCEPTED): from then on it can be edited. */
function rekey(li, id) {
  bubbles.delete(li.dataset.id);
  li.dataset.id = id;
  bubbles.set(id, li);
  li.querySelector(".actions").replaceWith(actions({ id, role: "user" }));
  enableActions(li);
}

/** The bubble a streamed reply grows in; made on its first frame. */
function replyBubble(traceId, text = "", seq = 0) {
  let li = bubbles.get(traceId);
  if (li) return li;
  li = addMessage({ id: traceId, role: "assistant", content: text });
  li.classList.add("streaming");
  li.dataset.seq = seq;
  streaming = traceId;
  updateControls();
  return li;
}

/** Removes `li` and every message after it: a regenerated or edited branch replaces them. */
function cutFrom(li) {
  while (li.nextElementSibling) drop(li.nextElementSibling);
  drop(li);
}
function drop(li) {
  bubbles.delete(li.dataset.id);
  li.remove();
}

// A streaming reply is re-rendered at most once per frame, however many deltas arrived in between, and
// less often when rendering gets slow (a long reply is parsed whole each time): never over a third of the time.
const dirty = new Set();
let frame = 0;
let notBefore = 0;
function renderSoon(text) {
  dirty.add(text);
  frame ||= requestAnimationFrame(renderDirty);
}
function renderDirty(now) {
  frame = 0;
  if (now < notBefore) return void (frame = requestAnimationFrame(renderDirty));
  const start = performance.now();
  for (const text of dirty) renderNow(text);
  notBefore = performance.now() + 2 * (performance.now() - start);
}
function renderNow(text) {
  dirty.delete(text);
  if (text.isConnected) stickToBottom(() => renderMarkdown(text, sources.get(text) ?? ""));
}

function stickToBottom(change) {
  const m = ui.messages;
  const atBottom = m.scrollHeight - m.scrollTop - m.clientHeight < 60;
  change();
  if (atBottom) m.scrollTop = m.scrollHeight;
}

function updateControls() {
  ui.input.disabled = !current;
  ui.send.disabled = !online() || !current;
  ui.send.hidden = !!streaming;
  ui.stop.hidden = !streaming;
  ui.title.disabled = ui.del.disabled = !online() || !current;
  // Export and import are plain HTTP with the token: offered while someone is signed in.
  ui.chatMenu.disabled = !current || ui.who.hidden;
  ui.importButton.disabled = ui.who.hidden;
  enableActions(ui.messages);
}

/** One reply at a time on screen: no new version or branch while one streams (nor offline, nor past the ends). */
function enableActions(root) {
  const idle = online() && !streaming;
  for (const b of root.querySelectorAll(".actions button")) b.disabled = !idle || b.dataset.edge !== undefined;
}

let noticeTimer;
function notify(text) {
  Object.assign(ui.notice, { textContent: text, hidden: false });
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => (ui.notice.hidden = true), 6000);
}

// ---- versions and branches ----

/** Answers the reply's question again; the new version streams where the reply was. */
function regenerate(li) {
  if (streaming || !current) return;
  const questionId = li.dataset.parent || questionBefore(li);
  if (!ask("REGENERATE", { chatId: current, ...(questionId ? { questionId } : {}) }, true)) return;
  cutFrom(li);
  streaming = "pending";
  reloadOnEnd = true;
  updateControls();
}
function questionBefore(li) {
  for (let p = li.previousElementSibling; p; p = p.previousElementSibling) {
    if (p.classList.contains("user")) return p.dataset.id.startsWith("mine-") ? undefined : p.dataset.id;
  }
}

/** The previous or next sibling of a message becomes current; the chat re-renders from the answer. */
async function switchSibling(li, step, act) {
  const chatId = current;
  const id = li?.dataset.id;
  if (!id || streaming) return;
  if (!online()) return;
  const f = await client.request("GET_BRANCHES", { chatId, messageId: id }).catch((e) => (e.frame && onError(e.frame), null));
  if (f?.type !== "BRANCHES" || chatId !== current) return;
  const target = f.siblings[f.siblings.findIndex((s) => s.id === id) + step];
  if (!target) return;
  refocus = { index: [...ui.messages.children].indexOf(li), act };
  keepScroll = true;
  send({ type: "SELECT_BRANCH", chatId, messageId: target.id }); // answered with the branch's CHAT_HISTORY
}

/** An inline editor in the question's bubble; saving asks the edited question on a new branch. */
function editMessage(li) {
  if (streaming || li.querySelector(".editor")) return;
  const text = li.querySelector(".text");
  const bar = li.querySelector(".actions");
  const editor = el("form", "editor");
  const area = Object.assign(el("textarea"), { value: text.textContent, rows: Math.min(10, text.textContent.split("\n").length + 1) });
  area.setAttribute("aria-label", "Edit your message");
  const save = Object.assign(el("button", "primary", "Save and ask"), { type: "submit" });
  const cancel = Object.assign(el("button", "", "Cancel"), { type: "button" });
  const close = () => {
    editor.remove();
    text.hidden = bar.hidden = false;
    bar.querySelector('[data-act="edit"]')?.focus();
  };
  cancel.onclick = close;
  area.onkeydown = (e) => {
    if (e.key === "Escape") close();
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      editor.requestSubmit();
    }
  };
  editor.onsubmit = (e) => {
    e.preventDefault();
    const content = area.value;
    if (!content.trim() || streaming) return;
    if (!ask("EDIT_MESSAGE", { chatId: current, messageId: li.dataset.id, content }, true)) return;
    cutFrom(li);
    mine = addMessage({ id: `mine-${Date.now()}`, role: "user", content });
    streaming = "pending";
    reloadOnEnd = true;
    updateControls();
  };
  editor.append(area, el("div", "editor-buttons"));
  editor.lastChild.append(cancel, save);
  text.hidden = bar.hidden = true;
  text.after(editor);
  area.focus();
}

// ---- devices (devices.js) ----

const devices = createDevices({
  sidebar: $("sidebar"),
  send,
  request,
  open: (chatId) => select(chatId),
});

// ---- today's use against the budget (usage.js) ----

const usage = createUsage({
  sidebar: $("sidebar"),
  request,
});

// ---- search ----

const search = createSearch({
  input: $("search"),
  panel: $("results"),
  status: $("results-status"),
  list: $("hits"),
  more: $("more-results"),
  chatList: ui.chats,
  send: (frame) => send({ ...frame, ...organise.searchScope() }, (f) => search.failed(f)),
  open(hit) {
    findAfterLoad = hit.messageId ?? null;
    select(hit.chatId);
  },
});

// ---- pins, folders, ratings and shared links (organise.js) ----

const organise = createOrganise({
  send,
  current: () => current,
  chats: () => chats,
  rerender: () => renderChats(),
  notify: (text) => notify(text),
  sidebar: $("sidebar"),
  before: ui.chats,
  menu: ui.chatMenuItems,
  closeMenu: () => toggleMenu(false),
});
Object.assign(on, organise.on);

// ---- export and import ----

function toggleMenu(open) {
  ui.chatMenuItems.hidden = !open;
  ui.chatMenu.setAttribute("aria-expanded", String(open));
  if (open) organise.menuOpened();
  if (open) ui.chatMenuItems.querySelector("button").focus();
}
ui.chatMenu.onclick = () => toggleMenu(ui.chatMenuItems.hidden);
ui.chatMenuItems.onkeydown = (e) => {
  const items = [...ui.chatMenuItems.querySelectorAll("button")];
  const at = items.indexOf(document.activeElement);
  if (e.key === "Escape" || e.key === "Tab") {
    toggleMenu(false);
    if (e.key === "Escape") ui.chatMenu.focus();
  } else if (e.key === "ArrowDown" || e.key === "ArrowUp") {
    e.preventDefault();
    items[(at + (e.key === "ArrowDown" ? 1 : items.length - 1)) % items.length].focus();
  }
};
ui.chatMenuItems.onclick = (e) => {
  const item = e.target.closest("button[data-format]");
  if (!item) return;
  toggleMenu(false);
  exportChat(current, item.dataset.format);
};
document.addEventListener("click", (e) => e.target.closest(".chat-menu") || toggleMenu(false));

async function exportChat(chatId, format) {
  if (!chatId) return;
  const res = await api(`/api/chats/${encodeURIComponent(chatId)}/export?format=${format}`);
  if (!res) return;
  if (!res.ok) return notify(await errorText(res, "The export failed"));
  saveFile(await res.blob(), fileName(res.headers.get("Content-Disposition"), `chat.${format}`));
}

ui.importButton.onclick = () => ui.importFile.click();
ui.importFile.onchange = async () => {
  const file = ui.importFile.files[0];
  ui.importFile.value = ""; // the same file can be chosen again
  if (!file) return;
  const res = await api("/api/chats/import", { method: "POST", headers: { "Content-Type": "application/json" }, body: file });
  if (!res) return;
  if (res.status !== 201) return notify(await errorText(res, "The import failed"));
  const { chat } = await res.json();
  upsert(chat); // CHAT_CREATED brings it to this user's other tabs (and here, where it is already listed)
  select(chat.id);
};

// ---- what the user does ----

$("new-chat").onclick = () => send({ type: "CREATE_CHAT" });
// On a phone the chat list slides over; it folds away once something in it (or beside it) is clicked.
$("menu").onclick = () => document.body.classList.toggle("menu");
$("sidebar").onclick = $("scrim").onclick = (e) => e.target.closest(".chat, .hit, #scrim") && document.body.classList.remove("menu");

ui.composer.onsubmit = (e) => {
  e.preventDefault();
  // Sent exactly as typed (indentation and trailing spaces are content); blank is not a message.
  const content = ui.input.value;
  if (!content.trim() || streaming) return;
  // Answered with MESSAGE_ACCEPTED {messageId, traceId}; the client resends it (same id) after a drop until then.
  if (!ask("SEND_MESSAGE", { chatId: current, content }, false)) return;
  mine = addMessage({ id: `mine-${Date.now()}`, role: "user", content }); // the server does not echo it back
  ui.input.value = "";
  streaming = "pending";
  updateControls();
};
ui.input.onkeydown = (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    ui.composer.requestSubmit();
  }
};
ui.stop.onclick = () => send({ type: "STOP_GENERATION", chatId: current });

ui.title.onchange = () => {
  const name = ui.title.value;
  if (name.trim()) send({ type: "RENAME_CHAT", chatId: current, name });
  else renderChats();
};
ui.title.onkeydown = (e) => e.key === "Enter" && ui.title.blur();
ui.del.onclick = () => {
  const chat = chats.find((c) => c.id === current);
  if (chat && confirm(`Delete "${chat.name}" and its messages?`)) send({ type: "DELETE_CHAT", chatId: chat.id });
};

ui.signOut.onclick = () => signedOut("Signed out. Enter a token to sign in again.");
ui.tokenForm.onsubmit = (e) => {
  e.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, ui.token.value.trim());
  ui.tokenForm.hidden = true;
  ui.notice.hidden = true;
  connect();
};

select(current);
connect();
