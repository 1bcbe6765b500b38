"""A query's result as pandas DataFrames: one row per site and cell, plus the network rows.

The gateway's JSON is parsed into the shared :class:`~varde.results.QueryResult`
(so a renamed field is an error here, not a silently missing column), and the
frames name the privacy measure the project spends: the charge column is
``epsilon`` for a pure-DP project and ``rho`` for a zCDP one (none in aggregate
mode), ``budget_left`` is in that measure too, and ``frame.attrs["measure"]``
says which.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from varde.budget import Budget
from varde.release import Cell
from varde.results import QueryResult


def _amount(value: Budget | None) -> float | None:
    return value.amount if value is not None else None


class QueryResponse:
    """A query's result with DataFrame views."""

    def __init__(self, raw: dict[str, Any], status: int = 200) -> None:
        self.raw = raw
        """The JSON body as the gateway sent it."""
        self.result = QueryResult.model_validate(raw)
        """The same, typed."""
        self.status = status
        """200, or 202 when no site released yet because some await their staff's approval."""

    @property
    def axes(self) -> list[str]:
        """Names of the result's axes (group_by keys, then bins/categories)."""
        return [name for name, _ in self.result.axes]

    @property
    def measure(self) -> str | None:
        """``epsilon`` or ``rho``: what the query spends at every site (None: aggregate mode)."""
        return self.result.measure

    def _rows(self, site: str, cells: list[Cell], extra: dict[str, Any]) -> list[dict[str, Any]]:
        out = []
        for cell in cells:
            row: dict[str, Any] = {"site": site}
            row.update(dict(zip(self.axes, cell.labels, strict=False)))
            row.update(
                value=cell.value,
                ci_low=cell.ci_low,
                ci_high=cell.ci_high,
                cell_status=cell.status,
            )
            row.update(extra)
            out.append(row)
        return out

    def _frame(self, rows: list[dict[str, Any]]) -> pd.DataFrame:
        frame = pd.DataFrame(rows)
        frame.attrs["measure"] = self.measure
        return frame

    def _charge(self, value: Budget | None) -> dict[str, Any]:
        """The charge column, named after the query's measure (none in aggregate mode)."""
        if self.measure is None:
            return {}
        return {self.measure: value.amount if value is not None else 0.0}

    def sites_frame(self) -> pd.DataFrame:
        """One row per site (and cell): value, 95% interval, status, charge, budget left."""
        rows: list[dict[str, Any]] = []
        for s in self.result.sites:
            extra = {
                "status": s.status,
                **self._charge(s.charged),
                "mechanism": s.mechanism,
                "budget_left": _amount(s.budget_remaining),
                "message": s.message,
            }
            if s.status == "ok":
                rows.extend(self._rows(s.site, s.cells, extra))
            else:
                rows.append({"site": s.site, **extra})
        return self._frame(rows)

    def network_frame(self) -> pd.DataFrame:
        """The combined network row(s) with their 95% intervals (charge: the sites' total)."""
        net = self.result.network
        if net is None:
            return self._frame([])
        total = sum(b.amount for b in net.spent.values())
        extra: dict[str, Any] = {"status": "ok"}
        if self.measure is not None:
            extra[self.measure] = total
        extra["sites"] = len(net.sites)
        return self._frame(self._rows("network", net.cells, extra))

    def frame(self) -> pd.DataFrame:
        """Sites and network in one long frame."""
        frame = pd.concat([self.sites_frame(), self.network_frame()], ignore_index=True)
        frame.attrs["measure"] = self.measure
        return frame
