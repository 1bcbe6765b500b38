"""A query's result as pandas DataFrames: one row per site and cell, plus the network rows."""

from __future__ import annotations

from typing import Any

import pandas as pd


class QueryResponse:
    """A query's result with DataFrame views."""

    def __init__(self, raw: dict[str, Any], status: int = 200) -> None:
        self.raw = raw
        self.status = status
        """200, or 202 when no site released yet because some await their staff's approval."""

    @property
    def axes(self) -> list[str]:
        """Names of the result's axes (group_by keys, then bins/categories)."""
        return [a[0] for a in self.raw["axes"]]

    def _rows(
        self, site: str, cells: list[dict[str, Any]], extra: dict[str, Any]
    ) -> list[dict[str, Any]]:
        out = []
        for cell in cells:
            row: dict[str, Any] = {"site": site}
            row.update(dict(zip(self.axes, cell.get("labels", []), strict=False)))
            row.update(
                value=cell.get("value"),
                ci_low=cell.get("ci_low"),
                ci_high=cell.get("ci_high"),
                cell_status=cell.get("status", "ok"),
            )
            row.update(extra)
            out.append(row)
        return out

    def sites_frame(self) -> pd.DataFrame:
        """One row per site (and cell): value, 95% interval, status, epsilon, budget left."""
        rows: list[dict[str, Any]] = []
        for s in self.raw["sites"]:
            extra = {
                "status": s["status"],
                "epsilon": s.get("epsilon_charged", 0.0),
                "mechanism": s.get("mechanism", ""),
                "budget_left": s.get("budget_remaining"),
                "message": s.get("message", ""),
            }
            if s["status"] == "ok":
                rows.extend(self._rows(s["site"], s["cells"], extra))
            else:
                rows.append({"site": s["site"], **extra})
        return pd.DataFrame(rows)

    def network_frame(self) -> pd.DataFrame:
        """The combined network row(s) with their 95% intervals."""
        net = self.raw.get("network")
        if not net:
            return pd.DataFrame()
        extra = {
            "status": "ok",
            "epsilon": sum(net["epsilon_spent"].values()),
            "sites": len(net["sites"]),
        }
        return pd.DataFrame(self._rows("network", net["cells"], extra))

    def frame(self) -> pd.DataFrame:
        """Sites and network in one long frame."""
        return pd.concat([self.sites_frame(), self.network_frame()], ignore_index=True)
