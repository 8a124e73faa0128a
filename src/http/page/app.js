// PiChat's built-in page: the /ws protocol in plain JavaScript, no framework, no build.
// Everything the server sends is shown with textContent, never parsed as HTML, except a reply's
// Markdown, which goes through renderMarkdown (markdown.js: parsed, then sanitised into DOM nodes).

import { renderMarkdown } from "/page/markdown.js";

const $ = (id) => document.getElementById(id);
const ui = {
  conn: $("conn"), chats: $("chats"), title: $("title"), del: $("delete"), messages: $("messages"),
  composer: $("composer"), input: $("input"), send: $("send"), stop: $("stop"),
  notice: $("notice"), tokenForm: $("token-form"), token: $("token"),
};
const TOKEN_KEY = "pichat.token";

let ws = null; // the socket, while one is open or opening
let attempts = 0; // failed connects in a row, for the backoff
let chats = []; // as the server lists them, most recently active first
let current = location.hash.slice(1) || null; // the chat on screen; kept in the URL so a reload shows it again
let streaming = null; // traceId of the reply streaming into it ("pending" just after a send)
const bubbles = new Map(); // message id or traceId -> its <li>
const sources = new WeakMap(); // a reply's .text element -> its Markdown so far

const el = (tag, className = "", text = "") => Object.assign(document.createElement(tag), { className, textContent: text });

// The token: taken from ?token= once, then kept in sessionStorage and out of the address bar.
const params = new URLSearchParams(location.search);
if (params.has("token")) {
  sessionStorage.setItem(TOKEN_KEY, params.get("token"));
  params.delete("token");
  history.replaceState(null, "", location.pathname + (params.size ? `?${params}` : "") + location.hash);
}

// ---- connection: one socket, reconnect with backoff ----

function connect() {
  setConn("connecting");
  const token = sessionStorage.getItem(TOKEN_KEY);
  // Browsers cannot set headers on a WebSocket: the token travels as a "bearer.<token>" subprotocol.
  const protocols = token ? ["pichat", `bearer.${token}`] : ["pichat"];
  let opened = false;
  try {
    ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`, protocols);
  } catch {
    setConn("offline");
    return askToken("That token has characters a browser cannot send.");
  }
  ws.onopen = () => {
    opened = true;
    attempts = 0;
    setConn("online");
    send({ type: "GET_CHATS" }); // CHAT_LIST then re-opens the current chat
  };
  ws.onmessage = (e) => receive(JSON.parse(e.data));
  ws.onclose = async () => {
    ws = null;
    setConn("offline");
    if (!opened && (await refused(token))) return askToken(token ? "That token was refused." : "This server needs an API token.");
    const delay = Math.min(10_000, 500 * 2 ** attempts++) * (0.75 + Math.random() / 2);
    setTimeout(connect, delay);
  };
}

// A browser does not say why a socket was refused; the same request as plain HTTP answers 401.
const refused = (token) =>
  fetch("/ws", { headers: token ? { Authorization: `Bearer ${token}` } : {} }).then((r) => r.status === 401, () => false);

function send(frame) {
  if (ws?.readyState !== WebSocket.OPEN) return false;
  ws.send(JSON.stringify(frame));
  return true;
}

function setConn(state) {
  ui.conn.dataset.state = state;
  ui.conn.textContent = state;
  updateControls();
}

function askToken(why) {
  ui.tokenForm.querySelector("p").textContent = why;
  ui.tokenForm.hidden = false;
  ui.token.focus();
}

// ---- frames from the server ----

// One entry per frame type the page cares about, like the server's handler table; others are ignored.
const receive = (f) => on[f.type]?.(f);
const on = {
  CHAT_LIST(f) {
    chats = f.chats;
    // (Re)open the chat on screen; after a reconnect its history brings back a reply mid-stream.
    select(chats.some((c) => c.id === current) ? current : chats[0]?.id ?? null);
  },
  NEW_CHAT(f) {
    upsert(f.chat);
    select(f.chat.id);
  },
  CHAT_CREATED: (f) => upsert(f.chat), // another browser's, or a device's first message
  CHAT_UPDATED: (f) => upsert(f.chat),
  CHAT_DELETED: (f) => forget(f.chatId),
  CHAT_HISTORY: (f) => f.chatId === current && showHistory(f.messages),
  FIRST_MESSAGE: (f) => f.chatId === current && addMessage(f.message), // asked elsewhere, shown live
  MESSAGE_ACCEPTED: (f) => f.chatId === current && f.traceId && replyBubble(f.traceId),
  MESSAGE: (f) => f.chatId === current && onDelta(f),
  ERROR: onError,
};

function onDelta(f) {
  const li = replyBubble(f.traceId);
  if (f.seq <= Number(li.dataset.seq)) return; // already in the history we were sent
  li.dataset.seq = f.seq;
  const text = li.querySelector(".text");
  sources.set(text, (sources.get(text) ?? "") + f.content);
  if (!f.end) return renderSoon(text);
  renderNow(text);
  li.classList.remove("streaming");
  if (f.reason) li.append(el("small", "status", f.reason));
  if (streaming === f.traceId) streaming = null;
  updateControls();
}

function onError(f) {
  if (f.requestId === "send" || (f.traceId && f.traceId === streaming)) {
    streaming = null;
    updateControls();
  }
  if (f.code === "CHAT_NOT_FOUND" && f.chatId) forget(f.chatId);
  notify(f.error);
}

// ---- what is on screen ----

function upsert(chat) {
  const i = chats.findIndex((c) => c.id === chat.id);
  if (i >= 0) chats[i] = chat;
  else chats.unshift(chat);
  renderChats();
}

function forget(chatId) {
  chats = chats.filter((c) => c.id !== chatId);
  if (chatId === current) select(chats[0]?.id ?? null);
  else renderChats();
}

function renderChats() {
  ui.chats.replaceChildren(...chats.map((c) => {
    const li = el("li", c.id === current ? "current" : "");
    li.dataset.id = c.id;
    const b = Object.assign(el("button", "chat"), { type: "button", onclick: () => select(c.id) });
    b.append(el("span", "name", c.name));
    if (c.device_id) b.append(Object.assign(el("span", "badge", "device"), { title: `device ${c.device_id}` }));
    li.append(b);
    return li;
  }));
  if (document.activeElement !== ui.title) ui.title.value = chats.find((c) => c.id === current)?.name ?? "";
}

function select(id) {
  current = id;
  showHistory([]); // until the server sends it
  ui.messages.dataset.empty = id ? "No messages yet. Say hello." : "No chat yet. Create one to start.";
  history.replaceState(null, "", location.pathname + location.search + (id ? `#${id}` : ""));
  // Opening a chat also moves the socket's one watch to it: the server stops streaming the chat
  // shown before, so the page needs no WATCH (it shows one chat; the list comes by CHAT_* frames).
  if (id) send({ type: "GET_CHAT_HISTORY", chatId: id });
  renderChats();
  updateControls();
}

function showHistory(messages) {
  streaming = null;
  bubbles.clear();
  ui.messages.replaceChildren();
  for (const m of messages) {
    if (m.streaming) replyBubble(m.id, m.content, m.seq); // a reply still being written
    else addMessage(m);
  }
  ui.messages.scrollTop = ui.messages.scrollHeight;
}

function addMessage(m) {
  const li = el("li", `msg ${m.role}`);
  if (m.device_id && m.role === "user") li.append(el("span", "badge", m.device_id)); // asked on a device
  if (m.role === "user") li.append(el("div", "text", m.content)); // what a person typed stays plain text
  else {
    const text = el("div", "text");
    sources.set(text, m.content);
    renderMarkdown(text, m.content);
    li.append(text);
  }
  if (m.status) li.append(el("small", "status", m.status));
  stickToBottom(() => ui.messages.append(li));
  bubbles.set(m.id, li);
  return li;
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
  const online = ws?.readyState === WebSocket.OPEN;
  ui.input.disabled = !current;
  ui.send.disabled = !online || !current;
  ui.send.hidden = !!streaming;
  ui.stop.hidden = !streaming;
  ui.title.disabled = ui.del.disabled = !online || !current;
}

let noticeTimer;
function notify(text) {
  Object.assign(ui.notice, { textContent: text, hidden: false });
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => (ui.notice.hidden = true), 6000);
}

// ---- what the user does ----

$("new-chat").onclick = () => send({ type: "CREATE_CHAT" });
// On a phone the chat list slides over; it folds away once something in it (or beside it) is clicked.
$("menu").onclick = () => document.body.classList.toggle("menu");
$("sidebar").onclick = $("scrim").onclick = (e) => e.target.closest("button, #scrim") && document.body.classList.remove("menu");

ui.composer.onsubmit = (e) => {
  e.preventDefault();
  // Sent exactly as typed (indentation and trailing spaces are content); blank is not a message.
  const content = ui.input.value;
  if (!content.trim() || streaming) return;
  // With a requestId the server answers MESSAGE_ACCEPTED {traceId} (or an ERROR carrying it).
  if (!send({ type: "SEND_MESSAGE", chatId: current, content, requestId: "send" })) return;
  addMessage({ id: `mine-${Date.now()}`, role: "user", content }); // the server does not echo it back
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

ui.tokenForm.onsubmit = (e) => {
  e.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, ui.token.value.trim());
  ui.tokenForm.hidden = true;
  connect();
};

select(current);
connect();
