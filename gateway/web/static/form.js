// The question form: built from the gateway's schema, read into a plain state object
// (what criteria.js turns into queries and saved.js keeps) and written back from one.

import { BIOMARKERS, emptyState } from "./criteria.js";
import { $, h } from "./dom.js";

const DEDICATED = new Set(["topography", "morphology", "stage", "age_at_diagnosis", "diagnosis_year", "sex", "first_treatment", ...BIOMARKERS]);

let catalog = null;
let fields = {};

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

/** Fill the form's choices from `theCatalog` (GET /feasibility/api/catalog). */
export function buildForm(theCatalog) {
  catalog = theCatalog;
  fields = Object.fromEntries(catalog.fields.map((f) => [f.name, f]));
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
  if (!row.field) sel.focus(); // a new row, added by the user: its field comes first
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

/** The form as a plain state object. */
export function readState() {
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

/** Put `state` (a saved question's) into the form. */
export function writeState(state) {
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

/** Show `problems` above the buttons (none: hide the box). */
export function formError(problems) {
  const box = $("form-error");
  box.replaceChildren();
  box.hidden = !problems.length;
  if (!problems.length) return;
  box.append(h("p", {}, problems.length === 1 ? "Please fix this first:" : "Please fix these first:"));
  box.append(h("ul", {}, ...problems.map((p) => h("li", {}, p))));
}
