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
