"""A site's policy: what may leave this hospital, for whom, and at what privacy cost.

``policies/<site>.yaml`` is the source of truth, edited by registry staff. It is
validated here with pydantic: unknown keys, unknown fields, identifiers, bad
budgets are errors that name the offending key. A *missing* policy file denies
everything (:meth:`Policy.deny_all`): no project is served, no field exposed.

Unsafe settings are refused outside ``profile: development``: a non-DP aggregate
mode with a minimum cell size below :data:`SAFE_MIN_CELL`, or a per-query epsilon
cap above :data:`SAFE_MAX_EPSILON_PER_QUERY`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from varde.errors import BudgetExhausted, PolicyViolation
from varde.query import DPPrivacy, Query
from varde.release import Manifest, ProjectTerms
from varde.schema import FIELDS_BY_NAME

StatisticKind = Literal["count", "sum", "mean", "histogram", "crosstab"]
SAFE_MIN_CELL = 5
SAFE_MAX_EPSILON_PER_QUERY = 5.0


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProjectPolicy(_Strict):
    """Budget and caps for one project at this site."""

    epsilon_budget: float = Field(ge=0, allow_inf_nan=False)
    max_epsilon_per_query: float = Field(gt=0, allow_inf_nan=False)
    researchers: list[str] | None = Field(
        default=None, description="If set, only these researcher names may use the project here."
    )
    aggregate_mode: bool = Field(
        default=False,
        description="Allow non-DP aggregate queries for this project (if the site does).",
    )

    @model_validator(mode="after")
    def _cap_within_budget(self) -> ProjectPolicy:
        if self.max_epsilon_per_query > self.epsilon_budget > 0:
            raise ValueError(
                f"max_epsilon_per_query {self.max_epsilon_per_query} exceeds the whole "
                f"epsilon_budget {self.epsilon_budget}"
            )
        return self


class PrivacyUnit(_Strict):
    """What one person is: a patient, who may have several tumours (rows)."""

    max_tumours_per_patient: int = Field(
        ge=1,
        le=20,
        description="Rows kept per patient; further tumours are dropped so sensitivity is bounded.",
    )


class AggregateMode(_Strict):
    """Non-DP exact aggregates with small-cell suppression."""

    allowed: bool = False
    min_cell: int = Field(default=10, ge=1)


class Policy(_Strict):
    """The whole policy of one site."""

    site: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{1,40}$")]
    profile: Literal["production", "development"] = "production"
    privacy_unit: PrivacyUnit
    fields: list[str]
    statistics: list[StatisticKind]
    projects: dict[str, ProjectPolicy] = {}
    aggregate: AggregateMode = AggregateMode()

    @field_validator("fields")
    @classmethod
    def _known_fields(cls, value: list[str]) -> list[str]:
        for name in value:
            spec = FIELDS_BY_NAME.get(name)
            if spec is None:
                raise ValueError(f"unknown field {name!r} (see varde/schema.py)")
            if not spec.queryable:
                raise ValueError(f"field {name!r} is an identifier and can never be exposed")
        if len(set(value)) != len(value):
            raise ValueError("fields must not repeat")
        return value

    @model_validator(mode="after")
    def _safe(self) -> Policy:
        if self.profile == "development":
            return self
        if self.aggregate.allowed and self.aggregate.min_cell < SAFE_MIN_CELL:
            raise ValueError(
                f"aggregate.min_cell {self.aggregate.min_cell} is below {SAFE_MIN_CELL}; "
                "only a 'development' profile may use it"
            )
        for name, proj in self.projects.items():
            if proj.max_epsilon_per_query > SAFE_MAX_EPSILON_PER_QUERY:
                raise ValueError(
                    f"project {name!r}: max_epsilon_per_query "
                    f"{proj.max_epsilon_per_query} is above "
                    f"{SAFE_MAX_EPSILON_PER_QUERY}; only a 'development' profile may use it"
                )
        return self

    @classmethod
    def deny_all(cls, site: str) -> Policy:
        """The policy in force when none is configured: nothing may leave."""
        return cls(
            site=site, privacy_unit=PrivacyUnit(max_tumours_per_patient=1), fields=[], statistics=[]
        )

    @property
    def version(self) -> str:
        """A short content hash, so releases and manifests name the policy they obeyed."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:12]

    def authorize(self, query: Query, *, researcher: str) -> ProjectPolicy:
        """Check ``query`` against this policy; raise :class:`PolicyViolation` saying why not.

        Budget is not checked here (that is the ledger's atomic job).
        """
        proj = self.projects.get(query.project)
        if proj is None:
            raise PolicyViolation(f"site {self.site!r} does not serve project {query.project!r}")
        if proj.researchers is not None and researcher not in proj.researchers:
            raise PolicyViolation(
                f"researcher {researcher!r} is not allowed on project {query.project!r} "
                f"at {self.site!r}"
            )
        kind = query.statistic.kind
        if kind not in self.statistics:
            raise PolicyViolation(f"site {self.site!r} does not allow statistic {kind!r}")
        hidden = sorted(query.fields_read() - set(self.fields))
        if hidden:
            raise PolicyViolation(
                f"site {self.site!r} does not expose field(s) {', '.join(hidden)}"
            )
        if isinstance(query.privacy, DPPrivacy):
            if query.privacy.epsilon > proj.max_epsilon_per_query:
                raise PolicyViolation(
                    f"epsilon {query.privacy.epsilon} is above the per-query cap "
                    f"{proj.max_epsilon_per_query} of project {query.project!r} at {self.site!r}"
                )
            if proj.epsilon_budget == 0:
                raise BudgetExhausted(
                    f"project {query.project!r} has no epsilon budget at {self.site!r}"
                )
        else:
            if not (self.aggregate.allowed and proj.aggregate_mode):
                raise PolicyViolation(
                    f"site {self.site!r} does not allow non-DP aggregate mode for {query.project!r}"
                )
        return proj

    def manifest(self, remaining: dict[str, float]) -> Manifest:
        """The public summary sent to the gateway (no rows, no counts)."""
        return Manifest(
            site=self.site,
            fields=list(self.fields),
            statistics=list(self.statistics),
            projects={
                name: ProjectTerms(
                    epsilon_budget=p.epsilon_budget,
                    max_epsilon_per_query=p.max_epsilon_per_query,
                    epsilon_remaining=remaining.get(name, p.epsilon_budget),
                )
                for name, p in self.projects.items()
            },
            aggregate_mode=self.aggregate.allowed,
            min_cell=self.aggregate.min_cell if self.aggregate.allowed else None,
            policy_version=self.version,
        )


class PolicyError(ValueError):
    """A policy file that cannot be used; the message names file, key and problem."""


def load_policy(path: Path, *, site: str | None = None) -> Policy:
    """Read and validate ``path``; a missing file means :meth:`Policy.deny_all`.

    ``site`` is required to build the deny-all policy when the file is missing.
    """
    if not path.exists():
        if site is None:
            raise PolicyError(f"{path}: no such policy file (and no site name to deny all for)")
        return Policy.deny_all(site)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise PolicyError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise PolicyError(f"{path}: a policy is a YAML mapping")
    try:
        policy = Policy.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in err.errors()
        )
        raise PolicyError(f"{path}: {problems}") from err
    if site is not None and policy.site != site:
        raise PolicyError(f"{path}: policy is for site {policy.site!r}, not {site!r}")
    return policy
