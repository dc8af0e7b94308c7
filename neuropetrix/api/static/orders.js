// NeuroPETRIX orders page: the reconcile list (with the link action), orders, the worklist and the HL7
// messages received. It uses the dashboard's sign-in (tokens in this tab's sessionStorage); text from
// the server only ever goes into textContent.
import { $, api, signedInUser } from "/static/session.js";

let me = { permissions: [] };

function row(tbody, cells) {
  const tr = document.createElement("tr");
  for (const text of cells) {
    const td = document.createElement("td");
    td.textContent = text ?? "";
    tr.appendChild(td);
  }
  tbody.appendChild(tr);
  return tr;
}

const person = (pn) => (pn || "").split("^").filter(Boolean).reverse().join(" ");
const stamp = (s) => (s && s.length >= 12 ? `${s.slice(0, 4)}-${s.slice(4, 6)}-${s.slice(6, 8)} ${s.slice(8, 10)}:${s.slice(10, 12)}` : s);

async function loadOrders() {
  const status = new FormData($("#order-filters")).get("status");
  const r = await api(`/api/orders?limit=200${status ? `&status=${encodeURIComponent(status)}` : ""}`);
  if (!r.ok) return [];
  const { items } = await r.json();
  const tbody = $("#order-list tbody");
  tbody.replaceChildren();
  for (const o of items) {
    const tr = row(tbody, [o.id, stamp(o.scheduled_start), person(o.patient.name), o.patient.id, o.accession_number,
      o.placer_number, [o.procedure.code, o.sut.code].filter(Boolean).join(" / "), o.modality, o.station_ae, o.status]);
    tr.dataset.order = o.id;
    tr.cells[9].className = `state-${o.status.replace(" ", "-")}`;
  }
  return items;
}

async function loadReconcile(orders) {
  const r = await api("/api/reconcile?limit=200");
  const tbody = $("#reconcile-list tbody");
  tbody.replaceChildren();
  if (!r.ok) { $("#reconcile-count").textContent = `reconcile list: ${r.status}`; return; }
  const { items, total } = await r.json();
  const canLink = me.permissions.includes("orders.reconcile");
  for (const item of items) {
    const tr = row(tbody, [item.study.study_date, item.study.accession_number, person(item.study.patient_name),
      item.study.patient_id, item.state, item.differences.join(", "), item.held ? "yes" : "no", ""]);
    tr.dataset.uid = item.study_uid;
    if (!canLink) continue;
    const select = document.createElement("select");
    select.append(new Option("choose an order…", ""));
    for (const o of orders.filter((o) => !["cancelled", "discontinued"].includes(o.status))) {
      select.append(new Option(`#${o.id} ${o.accession_number} ${person(o.patient.name)} ${stamp(o.scheduled_start)}`, o.id));
    }
    if (item.order_id) select.value = String(item.order_id);
    const linkButton = document.createElement("button");
    linkButton.textContent = "Link";
    linkButton.onclick = () => decide(item.study_uid, { order_id: Number(select.value) }, select.value);
    const none = document.createElement("button");
    none.textContent = "No order";
    none.onclick = () => decide(item.study_uid, { unordered: true }, true);
    tr.cells[7].append(select, " ", linkButton, " ", none);
  }
  $("#reconcile-count").textContent = `${total} waiting`;
}

async function decide(uid, body, chosen) {
  if (!chosen) { $("#page-error").textContent = "choose an order first"; return; }
  const r = await api(`/api/reconcile/${encodeURIComponent(uid)}`, { method: "POST", body: JSON.stringify(body) });
  $("#page-error").textContent = r.ok ? "" : (await r.json()).message;
  await loadAll();
}

async function loadWorklist() {
  const form = new FormData($("#worklist-filters"));
  const params = new URLSearchParams();
  for (const key of ["date", "station"]) if (form.get(key)) params.set(key, form.get(key));
  const r = await api(`/api/worklist?${params}`);
  const tbody = $("#worklist-list tbody");
  tbody.replaceChildren();
  if (!r.ok) return;
  for (const w of (await r.json()).items) {
    row(tbody, [stamp(w.start), person(w.patient_name), w.patient_id, w.accession_number, w.requested_procedure,
      w.modality, w.station_ae, w.status]);
  }
}

async function loadMessages() {
  const r = await api("/api/hl7/messages?limit=100");
  if (!r.ok) return;
  $("#messages").hidden = $("#nav-messages").hidden = false;
  const tbody = $("#message-list tbody");
  tbody.replaceChildren();
  for (const m of (await r.json()).items) {
    const tr = row(tbody, [m.received_at, m.sender, m.message_type, m.control_id, m.charset, m.ack_code, m.error]);
    tr.title = m.message;
    tr.cells[5].className = m.ack_code === "AA" ? "state-done" : "state-failed";
  }
}

async function loadAll() {
  const orders = await loadOrders();
  await Promise.all([loadReconcile(orders), loadWorklist(), loadMessages()]);
}

async function start() {
  me = await signedInUser();
  if (!me) return;
  $("#order-filters").onchange = loadOrders;
  $("#worklist-filters").oninput = loadWorklist;
  await loadAll();
  setInterval(loadAll, 10000);
}

start();
