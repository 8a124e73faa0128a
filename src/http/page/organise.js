// Organising and sharing in the built-in page: pins and folders in the chat list, thumbs up/down on
// replies, and shared links to a chat. app.js hands in what it has (how to send a request, the chat on
// screen) and calls the hooks this returns; every name and comment is shown with textContent.

const el = (tag, className = "", text = "") => Object.assign(document.createElement(tag), { className, textContent: text });
const btn = (text, label, onclick) => {
  const b = Object.assign(el("button", "act", text), { type: "button", onclick });
  if (label) b.setAttribute("aria-label", label);
  return b;
};

/**
 * `send(frame)` sends a request (answers come back through `on`); `current()` is the chat on screen and
 * `chats()` the list; `rerender()` draws the chat list again; `notify(text)` says something briefly.
 */
export function createOrganise({ send, current, chats, rerender, notify, sidebar, before, menu, closeMenu }) {
  let folders = [];
  let scope = ""; // "" all chats, "pinned", or a folder id
  const ratings = new Map(); // reply id -> {rating, comment?} as the server last said

  // ---- the folder bar above the chat list ----
  const bar = el("div", "folders");
  const pick = Object.assign(el("select"), { id: "folder-scope" });
  pick.setAttribute("aria-label", "Show chats in");
  pick.onchange = () => {
    scope = pick.value;
    rerender();
  };
  const addFolder = btn("+ Folder", "New folder", () => {
    const name = prompt("Folder name");
    if (name?.trim()) send({ type: "CREATE_FOLDER", name });
  });
  const folderMenu = btn("✎", "Rename or delete this folder", () => {
    const folder = folders.find((f) => f.id === scope);
    if (!folder) return;
    const name = prompt(`Rename "${folder.name}" (leave empty to delete the folder; its chats stay)`, folder.name);
    if (name === null) return;
    if (name.trim()) send({ type: "RENAME_FOLDER", folderId: folder.id, name });
    else if (confirm(`Delete the folder "${folder.name}"? Its chats are kept.`)) send({ type: "DELETE_FOLDER", folderId: folder.id });
  });
  // A temporary chat: gone when this user's last tab closes (or after the server's TTL), unless kept.
  const addTemporary = btn("⏳", "New temporary chat", () => send({ type: "CREATE_CHAT", temporary: true }));
  addTemporary.title = "New temporary chat: deleted when you close your last tab, unless you keep it";
  bar.append(pick, addFolder, folderMenu, addTemporary);
  sidebar.insertBefore(bar, before);

  function drawFolders() {
    if (scope && scope !== "pinned" && !folders.some((f) => f.id === scope)) scope = "";
    const option = (value, text) => Object.assign(el("option", "", text), { value, selected: value === scope });
    pick.replaceChildren(option("", "All chats"), option("pinned", "📌 Pinned"), ...folders.map((f) => option(f.id, `📁 ${f.name}`)));
    folderMenu.hidden = !folders.some((f) => f.id === scope);
  }
  drawFolders();

  // ---- the chat menu: pin, move, share ----
  const items = {
    keep: el("button", "", "Keep this chat"),
    pin: el("button", "", "Pin"),
    move: el("button", "", "Move to folder…"),
    share: el("button", "", "Share link…"),
    links: el("button", "", "Shared links…"),
  };
  for (const [key, b] of Object.entries(items)) {
    Object.assign(b, { type: "button" });
    b.setAttribute("role", "menuitem");
    b.dataset.organise = key;
    menu.append(b);
  }
  menu.addEventListener("click", (e) => {
    const item = e.target.closest("button[data-organise]");
    const chat = chats().find((c) => c.id === current());
    if (!item || !chat) return;
    closeMenu();
    if (item.dataset.organise === "keep") send({ type: "KEEP_CHAT", chatId: chat.id });
    if (item.dataset.organise === "pin") send({ type: "PIN_CHAT", chatId: chat.id, pinned: !chat.pinned });
    if (item.dataset.organise === "move") moveDialog(chat);
    if (item.dataset.organise === "share") shareDialog(chat);
    if (item.dataset.organise === "links") send({ type: "GET_SHARES" });
  });

  // One dialog for everything below: a title, its content, a Close button.
  const dialog = el("dialog", "organise");
  document.body.append(dialog);
  function openDialog(title, ...content) {
    const close = btn("Close", "", () => dialog.close());
    dialog.replaceChildren(el("h2", "", title), ...content, el("div", "row"));
    dialog.lastChild.append(close);
    if (!dialog.open) dialog.showModal();
  }

  function moveDialog(chat) {
    const select = el("select");
    select.setAttribute("aria-label", "Folder");
    const option = (value, text) => Object.assign(el("option", "", text), { value, selected: value === (chat.folderId ?? "") });
    select.append(option("", "No folder"), ...folders.map((f) => option(f.id, f.name)));
    const ok = btn("Move", "", () => {
      send({ type: "MOVE_CHAT", chatId: chat.id, folderId: select.value || null });
      dialog.close();
    });
    openDialog(`Move "${chat.name}"`, select, ok);
  }

  function shareDialog(chat) {
    const pub = Object.assign(el("input"), { type: "checkbox", id: "share-public" });
    const label = el("label", "", " Anyone with the link (no sign-in; only if this server allows public links)");
    label.prepend(pub);
    const make = btn("Create link", "", () => send({ type: "SHARE_CHAT", chatId: chat.id, public: pub.checked }));
    openDialog(
      `Share "${chat.name}"`,
      el("p", "", "A read-only copy of this chat as it is now. Later messages are not added; revoke the link to end it."),
      label,
      make,
    );
  }

  function linkRow(share) {
    const url = new URL(share.url, location.origin).href;
    const field = Object.assign(el("input"), { value: url, readOnly: true });
    field.setAttribute("aria-label", "Link");
    const copy = btn("Copy", "Copy the link", () => navigator.clipboard?.writeText(url).then(() => notify("Link copied")));
    const revoke = btn("Revoke", `Revoke the link to ${share.name}`, () => send({ type: "REVOKE_SHARE", shareId: share.id }));
    const row = el("div", "share-link");
    row.dataset.shareId = share.id;
    row.append(el("span", "", `${share.name}${share.public ? " (public)" : ""}`), field, copy, revoke);
    return row;
  }

  // ---- ratings on replies ----
  function drawRating(li) {
    const r = ratings.get(li.dataset.id);
    for (const b of li.querySelectorAll("[data-rating]")) b.setAttribute("aria-pressed", String(r?.rating === b.dataset.rating));
    li.querySelector(".rating-comment")?.remove();
    if (r?.comment) li.querySelector(".actions").after(el("small", "rating-comment", `Your feedback: ${r.comment}`));
  }
  function rate(li, rating) {
    const had = ratings.get(li.dataset.id);
    if (had?.rating === rating) return send({ type: "RATE_REPLY", chatId: current(), messageId: li.dataset.id, rating: null });
    const comment = rating === "down" ? prompt("What was wrong? (optional)") : null;
    send({ type: "RATE_REPLY", chatId: current(), messageId: li.dataset.id, rating, ...(comment?.trim() ? { comment } : {}) });
  }

  return {
    /** The chat list as shown: the chosen folder's (or the pinned) chats, pinned first. */
    arrange(list) {
      const shown = list.filter((c) => (scope === "" ? true : scope === "pinned" ? c.pinned : c.folderId === scope));
      return [...shown.filter((c) => c.pinned), ...shown.filter((c) => !c.pinned)];
    },
    /** A chat's button in the list: a pin mark. */
    decorateChat(b, chat) {
      if (chat.pinned) b.prepend(Object.assign(el("span", "pin", "📌"), { title: "Pinned" }));
      if (chat.temporary)
        b.append(Object.assign(el("span", "badge temporary", "temporary"), { title: "Deleted when you close your last tab" }));
    },
    /** The chat menu names what Pin would do to the chat on screen. */
    menuOpened() {
      const chat = chats().find((c) => c.id === current());
      items.pin.textContent = chat?.pinned ? "Unpin" : "Pin";
      // A temporary chat can be kept; it cannot be shared until it is.
      items.keep.hidden = !chat?.temporary;
      items.share.hidden = !!chat?.temporary;
    },
    /** A stored reply gets 👍 / 👎 (its rating from history, if any). */
    decorateMessage(li, m) {
      if (m.role !== "assistant" || m.streaming) return;
      if (m.feedback) ratings.set(m.id, m.feedback);
      else ratings.delete(m.id);
      const actions = li.querySelector(".actions");
      for (const [rating, text, label] of [
        ["up", "👍", "Good reply"],
        ["down", "👎", "Bad reply"],
      ]) {
        const b = btn(text, label, () => rate(li, rating));
        b.dataset.rating = rating;
        b.classList.add("rate");
        actions.append(b);
      }
      drawRating(li);
    },
    /** SEARCH limited to the folder being shown. */
    searchScope: () => (scope && scope !== "pinned" ? { folderId: scope } : {}),
    /** The socket (re)opened. */
    opened: () => send({ type: "GET_FOLDERS" }),
    on: {
      FOLDERS(f) {
        folders = f.folders;
        drawFolders();
        rerender();
      },
      FEEDBACK(f) {
        if (f.feedback) ratings.set(f.messageId, f.feedback);
        else ratings.delete(f.messageId);
        const li = document.querySelector(`#messages li[data-id="${CSS.escape(f.messageId)}"]`);
        if (li) drawRating(li);
      },
      SHARE: (f) =>
        openDialog(
          "Link created",
          el(
            "p",
            "",
            f.share.public ? "Anyone with this link can read it." : "Anyone signed in to this server can read it with this link.",
          ),
          linkRow(f.share),
        ),
      SHARES: (f) =>
        openDialog("Shared links", ...(f.shares.length ? f.shares.map(linkRow) : [el("p", "", "You have not shared any chat.")])),
      SHARE_REVOKED(f) {
        dialog.querySelector(`[data-share-id="${CSS.escape(f.shareId)}"]`)?.remove();
        notify("Link revoked: it no longer opens the chat.");
      },
    },
  };
}
