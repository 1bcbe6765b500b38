"""Readable text tables of a query result or a training job, for the CLI and the demo."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table

from varde.release import Cell, is_noisy
from varde_client.consistency import NONNEGATIVE, consistent_cells
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
    """One line per site: status, what it charged (in the query's measure), budget left."""
    rows = []
    measure = res.measure
    digits = 4 if measure == "rho" else 2
    for s in res.result.sites:
        row: dict[str, str] = {"site": s.site, "status": s.status}
        if measure is not None:
            row[measure] = _num(s.charged.amount if s.charged is not None else 0.0, digits)
        left = s.budget_remaining
        row["budget left"] = _num(left.amount if left is not None else None, 2)
        row["mechanism"] = s.mechanism or "-"
        row["note"] = (s.message or "")[:70]
        rows.append(row)
    return pd.DataFrame(rows).set_index("site")


NONNEGATIVE_SHOWN = {*NONNEGATIVE, "funnel", "survival"}
"""Statistics whose intervals are printed from zero up (counts, probabilities)."""

NOISY_MARK = "*"
NOISY_NOTE = (
    "* the 95% interval is wider than the value: noise dominates that number. Values are shown "
    "made consistent (never below zero, funnels and survival never rising); --format json has "
    "the raw releases."
)


def _shown(cell: Cell, value: float | None, digits: int) -> str:
    """A cell as printed: its consistent value, marked when noise dominates it."""
    if cell.status == "suppressed":
        return "suppr."
    mark = NOISY_MARK if is_noisy(value, cell.ci_low, cell.ci_high) else ""
    return _num(value, digits) + mark


def _low(lo: float | None, statistic: str) -> float | None:
    """An interval's lower end as printed: a count's is never below zero."""
    return None if lo is None else (max(lo, 0.0) if statistic in NONNEGATIVE_SHOWN else lo)


def render(res: QueryResponse, *, digits: int | None = None) -> str:
    """Values per site and for the network, then the per-site privacy summary.

    Counts print as whole numbers, sums and means with one decimal, survival
    probabilities (and median months) with two.
    """
    result = res.result
    if digits is None:
        digits = {"mean": 1, "sum": 1, "survival": 2}.get(result.statistic, 0)
    axes = res.axes
    ok = [s for s in result.sites if s.status == "ok"]
    net = result.network
    lines: list[str] = []
    stat = result.statistic

    def shown(cells: list[Cell]) -> list[str]:
        return [
            _shown(c, v, digits) for c, v in zip(cells, consistent_cells(stat, cells), strict=True)
        ]

    rows_of = [(s.site, s.cells) for s in ok] + ([("NETWORK", net.cells)] if net else [])
    marked = any(NOISY_MARK in text for _, cells in rows_of for text in shown(cells))
    if not axes:
        if rows_of:
            frame = pd.DataFrame(
                [
                    {
                        "site": site,
                        "value": shown(cells[:1])[0],
                        "95% CI": _ci(_low(cells[0].ci_low, stat), cells[0].ci_high, digits),
                    }
                    for site, cells in rows_of
                ]
            )
            lines.append(frame.to_string(index=False))
    else:
        table: dict[str, list[str]] = {s.site: shown(s.cells) for s in ok}
        labels: list[str] = []
        if net is not None:
            labels = [" / ".join(c.labels) for c in net.cells]
            table["NETWORK"] = shown(net.cells)
            table["network 95% CI"] = [
                _ci(_low(c.ci_low, stat), c.ci_high, digits) for c in net.cells
            ]
        if table:
            frame = pd.DataFrame(table, index=labels or None)
            frame.index.name = " x ".join(axes)
            lines.append(frame.to_string())
    if marked:
        lines.append(NOISY_NOTE)
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
