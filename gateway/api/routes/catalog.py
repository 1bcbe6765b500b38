"""What researchers can ask about: schema, sites, budgets."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel

from gateway.admin import enrolled_sites, list_nodes
from gateway.api.deps import CurrentResearcher, State
from gateway.api.errors import responses
from varde.budget import Budget
from varde.release import Manifest
from varde.schema import FIELDS
from varde.study_fields import StudyField

router = APIRouter(prefix="/v1", tags=["catalog"])


class FieldInfo(BaseModel):
    """A queryable field, its public categories or domain, and which sites expose it.

    A study field of one of the researcher's projects (``project`` set) carries its
    declaration (``study``): its kind here is ``categorical`` or, for a bounded one,
    ``integer`` (numeric, like the schema's numbers), within its declared bounds.
    """

    name: str
    kind: str
    description: str
    categories: list[str] | None = None
    lower: int | float | None = None
    upper: int | float | None = None
    sites: list[str]
    project: str | None = None
    study: StudyField | None = None


class SiteInfo(BaseModel):
    """An enrolled site: connected now? what does it allow? which node version, key, state?"""

    site: str
    connected: bool
    statistics: list[str]
    aggregate_mode: bool
    policy_version: str
    last_seen: dt.datetime | None = None
    version: str | None = None
    key_fingerprint: str = ""
    state: str = ""


@router.get("/schema", response_model=list[FieldInfo], responses=responses(401))
def get_schema(state: State, researcher: CurrentResearcher) -> list[FieldInfo]:
    """Fields of the common schema with their public categories and the sites exposing each.

    Then the study fields the sites declare for the researcher's projects.
    """
    with state.sessions() as s:
        sites = enrolled_sites(s)
    manifests = {site: state.dispatcher.manifest(site) for site in sites}
    out = []
    for f in FIELDS:
        if not f.queryable:
            continue
        exposing = [site for site, m in manifests.items() if m is not None and f.name in m.fields]
        out.append(
            FieldInfo(
                name=f.name,
                kind=f.kind.value,
                description=f.description,
                categories=list(f.categories) or None,
                lower=f.lower,
                upper=f.upper,
                sites=exposing,
            )
        )
    return out + _study_fields(manifests, researcher.projects)


def _study_fields(manifests: dict[str, Manifest | None], projects: list[str]) -> list[FieldInfo]:
    """The study fields of ``projects`` that sites publish, one entry per project and name."""
    found: dict[tuple[str, str], tuple[StudyField, list[str]]] = {}
    for site, m in sorted(manifests.items()):
        for project in projects:
            terms = m.projects.get(project) if m is not None else None
            for f in terms.study_fields if terms is not None else []:
                found.setdefault((project, f.name), (f, []))[1].append(site)
    return [
        FieldInfo(
            name=f.name,
            kind="categorical" if f.kind == "categorical" else "integer",
            description=f.description + (f" ({f.unit})" if f.unit else ""),
            categories=f.categories,
            lower=f.lower,
            upper=f.upper,
            sites=sites,
            project=project,
            study=f,
        )
        for (project, _), (f, sites) in sorted(found.items())
    ]


@router.get("/sites", response_model=list[SiteInfo], responses=responses(401))
def get_sites(state: State, _researcher: CurrentResearcher) -> list[SiteInfo]:
    """Enrolled sites: connected, what their policies allow, node version, key and state.

    ``last_seen`` is written at most every few seconds; ``state`` is
    ``revoked``, ``never seen`` or what the node last reported (``serving``,
    ``deny-all``).
    """
    out = []
    for node in list_nodes(state.sessions):
        m = state.dispatcher.manifest(node.site)
        out.append(
            SiteInfo(
                site=node.site,
                connected=node.state != "revoked" and state.dispatcher.connected(node.site),
                statistics=m.statistics if m else [],
                aggregate_mode=m.aggregate_mode if m else False,
                policy_version=m.policy_version if m else "",
                last_seen=node.last_seen,
                version=node.version,
                key_fingerprint=node.key_fingerprint,
                state=node.state,
            )
        )
    return out


class SiteBudget(BaseModel):
    """One project's budget at one site, in the measure the project accounts in there."""

    accounting: Literal["epsilon", "zcdp"]
    budget: Budget
    max_per_query: Budget
    remaining: Budget | None


class Budgets(BaseModel):
    """Per project of the researcher, per site: its budget (``null``: not served there)."""

    projects: dict[str, dict[str, SiteBudget | None]]


_BUDGET_FIELDS = {"accounting", "budget", "max_per_query", "remaining"}


@router.get("/budgets", response_model=Budgets, responses=responses(401))
def get_budgets(researcher: CurrentResearcher, state: State) -> dict[str, Any]:
    """Per project of yours and per site: budget, cap and what is left (as last reported).

    Each site's terms are in the measure the project accounts in there
    (``accounting``): ``{"epsilon": x}`` or ``{"rho": x}``; a site that does not
    serve the project is ``null``.
    """
    with state.sessions() as s:
        sites = enrolled_sites(s)
    out: dict[str, Any] = {}
    for project in researcher.projects:
        per_site: dict[str, Any] = {}
        for site in sites:
            m = state.dispatcher.manifest(site)
            terms = m.projects.get(project) if m else None
            per_site[site] = (
                None
                if terms is None
                else terms.model_dump(
                    mode="json", include={"accounting", "budget", "max_per_query", "remaining"}
                )
            )
        out[project] = per_site
    return {"projects": out}
