// NeuroPETRIX patient page: the patients (GET /api/patients), and one patient (?id=N, GET
// /api/patients/N, or ?patient_id=… from a study's page) as a timeline of studies with their analysis, response and review state, and a chart
// of SUVmax, SULpeak and TMTV over time, drawn here in SVG (no library, nothing loaded from outside the
// node). Sign-in and the token refresh are the dashboard's (session.js).
import { $, api, session } from "/static/session.js";

const SVG = "http://www.w3.org/2000/svg";
const SERIES = [
  { key: "suv_max", label: "SUVmax", unit: (a) => `SUV${a.suv_type}`, color: "#c2410c" },
  { key: "sul_peak", label: "SULpeak", unit: () => "SUL", color: "#0b6bcb" },
  { key: "tmtv_ml", label: "TMTV", unit: () => "ml", color: "#067647" },
];
const CATEGORIES = { CMR: "complete metabolic response", PMR: "partial metabolic response",
                     SMD: "stable metabolic disease", PMD: "progressive metabolic disease" };

const isoDate = (d) => (d && d.length === 8 ? `${d.slice(0, 4)}-${d.slice(4, 6)}-${d.slice(6, 8)}` : "date unknown");
const fmt = (v, digits = 3) => (v === null || v === undefined ? "–" : Number(v.toPrecision(digits)).toString());

function person(pn) {
  const [family = "", given = ""] = (pn || "").split("^");
  return [given, family].filter(Boolean).join(" ") || "(no name)";
}

function el(tag, attrs = {}, text) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

async function get(path) {
  const r = await api(path);
  if (r.status === 401) { $("#signed-out").hidden = false; throw new Error("signed out"); }
  if (!r.ok) { $("#page-error").textContent = await r.text(); throw new Error(`${path}: ${r.status}`); }
  $("#page-error").textContent = "";
  return r.json();
}

// ---- the list ----
async function listPatients() {
  $("#patients").hidden = false;
  const q = $("#patient-filter").q.value.trim();
  const body = await get(`/api/patients?limit=100${q ? `&q=${encodeURIComponent(q)}` : ""}`);
  const tbody = $("#patient-list tbody");
  tbody.replaceChildren();
  for (const p of body.items) {
    const tr = el("tr", { class: "link", "data-patient": p.id });
    for (const v of [person(p.name), p.patient_id + (p.tckn ? " (TCKN)" : ""), p.issuer || "", isoDate(p.birth_date),
                     p.sex || "", p.study_count, isoDate(p.last_study_date)]) tr.appendChild(el("td", {}, String(v)));
    tr.onclick = () => { location.search = `?id=${p.id}`; };
    tbody.appendChild(tr);
  }
  $("#patient-count").textContent = `${body.items.length} of ${body.total} patients`;
}

// ---- one patient ----
function state(study) {
  const a = study.analysis;
  if (a) return { text: `analysed: ${a.lesion_count} lesion(s), SUVmax ${fmt(a.suv_max)}, TMTV ${fmt(a.tmtv_ml)} ml`,
                  cls: "state-done" };
  if (a === null) return { text: `not analysed (${study.state})`, cls: "muted" };
  return { text: study.state, cls: "muted" };     // this role does not read results
}

function timeline(studies) {
  const list = $("#timeline");
  list.replaceChildren();
  for (const st of [...studies].reverse()) {        // the latest first
    const item = el("li", { "data-study-uid": st.study_uid, "data-date": isoDate(st.study_date) });
    const head = el("div", { class: "when" });
    head.append(el("strong", {}, isoDate(st.study_date)), " ",
                el("a", { href: `/#/study/${st.study_uid}` }, st.description || "(no description)"));
    const facts = el("div", { class: "muted" },
                     `${st.modalities.join(", ")} · ${st.instances} instances · accession ${st.accession_number || "–"}`);
    const s = state(st);
    const analysis = el("div", { class: `analysis ${s.cls}` }, s.text);
    item.append(head, facts, analysis);
    const response = st.analysis && st.analysis.response;
    if (response) {
      const verdict = response.category ? `${response.category} (${CATEGORIES[response.category]})` : "not assessable";
      const change = response.percent_change == null ? "" : `, SULpeak ${response.percent_change > 0 ? "+" : ""}${
        response.percent_change.toFixed(1)} %`;
      item.append(el("div", { class: `response response-${response.category || "NA"}`, "data-category":
                              response.category || "" }, `${response.criteria}: ${verdict}${change}`));
    }
    const review = st.review;
    const status = el("span", { class: `status status-${review ? review.status : "none"}`,
                                "data-review": review ? review.status : "" },
                      review ? `${review.status}, version ${review.version}` : "no review");
    const line = el("div", {}, "Review: ");
    line.appendChild(status);
    item.appendChild(line);
    list.appendChild(item);
  }
}

function chart(studies) {
  // one panel per measure (their units differ), sharing the time axis; a point per analysed study
  const svg = $("#trend");
  svg.replaceChildren();
  const width = 760, panel = 100, left = 90, right = 20, top = 12, inset = 40;
  const dated = studies.filter((s) => s.analysis && s.study_date && s.study_date.length === 8);
  const time = (s) => Date.UTC(+s.study_date.slice(0, 4), +s.study_date.slice(4, 6) - 1, +s.study_date.slice(6, 8));
  const t0 = Math.min(...dated.map(time)), t1 = Math.max(...dated.map(time));
  const span = width - left - right - 2 * inset;
  const x = (s) => left + inset + (t1 === t0 ? span / 2 : span * (time(s) - t0) / (t1 - t0));
  SERIES.forEach((series, i) => {
    const y0 = top + i * (panel + 10);
    const points = dated.filter((s) => s.analysis[series.key] !== null && s.analysis[series.key] !== undefined);
    const most = Math.max(1e-9, ...points.map((s) => s.analysis[series.key])) * 1.3;
    const y = (v) => y0 + panel - panel * v / most;
    const unit = points.length ? series.unit(points[0].analysis) : "";
    svg.append(el("svg:rect", { x: left, y: y0, width: width - left - right, height: panel, fill: "#fff",
                                stroke: "#d9dee7" }),
               el("svg:text", { x: 6, y: y0 + 16, "font-size": 12, "font-weight": 600, fill: series.color },
                  series.label),
               el("svg:text", { x: 6, y: y0 + 32, "font-size": 11, fill: "#6b7280" }, unit),
               el("svg:text", { x: left - 4, y: y0 + 10, "font-size": 10, "text-anchor": "end", fill: "#6b7280" },
                  fmt(most, 2)),
               el("svg:text", { x: left - 4, y: y0 + panel, "font-size": 10, "text-anchor": "end", fill: "#6b7280" },
                  "0"));
    if (points.length > 1) {
      svg.append(el("svg:polyline", { points: points.map((s) => `${x(s)},${y(s.analysis[series.key])}`).join(" "),
                                      fill: "none", stroke: series.color, "stroke-width": 2 }));
    }
    for (const s of points) {
      const v = s.analysis[series.key];
      const dot = el("svg:circle", { class: "point", cx: x(s), cy: y(v), r: 5, fill: series.color,
                                     "data-series": series.key, "data-date": isoDate(s.study_date),
                                     "data-value": String(v) });
      dot.appendChild(el("svg:title", {}, `${series.label} ${fmt(v)} ${unit}, ${isoDate(s.study_date)}`));
      svg.append(dot, el("svg:text", { x: x(s), y: y(v) - 9, "font-size": 11, "text-anchor": "middle" }, fmt(v)));
    }
    if (!points.length) {
      svg.append(el("svg:text", { x: (left + width) / 2, y: y0 + panel / 2, "font-size": 11, "text-anchor": "middle",
                                  fill: "#6b7280" }, "no value yet"));
    }
  });
  const axis = top + 3 * (panel + 10);
  for (const s of dated) {
    svg.append(el("svg:text", { x: x(s), y: axis + 8, "font-size": 11, "text-anchor": "middle" }, isoDate(s.study_date)));
  }
}

async function showPatient(id) {
  $("#patient").hidden = false;
  const p = await get(`/api/patients/${encodeURIComponent(id)}`);
  document.title = `NeuroPETRIX — ${person(p.name)}`;
  $("#patient-name").textContent = person(p.name);
  $("#patient-meta").textContent = [`Patient ID ${p.patient_id}${p.tckn ? " (TCKN)" : ""}`,
    p.issuer ? `issuer ${p.issuer}` : "", `born ${isoDate(p.birth_date)}`, p.sex || "",
    `${p.study_count} studies`].filter(Boolean).join(" · ");
  timeline(p.studies);
  const readsResults = p.studies.some((s) => "analysis" in s);
  $("#trend").hidden = !readsResults;
  $("#trend-note").hidden = !readsResults;
  if (readsResults) chart(p.studies);
}

async function start() {
  if (!session.access) { $("#signed-out").hidden = false; return; }
  const query = new URLSearchParams(location.search);
  $("#patient-filter").onsubmit = (ev) => { ev.preventDefault(); listPatients(); };
  try {
    if (query.get("id")) await showPatient(query.get("id"));
    else if (query.get("patient_id")) {      // from a study's page: the patient with exactly this Patient ID
      const found = await get(`/api/patients?q=${encodeURIComponent(query.get("patient_id"))}&limit=100`);
      const exact = found.items.filter((p) => p.patient_id === query.get("patient_id"));
      if (exact.length === 1) await showPatient(exact[0].id);
      else {
        $("#patient-filter").q.value = query.get("patient_id");
        await listPatients();           // several issuers share the ID, or none: let the user choose
      }
    } else await listPatients();
    document.body.dataset.loaded = "1";
  } catch (err) {
    if (!$("#page-error").textContent && $("#signed-out").hidden) $("#page-error").textContent = String(err);
  }
}

start();
