"""What a site releases, and what a site tells the gateway about itself.

A :class:`SiteRelease` is the only thing that leaves a hospital for a query. It
carries the released cells with their noise description (mechanism, scale,
budget charged, 95% interval) so the gateway can combine sites and report
accuracy without ever seeing a row. Every privacy amount is a typed budget
(:mod:`varde.budget`): ``{"epsilon": x}`` or ``{"rho": x}``, never a bare number
whose measure one has to guess. A refusal is also a release: a site says
*why* it did not answer (policy, budget, envelope), so a researcher can tell
suppression from refusal from failure.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field, model_validator

from varde.budget import Budget, measure_of
from varde.query import MAX_CELLS
from varde.study_fields import StudyField

SiteStatus = Literal[
    "ok",
    "policy_violation",
    "field_not_available",  # a policy refusal: the query reads a field the site does not expose
    "budget_exhausted",
    "invalid_query",
    "envelope_rejected",
    "unavailable",
    "error",
    "awaiting_approval",  # the site's staff must approve first; nothing computed or charged
]
CellStatus = Literal["ok", "suppressed"]
RequestId = Annotated[str, Field(max_length=64, pattern=r"^[A-Za-z0-9._:-]*$")]
"""A request id (:mod:`varde.logs`) on the wire; empty where none was given."""


def is_noisy(value: float | None, low: float | None, high: float | None) -> bool | None:
    """True where ``[low, high]`` is wider than ``value`` itself; None without all three.

    >>> is_noisy(3.0, -2.0, 8.0), is_noisy(120.0, 110.0, 130.0), is_noisy(None, 0.0, 1.0)
    (True, False, None)
    """
    if value is None or low is None or high is None:
        return None
    return high - low > abs(value)


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


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

    @model_validator(mode="before")
    @classmethod
    def _derived_not_taken(cls, data: Any) -> Any:
        """``noisy`` is derived from the interval, so a parsed ``noisy`` is dropped, not trusted."""
        if isinstance(data, dict) and "noisy" in data:
            data = {k: v for k, v in data.items() if k != "noisy"}
        return data

    @computed_field  # type: ignore[prop-decorator]
    @property
    def noisy(self) -> bool | None:
        """True where the 95% interval is wider than the value: noise dominates the number.

        None without a value or an interval (suppressed cells, aggregate mode). Shown by
        the SDK, the CLI and any page, from this one definition.

        >>> Cell(value=3.0, ci_low=-2.0, ci_high=8.0).noisy, Cell(value=9.0).noisy
        (True, None)
        """
        return is_noisy(self.value, self.ci_low, self.ci_high)


class SiteRelease(_Wire):
    """A site's answer to one work item (a release or a reasoned refusal)."""

    query_id: str
    site: str
    status: SiteStatus
    project: str = ""
    message: str = ""
    statistic: str = ""
    mode: Literal["dp", "zcdp", "aggregate", ""] = ""
    charged: Budget | None = None
    """What this release charged the project at the site (zero for a cached repeat;
    None when nothing is charged in any measure: aggregate mode, refusals, previews)."""
    planned: Budget | None = None
    """In a preview: what the query would charge (zero for a cached repeat)."""
    mechanism: str = ""
    noise_scales: dict[str, float] = {}
    axes: list[tuple[str, list[str]]] = []
    cells: list[Cell] = []
    budget_total: Budget | None = None
    """The project's budget at the site for the current period, in its own measure."""
    budget_remaining: Budget | None = None
    """What is left of it after this release."""
    elapsed_ms: float = 0.0
    cached: bool = False
    """True when this is a repeat served from the site's release cache (nothing charged)."""
    preview: bool = False
    """A dry run: no row read, nothing charged, no value; what the query *would* cost."""
    noise_std: dict[str, float] = {}
    """Standard deviation of the noise on each released number, by part (count, sum)."""
    accuracy: dict[str, float] = {}
    """95% half-width of the noise on each released number, by part (count, sum)."""
    request_id: RequestId = ""
    """The request id of the work item answered, returned so the gateway's log joins the node's."""


class WorkItem(_Wire):
    """The body of a gateway-signed ``work`` envelope."""

    query_id: str
    project: str
    researcher: str
    query: dict[str, Any]
    preview: bool = False
    """Only say what the query would cost and how accurate it would be; read no row."""
    request_id: RequestId = ""
    """The researcher's request (``X-Request-ID``, or one the gateway made): the node logs it."""


class ProjectTerms(_Wire):
    """The public part of a site's policy for one project.

    ``accounting`` says which measure the project's queries and training spend:
    ``epsilon`` (pure DP, ``{"mode": "dp"}``) or ``zcdp`` (rho, ``{"mode":
    "zcdp"}``); ``budget``, ``max_per_query`` and ``remaining`` are all in it.
    ``remaining`` is None where it is not known (the node checking its own
    terms leaves the budget to its ledger's atomic charge).
    """

    accounting: Literal["epsilon", "zcdp"]
    budget: Budget
    """What the project may spend here per budget period."""
    max_per_query: Budget
    remaining: Budget | None = None
    training: list[str] = []
    """Federated training models the project may train at the site (empty: none)."""
    aggregate: bool = False
    """Non-DP aggregate queries allowed for this project (the site allows them too)."""
    renews: dt.date | None = None
    """First day (UTC) of the next budget period; None for a lifetime budget (never renews)."""
    study_fields: list[StudyField] = []
    """The project's study fields this site exposes (declared in its policy, provided by its
    data): what the gateway completes queries with (:mod:`varde.study_fields`)."""

    @model_validator(mode="after")
    def _one_measure(self) -> ProjectTerms:
        measure = measure_of(self.accounting)
        for name in ("budget", "max_per_query", "remaining"):
            value = getattr(self, name)
            if value is not None and value.measure != measure:
                raise ValueError(f"{name} is in {value.measure}, the project accounts in {measure}")
        return self


class SiteLimits(_Wire):
    """How fine a question a site answers, whatever the project (public)."""

    min_survival_interval_months: int = 1
    max_cells: int = MAX_CELLS


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
    aggregate_sums: bool = False
    """Sums and means are released in aggregate mode too (not only counts)."""
    min_cell: int | None = None
    policy_version: str = ""
    limits: SiteLimits = SiteLimits()
    contact: str = ""
    """Whom researchers ask about this site's budgets and policy (named in budget refusals)."""
