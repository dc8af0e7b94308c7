// The dashboard's sign-in, shared by every page (app.js, orders.js, stats.js): tokens in this tab's
// sessionStorage (one tab, one login), and an API call that, when the access token has expired,
// refreshes it once and asks again.
export const $ = (sel) => document.querySelector(sel);

export const session = {
  get access() { return sessionStorage.getItem("access"); },
  get refresh() { return sessionStorage.getItem("refresh"); },
  get expires() { return Number(sessionStorage.getItem("expires")); },
  get user() { return JSON.parse(sessionStorage.getItem("user") || "null"); },
  save(tokens) {
    sessionStorage.setItem("access", tokens.access_token);
    sessionStorage.setItem("refresh", tokens.refresh_token);
    sessionStorage.setItem("expires", String(Date.now() + tokens.expires_in * 1000));
  },
  clear() { sessionStorage.clear(); },
};

export async function refreshTokens() {
  if (!session.refresh) return false;
  const r = await fetch("/api/auth/refresh", { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ refresh_token: session.refresh }) });
  if (!r.ok) return false;
  session.save(await r.json());
  return true;
}

export async function api(path, options = {}) {
  const headers = { ...(options.headers || {}), Authorization: `Bearer ${session.access}` };
  if (options.body) headers["Content-Type"] = "application/json";
  let r = await fetch(path, { ...options, headers });
  if (r.status === 401 && await refreshTokens()) {
    headers.Authorization = `Bearer ${session.access}`;
    r = await fetch(path, { ...options, headers });
  }
  return r;
}

// For the pages beside the dashboard: the signed-in user (GET /api/me), named in #whoami; null, with
// #signed-out shown, when this tab has not signed in on the dashboard or its tokens are no longer good.
export async function signedInUser() {
  const answer = session.access ? await api("/api/me") : null;
  if (!answer?.ok) { $("#signed-out").hidden = false; return null; }
  const me = await answer.json();
  $("#whoami").textContent = `${me.username} (${me.role})`;
  return me;
}

// Keeps the event stream (/api/ws) open for a page. `on.message(m)` gets each message, `on.state(open)`
// hears it open and close, `on.after()` names the event id to resume after (null: from now) and
// `on.signedOut()` is called when the tokens cannot be refreshed. Each (re)connect reads the access
// token as it is then; a socket closed because its token ran out (4001), or a token this tab knows
// has expired, is refreshed with `renew` first, so a reconnect never offers the stale token again.
// Between tries the wait doubles, 0.5 s up to 10 s. Returns { close() } to stop for good.
export function keepEventsOpen(on, renew = refreshTokens) {
  let socket = null, stopped = false, expired = false, delay = 500;
  const again = () => { setTimeout(connect, delay); delay = Math.min(delay * 2, 10000); };
  async function connect() {
    if (stopped || !session.access) return;
    try {
      if ((expired || session.expires <= Date.now()) && !(await renew())) { on.signedOut(); return; }
    } catch { again(); return; }                     // the node is unreachable: try again later
    if (stopped) return;
    expired = false;
    const proto = location.protocol === "https:" ? "wss" : "ws";
    const after = on.after?.() ?? null;
    socket = new WebSocket(`${proto}://${location.host}/api/ws?token=${encodeURIComponent(session.access)}` +
                           (after === null ? "" : `&after=${after}`));
    socket.onopen = () => { delay = 500; on.state?.(true); };
    socket.onmessage = (msg) => on.message(JSON.parse(msg.data));
    socket.onclose = (ev) => {
      socket = null;
      on.state?.(false);
      if (stopped) return;
      expired = ev.code === 4001;
      again();
    };
  }
  connect();
  return { close() { stopped = true; if (socket) socket.close(); } };
}
