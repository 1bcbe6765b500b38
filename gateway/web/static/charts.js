// Charts as plain SVG: horizontal bars with 95% intervals, and a step curve with a band.
//
// Why SVG by hand and not a chart library: the page draws two simple shapes; SVG is
// text in the DOM (screen readers get a title and a description, tests can read it),
// needs no dependency to vendor and keep up to date, and exports to PNG through a
// canvas. Every chart has a table beside it with the same numbers.

const NS = "http://www.w3.org/2000/svg";
const INK = "#1d2730";
const BAR = "#1f5f99";
const NETWORK = "#8a4b00";
const GRID = "#c8d0d8";

function el(name, attrs = {}, text = "") {
  const node = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text) node.textContent = text;
  return node;
}

function frame(width, height, title, description) {
  const svg = el("svg", {
    xmlns: NS,
    viewBox: `0 0 ${width} ${height}`,
    width,
    height,
    role: "img",
    "aria-label": title,
    "font-family": "system-ui, sans-serif",
    "font-size": 13,
  });
  svg.append(el("title", {}, title), el("desc", {}, description));
  svg.append(el("rect", { x: 0, y: 0, width, height, fill: "#ffffff" }));
  return svg;
}

function niceMax(value) {
  if (!(value > 0)) return 1;
  const mag = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) if (step * mag >= value) return step * mag;
  return 10 * mag;
}

function fmt(x) {
  return Math.abs(x) >= 100 || Number.isInteger(x) ? String(Math.round(x)) : x.toFixed(2);
}

/**
 * Horizontal bars, one per row `{label, value, lo, hi, network}`; rows with a null
 * value (refused, suppressed) are drawn as a labelled gap so the sites stay in place.
 */
export function barChart(title, rows, axisLabel) {
  const width = 640;
  const left = 190;
  const right = 60;
  const rowH = 30;
  const top = 34;
  const height = top + rows.length * rowH + 44;
  const max = niceMax(Math.max(1, ...rows.map((r) => (r.hi ?? r.value ?? 0))));
  const x = (v) => left + (Math.max(0, v) / max) * (width - left - right);
  const described = rows.map((r) => `${r.label}: ${r.value == null ? r.note || "no value" : `${fmt(r.value)} [${fmt(r.lo)}, ${fmt(r.hi)}]`}`);
  const svg = frame(width, height, title, described.join("; "));
  svg.append(el("text", { x: 8, y: 20, "font-weight": 600, fill: INK }, title));
  for (let i = 0; i <= 4; i++) {
    const v = (max * i) / 4;
    const gx = x(v);
    svg.append(el("line", { x1: gx, x2: gx, y1: top - 4, y2: top + rows.length * rowH, stroke: GRID }));
    svg.append(el("text", { x: gx, y: top + rows.length * rowH + 16, "text-anchor": "middle", fill: INK }, fmt(v)));
  }
  svg.append(el("text", { x: (left + width - right) / 2, y: height - 8, "text-anchor": "middle", fill: INK }, axisLabel));
  rows.forEach((r, i) => {
    const y = top + i * rowH;
    svg.append(el("text", { x: left - 8, y: y + rowH / 2 + 4, "text-anchor": "end", fill: INK, "font-weight": r.network ? 600 : 400 }, r.label));
    if (r.value == null) {
      svg.append(el("text", { x: left + 6, y: y + rowH / 2 + 4, fill: "#5b6770", "font-style": "italic" }, r.note || "no value"));
      return;
    }
    svg.append(el("rect", { x: left, y: y + 6, width: Math.max(1, x(r.value) - left), height: rowH - 12, fill: r.network ? NETWORK : BAR }));
    if (r.lo != null && r.hi != null) {
      const cy = y + rowH / 2;
      svg.append(el("line", { x1: x(r.lo), x2: x(r.hi), y1: cy, y2: cy, stroke: INK, "stroke-width": 1.5 }));
      for (const v of [r.lo, r.hi]) svg.append(el("line", { x1: x(v), x2: x(v), y1: cy - 6, y2: cy + 6, stroke: INK, "stroke-width": 1.5 }));
    }
  });
  return svg;
}

/** A survival step curve `points: [{month, value, lo, hi}]` with its 95% band. */
export function survivalChart(title, points) {
  const width = 640;
  const height = 300;
  const left = 56;
  const right = 20;
  const top = 34;
  const bottom = 48;
  const maxMonth = Math.max(1, ...points.map((p) => p.month));
  const x = (m) => left + (m / maxMonth) * (width - left - right);
  const y = (s) => top + (1 - Math.min(1, Math.max(0, s))) * (height - top - bottom);
  const described = points.map((p) => `${p.month} months: ${(100 * p.value).toFixed(0)}%`);
  const svg = frame(width, height, title, described.join("; "));
  svg.append(el("text", { x: 8, y: 20, "font-weight": 600, fill: INK }, title));
  for (const s of [0, 0.25, 0.5, 0.75, 1]) {
    svg.append(el("line", { x1: left, x2: width - right, y1: y(s), y2: y(s), stroke: GRID }));
    svg.append(el("text", { x: left - 6, y: y(s) + 4, "text-anchor": "end", fill: INK }, `${s * 100}%`));
  }
  for (const p of points) {
    svg.append(el("text", { x: x(p.month), y: height - bottom + 16, "text-anchor": "middle", fill: INK }, String(p.month)));
  }
  svg.append(el("text", { x: (left + width - right) / 2, y: height - 8, "text-anchor": "middle", fill: INK }, "months since diagnosis"));
  const all = [{ month: 0, value: 1, lo: 1, hi: 1 }, ...points];
  let line = `M ${x(0)} ${y(1)}`;
  let upper = `M ${x(0)} ${y(1)}`;
  let lower = "";
  for (let i = 1; i < all.length; i++) {
    line += ` H ${x(all[i].month)} V ${y(all[i].value)}`;
    upper += ` H ${x(all[i].month)} V ${y(all[i].hi ?? all[i].value)}`;
  }
  for (let i = all.length - 1; i >= 1; i--) {
    lower += ` V ${y(all[i].lo ?? all[i].value)} H ${x(all[i - 1].month)}`;
  }
  svg.append(el("path", { d: `${upper}${lower} Z`, fill: BAR, "fill-opacity": 0.18, stroke: "none" }));
  svg.append(el("path", { d: line, fill: "none", stroke: BAR, "stroke-width": 2.5 }));
  return svg;
}

/** The SVG drawn onto a canvas at twice its size, as a PNG blob. */
export function svgToPng(svg) {
  const text = new XMLSerializer().serializeToString(svg);
  const url = "data:image/svg+xml;base64," + btoa(unescape(encodeURIComponent(text)));
  const width = Number(svg.getAttribute("width"));
  const height = Number(svg.getAttribute("height"));
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => {
      const canvas = document.createElement("canvas");
      canvas.width = width * 2;
      canvas.height = height * 2;
      const ctx = canvas.getContext("2d");
      ctx.scale(2, 2);
      ctx.drawImage(img, 0, 0, width, height);
      canvas.toBlob((blob) => (blob ? resolve(blob) : reject(new Error("no PNG"))), "image/png");
    };
    img.onerror = () => reject(new Error("the chart could not be drawn"));
    img.src = url;
  });
}
