// The Devices panel: the signed-in person's voice devices (GET_DEVICES, live DEVICE_UPDATED) under the
// chat list, each with its state, its last question, a link to its chat, and a box to say something
// through it (SEND_TO_DEVICE). Everything from the server is shown with textContent.

const el = (tag, className = "", text = "") => Object.assign(document.createElement(tag), { className, textContent: text });

const ago = (iso) => {
  const s = Math.round((Date.now() - Date.parse(iso)) / 1000);
  if (!Number.isFinite(s)) return "";
  if (s < 60) return "just now";
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86_400) return `${Math.round(s / 3600)} h ago`;
  return new Date(iso).toLocaleDateString();
};

/** What a device's state line says: IoT Hub's word when it reported one, else when it last asked. */
export function stateOf(d) {
  if (d.online === true) return "online";
  if (d.online === false) return d.lastSeen ? `offline · asked ${ago(d.lastSeen)}` : "offline";
  return d.lastSeen ? `asked ${ago(d.lastSeen)}` : "never asked anything";
}

/**
 * Builds the panel at the end of `sidebar`. `request(frame)` resolves with the answer (or null when
 * offline); `open(chatId)` shows a chat. Returns `receive(frame)` for DEVICES and DEVICE_UPDATED, and
 * `refresh()` to ask for the list (on every (re)connect).
 */
export function createDevices({ sidebar, send, request, open }) {
  const devices = new Map();
  const panel = el("details", "devices");
  panel.id = "devices";
  const summary = el("summary", "", "Devices");
  const list = el("ul", "device-list");
  list.setAttribute("aria-label", "Devices");
  panel.append(summary, list);
  sidebar.append(panel);

  function render() {
    summary.textContent = `Devices (${devices.size})`;
    panel.hidden = devices.size === 0;
    list.replaceChildren(...[...devices.values()].map(item));
  }

  function item(d) {
    const li = el("li", "device");
    li.dataset.id = d.id;
    const name = el("strong", "device-name", d.label ?? d.id);
    const state = el("small", `device-state ${d.online === true ? "on" : d.online === false ? "off" : ""}`, stateOf(d));
    li.append(name, " ", state);
    if (d.lastQuestion) li.append(el("p", "device-question", `“${d.lastQuestion}”`));
    if (d.chatId) {
      const chat = Object.assign(el("button", "act", "Open chat"), { type: "button", onclick: () => open(d.chatId) });
      li.append(chat);
    }
    const form = el("form", "device-say");
    const input = Object.assign(el("input"), { placeholder: `Say through ${d.label ?? d.id}…`, required: true, maxLength: 2000 });
    input.setAttribute("aria-label", `Say something through ${d.label ?? d.id}`);
    const go = Object.assign(el("button", "", "Say"), { type: "submit" });
    const status = el("small", "device-status");
    status.setAttribute("role", "status");
    form.append(input, go, status);
    form.onsubmit = async (e) => {
      e.preventDefault();
      const text = input.value.trim();
      if (!text) return;
      go.disabled = true;
      status.textContent = "sending…";
      const r = await request({ type: "SEND_TO_DEVICE", deviceId: d.id, text });
      go.disabled = false;
      if (!r) return void (status.textContent = "offline: not sent");
      if (r.type === "ERROR") return void (status.textContent = r.error);
      input.value = "";
      status.textContent = r.queued ? `queued: it hears it when it connects (until ${new Date(r.expiresAt).toLocaleTimeString()})` : "sent";
    };
    li.append(form);
    return li;
  }

  return {
    refresh: () => send({ type: "GET_DEVICES" }),
    receive(f) {
      if (f.type === "DEVICES") {
        devices.clear();
        for (const d of f.devices) devices.set(d.id, d);
      } else if (f.type === "DEVICE_UPDATED") {
        // Only what changed is sent: merged into what is known; a device new to the list goes first.
        const known = devices.get(f.device.id);
        if (known) Object.assign(known, f.device);
        else {
          const rest = [...devices];
          devices.clear();
          devices.set(f.device.id, { ...f.device });
          for (const [id, d] of rest) devices.set(id, d);
        }
      } else return;
      render();
    },
  };
}
