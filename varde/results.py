"""What a researcher gets back from the gateway: typed results both sides agree on.

The gateway builds these from the sites' :class:`~varde.release.SiteRelease`
rows (combining them into a :class:`NetworkRow`), and the researcher's client
parses the same models from the JSON, so a field renamed on one side is a type
error on the other, not a silently missing column.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from varde.release import Cell, SiteRelease


class NetworkRow(BaseModel):
    """The combined answer over the sites that released."""

    model_config = ConfigDict(frozen=True)

    sites: list[str]
    epsilon_spent: dict[str, float]
    cells: list[Cell]
    rho_spent: dict[str, float] = {}
    """Under zCDP: the rho each site charged (``epsilon_spent`` is then all 0)."""


class _QueryHead(BaseModel):
    """What every answer about one query starts with."""

    model_config = ConfigDict(frozen=True)

    query_id: str
    project: str
    statistic: str
    mode: str
    epsilon_requested: float
    rho_requested: float = 0.0
    """In zCDP mode: the rho each site is asked to spend (``epsilon_requested`` is then 0)."""
    axes: list[tuple[str, list[str]]]


class QueryResult(_QueryHead):
    """What a researcher gets back: one row per site, the network row, budgets left.

    ``budget_remaining`` is in each site's measure for the project, named in
    ``budget_measure`` (``rho`` for a zCDP project; the site rows then carry
    ``rho_charged``).
    """

    sites: list[SiteRelease]
    network: NetworkRow | None
    budget_remaining: dict[str, float | None]
    budget_measure: str = "epsilon"


class PreviewResult(_QueryHead):
    """What a query would cost and how accurate it would be, before anything is charged.

    ``accuracy`` is the 95% half-width of the noise on each released number, by
    part (``count``, ``sum``), per site and for the network (where independent
    site noise adds in variance). For a mean it is given for its parts: the
    mean's own error also depends on the (unknown) count.
    """

    cells: int
    sites: list[SiteRelease]
    epsilon_planned: dict[str, float]
    rho_planned: dict[str, float] = {}
    """In zCDP mode: the rho each site would charge (``epsilon_planned`` is then 0)."""
    network_accuracy: dict[str, float]
    network_noise_std: dict[str, float]
