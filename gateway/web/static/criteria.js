// From the form's state to query documents of the Varde query language (varde/query.py).
//
// Pure functions, no DOM: the state is a plain object (what saved questions keep) and
// buildQueries returns the exact JSON the gateway, `varde query --file` and VardeClient
// accept, or a list of problems in plain words.

export const BIOMARKERS = ["egfr", "alk", "ros1", "kras_g12c", "braf_v600e", "her2", "msi", "pdl1_tps"];
export const MAX_FUNNEL_STEPS = 12;
const LABEL_MAX = 80;

/** An empty question for `project`. */
export function emptyState(project) {
  return {
    project,
    title: "",
    topography: [],
    morphology: [],
    stage: [],
    biomarkers: {},
    age: { min: "", max: "" },
    year: { from: "", to: "" },
    sex: "",
    treatment: [],
    extra: [],
    exclude: [],
    epsilon: "0.5",
    funnel: true,
    survival: false,
  };
}

function one(field, values) {
  return values.length === 1
    ? { op: "eq", field, value: values[0] }
    : { op: "in", field, values: [...values] };
}

function anyOf(preds) {
  return preds.length === 1 ? preds[0] : { op: "or", args: preds };
}

function allOf(preds) {
  return preds.length === 1 ? preds[0] : { op: "and", args: preds };
}

function label(text) {
  return text.length > LABEL_MAX ? text.slice(0, LABEL_MAX - 1) + "…" : text;
}

/** A number typed into a box: "" is absent, anything else must be a whole number. */
function wholeNumber(raw, what, problems) {
  const text = String(raw ?? "").trim();
  if (text === "") return null;
  if (!/^-?\d+$/.test(text)) {
    problems.push(`${what}: "${text}" is not a whole number`);
    return null;
  }
  return Number(text);
}

/** A range of two boxes as one predicate, or a problem when min > max. */
function range(field, lo, hi, what, problems, unit = "") {
  const a = wholeNumber(lo, `${what} (from)`, problems);
  const b = wholeNumber(hi, `${what} (to)`, problems);
  if (a !== null && b !== null) {
    if (a > b) {
      problems.push(`${what}: the lower bound ${a} is above the upper bound ${b}`);
      return null;
    }
    return { label: `${what} ${a}–${b}${unit}`, predicate: { op: "between", field, low: a, high: b } };
  }
  if (a !== null) return { label: `${what} ≥ ${a}${unit}`, predicate: { op: ">=", field, value: a } };
  if (b !== null) return { label: `${what} ≤ ${b}${unit}`, predicate: { op: "<=", field, value: b } };
  return null;
}

/** One row of "other criteria": a field and, by its kind, a category or a range. */
function extraCriterion(row, fields, problems) {
  const spec = fields[row.field];
  if (!spec) {
    problems.push(`choose a field for each added criterion`);
    return null;
  }
  if (spec.kind === "categorical") {
    if (!row.value) {
      problems.push(`${row.field}: choose a value`);
      return null;
    }
    return { label: `${row.field} = ${row.value}`, predicate: { op: "eq", field: row.field, value: row.value } };
  }
  if (spec.kind === "date") {
    const a = row.min || "";
    const b = row.max || "";
    if (a && b && a > b) {
      problems.push(`${row.field}: the start ${a} is after the end ${b}`);
      return null;
    }
    if (a && b) return { label: `${row.field} ${a} to ${b}`, predicate: { op: "between", field: row.field, low: a, high: b } };
    if (a) return { label: `${row.field} from ${a}`, predicate: { op: ">=", field: row.field, value: a } };
    if (b) return { label: `${row.field} until ${b}`, predicate: { op: "<=", field: row.field, value: b } };
    problems.push(`${row.field}: give a start or an end date`);
    return null;
  }
  const before = problems.length;
  const found = range(row.field, row.min, row.max, row.field, problems);
  if (!found && problems.length === before) problems.push(`${row.field}: give a lower or an upper bound`);
  return found;
}

/** The inclusion criteria in order, each `{label, predicate}` (the funnel's steps). */
export function inclusionSteps(state, fields, problems = []) {
  const steps = [];
  if (state.topography.length) {
    steps.push({
      label: label(`Tumour site ${state.topography.join(", ")}`),
      predicate: anyOf(state.topography.map((p) => ({ op: "startswith", field: "topography", prefix: p }))),
    });
  }
  if (state.morphology.length) {
    steps.push({ label: label(`Morphology ${state.morphology.join(", ")}`), predicate: one("morphology", state.morphology) });
  }
  if (state.stage.length) {
    steps.push({ label: label(`Stage ${state.stage.join(", ")}`), predicate: one("stage", state.stage) });
  }
  for (const name of BIOMARKERS) {
    const value = state.biomarkers[name];
    if (value) steps.push({ label: `${name} ${value}`, predicate: { op: "eq", field: name, value } });
  }
  const age = range("age_at_diagnosis", state.age.min, state.age.max, "Age at diagnosis", problems);
  if (age) steps.push(age);
  const year = range("diagnosis_year", state.year.from, state.year.to, "Diagnosis year", problems);
  if (year) steps.push(year);
  if (state.sex) steps.push({ label: `Sex ${state.sex}`, predicate: { op: "eq", field: "sex", value: state.sex } });
  if (state.treatment.length) {
    steps.push({ label: label(`First treatment ${state.treatment.join(", ")}`), predicate: one("first_treatment", state.treatment) });
  }
  for (const row of state.extra) {
    const found = extraCriterion(row, fields, problems);
    if (found) steps.push(found);
  }
  return steps;
}

/** The exclusion criteria as one predicate (none of them holds), or null. */
export function exclusion(state, fields, problems = []) {
  const preds = [];
  const labels = [];
  for (const row of state.exclude) {
    const found = extraCriterion(row, fields, problems);
    if (found) {
      preds.push(found.predicate);
      labels.push(found.label);
    }
  }
  if (!preds.length) return null;
  return { label: label(`Not: ${labels.join("; ")}`), predicate: { op: "not", arg: anyOf(preds) } };
}

/** Steps whose labels repeat get a number (a funnel's labels must be unique). */
function uniqueLabels(steps) {
  const seen = new Map();
  return steps.map((step) => {
    const n = (seen.get(step.label) || 0) + 1;
    seen.set(step.label, n);
    return n === 1 ? step : { ...step, label: label(`${step.label} (${n})`) };
  });
}

/** The epsilon typed in: a positive number (strings such as "abc" are refused). */
function epsilonOf(state, problems) {
  const text = String(state.epsilon ?? "").trim();
  const value = Number(text);
  if (text === "" || !Number.isFinite(value) || value <= 0) {
    problems.push(`Privacy budget per statistic: "${text}" is not a positive number`);
    return null;
  }
  return value;
}

/**
 * The question's documents: `{count, funnel?, survival?}`, or `{problems}`.
 *
 * `fields`: the schema by name (GET /feasibility/api/catalog); `units`: the values the
 * query's `unit` takes (every statistic counts patients where the language offers it).
 */
export function buildQueries(state, fields, units = []) {
  const problems = [];
  if (!state.project) problems.push("Choose a project");
  const steps = inclusionSteps(state, fields, problems);
  const excluded = exclusion(state, fields, problems);
  const epsilon = epsilonOf(state, problems);
  if (!problems.length && !steps.length) {
    problems.push("Add at least one inclusion criterion (for example a tumour site or a stage)");
  }
  const all = uniqueLabels(excluded ? [...steps, excluded] : steps);
  if (state.funnel && all.length > MAX_FUNNEL_STEPS) {
    problems.push(`The attrition funnel takes at most ${MAX_FUNNEL_STEPS} criteria; you have ${all.length}`);
  }
  if (problems.length) return { problems };
  const privacy = { mode: "dp", epsilon };
  const cohort = allOf(all.map((s) => s.predicate));
  const unit = units.includes("patients") ? { unit: "patients" } : {};
  const out = { count: { project: state.project, cohort, statistic: { kind: "count" }, ...unit, privacy } };
  if (state.funnel) {
    const funnel = { kind: "funnel", steps: all.map((s) => ({ label: s.label, criterion: s.predicate })) };
    out.funnel = { project: state.project, statistic: funnel, ...unit, privacy };
  }
  if (state.survival) {
    out.survival = {
      project: state.project,
      cohort,
      statistic: { kind: "survival", interval_months: 6, horizon_months: 36 },
      ...unit,
      privacy,
    };
  }
  return out;
}

/** The fields a question reads, for the "which site exposes what" hint. */
export function fieldsRead(pred, out = new Set()) {
  if (!pred) return out;
  if (pred.field) out.add(pred.field);
  for (const a of pred.args || []) fieldsRead(a, out);
  if (pred.arg) fieldsRead(pred.arg, out);
  return out;
}
