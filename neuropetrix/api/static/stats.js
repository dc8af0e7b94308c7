// NeuroPETRIX department page: studies per day (an SVG bar chart drawn here, no library), turnaround
// medians and 90th percentiles, per-destination job counts and queue depth, from GET /api/stats; read
// again whenever the event stream says something happened; notifications with their Acknowledge
// buttons and the on-call list (editable by administrators). Sign-in is the dashboard's (sessionStorage).
import { $, api, keepEventsOpen, signedInUser } from "/static/session.js";

const SVG = "http://www.w3.org/2000/svg";
const SPANS = { image_to_analysis: "Last image → analysis done", analysis_to_signed: "Analysis → signed",
                signed_to_delivered: "Signed → delivered", image_to_delivered: "Last image → delivered" };

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 120) return `${seconds.toFixed(1)} s`;
  if (seconds < 7200) return `${(seconds / 60).toFixed(1)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

function cells(tbody, values) {
  const tr = document.createElement("tr");
  for (const v of values) {
    const td = document.createElement("td");
    td.textContent = String(v);
    tr.appendChild(td);
  }
  tbody.appendChild(tr);
  return tr;
}

function drawPerDay(days) {
  const svg = $("#per-day-chart");
  svg.replaceChildren();
  const width = 720, height = 180, top = 16, bottom = 28;
  const most = Math.max(1, ...days.map((d) => d.studies));
  const step = width / days.length;
  days.forEach((d, i) => {
    const h = (height - top - bottom) * d.studies / most;
    const bar = document.createElementNS(SVG, "rect");
    Object.entries({ x: i * step + 2, y: height - bottom - h, width: step - 4, height: h, fill: "#2b6cb0" })
      .forEach(([k, v]) => bar.setAttribute(k, v));
    bar.dataset.date = d.date;
    bar.dataset.studies = d.studies;
    const title = document.createElementNS(SVG, "title");
    title.textContent = `${d.date}: ${d.studies}`;
    bar.appendChild(title);
    const label = document.createElementNS(SVG, "text");
    Object.entries({ x: i * step + step / 2, y: height - 10, "text-anchor": "middle", "font-size": 10 })
      .forEach(([k, v]) => label.setAttribute(k, v));
    label.textContent = d.date.slice(5);
    const count = document.createElementNS(SVG, "text");
    Object.entries({ x: i * step + step / 2, y: height - bottom - h - 3, "text-anchor": "middle", "font-size": 11 })
      .forEach(([k, v]) => count.setAttribute(k, v));
    count.textContent = d.studies ? String(d.studies) : "";
    svg.append(bar, label, count);
  });
  $("#per-day-total").textContent = `${days.reduce((n, d) => n + d.studies, 0)} studies in ${days.length} days`;
}

function show(stats) {
  drawPerDay(stats.studies_per_day);
  const turnaround = $("#turnaround tbody");
  turnaround.replaceChildren();
  for (const [name, label] of Object.entries(SPANS)) {
    const s = stats.turnaround_seconds[name];
    const tr = cells(turnaround, [label, s.count, duration(s.median), duration(s.p90)]);
    tr.dataset.span = name;
    tr.dataset.median = s.median ?? "";
    tr.dataset.p90 = s.p90 ?? "";
  }
  const a = stats.analysis_seconds;
  $("#analysis-seconds").textContent = `${a.count} done, median ${duration(a.median)}, 90th percentile ${duration(a.p90)}`;
  const destinations = $("#destinations tbody");
  destinations.replaceChildren();
  for (const [name, d] of Object.entries(stats.destinations)) {
    const tr = cells(destinations, [name, d.received, d.queued, d.sent, d.failed]);
    tr.dataset.destination = name;
    if (d.failed) tr.cells[4].className = "state-failed";
  }
  const depth = Object.entries(stats.queue_depth);
  $("#queue-depth").textContent = depth.length ? depth.map(([kind, n]) => `${kind} ${n}`).join(", ") : "empty";
}

let me = { permissions: [] };

async function loadNotifications() {
  const admin = me.permissions.includes("users.manage");
  const r = await api(`/api/notifications?limit=50${admin ? "&all=1" : ""}`);
  if (!r.ok) return;
  const tbody = $("#notifications tbody");
  tbody.replaceChildren();
  for (const n of (await r.json()).items) {
    const tr = cells(tbody, [n.id, n.user, n.priority, n.channels.join(", "), n.state,
      (n.created_at || "").slice(0, 16).replace("T", " "), n.acked_by, ""]);
    tr.dataset.notification = n.id;
    if (n.state !== "acknowledged" && (admin || n.user === me.username)) {
      const button = document.createElement("button");
      button.textContent = "Acknowledge";
      button.onclick = async () => {
        const answer = await api(`/api/notifications/${n.id}/ack`, { method: "POST" });
        if (!answer.ok) $("#page-error").textContent = await answer.text();
        await loadNotifications();
      };
      tr.cells[7].appendChild(button);
    }
  }
  const oncall = await (await api("/api/oncall")).json();
  $("#oncall-list").textContent = oncall.users.length ? oncall.users.join(" → ") : "nobody (urgent notifications do not escalate)";
  const form = $("#oncall-form");
  form.hidden = !admin;
  form.users.value = oncall.users.join(", ");
}

async function saveOncall(event) {
  event.preventDefault();
  const users = $("#oncall-form").users.value.split(",").map((u) => u.trim()).filter(Boolean);
  const r = await api("/api/oncall", { method: "PUT", body: JSON.stringify({ users }) });
  $("#page-error").textContent = r.ok ? "" : await r.text();
  await loadNotifications();
}

async function load() {
  const r = await api("/api/stats?days=14");
  if (r.status === 401) { $("#signed-out").hidden = false; return; }
  if (!r.ok) { $("#page-error").textContent = await r.text(); return; }
  $("#page-error").textContent = "";
  show(await r.json());
  await loadNotifications();
  document.body.dataset.loaded = String(Number(document.body.dataset.loaded || 0) + 1);
}

function live() {
  // any event may change a number: read the stats again, at most once a second
  let pending = null;
  keepEventsOpen({
    message: (m) => {
      if (m.type !== "event" || pending) return;
      pending = setTimeout(() => { pending = null; load(); }, 1000);
    },
    signedOut: () => { $("#signed-out").hidden = false; },
  });
}

async function start() {
  me = await signedInUser();
  if (!me) return;
  $("#oncall-form").onsubmit = saveOncall;
  await load();
  live();
}

start();
