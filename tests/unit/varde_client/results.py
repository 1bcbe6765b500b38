"""Gateway answers built by hand for the SDK's unit tests: the JSON ``POST /v1/queries`` returns.

Built through the shared wire models (:mod:`varde.release`, :mod:`varde.results`),
so a field renamed there breaks these helpers rather than silently passing.
"""

from __future__ import annotations

from typing import Any

from varde.budget import Budget, PureDP
from varde.release import Cell, SiteRelease
from varde.results import NetworkRow, QueryResult

Z95 = 1.959963984540054
EPSILON = PureDP(0.5)


def cell(labels: list[str], value: float | None, std: float | None = 2.0) -> Cell:
    """A released number with its symmetric 95% interval (suppressed when ``value`` is None)."""
    if value is None:
        return Cell(labels=labels, status="suppressed")
    if std is None:
        return Cell(labels=labels, value=value)
    half = Z95 * std
    return Cell(labels=labels, value=value, ci_low=value - half, ci_high=value + half, std=std)


def site(
    name: str,
    cells: list[Cell],
    charged: Budget | None,
    *,
    statistic: str = "count",
    left: Budget | None = None,
) -> SiteRelease:
    """A site's ``ok`` release."""
    mode = "aggregate" if charged is None else ("zcdp" if charged.measure == "rho" else "dp")
    return SiteRelease(
        query_id="q1",
        site=name,
        status="ok",
        project="p",
        statistic=statistic,
        mode=mode,
        charged=charged,
        mechanism="opendp.discrete_laplace" if charged is not None else "",
        cells=cells,
        budget_remaining=left,
    )


def refusal(name: str, status: str, message: str) -> SiteRelease:
    """A site's refusal row, as the gateway sends it."""
    return SiteRelease(query_id="q1", site=name, status=status, message=message)  # type: ignore[arg-type]


def answer(
    rows: list[SiteRelease],
    network: list[Cell] | None,
    *,
    statistic: str = "count",
    requested: Budget | None = EPSILON,
    axes: list[tuple[str, list[str]]] | None = None,
) -> dict[str, Any]:
    """The gateway's JSON for ``rows`` and the network's ``network`` cells (None: no network)."""
    ok = [r for r in rows if r.status == "ok"]
    net = None
    if network is not None:
        spent = {r.site: r.charged for r in ok if r.charged is not None}
        net = NetworkRow(sites=[r.site for r in ok], spent=spent, cells=network)
    result = QueryResult(
        query_id="q1",
        project="p",
        statistic=statistic,
        mode="aggregate" if requested is None else ("zcdp" if requested.measure == "rho" else "dp"),
        requested=requested,
        axes=axes or [],
        sites=rows,
        network=net,
        budget_remaining={r.site: r.budget_remaining for r in rows},
    )
    return result.model_dump(mode="json")
