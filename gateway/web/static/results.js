// Reading the gateway's answers: per-site rows, the network row, refusals in plain words,
// budgets, and the CSV of a table. No DOM here except building table elements.

/** What a site's status means, in words a study manager can act on. */
export function plainRefusal(row) {
  const message = row.message || "";
  switch (row.status) {
    case "field_not_available": {
      const m = /field\(s\) ([\w, ]+)/.exec(message);
      const what = m ? m[1].trim() : "a field this question reads";
      return `This site's policy does not share ${what}, so it cannot answer. Remove that criterion to include this site. Nothing was charged here.`;
    }
    case "budget_exhausted":
      return "The project's privacy budget at this site is used up (or too small for this question). Nothing was charged here.";
    case "awaiting_approval":
      return "Waiting for the site's staff to approve this question. Nothing was charged yet; run it again later.";
    case "unavailable":
      return "The site is offline or did not answer in time. Nothing was charged there.";
    case "policy_violation":
      return `The site's policy does not allow this question: ${message}`;
    case "invalid_query":
      return `The site could not accept this question: ${message}`;
    case "envelope_rejected":
      return "The site could not verify the gateway's signature on the question; nothing was computed there.";
    default:
      return `The site reported an error${message ? `: ${message}` : ""}. Nothing was charged there.`;
  }
}

/** A budget `{"epsilon": x}` or `{"rho": x}` as text. */
export function budgetText(b) {
  if (!b) return "—";
  if (b.epsilon !== undefined) return `ε ${fmt2(b.epsilon)}`;
  if (b.rho !== undefined) return `ρ ${fmt2(b.rho)}`;
  return "—";
}

export function fmt2(x) {
  return x === null || x === undefined ? "—" : Number(x).toFixed(2);
}

/**
 * The closest non-increasing sequence within [lower, upper], weighted by 1/std²: the
 * free post-processing varde_client/consistency.py applies to funnels and survival
 * curves (weighted pool-adjacent-violators, as scipy.optimize.isotonic_regression),
 * so the page shows the numbers the SDK and the CLI show.
 */
export function nonIncreasing(values, stds, lower = -Infinity, upper = Infinity) {
  const blocks = [];
  values.forEach((v, i) => {
    const s = stds ? stds[i] : null;
    const w = s && s > 0 ? 1 / (s * s) : 1;
    blocks.push({ sum: v * w, w, n: 1 });
    while (blocks.length > 1) {
      const b = blocks[blocks.length - 1];
      const a = blocks[blocks.length - 2];
      if (a.sum / a.w >= b.sum / b.w) break;
      blocks.splice(-2, 2, { sum: a.sum + b.sum, w: a.w + b.w, n: a.n + b.n });
    }
  });
  return blocks.flatMap((b) => Array(b.n).fill(Math.min(upper, Math.max(lower, b.sum / b.w))));
}

/** `cells` with consistent values along their order (released cells of one row). */
function consistentAlong(cells, lower, upper) {
  const live = cells.map((c, i) => (c && c.status !== "suppressed" && c.value != null ? i : -1)).filter((i) => i >= 0);
  const fitted = nonIncreasing(live.map((i) => cells[i].value), live.map((i) => cells[i].std), lower, upper);
  const out = cells.map((c) => c && { ...c });
  live.forEach((i, k) => {
    out[i].raw_value = cells[i].value;
    out[i].value = fitted[k];
  });
  return out;
}

/** A released count shown the way the SDK shows it: never below zero, whole patients. */
export function countCell(cell) {
  if (!cell || cell.status === "suppressed" || cell.value === null || cell.value === undefined) {
    return { value: null, lo: null, hi: null, noisy: null, note: cell && cell.status === "suppressed" ? "suppressed (small cell)" : "no value" };
  }
  const value = Math.max(0, Math.round(cell.value));
  const lo = cell.ci_low == null ? null : Math.max(0, Math.round(cell.ci_low));
  const hi = cell.ci_high == null ? null : Math.max(0, Math.round(cell.ci_high));
  const raw = cell.raw_value ?? cell.value;
  return { value, raw, lo, hi, noisy: Boolean(cell.noisy), note: "" };
}

/** The cell of `row` whose labels end with `label` (funnel steps, survival times). */
export function cellAt(row, label) {
  return (row.cells || []).find((c) => c.labels[c.labels.length - 1] === label);
}

/**
 * The per-site table of a count: `[{site, status, words, value, lo, hi, noisy, charged, left, cached}]`
 * and the network row last. `result` is a QueryResult, or an error body carrying `sites`.
 */
export function countRows(result) {
  const rows = [];
  const left = result.budget_remaining || {};
  for (const s of result.sites || []) {
    const ok = s.status === "ok";
    const c = ok ? countCell(s.cells[0]) : { value: null, lo: null, hi: null, noisy: null, note: "" };
    rows.push({
      site: s.site,
      status: s.status,
      words: ok ? (s.cached ? "answered from the site's cache (nothing charged)" : "answered") : plainRefusal(s),
      ...c,
      charged: ok ? s.charged : null,
      left: left[s.site] ?? s.budget_remaining ?? null,
      cached: Boolean(s.cached),
    });
  }
  if (result.network) {
    rows.push({
      site: "NETWORK",
      status: "ok",
      words: `combined over ${result.network.sites.join(", ")}`,
      ...countCell(result.network.cells[0]),
      charged: null,
      left: null,
      cached: false,
      network: true,
    });
  }
  return rows;
}

/**
 * One value per funnel step and site: `{labels, sites: [{site, status, words, steps}], network}`,
 * each row made non-increasing and non-negative (its released value kept as `raw`).
 */
export function funnelRows(result, labels) {
  const along = (row) => consistentAlong(labels.map((l) => cellAt(row, l)), 0, Infinity).map(countCell);
  const sites = (result.sites || []).map((s) => ({
    site: s.site,
    status: s.status,
    words: s.status === "ok" ? "" : plainRefusal(s),
    steps: s.status === "ok" ? along(s) : labels.map(() => null),
  }));
  const network = result.network ? along(result.network) : null;
  return { labels, sites, network };
}

/** The network survival curve `[{month, value, lo, hi}]` and its median (months or null). */
export function survivalCurve(result) {
  if (!result.network) return { points: [], median: null };
  const points = [];
  let median = null;
  const grid = result.network.cells.filter((c) => /^\d+m$/.test(c.labels[c.labels.length - 1]));
  const fitted = consistentAlong(grid, 0, 1);
  for (const c of [...fitted, ...result.network.cells.filter((c) => !grid.includes(c))]) {
    const label = c.labels[c.labels.length - 1];
    if (label === "median") {
      median = c.value == null ? null : c;
    } else if (/^\d+m$/.test(label) && c.value != null) {
      const clamp = (v) => (v == null ? null : Math.min(1, Math.max(0, v)));
      points.push({ month: Number(label.slice(0, -1)), value: clamp(c.value), lo: clamp(c.ci_low), hi: clamp(c.ci_high) });
    }
  }
  return { points, median };
}

function csvField(value) {
  let text = value === null || value === undefined ? "" : String(value);
  // a text cell a spreadsheet would run as a formula gets a leading ' (numbers stay numbers)
  if (typeof value !== "number" && /^[=+\-@\t\r]/.test(text)) text = `'${text}`;
  return /[",\n\r]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

/** Rows of values as CSV text (fields quoted where needed; no formula injection). */
export function toCsv(header, rows) {
  return [header, ...rows].map((r) => r.map(csvField).join(",")).join("\r\n") + "\r\n";
}

/** The counts table as CSV rows. */
export function countCsv(rows, unit) {
  const header = ["site", "unit", "value", "raw_value", "ci95_low", "ci95_high", "noise_dominates", "status", "explanation", "charged", "budget_left"];
  const measure = (b) => (b ? b.epsilon ?? b.rho ?? "" : "");
  return toCsv(
    header,
    rows.map((r) => [r.site, unit, r.value, r.raw, r.lo, r.hi, r.noisy === null ? "" : r.noisy ? "yes" : "no", r.status, r.words, measure(r.charged), measure(r.left)]),
  );
}

/** The funnel as CSV rows (one per step and site, then the network). */
export function funnelCsv(funnel, unit) {
  const out = [];
  funnel.labels.forEach((label, i) => {
    for (const s of funnel.sites) {
      const c = s.steps[i];
      out.push([label, s.site, unit, c ? c.value : "", c ? c.raw : "", c ? c.lo : "", c ? c.hi : "", s.status]);
    }
    if (funnel.network) {
      const c = funnel.network[i];
      out.push([label, "NETWORK", unit, c.value, c.raw, c.lo, c.hi, "ok"]);
    }
  });
  return toCsv(["step", "site", "unit", "value", "raw_value", "ci95_low", "ci95_high", "status"], out);
}
