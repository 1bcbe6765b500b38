"""A query's result as pandas DataFrames: one row per site and cell, plus the network rows.

The gateway's JSON is parsed into the shared :class:`~varde.results.QueryResult`
(so a renamed field is an error here, not a silently missing column), and the
frames name the privacy measure the project spends: the charge column is
``epsilon`` for a pure-DP project and ``rho`` for a zCDP one (none in aggregate
mode), ``budget_left`` is in that measure too, and ``frame.attrs["measure"]``
says which.

Columns of every row with a number: the axes' labels, ``value``, ``raw_value``,
``ci_low``/``ci_high`` (the released 95% interval), ``std`` (the noise's sd),
``noisy`` and ``cell_status``; then ``status`` (a site's own, ``ok`` for the
network), the charge, and per site ``mechanism``, ``budget_left`` and
``message`` (per network row ``sites``, how many pooled).

* ``raw_value`` is the number as released (what the site signed); ``value`` is
  the same made consistent at no privacy cost (:mod:`varde_client.consistency`):
  counts not negative, a funnel never rising along its steps, a survival curve
  never rising and within ``[0, 1]``; the two are equal wherever the release
  already satisfies that, and for sums, means and quantiles. The interval is the
  release's (of ``raw_value``).
* ``noisy`` is True where the 95% interval is wider than the value itself: a
  number that the noise could as well have made (NA where there is no interval:
  aggregate mode, suppressed cells).
* ``attrs``: ``measure`` (``epsilon``, ``rho`` or None), ``charged`` (site ->
  amount charged in that measure, 0 for a site that did not release; empty in
  aggregate mode), ``query_id``, ``statistic`` and ``raw`` (the gateway's JSON,
  read-only and shared, not copied, by every frame derived from this one).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import pandas as pd

from varde.budget import Budget
from varde.release import Cell, is_noisy
from varde.results import QueryResult
from varde_client.consistency import consistent_cells
from varde_client.errors import QueryRefused, VardeHTTPError, site_error

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def _amount(value: Budget | None) -> float | None:
    return value.amount if value is not None else None


class RawResult(Mapping[str, Any]):
    """The gateway's JSON in a frame's ``attrs``: read-only, and shared rather than copied.

    pandas deep-copies ``attrs`` into every frame an operation derives, which for
    a many-cell crosstab is the whole answer copied at each filter; this wrapper
    is its own deep copy. Do not mutate what it returns.
    """

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = data

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __eq__(self, other: object) -> bool:
        return self is other or super().__eq__(other)

    __hash__ = None  # type: ignore[assignment]

    def __copy__(self) -> RawResult:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> RawResult:
        return self


class QueryResponse:
    """A query's result with DataFrame views, its refusals and a plot."""

    def __init__(self, raw: dict[str, Any], status: int = 200) -> None:
        self.raw = raw
        """The JSON body as the gateway sent it."""
        self.result = QueryResult.model_validate(raw)
        """The same, typed."""
        self.status = status
        """200, or 202 when no site released yet because some await their staff's approval."""
        self._shared = RawResult(raw)

    @property
    def axes(self) -> list[str]:
        """Names of the result's axes (group_by keys, then bins/categories)."""
        return [name for name, _ in self.result.axes]

    @property
    def measure(self) -> str | None:
        """``epsilon`` or ``rho``: what the query spends at every site (None: aggregate mode)."""
        return self.result.measure

    @property
    def pending(self) -> bool:
        """Nothing released yet because some site awaits its staff's approval (HTTP 202)."""
        return self.status == 202

    @property
    def refusals(self) -> dict[str, VardeHTTPError]:
        """The typed error of each site that did not answer ``ok``, by site (empty: all did)."""
        return {
            s.site: site_error(s.model_dump(mode="json"))
            for s in self.result.sites
            if s.status != "ok"
        }

    def raise_for_refusals(self) -> QueryResponse:
        """Raise :class:`~varde_client.errors.QueryRefused` if any site refused; else ``self``.

        The error's ``site_errors`` holds each refusing site's typed error
        (``FieldNotAvailable``, ``BudgetExhausted``, ``AwaitingApproval`` ...) and
        ``response`` this result, whose other sites' numbers stay usable.
        """
        refused = [s for s in self.result.sites if s.status != "ok"]
        if not refused:
            return self
        reasons = "; ".join(f"{s.site}: {s.message or s.status}" for s in refused)
        answered = len(self.result.sites) - len(refused)
        body = {
            "error": "refused",
            "detail": f"{len(refused)} of {len(self.result.sites)} site(s) refused, "
            f"{answered} answered ({reasons})",
            "sites": [s.model_dump(mode="json") for s in refused],
        }
        raise QueryRefused(self.status, body, response=self)

    def plot(self, **kw: Any) -> Axes | Figure:
        """Draw the result with :func:`varde_client.plots.plot` (matplotlib, imported only now)."""
        from varde_client.plots import plot

        return plot(self, **kw)

    def _rows(self, site: str, cells: list[Cell], extra: dict[str, Any]) -> list[dict[str, Any]]:
        consistent = consistent_cells(self.result.statistic, cells)
        out = []
        for cell, value in zip(cells, consistent, strict=True):
            row: dict[str, Any] = {"site": site}
            row.update(dict(zip(self.axes, cell.labels, strict=False)))
            noisy = is_noisy(value, cell.ci_low, cell.ci_high)
            row.update(
                value=value,
                raw_value=cell.value,
                ci_low=cell.ci_low,
                ci_high=cell.ci_high,
                std=cell.std,
                noisy=noisy,
                cell_status=cell.status,
            )
            row.update(extra)
            out.append(row)
        return out

    def _frame(self, rows: list[dict[str, Any]]) -> pd.DataFrame:
        frame = pd.DataFrame(rows)
        if "noisy" in frame.columns:
            frame["noisy"] = frame["noisy"].astype("boolean")
        return self._label(frame)

    def _label(self, frame: pd.DataFrame) -> pd.DataFrame:
        measure = self.measure
        frame.attrs["measure"] = measure
        frame.attrs["charged"] = (
            {}
            if measure is None
            else {s.site: s.charged.amount if s.charged else 0.0 for s in self.result.sites}
        )
        frame.attrs["query_id"] = self.result.query_id
        frame.attrs["statistic"] = self.result.statistic
        frame.attrs["raw"] = self._shared
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
        parts = [f for f in (self.sites_frame(), self.network_frame()) if not f.empty]
        frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
        return self._label(frame)
