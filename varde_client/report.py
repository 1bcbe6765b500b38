"""Readable text tables of a query result or a training job, for the CLI and the demo."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table

from varde_client.frames import QueryResponse
from varde_client.training import TrainingResult


def _num(x: object, digits: int = 1) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    assert isinstance(x, int | float)
    return f"{x:,.{digits}f}" if abs(x) < 1e6 else f"{x:,.0f}"


def _ci(lo: object, hi: object, digits: int) -> str:
    if lo is None or hi is None:
        return "-"
    return f"[{_num(lo, digits)}, {_num(hi, digits)}]"


def site_summary(res: QueryResponse) -> pd.DataFrame:
    """One line per site: status, epsilon (rho under zCDP) charged, budget left, mechanism."""
    rows = []
    zcdp = res.raw.get("mode") == "zcdp"
    measure, charged = ("rho", "rho_charged") if zcdp else ("epsilon", "epsilon_charged")
    for s in res.raw["sites"]:
        rows.append(
            {
                "site": s["site"],
                "status": s["status"],
                measure: _num(s.get(charged, 0.0), 2 if not zcdp else 4),
                "budget left": _num(s.get("budget_remaining"), 2),
                "mechanism": s.get("mechanism", "") or "-",
                "note": (s.get("message") or "")[:70],
            }
        )
    return pd.DataFrame(rows).set_index("site")


def render(res: QueryResponse, *, digits: int | None = None) -> str:
    """Values per site and for the network, then the per-site privacy summary.

    Counts print as whole numbers, sums and means with one decimal, survival
    probabilities (and median months) with two.
    """
    raw = res.raw
    if digits is None:
        digits = {"mean": 1, "sum": 1, "survival": 2}.get(raw["statistic"], 0)
    axes = res.axes
    ok = [s for s in raw["sites"] if s["status"] == "ok"]
    net = raw.get("network")
    lines: list[str] = []
    if not axes:
        rows = []
        for s in ok:
            c = s["cells"][0]
            rows.append(
                {
                    "site": s["site"],
                    "value": _num(c.get("value"), digits),
                    "95% CI": _ci(c.get("ci_low"), c.get("ci_high"), digits),
                }
            )
        if net:
            c = net["cells"][0]
            rows.append(
                {
                    "site": "NETWORK",
                    "value": _num(c.get("value"), digits),
                    "95% CI": _ci(c.get("ci_low"), c.get("ci_high"), digits),
                }
            )
        if rows:
            lines.append(pd.DataFrame(rows).to_string(index=False))
    else:
        table: dict[str, list[str]] = {}
        labels: list[str] = []
        for s in ok:
            table[s["site"]] = []
            for c in s["cells"]:
                table[s["site"]].append(
                    "suppr." if c.get("status") == "suppressed" else _num(c.get("value"), digits)
                )
        if net:
            labels = [" / ".join(c["labels"]) for c in net["cells"]]
            table["NETWORK"] = [
                "suppr." if c.get("status") == "suppressed" else _num(c.get("value"), digits)
                for c in net["cells"]
            ]
            table["network 95% CI"] = [
                _ci(c.get("ci_low"), c.get("ci_high"), digits) for c in net["cells"]
            ]
        if table:
            frame = pd.DataFrame(table, index=labels or None)
            frame.index.name = " x ".join(axes)
            lines.append(frame.to_string())
    lines.append("")
    lines.append(site_summary(res).to_string())
    return "\n".join(lines)


def print_training(result: TrainingResult, out: Console) -> None:
    """Coefficients, per-site spending and job figures as tables (rich, on ``out``)."""
    status = result.status
    out.print(f"training job {status.id}: {status.state}, round {status.round} of {status.rounds}")
    coefficients = result.coefficients
    if len(coefficients):
        table = Table(title=f"Coefficients after round {status.round}")
        table.add_column("term")
        table.add_column("coefficient", justify="right")
        for term, value in coefficients.items():
            table.add_row(str(term), f"{value:.4f}")
        out.print(table)
    sites = Table(title="Sites")
    sites.add_column("site")
    sites.add_column("rounds", justify="right")
    # Sites whose project accounts in zCDP charged rho: then say which measure each paid.
    mixed = bool((result.sites["measure"] == "rho").any())
    sites.add_column("spent" if mixed else "epsilon spent", justify="right")
    if mixed:
        sites.add_column("measure")
    for site, row in result.sites.iterrows():
        cells = [str(site), str(row["rounds_completed"]), f"{row['spent']:.4g}"]
        sites.add_row(*cells, *([str(row["measure"])] if mixed else []))
    out.print(sites)
    for site, row in result.sites.iterrows():
        if row["refusal"]:
            out.print(f"{site} stopped: {row['refusal']}", soft_wrap=True)
    if status.guarantee:
        out.print(f"Privacy of the coefficients: {status.guarantee}", soft_wrap=True)
    evaluation = result.metrics
    if not evaluation.empty:
        table = Table(title="Evaluation on held-out patients (DP)")
        table.add_column("scope")
        names = [str(c) for c in evaluation.columns]
        columns = [c for c in names if c != "refusal" and not c.endswith("_pm95")]
        for col in columns:
            table.add_column(col + (" (±95%)" if f"{col}_pm95" in names else ""), justify="right")

        def shown(row: Any, col: str) -> str:
            pm = row.get(f"{col}_pm95")
            if pm is None or pm != pm:  # absent or NaN
                return _cell(row[col])
            value = float(row[col])
            digits = 0 if abs(value) >= 10 else 3
            return f"{value:.{digits}f}±{float(pm):.{digits}f}"

        for scope, row in evaluation.iterrows():
            table.add_row(str(scope), *(shown(row, c) for c in columns))
        out.print(table)
        if "refusal" in evaluation.columns:
            for scope, why in evaluation["refusal"].dropna().items():
                out.print(f"{scope} did not evaluate: {why}", soft_wrap=True)
    summary = Table(title="Job")
    summary.add_column("figure")
    summary.add_column("value", justify="right")
    for name, value in result.summary.items():
        summary.add_row(str(name), _cell(value))
    out.print(summary)


def _cell(value: Any) -> str:
    """A number for a table; '-' for a missing one (NaN)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return "-" if number != number else f"{number:.4g}"
