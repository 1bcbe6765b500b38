// The page: reads the form, asks the gateway (same origin, session cookie + CSRF header),
// shows preview, counts, funnel, survival, budgets, refusals; saves and exports.
//
// Every value from the server is put into the page as text (textContent), never as HTML.

import { BIOMARKERS, buildQueries, emptyState } from "./criteria.js";
import { barChart, survivalChart, svgToPng } from "./charts.js";
import { budgetText, countCsv, countRows, fmt2, funnelCsv, funnelRows, plainRefusal, survivalCurve } from "./results.js";
import { deleteSaved, loadSaved, saveQuestion } from "./saved.js";

const CSRF = document.querySelector('meta[name="csrf-token"]').content;
const RESEARCHER = document.querySelector('meta[name="researcher"]').content;
const $ = (id) => document.getElementById(id);
const DEDICATED = new Set(["topography", "morphology", "stage", "age_at_diagnosis", "diagnosis_year", "sex", "first_treatment", ...BIOMARKERS]);

let catalog = null;
let fields = {};
let last = null; // {queries, results: {count, funnel, survival}}

class SessionEnded extends Error {}

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v === true) node.setAttribute(k, "");
    else if (v !== false && v !== null && v !== undefined) node.setAttribute(k, String(v));
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

// ---- talking to the gateway ------------------------------------------------------------

async function api(path, body) {
  const init = { credentials: "same-origin", headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.method = "POST";
    init.headers["Content-Type"] = "application/json";
    init.headers["X-CSRF-Token"] = CSRF;
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new Error("The gateway did not answer. Check your network connection and try again.");
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (response.status === 401) {
    showSessionEnded((data && data.detail) || "your session has ended: log in again");
    throw new SessionEnded();
  }
  return { ok: response.ok, status: response.status, data };
}

function showSessionEnded(detail) {
  $("session-text").textContent = `Your session has expired or is not valid (${detail}).`;
  $("session-message").hidden = false;
  $("session-message").focus?.();
}

function problemText(data, status) {
  if (data && typeof data.detail === "string") return data.detail;
  return `The gateway answered ${status}.`;
}

// ---- building the form from the schema -------------------------------------------------

function exposedNote(spec) {
  const missing = catalog.sites.map((s) => s.site).filter((s) => !spec.sites.includes(s));
  return missing.length ? ` (not shared by ${missing.join(", ")})` : "";
}

function checkboxes(container, name, categories) {
  for (const c of categories) {
    const id = `${name}-${c}`.replace(/[^\w-]/g, "_");
    container.append(h("label", { class: "check", for: id }, h("input", { type: "checkbox", id, value: c, "data-group": name }), ` ${c}`));
  }
}

function buildForm() {
  const projects = catalog.projects;
  const select = $("project");
  for (const p of projects) select.append(h("option", { value: p }, p));
  for (const t of catalog.topography) $("topo-list").append(h("option", { value: `${t.code} ${t.name}` }));
  for (const c of fields.topography.categories) if (c.length > 3) $("topo-list").append(h("option", { value: c }));
  for (const m of catalog.morphology) $("morph-list").append(h("option", { value: `${m.code} ${m.name}` }));
  checkboxes($("stage"), "stage", fields.stage.categories);
  checkboxes($("treatment"), "treatment", fields.first_treatment.categories);
  for (const c of fields.sex.categories) $("sex").append(h("option", { value: c }, c));
  for (const name of BIOMARKERS) {
    const spec = fields[name];
    if (!spec) continue;
    const sel = h("select", { id: `bm-${name}` }, h("option", { value: "" }, "any"));
    for (const c of spec.categories) sel.append(h("option", { value: c }, c));
    $("biomarker-grid").append(h("div", { class: "control" }, h("label", { for: `bm-${name}` }, `${spec.description}${exposedNote(spec)}`), sel));
  }
  $("topo-add").addEventListener("click", () => addCode("topo"));
  $("morph-add").addEventListener("click", () => addCode("morph"));
  for (const kind of ["topo", "morph"]) {
    $(`${kind}-search`).addEventListener("keydown", (e) => {
      if (e.key === "Enter") {
        e.preventDefault();
        addCode(kind);
      }
    });
  }
  $("add-inc").addEventListener("click", () => addRow("extra-inc", {}));
  $("add-exc").addEventListener("click", () => addRow("extra-exc", {}));
  $("question").addEventListener("submit", (e) => e.preventDefault());
}

let chosen = { topo: [], morph: [] };

function codeName(kind, code) {
  const list = kind === "topo" ? catalog.topography : catalog.morphology;
  const hit = list.find((x) => x.code === code) || (kind === "topo" ? list.find((x) => x.code === code.slice(0, 3)) : null);
  return hit ? hit.name : "";
}

function addCode(kind) {
  const input = $(`${kind}-search`);
  const code = input.value.trim().split(/\s+/)[0].toUpperCase();
  const valid =
    kind === "topo"
      ? catalog.topography.some((t) => t.code === code) || fields.topography.categories.includes(code)
      : fields.morphology.categories.includes(code);
  if (!valid) {
    formError([`"${input.value}" is not a ${kind === "topo" ? "topography" : "morphology"} code: pick one from the list`]);
    return;
  }
  formError([]);
  if (!chosen[kind].includes(code)) chosen[kind].push(code);
  input.value = "";
  drawChips(kind);
}

function drawChips(kind) {
  const ul = $(`${kind}-chosen`);
  ul.replaceChildren();
  for (const code of chosen[kind]) {
    const name = codeName(kind, code);
    ul.append(
      h("li", { class: "chip" }, `${code}${name ? ` ${name}` : ""} `,
        h("button", { type: "button", class: "remove", "aria-label": `Remove ${code}`, onclick: () => { chosen[kind] = chosen[kind].filter((c) => c !== code); drawChips(kind); } }, "×")),
    );
  }
}

let rowSeq = 0;

function addRow(containerId, row) {
  const n = ++rowSeq;
  const id = `${containerId}-${n}`;
  const sel = h("select", { id: `${id}-field`, class: "field" }, h("option", { value: "" }, "choose a field"));
  for (const spec of catalog.fields) {
    if (containerId === "extra-inc" && DEDICATED.has(spec.name)) continue;
    sel.append(h("option", { value: spec.name }, `${spec.name}: ${spec.description}${exposedNote(spec)}`));
  }
  const value = h("div", { class: "value" });
  const remove = h("button", { type: "button", class: "secondary", "aria-label": "Remove this criterion" }, "Remove");
  const wrap = h("div", { class: "criterion", "data-row": id }, h("label", { for: sel.id }, "Field"), sel, value, remove);
  remove.addEventListener("click", () => wrap.remove());
  const draw = (data) => {
    value.replaceChildren();
    const spec = fields[sel.value];
    if (!spec) return;
    if (spec.kind === "categorical") {
      const v = h("select", { id: `${id}-value`, class: "v" }, h("option", { value: "" }, "choose"));
      for (const c of spec.categories) v.append(h("option", { value: c }, c));
      v.value = data.value || "";
      value.append(h("label", { for: v.id }, "is"), v);
    } else {
      const type = spec.kind === "date" ? "date" : "number";
      const lo = h("input", { id: `${id}-min`, class: "min", type, value: data.min ?? "" });
      const hi = h("input", { id: `${id}-max`, class: "max", type, value: data.max ?? "" });
      value.append(h("label", { for: lo.id }, "from"), lo, h("label", { for: hi.id }, "to"), hi);
    }
  };
  sel.addEventListener("change", () => draw({}));
  $(containerId).append(wrap);
  if (row.field) {
    sel.value = row.field;
    draw(row);
  }
  sel.focus();
  return wrap;
}

function readRows(containerId) {
  return [...$(containerId).querySelectorAll(".criterion")].map((w) => ({
    field: w.querySelector(".field").value,
    value: w.querySelector(".v")?.value ?? "",
    min: w.querySelector(".min")?.value ?? "",
    max: w.querySelector(".max")?.value ?? "",
  }));
}

function checked(group) {
  return [...document.querySelectorAll(`input[data-group="${group}"]:checked`)].map((i) => i.value);
}

function readState() {
  const state = emptyState($("project").value);
  state.title = $("title").value.trim();
  state.topography = [...chosen.topo];
  state.morphology = [...chosen.morph];
  state.stage = checked("stage");
  state.treatment = checked("treatment");
  for (const name of BIOMARKERS) if ($(`bm-${name}`)?.value) state.biomarkers[name] = $(`bm-${name}`).value;
  state.age = { min: $("age-min").value, max: $("age-max").value };
  state.year = { from: $("year-from").value, to: $("year-to").value };
  state.sex = $("sex").value;
  state.extra = readRows("extra-inc");
  state.exclude = readRows("extra-exc");
  state.epsilon = $("epsilon").value;
  state.funnel = $("want-funnel").checked;
  state.survival = $("want-survival").checked;
  return state;
}

function writeState(state) {
  $("project").value = state.project;
  $("title").value = state.title || "";
  chosen = { topo: [...state.topography], morph: [...state.morphology] };
  drawChips("topo");
  drawChips("morph");
  for (const box of document.querySelectorAll("input[data-group]")) {
    const list = box.dataset.group === "stage" ? state.stage : state.treatment;
    box.checked = list.includes(box.value);
  }
  for (const name of BIOMARKERS) if ($(`bm-${name}`)) $(`bm-${name}`).value = state.biomarkers[name] || "";
  $("age-min").value = state.age.min;
  $("age-max").value = state.age.max;
  $("year-from").value = state.year.from;
  $("year-to").value = state.year.to;
  $("sex").value = state.sex;
  $("extra-inc").replaceChildren();
  $("extra-exc").replaceChildren();
  for (const r of state.extra) addRow("extra-inc", r);
  for (const r of state.exclude) addRow("extra-exc", r);
  $("epsilon").value = state.epsilon;
  $("want-funnel").checked = state.funnel;
  $("want-survival").checked = state.survival;
}

function formError(problems) {
  const box = $("form-error");
  box.replaceChildren();
  box.hidden = !problems.length;
  if (!problems.length) return;
  box.append(h("p", {}, problems.length === 1 ? "Please fix this first:" : "Please fix these first:"));
  box.append(h("ul", {}, ...problems.map((p) => h("li", {}, p))));
}

function status(text) {
  $("status").textContent = text;
}

function currentQueries() {
  const built = buildQueries(readState(), fields, catalog.units);
  if (built.problems) {
    formError(built.problems);
    return null;
  }
  formError([]);
  return built;
}

// ---- preview ---------------------------------------------------------------------------

const STAT_NAMES = { count: "patient count", funnel: "attrition funnel", survival: "survival curve" };

function accuracyText(acc) {
  const values = Object.entries(acc || {});
  return values.length ? values.map(([k, v]) => `±${fmt2(v)}${values.length > 1 ? ` (${k})` : ""}`).join(", ") : "—";
}

async function preview(queries) {
  status("Asking each site what the question would cost…");
  const body = $("preview").tBodies[0];
  body.replaceChildren();
  const total = {};
  for (const [kind, q] of Object.entries(queries)) {
    const { ok, status: code, data } = await api("/feasibility/api/preview", q);
    if (!ok && !(data && data.sites)) {
      formError([problemText(data, code)]);
      status("");
      return;
    }
    for (const s of data.sites || []) {
      const fine = s.status === "ok";
      if (fine && s.planned) {
        const m = Object.keys(s.planned)[0];
        total[s.site] = { [m]: (total[s.site]?.[m] ?? 0) + s.planned[m] };
      }
      body.append(
        h("tr", { "data-site": s.site, "data-stat": kind },
          h("th", { scope: "row" }, s.site),
          h("td", {}, STAT_NAMES[kind]),
          h("td", { class: fine ? "ok" : "bad" }, fine ? (s.cached ? "repeat: answered from cache" : "would answer") : plainRefusal(s)),
          h("td", { class: "num" }, fine ? budgetText(s.planned) : "—"),
          h("td", { class: "num" }, fine ? accuracyText(s.accuracy) : "—"),
          h("td", { class: "num" }, budgetText(s.budget_remaining))),
      );
    }
    if (ok && data.network_accuracy && Object.keys(data.network_accuracy).length) {
      body.append(h("tr", { class: "network", "data-site": "NETWORK", "data-stat": kind },
        h("th", { scope: "row" }, "NETWORK"), h("td", {}, STAT_NAMES[kind]), h("td", {}, "combined"), h("td", { class: "num" }, "—"),
        h("td", { class: "num" }, accuracyText(data.network_accuracy)), h("td", { class: "num" }, "—")));
    }
  }
  const sums = Object.entries(total).map(([site, b]) => `${site} ${budgetText(b)}`);
  $("preview-total").textContent = sums.length
    ? `Running all of it would charge in total: ${sums.join(", ")}.`
    : "No site would answer this question as it stands.";
  $("preview-section").hidden = false;
  status("Preview ready: nothing has been charged.");
}

// ---- results ---------------------------------------------------------------------------

function unitWord() {
  return catalog.units.includes("patients") ? "patients" : "tumours";
}

function cellText(r) {
  if (r.value === null) return r.note || "—";
  return `${r.value}${r.noisy ? "*" : ""}`;
}

function drawCounts(result) {
  const rows = countRows(result);
  const unit = unitWord();
  $("unit-head").textContent = unit === "patients" ? "Patients" : "Tumours";
  $("counts-caption").textContent = unit === "patients" ? "Patients per site" : "Tumours per site (this gateway counts tumours, not yet patients)";
  const body = $("counts").tBodies[0];
  body.replaceChildren();
  for (const r of rows) {
    body.append(
      h("tr", { "data-site": r.site, class: r.network ? "network" : "" },
        h("th", { scope: "row" }, r.site),
        h("td", { class: "num" }, cellText(r)),
        h("td", { class: "num" }, r.lo === null ? "—" : `[${r.lo}, ${r.hi}]`),
        h("td", { class: r.status === "ok" ? "ok" : "bad", id: r.status === "ok" ? null : `refusal-${r.site}` }, r.words),
        h("td", { class: "num" }, r.network ? "—" : budgetText(r.charged)),
        h("td", { class: "num" }, r.network ? "—" : budgetText(r.left))),
    );
  }
  const chartRows = rows.map((r) => ({ label: r.site, value: r.value, lo: r.lo, hi: r.hi, network: r.network, note: r.status === "ok" ? r.note : "refused" }));
  $("counts-chart").replaceChildren(barChart(`${unit[0].toUpperCase()}${unit.slice(1)} per site (95% intervals)`, chartRows, unit));
  return rows;
}

function drawFunnel(result, query) {
  const labels = query.statistic.steps.map((s) => s.label);
  const f = funnelRows(result, labels);
  const table = $("funnel");
  const head = h("tr", {}, h("th", { scope: "col" }, "Criterion"), ...f.sites.map((s) => h("th", { scope: "col", class: "num" }, s.site)), h("th", { scope: "col", class: "num" }, "NETWORK"));
  table.tHead.replaceChildren(head);
  const body = table.tBodies[0];
  body.replaceChildren();
  labels.forEach((label, i) => {
    body.append(h("tr", {}, h("th", { scope: "row" }, label),
      ...f.sites.map((s) => h("td", { class: "num" }, s.steps[i] ? cellText(s.steps[i]) : "refused")),
      h("td", { class: "num" }, f.network ? `${cellText(f.network[i])} [${f.network[i].lo ?? "—"}, ${f.network[i].hi ?? "—"}]` : "—")));
  });
  for (const s of f.sites.filter((x) => x.status !== "ok")) {
    body.append(h("tr", { class: "refusal" }, h("td", { colspan: f.sites.length + 2 }, `${s.site}: ${s.words}`)));
  }
  const rows = labels.map((label, i) => ({ label, ...(f.network ? f.network[i] : { value: null }) }));
  $("funnel-chart").replaceChildren(barChart("Network attrition funnel (95% intervals)", rows, unitWord()));
  $("funnel-block").hidden = false;
  return f;
}

function drawSurvival(result) {
  const { points, median } = survivalCurve(result);
  const bound = (x) => (x == null ? "not reached" : `${fmt2(x)} months`);
  $("survival-median").textContent = median
    ? `Median survival: ${fmt2(median.value)} months (95% interval ${bound(median.ci_low)} to ${bound(median.ci_high)})`
    : "Median survival not reached within 36 months (or not estimable).";
  $("survival-refusals").replaceChildren(
    ...(result.sites || []).filter((s) => s.status !== "ok").map((s) => h("p", { class: "bad" }, `${s.site}: ${plainRefusal(s)}`)),
  );
  $("survival-chart").replaceChildren(points.length ? survivalChart("Network survival (Kaplan-Meier, 95% band)", points) : h("p", {}, "No site released a survival curve."));
  $("survival-block").hidden = false;
}

function drawBudgets(results) {
  const charged = {};
  let left = {};
  for (const r of Object.values(results)) {
    for (const s of r.sites || []) {
      if (s.charged) {
        const m = Object.keys(s.charged)[0];
        charged[s.site] = { [m]: (charged[s.site]?.[m] ?? 0) + s.charged[m] };
      }
    }
    if (r.budget_remaining) left = { ...left, ...r.budget_remaining };
  }
  const body = $("budgets").tBodies[0];
  body.replaceChildren();
  for (const s of catalog.sites) {
    body.append(h("tr", { "data-site": s.site }, h("th", { scope: "row" }, s.site),
      h("td", { class: "num" }, charged[s.site] ? budgetText(charged[s.site]) : budgetText({ epsilon: 0 })),
      h("td", { class: "num" }, budgetText(left[s.site]))));
  }
}

async function run(queries) {
  status("Running: each site checks its policy, charges its budget and releases noisy counts…");
  const results = {};
  for (const [kind, q] of Object.entries(queries)) {
    const { ok, status: code, data } = await api("/feasibility/api/queries", q);
    if (ok) {
      results[kind] = data;
    } else if (data && data.sites) {
      results[kind] = { sites: data.sites, network: null, budget_remaining: {} }; // every site refused
    } else {
      formError([problemText(data, code)]);
      status("");
      return null;
    }
  }
  $("funnel-block").hidden = true;
  $("survival-block").hidden = true;
  last = { queries, results };
  last.rows = drawCounts(results.count);
  if (results.funnel) last.funnel = drawFunnel(results.funnel, queries.funnel);
  if (results.survival) drawSurvival(results.survival);
  drawBudgets(results);
  $("results-section").hidden = false;
  const pending = Object.values(results).some((r) => (r.sites || []).some((s) => s.status === "awaiting_approval"));
  status(pending ? "Done; some sites wait for their staff's approval (run again later)." : "Done.");
  $("results-h").focus?.();
  return results;
}

// ---- saving and exporting --------------------------------------------------------------

function download(name, blob) {
  const a = h("a", { href: URL.createObjectURL(blob), download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
}

function slug() {
  return (($("title").value || "feasibility").toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "") || "feasibility");
}

function drawSaved() {
  const ul = $("saved");
  ul.replaceChildren();
  const list = loadSaved(RESEARCHER);
  if (!list.length) ul.append(h("li", { class: "muted" }, "No saved questions yet."));
  for (const q of list) {
    ul.append(
      h("li", { "data-saved": q.name },
        h("strong", {}, q.name), ` (${q.state.project}, saved ${new Date(q.savedAt).toLocaleString()}) `,
        h("button", { type: "button", class: "rerun", onclick: () => rerun(q) }, `Re-run "${q.name}"`), " ",
        h("button", { type: "button", class: "secondary", onclick: () => { writeState(q.state); status(`Loaded "${q.name}" into the form.`); } }, "Load into form"), " ",
        h("button", { type: "button", class: "secondary", onclick: () => { deleteSaved(RESEARCHER, q.id); drawSaved(); } }, "Delete")),
    );
  }
}

async function rerun(saved) {
  writeState(saved.state);
  formError([]);
  await guarded(() => run(saved.queries));
}

async function guarded(action) {
  try {
    await action();
  } catch (err) {
    if (!(err instanceof SessionEnded)) formError([err.message || String(err)]);
    status("");
  }
}

function wire() {
  $("preview-btn").addEventListener("click", () => guarded(async () => { const q = currentQueries(); if (q) await preview(q); }));
  $("run-btn").addEventListener("click", () => guarded(async () => { const q = currentQueries(); if (q) await run(q); }));
  $("save-btn").addEventListener("click", () => {
    const q = currentQueries();
    if (!q) return;
    const name = $("title").value.trim();
    if (!name) {
      formError(["Give the question a name before saving it"]);
      $("title").focus();
      return;
    }
    saveQuestion(RESEARCHER, name, readState(), q);
    drawSaved();
    status(`Saved "${name}" in this browser.`);
  });
  $("reset-btn").addEventListener("click", () => { writeState(emptyState($("project").value)); formError([]); });
  $("csv-counts").addEventListener("click", () => last && download(`${slug()}.csv`, new Blob([countCsv(last.rows, unitWord())], { type: "text/csv" })));
  $("csv-funnel").addEventListener("click", () => last?.funnel && download(`${slug()}-funnel.csv`, new Blob([funnelCsv(last.funnel, unitWord())], { type: "text/csv" })));
  const json = (kind) => last?.queries[kind] && download(`${slug()}-${kind}.json`, new Blob([JSON.stringify(last.queries[kind], null, 2) + "\n"], { type: "application/json" }));
  $("json-export").addEventListener("click", () => json("count"));
  $("json-funnel").addEventListener("click", () => json("funnel"));
  $("json-survival").addEventListener("click", () => json("survival"));
  for (const kind of ["counts", "funnel", "survival"]) {
    $(`png-${kind}`).addEventListener("click", () => guarded(async () => {
      const svg = $(`${kind}-chart`).querySelector("svg");
      if (svg) download(`${slug()}-${kind}.png`, await svgToPng(svg));
    }));
  }
  $("logout").addEventListener("click", async () => {
    await fetch("/feasibility/logout", { method: "POST", credentials: "same-origin", headers: { "X-CSRF-Token": CSRF } });
    window.location.assign("/feasibility/login");
  });
}

async function start() {
  try {
    const { ok, status: code, data } = await api("/feasibility/api/catalog");
    if (!ok) throw new Error(problemText(data, code));
    catalog = data;
    fields = Object.fromEntries(catalog.fields.map((f) => [f.name, f]));
    buildForm();
    wire();
    drawSaved();
    if (catalog.projects.length === 0) formError(["You are not a member of any project yet: ask the gateway's administrator."]);
    $("loading").hidden = true;
    $("question").hidden = false;
  } catch (err) {
    $("loading").textContent = err instanceof SessionEnded ? "" : `The page could not load: ${err.message}`;
  }
}

start();
