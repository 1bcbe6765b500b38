"""Readable text tables of a query result, for the CLI and the demo."""

from __future__ import annotations

import math

import pandas as pd

from varde.client import QueryResponse


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
