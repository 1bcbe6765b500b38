// The page: reads the form, asks the gateway (same origin, session cookie + CSRF header),
// shows preview, counts, funnel, survival, budgets, refusals; saves and exports.
//
// Every value from the server is put into the page as text (textContent), never as HTML.

import { buildQueries, emptyState } from "./criteria.js";
import { barChart, survivalChart, svgToPng } from "./charts.js";
import { budgetText, countCsv, countRows, fmt2, funnelCsv, funnelRows, plainRefusal, survivalCurve } from "./results.js";
import { $, h } from "./dom.js";
import { buildForm, formError, readState, writeState } from "./form.js";
import { deleteSaved, loadSaved, saveQuestion } from "./saved.js";

const CSRF = document.querySelector('meta[name="csrf-token"]').content;
const RESEARCHER = document.querySelector('meta[name="researcher"]').content;

let catalog = null;
let fields = {};
let last = null; // {queries, results: {count, funnel, survival}}

class SessionEnded extends Error {}

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

const STAT_NAMES = { count: "count", funnel: "attrition funnel", survival: "survival curve" };

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
    buildForm(catalog);
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
