"""What a site releases, and what a site tells the gateway about itself.

A :class:`SiteRelease` is the only thing that leaves a hospital for a query. It
carries the released cells with their noise description (mechanism, scale,
epsilon charged, 95% interval) so the gateway can combine sites and report
accuracy without ever seeing a row. A refusal is also a release: a site says
*why* it did not answer (policy, budget, envelope), so a researcher can tell
suppression from refusal from failure.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

SiteStatus = Literal[
    "ok",
    "policy_violation",
    "budget_exhausted",
    "invalid_query",
    "envelope_rejected",
    "unavailable",
    "error",
    "awaiting_approval",  # the site's staff must approve first; nothing computed or charged
]
CellStatus = Literal["ok", "suppressed"]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Cell(_Wire):
    """One released number, with its labels along the query's axes.

    ``parts`` holds the released components a combiner needs (a mean is
    released as a noisy ``sum`` and a noisy ``count``; pooling divides the sums
    of both, never averages site means). ``std`` is the noise's standard
    deviation for ``value`` (0 in aggregate mode).
    """

    labels: list[str] = []
    status: CellStatus = "ok"
    value: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    std: float | None = None
    parts: dict[str, float] = {}
    part_std: dict[str, float] = {}


class SiteRelease(_Wire):
    """A site's answer to one work item (a release or a reasoned refusal)."""

    query_id: str
    site: str
    status: SiteStatus
    project: str = ""
    message: str = ""
    statistic: str = ""
    mode: Literal["dp", "zcdp", "aggregate", ""] = ""
    epsilon_charged: float = 0.0
    rho_charged: float = 0.0
    """In zCDP mode: the rho charged (``budget_*`` are then in rho too)."""
    mechanism: str = ""
    noise_scales: dict[str, float] = {}
    axes: list[tuple[str, list[str]]] = []
    cells: list[Cell] = []
    budget_total: float | None = None
    budget_remaining: float | None = None
    elapsed_ms: float = 0.0
    cached: bool = False
    """True when this is a repeat served from the site's release cache (nothing charged)."""
    preview: bool = False
    """A dry run: no row read, nothing charged, no value; what the query *would* cost."""
    epsilon_planned: float = 0.0
    """In a preview: the epsilon the site would charge (0 for a cached repeat)."""
    rho_planned: float = 0.0
    """In a preview in zCDP mode: the rho the site would charge."""
    noise_std: dict[str, float] = {}
    """Standard deviation of the noise on each released number, by part (count, sum)."""
    accuracy: dict[str, float] = {}
    """95% half-width of the noise on each released number, by part (count, sum)."""


class WorkItem(_Wire):
    """The body of a gateway-signed ``work`` envelope."""

    query_id: str
    project: str
    researcher: str
    query: dict[str, Any]
    preview: bool = False
    """Only say what the query would cost and how accurate it would be; read no row."""


class ProjectTerms(_Wire):
    """The public part of a site's policy for one project.

    ``accounting`` says which measure the project's queries spend: ``epsilon``
    (pure DP, ``{"mode": "dp"}``) or ``zcdp`` (rho, ``{"mode": "zcdp"}``). The
    gateway's friendly pre-check compares a query against the fields of that
    measure; the rho fields default so that a manifest from a node that
    predates zCDP still parses.
    """

    epsilon_budget: float
    max_epsilon_per_query: float
    epsilon_remaining: float
    training: list[str] = []
    """Federated training models the project may train at the site (empty: none)."""
    accounting: Literal["epsilon", "zcdp"] = "epsilon"
    rho_budget: float = 0.0
    max_rho_per_query: float | None = None
    rho_remaining: float = 0.0

    @property
    def remaining(self) -> float:
        """What is left in the project's own measure (epsilon, or rho under zCDP)."""
        return self.rho_remaining if self.accounting == "zcdp" else self.epsilon_remaining


class Manifest(_Wire):
    """What a site tells the gateway about itself (public policy facts only).

    The gateway uses it for friendly refusals before fan-out and for
    ``GET /v1/schema``; the node still enforces its own policy on every item.
    """

    site: str
    fields: list[str]
    statistics: list[str]
    projects: dict[str, ProjectTerms] = {}
    aggregate_mode: bool = False
    min_cell: int | None = None
    policy_version: str = ""
