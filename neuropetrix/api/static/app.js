// NeuroPETRIX dashboard: plain ES modules, no build step. Tokens live in sessionStorage (one tab, one
// login); the access token is refreshed before it expires; the WebSocket resumes from the last event id.
import { $, api as call, keepEventsOpen, refreshTokens as renew, session } from "/static/session.js";

let events = null, lastEventId = null, refreshTimer = null, reloadTimer = null;
const freshStudies = new Set();

async function api(path, options = {}) {
  const r = await call(path, options);
  if (r.status === 401) { signedOut(); throw new Error("signed out"); }
  return r;
}

async function refreshTokens() {
  if (!(await renew())) return false;
  scheduleRefresh();
  return true;
}

function scheduleRefresh() {
  clearTimeout(refreshTimer);
  const wait = Math.max(5000, session.expires - Date.now() - 60000);
  refreshTimer = setTimeout(refreshTokens, wait);
}

function signedOut() {
  session.clear();
  if (events) { events.close(); events = null; }
  clearTimeout(refreshTimer);
  $("#nav").hidden = true;
  location.hash = "#/login";
}

function cell(row, text, cls) {
  const td = row.insertCell();
  td.textContent = text ?? "";
  if (cls) td.className = cls;
  return td;
}

function show(view) {
  for (const s of document.querySelectorAll("main > section")) s.hidden = s.id !== `view-${view}`;
}

// ---- login ----
$("#login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const form = new FormData(ev.target);
  const r = await fetch("/api/auth/login", { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ username: form.get("username"), password: form.get("password") }) });
  const body = await r.json();
  if (!r.ok) { $("#login-error").textContent = body.message; return; }
  session.save(body);
  $("#login-error").textContent = "";
  ev.target.reset();
  await startSession();
  location.hash = "#/studies";
});

async function startSession() {
  const me = await (await api("/api/me")).json();
  sessionStorage.setItem("user", JSON.stringify(me));
  $("#whoami").textContent = `${me.username} (${me.role})`;
  $("#nav-jobs").hidden = !me.permissions.includes("jobs.read");
  $("#nav").hidden = false;
  scheduleRefresh();
  connect();
}

$("#logout").addEventListener("click", async () => {
  await fetch("/api/auth/logout", { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ refresh_token: session.refresh }) });
  signedOut();
});
$("#logout-all").addEventListener("click", async () => {
  await api("/api/auth/logout-all", { method: "POST" });
  signedOut();
});

// ---- live events ----
function connect() {
  if (events) events.close();
  events = keepEventsOpen({
    after: () => lastEventId,
    state: (open) => { $("#live").className = open ? "live on" : "live off"; },
    message: (m) => {
      if (m.type === "hello") {   // (re)connected: reload once, in case something changed while away
        if (lastEventId === null) lastEventId = m.after;
        onEvent(m);
        return;
      }
      if (m.type === "heartbeat") { lastEventId = Math.max(lastEventId ?? 0, m.last_event_id); return; }
      lastEventId = m.id;
      onEvent(m);
    },
    signedOut,
  }, refreshTokens);
}

const awaitingReview = new Set();
function onEvent(event) {
  if (event.kind === "review.ready" && session.user?.permissions.includes("results.sign")) awaitingReview.add(event.study_uid);
  if (event.kind === "review.signed" || event.kind === "review.version") awaitingReview.delete(event.study_uid);
  $("#review-badge").hidden = awaitingReview.size === 0;
  $("#review-badge").textContent = `${awaitingReview.size} to review`;
  if (event.study_uid) freshStudies.add(event.study_uid);
  clearTimeout(reloadTimer);
  reloadTimer = setTimeout(() => route(true), 150);   // many events in a burst: one reload
}

// ---- studies ----
async function loadStudies() {
  const params = new URLSearchParams();
  for (const [k, v] of new FormData($("#filters"))) if (v) params.set(k, v);
  params.set("limit", "100");
  const page = await (await api(`/api/studies?${params}`)).json();
  const body = $("#studies tbody");
  body.replaceChildren();
  for (const s of page.items) {
    const row = body.insertRow();
    row.className = "link" + (freshStudies.has(s.study_uid) ? " fresh" : "");
    row.dataset.uid = s.study_uid;
    row.onclick = () => { location.hash = `#/study/${s.study_uid}`; };
    cell(row, s.patient_name.replaceAll("^", " "));
    cell(row, s.patient_id);
    cell(row, s.accession_number);
    cell(row, s.study_date);
    cell(row, s.modalities.join("/"));
    cell(row, s.series);
    cell(row, s.instances);
    cell(row, s.state, `state-${s.state}`);
    cell(row, s.last_received_at.replace("T", " ").slice(0, 19));
  }
  freshStudies.clear();
  $("#studies-count").textContent = `${page.items.length} of ${page.total} studies`;
}
$("#filters").addEventListener("input", () => loadStudies());

// ---- one study ----
let mipUrl = null;
async function loadStudy(uid, refresh) {
  const r = await api(`/api/studies/${uid}`);
  if (!r.ok) { $("#study-title").textContent = (await r.json()).message; return; }
  const s = await r.json();
  $("#study-title").textContent = `${s.patient_name.replaceAll("^", " ")} — ${s.description || s.study_uid}`;
  $("#study-meta").textContent = `ID ${s.patient_id} · accession ${s.accession_number} · ${s.study_date} · ${s.state} · `;
  const timeline = document.createElement("a");
  timeline.href = `/static/patient.html?patient_id=${encodeURIComponent(s.patient_id)}`;
  timeline.textContent = "the patient's studies over time";
  $("#study-meta").appendChild(timeline);
  const series = $("#series tbody");
  series.replaceChildren();
  for (const se of s.series) {
    const row = series.insertRow();
    [se.series_number, se.modality, se.description, se.instances, se.calling_ae].forEach((v) => cell(row, v));
  }
  const lesions = $("#lesions tbody");
  lesions.replaceChildren();
  const a = s.analysis;
  $("#analysis-summary").textContent = a
    ? `${a.lesion_count} lesion(s), SUVmax ${a.suv_max?.toFixed(2) ?? "–"}, TMTV ${a.tmtv_ml.toFixed(1)} ml, TLG ${a.tlg_total.toFixed(1)}`
    : ("analysis" in s ? "not analysed yet" : "results are not shown to your role");
  for (const les of a?.lesions ?? []) {
    const row = lesions.insertRow();
    [les.label, les.suv_max.toFixed(2), les.suv_mean.toFixed(2), les.suv_peak.toFixed(2),
     les.volume_ml.toFixed(2), les.tlg.toFixed(1)].forEach((v) => cell(row, v));
  }
  const files = s.files || {};
  const img = $("#mip");
  if (files["mip.png"] && (!refresh || !img.src)) {
    await showMip(files["mip.png"]);
  } else if (!files["mip.png"]) {
    img.removeAttribute("src");
    $("#mip-caption").textContent = "no picture yet";
  }
  const downloads = $("#downloads");
  downloads.replaceChildren();
  for (const [name, url] of Object.entries(files)) {
    if (name === "mip.png") continue;
    const b = document.createElement("button");
    b.textContent = name;
    b.onclick = async () => {
      const link = document.createElement("a");
      link.href = URL.createObjectURL(await (await api(url)).blob());
      link.download = `${uid}-${name}`;
      link.click();
    };
    downloads.append(b, " ");
  }
  const deliveries = $("#deliveries tbody");
  deliveries.replaceChildren();
  for (const j of s.deliveries ?? []) {
    const row = deliveries.insertRow();
    cell(row, j.id); cell(row, j.kind); cell(row, j.destination);
    cell(row, j.state, `state-${j.state}`); cell(row, `${j.attempts}/${j.max_attempts}`); cell(row, j.last_error);
  }
  await loadReview(uid);
  const events = $("#events");
  events.replaceChildren();
  for (const e of s.events) {
    const li = document.createElement("li");
    li.textContent = `${e.created_at.replace("T", " ").slice(0, 19)}  ${e.kind}`;
    events.append(li);
  }
}

async function showMip(url) {
  const blob = await (await api(url)).blob();
  if (mipUrl) URL.revokeObjectURL(mipUrl);
  mipUrl = URL.createObjectURL(blob);
  $("#mip").src = mipUrl;
  $("#mip-caption").textContent = "MIP";
}

// ---- review and sign-off ----
const keyImages = new Map();       // url → object URL, so a reload does not fetch them again
async function keyImage(url) {
  if (!keyImages.has(url)) {
    const r = await api(url);
    keyImages.set(url, r.ok ? URL.createObjectURL(await r.blob()) : null);
  }
  return keyImages.get(url);
}

function decisionSelect(uid, region, options, editable) {
  const select = document.createElement("select");
  select.className = "decision";
  select.dataset.label = region.label;
  for (const o of options) select.add(new Option(o, o, false, o === region.decision));
  select.disabled = !editable;
  select.onchange = () => postReview(uid, { decisions: [{ label: region.label, decision: select.value }] });
  return select;
}

async function postReview(uid, body) {
  const r = await api(`/api/studies/${uid}/review`, { method: "POST", body: JSON.stringify(body) });
  const answer = await r.json();
  $("#review-message").textContent = r.ok ? "saved" : answer.message;
  if (r.ok) await showReview(uid, answer);
}

async function loadReview(uid) {
  const r = await api(`/api/studies/${uid}/review`);
  $("#review").hidden = !r.ok;
  if (r.ok) await showReview(uid, await r.json());
}

async function showReview(uid, rv) {
  const can = session.user?.permissions ?? [];
  const mip = $("#mip");                       // a new version has its own picture (what was kept)
  const shown = `${uid}/${rv.version}`;
  if (mip.dataset.shown?.startsWith(`${uid}/`) && mip.dataset.shown !== shown) await showMip(`/api/studies/${uid}/mip.png`);
  mip.dataset.shown = shown;
  const editable = can.includes("results.review") && rv.pending_version === null;
  const status = $("#review-status");
  status.textContent = `${rv.status.toUpperCase()} · version ${rv.version}` +
    (rv.pending_version ? ` · version ${rv.pending_version} being made` : "");
  status.className = `status status-${rv.status}`;
  const t = rv.totals;
  $("#review-totals").textContent = `Kept: ${t.lesion_count} lesion(s), TMTV ${t.tmtv_ml.toFixed(1)} ml, ` +
    `TLG ${t.tlg_total.toFixed(1)}, SUVmax ${t.suv_max?.toFixed(2) ?? "–"}`;
  const body = $("#review-lesions tbody");
  body.replaceChildren();
  for (const les of rv.lesions) {
    const row = body.insertRow();
    row.className = `decision-${les.decision}`;
    row.dataset.label = les.label;
    const number = cell(row, les.label);
    number.className = "link";
    number.title = "show where it lies on the MIP";
    number.onclick = async () => {
      const src = await keyImage(`/api/studies/${uid}/review/mip-${les.label}.png?v=${rv.candidates_version}`);
      if (src) { $("#mip").src = src; $("#mip-caption").textContent = `MIP: lesion ${les.label} outlined`; }
    };
    const img = document.createElement("img");
    img.className = "key";
    img.alt = `key image of lesion ${les.label}`;
    const src = await keyImage(`/api/studies/${uid}/review/key-${les.label}.png?v=${rv.candidates_version}`);
    if (src) img.src = src;
    row.insertCell().append(img);
    [les.suv_max.toFixed(2), les.suv_peak.toFixed(2), les.volume_ml.toFixed(2), les.tlg.toFixed(1),
     les.centroid_mm.map((c) => c.toFixed(0)).join(", ")].forEach((v) => cell(row, v));
    row.insertCell().append(decisionSelect(uid, les, ["lesion", "rejected", "physiological"], editable));
  }
  const physio = $("#review-physio tbody");
  physio.replaceChildren();
  $("#review-physio-none").hidden = rv.physiological.length > 0;
  for (const p of rv.physiological) {
    const row = physio.insertRow();
    row.className = "decision-physiological";
    [p.label, p.organ ?? p.name ?? "", p.suv_max?.toFixed(2) ?? "", p.volume_ml?.toFixed(1) ?? "",
     [].concat(p.evidence ?? []).join("; ")].forEach((v) => cell(row, v));
    row.insertCell().append(decisionSelect(uid, p, ["physiological"], false));
  }
  $("#review-actions").hidden = !can.includes("results.review");
  $("#review-sign").hidden = !can.includes("results.sign");
  for (const b of ["#review-save", "#review-sign", "#reanalyse"]) $(b).disabled = !editable;
  if (document.activeElement !== $("#impression")) $("#impression").value = rv.impression;
  $("#review-save").onclick = () => postReview(uid, { impression: $("#impression").value });
  $("#review-sign").onclick = async () => {
    await postReview(uid, { impression: $("#impression").value });
    const r = await api(`/api/studies/${uid}/sign`, { method: "POST" });
    const answer = await r.json();
    $("#review-message").textContent = r.ok ? `signed: version ${answer.version} (${answer.status}) is being made and delivered`
      : answer.message;
    await loadReview(uid);
  };
  $("#reanalyse").onclick = () => {
    const analysis = { method: $("#re-method").value };
    if ($("#re-threshold").value) analysis.threshold = Number($("#re-threshold").value);
    postReview(uid, { analysis });
  };
  const versions = $("#versions tbody");
  versions.replaceChildren();
  for (const v of rv.versions) {
    const row = versions.insertRow();
    row.dataset.version = v.version;
    cell(row, v.version); cell(row, v.status, `status status-${v.status}`);
    cell(row, v.signer ? `${v.signer.display_name}, ${v.signer.organisation}` : "—");
    cell(row, v.created_at.replace("T", " ").slice(0, 19));
    cell(row, v.summary.lesion_count); cell(row, v.summary.tmtv_ml?.toFixed(1));
    const td = cell(row, "");
    td.className = "deliveries";
    td.textContent = v.deliveries.map((d) => `${d.kind}→${d.destination}: ${d.state}`).join(" · ") || "first delivery (see below)";
  }
  const audit = $("#audit");
  audit.replaceChildren();
  for (const a of rv.audit) {
    const li = document.createElement("li");
    li.textContent = `${a.at.replace("T", " ").slice(0, 19)}  ${a.username ?? "node"}  ${a.action}  v${a.version}  ` +
      JSON.stringify(a.detail);
    audit.append(li);
  }
}

// ---- jobs (admins retry) ----
async function loadJobs() {
  const params = new URLSearchParams({ limit: "200" });
  const state = new FormData($("#job-filters")).get("state");
  if (state) params.set("state", state);
  const r = await api(`/api/jobs?${params}`);
  const body = $("#jobs tbody");
  body.replaceChildren();
  if (!r.ok) { cell(body.insertRow(), (await r.json()).message); return; }
  const canRetry = session.user?.permissions.includes("jobs.retry");
  for (const j of (await r.json()).items) {
    const row = body.insertRow();
    cell(row, j.id); cell(row, j.kind); cell(row, j.study_uid); cell(row, j.destination);
    cell(row, j.state, `state-${j.state}`); cell(row, `${j.attempts}/${j.max_attempts}`); cell(row, j.last_error);
    const td = row.insertCell();
    if (canRetry && j.state === "failed") {
      const b = document.createElement("button");
      b.textContent = "Retry";
      b.onclick = async () => { await api(`/api/jobs/${j.id}/retry`, { method: "POST" }); loadJobs(); };
      td.append(b);
    }
  }
}
$("#job-filters").addEventListener("input", () => loadJobs());

// ---- routing ----
async function route(refresh = false) {
  if (!session.access) { show("login"); return; }
  const [, view, arg] = location.hash.split("/");
  if (view === "study" && arg) { show("study"); await loadStudy(arg, refresh); }
  else if (view === "jobs") { show("jobs"); await loadJobs(); }
  else { show("studies"); await loadStudies(); }
}
window.addEventListener("hashchange", () => route());

(async () => {
  if (session.access) await startSession().catch(() => signedOut());
  await route();
})();
