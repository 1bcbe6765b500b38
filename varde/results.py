"""What a researcher gets back from the gateway: typed results both sides agree on.

The gateway builds these from the sites' :class:`~varde.release.SiteRelease`
rows (combining them into a :class:`NetworkRow`), and the researcher's client
parses the same models from the JSON, so a field renamed on one side is a type
error on the other, not a silently missing column.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from varde.budget import Budget, Measure
from varde.release import Cell, SiteRelease


class NetworkRow(BaseModel):
    """The combined answer over the sites that released."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sites: list[str]
    spent: dict[str, Budget]
    """What each site that released charged (nothing: aggregate mode)."""
    cells: list[Cell]


_MODE_MEASURES: dict[str, Measure] = {"dp": "epsilon", "zcdp": "rho"}


class _QueryHead(BaseModel):
    """What every answer about one query starts with."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    query_id: str
    project: str
    statistic: str
    mode: str
    requested: Budget | None
    """What each site is asked to spend (None in aggregate mode, and for an accuracy target:
    each site then charges the least budget that meets it, see each site's ``charged``)."""
    axes: list[tuple[str, list[str]]]
    unit: Literal["tumours", "patients"] = "tumours"
    """What the query counts (:attr:`varde.query.Query.unit`): plots and tables say it."""

    @property
    def measure(self) -> Measure | None:
        """The measure the query spends (``epsilon`` or ``rho``; None in aggregate mode).

        An accuracy target requests no amount (each site picks its own), so the mode says it.
        """
        if self.requested is not None:
            return self.requested.measure
        return _MODE_MEASURES.get(self.mode)


class QueryResult(_QueryHead):
    """What a researcher gets back: one row per site, the network row, budgets left.

    ``budget_remaining`` is what each site has left for the project, in the
    project's measure there (None where a site did not say).
    """

    sites: list[SiteRelease]
    network: NetworkRow | None
    budget_remaining: dict[str, Budget | None]


class PreviewResult(_QueryHead):
    """What a query would cost and how accurate it would be, before anything is charged.

    ``accuracy`` is the 95% half-width of the noise on each released number, by
    part (``count``, ``sum``), per site and for the network (where independent
    site noise adds in variance). For a mean it is given for its parts: the
    mean's own error also depends on the (unknown) count.
    """

    cells: int
    sites: list[SiteRelease]
    planned: dict[str, Budget]
    """What each site that would answer would charge."""
    network_accuracy: dict[str, float]
    network_noise_std: dict[str, float]


class StoredQuery(BaseModel):
    """A past query as the gateway stored it: the question, when, and its result then.

    ``result`` is the :class:`QueryResult` as it was returned at the time (kept as
    written: evidence is not rewritten when the format moves on); None when no
    site answered.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    query_id: str
    spec: dict[str, Any]
    created_at: dt.datetime
    result: dict[str, Any] | None
