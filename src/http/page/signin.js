// Signing in by link (/?token=<token>). The token leaves the address bar the moment this module is
// loaded, before the page does anything else (no history entry, no bookmark, no screenshot keeps it).
// It becomes the tab's token only when that cannot silently make the tab someone else: the tab holds
// no token, or the same one, or one of the same user, or one that no longer works. Otherwise the
// person is asked first, shown both names: a link from someone else would have everything typed next
// land in the sender's account.

const linkToken = takeFromAddressBar();

function takeFromAddressBar() {
  const params = new URLSearchParams(location.search);
  if (!params.has("token")) return null;
  const token = params.get("token");
  params.delete("token");
  history.replaceState(history.state, "", location.pathname + (params.size ? `?${params}` : "") + location.hash);
  return token || null;
}

/** Who a token signs in as: {state: "ok", me}, "refused" (401) or "unknown" (unreachable, or no answer). */
async function whoIs(token) {
  try {
    const res = await fetch("/api/me", { headers: { Authorization: `Bearer ${token}` }, cache: "no-store" });
    if (res.status === 401) return { state: "refused" };
    const me = res.ok ? await res.json() : null;
    return me?.id ? { state: "ok", me } : { state: "unknown" };
  } catch {
    return { state: "unknown" };
  }
}

const nameOf = (who) => (who.state === "ok" ? `"${who.me.name}"` : "an account that could not be checked");

function notice(text) {
  const el = document.getElementById("notice");
  if (el) Object.assign(el, { textContent: text, hidden: false });
}

/**
 * Settles the link's token, if the address had one, into sessionStorage[key]; resolves once the tab's
 * token is final. `ask` shows a question and answers true to go ahead (a test or another UI may pass its own).
 */
export async function adoptLinkToken(key, ask = (text) => confirm(text)) {
  if (!linkToken) return;
  const held = sessionStorage.getItem(key);
  const adopt = () => sessionStorage.setItem(key, linkToken);
  if (!held || held === linkToken) return adopt();
  const [current, offered] = await Promise.all([whoIs(held), whoIs(linkToken)]);
  if (offered.state === "refused") {
    return notice(`The sign-in link's token was refused. You are still signed in as ${nameOf(current)}.`);
  }
  // The tab's own token no longer signs anyone in: nobody to protect. The same user: nothing changes hands.
  if (current.state === "refused") return adopt();
  if (current.state === "ok" && offered.state === "ok" && current.me.id === offered.me.id) return adopt();
  const question =
    `This link signs this tab in as ${nameOf(offered)}.\n` +
    `You are signed in here as ${nameOf(current)}.\n\n` +
    `Switch to ${nameOf(offered)}? Everything you send from this tab would then go to that account.`;
  if (ask(question)) return adopt();
  notice(`You are still signed in as ${nameOf(current)}; the link's sign-in was not used.`);
}
