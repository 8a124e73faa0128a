// Today's model use against the person's budget (GET_USAGE), a line under the chat list. Asked on
// every (re)connect and shortly after each reply ends (a record is written just after its call).

const fmt = (n) => Number(n).toLocaleString();

/** What the line says for a USAGE frame's `today`. */
export function usageText(today) {
  const resets = new Date(today.resetsAt).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  if (today.budget === null || today.budget === undefined) return `Today: ${fmt(today.used)} tokens`;
  const left = Math.max(0, today.budget - today.used);
  return `Today: ${fmt(today.used)} of ${fmt(today.budget)} tokens${left === 0 ? ` · renews at ${resets}` : ""}`;
}

/**
 * Builds the line at the end of `sidebar`. `request(frame)` resolves with the answer (or null while
 * offline). Returns `refresh()` (now) and `soon()` (after a reply: once, a moment later).
 */
export function createUsage({ sidebar, request }) {
  const line = Object.assign(document.createElement("p"), { id: "usage", className: "usage", hidden: true });
  line.setAttribute("role", "status");
  const meter = document.createElement("meter");
  meter.min = 0;
  const text = document.createElement("span");
  line.append(text, meter);
  sidebar.append(line);
  let timer;

  async function refresh() {
    const f = await request({ type: "GET_USAGE", days: 1 });
    if (!f || f.type !== "USAGE") return;
    text.textContent = usageText(f.today);
    meter.hidden = f.today.budget === null;
    if (f.today.budget !== null) {
      meter.max = f.today.budget;
      meter.value = Math.min(f.today.used, f.today.budget);
      meter.high = f.today.budget * 0.8;
    }
    line.hidden = false;
  }
  return {
    refresh,
    soon() {
      clearTimeout(timer);
      timer = setTimeout(refresh, 1500);
    },
  };
}
