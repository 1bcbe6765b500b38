"""A site's policy: what may leave this hospital, for whom, and at what privacy cost.

``policies/<site>.yaml`` is the source of truth, edited by registry staff. It is
validated here with pydantic: unknown keys, unknown fields, identifiers, bad
budgets are errors that name the offending key. A *missing* policy file denies
everything (:meth:`Policy.deny_all`): no project is served, no field exposed.
This module is the model only; reading the file, with each problem at its YAML
line, is :func:`nodes.policy_check.load_policy`.

Unsafe settings are refused outside ``profile: development``: a non-DP aggregate
mode with a minimum cell size below :data:`SAFE_MIN_CELL`, or a per-query epsilon
cap above :data:`SAFE_MAX_EPSILON_PER_QUERY`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from nodes.periods import BudgetPeriod, renews_on
from varde.budget import MAX_AMOUNT, ZCDP, Budget, Measure, PureDP, measure_of
from varde.envelope import utcnow
from varde.errors import PolicyViolation
from varde.query import MAX_CELLS, Query
from varde.release import Manifest, ProjectTerms, SiteLimits
from varde.schema import FIELDS_BY_NAME
from varde.study_fields import StudyField
from varde.terms import check_query, check_training
from varde.training import TrainingSpec

StatisticKind = Literal[
    "count", "sum", "mean", "histogram", "crosstab", "funnel", "quantile", "survival"
]
TrainingModel = Literal["logistic", "cox"]
"""Federated training models a project may be allowed to train (``varde.training``)."""
StudyColumns = Mapping[str, str]
"""A site's study columns and the kind each holds (``categorical`` text, ``bounded`` numbers)."""
SAFE_MIN_CELL = 5
SAFE_MAX_EPSILON_PER_QUERY = 5.0


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ProjectPolicy(_Strict):
    """Budget and caps for one project at this site."""

    epsilon_budget: float = Field(
        ge=0,
        le=MAX_AMOUNT,
        allow_inf_nan=False,
        strict=True,
        description="Epsilon the project may spend here per budget period.",
    )
    max_epsilon_per_query: float = Field(
        gt=0,
        le=MAX_AMOUNT,
        allow_inf_nan=False,
        strict=True,
        description="Largest epsilon one query may ask for.",
    )
    researchers: list[str] | None = Field(
        default=None, description="If set, only these researcher names may use the project here."
    )
    aggregate_mode: bool = Field(
        default=False,
        description="Allow non-DP aggregate queries for this project (if the site does).",
    )
    budget_period: BudgetPeriod = Field(
        default="lifetime",
        description="When epsilon_budget renews: never (lifetime), or each UTC year/quarter/month.",
    )
    accounting: Literal["epsilon", "zcdp"] = Field(
        default="epsilon",
        description="Pure epsilon-DP (Laplace) or zCDP (rho, Gaussian) for this project's queries.",
    )
    rho_budget: float = Field(
        default=0.0,
        ge=0,
        le=MAX_AMOUNT,
        allow_inf_nan=False,
        strict=True,
        description="Rho the project may spend here per budget period (zcdp accounting).",
    )
    max_rho_per_query: float | None = Field(
        default=None,
        gt=0,
        le=MAX_AMOUNT,
        allow_inf_nan=False,
        strict=True,
        description="Largest rho one query may ask for (required with zcdp accounting).",
    )
    training: list[TrainingModel] = Field(
        default=[],
        description=(
            "Federated training models this project may train here (logistic, cox); "
            "empty: no training. Rounds pay from the project's budget like its queries "
            "(epsilon, or rho with zcdp accounting; same budget period)."
        ),
    )
    study_fields: list[StudyField] = Field(
        default=[],
        description=(
            "The project's own fields beyond the common schema (a trial arm, a lab value): "
            "name, kind (categorical with public categories, or bounded with public lower "
            "and upper bounds), unit, description. Exposed to the project's queries and "
            "training only where this site's data provide a column of that name."
        ),
    )

    @property
    def measure(self) -> Measure:
        """The ledger measure of this project: ``epsilon``, or ``rho`` under zCDP accounting."""
        return measure_of(self.accounting)

    @property
    def budget(self) -> Budget:
        """What the project may spend per budget period, in its own measure."""
        return ZCDP(self.rho_budget) if self.accounting == "zcdp" else PureDP(self.epsilon_budget)

    @property
    def cap(self) -> Budget:
        """The most one query (or training round) may spend, in the project's measure."""
        if self.accounting == "zcdp":
            return ZCDP(self.max_rho_per_query or 0.0)
        return PureDP(self.max_epsilon_per_query)

    @field_validator("study_fields")
    @classmethod
    def _study_fields_once(cls, value: list[StudyField]) -> list[StudyField]:
        names = [f.name for f in value]
        if len(set(names)) != len(names):
            raise ValueError(f"study fields must not repeat: {names}")
        return value

    @field_validator("training")
    @classmethod
    def _training_once(cls, value: list[TrainingModel]) -> list[TrainingModel]:
        if len(set(value)) != len(value):
            raise ValueError("training models must not repeat")
        return value

    @model_validator(mode="after")
    def _cap_within_budget(self) -> ProjectPolicy:
        if self.accounting == "zcdp" and self.max_rho_per_query is None:
            raise ValueError("zcdp accounting needs max_rho_per_query")
        if self.max_rho_per_query is not None and self.max_rho_per_query > self.rho_budget > 0:
            raise ValueError(
                f"max_rho_per_query {self.max_rho_per_query} exceeds the whole "
                f"rho_budget {self.rho_budget}"
            )
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
    """Non-DP aggregates: suppression, cell-key perturbation and overlap control.

    See ``docs/AGGREGATE.md`` for what this resists and what it does not: only DP
    mode has a guarantee that composes over any number of questions.
    """

    allowed: bool = Field(default=False, description="Allow non-DP aggregate queries at all.")
    min_cell: int = Field(
        default=10,
        ge=1,
        description=(
            "Cells of fewer patients than this (none included) are suppressed; a release whose "
            "patients differ from an earlier one's by fewer than this is refused."
        ),
    )
    cell_key_spread: int = Field(
        default=2,
        ge=0,
        le=20,
        description=(
            "Counts are published within +-this of the truth, the same perturbation for the "
            "same patients (the cell-key method)."
        ),
    )
    sums: bool = Field(
        default=False,
        description="Also release sums and means in aggregate mode (only with sum_min_cell).",
    )
    sum_min_cell: int | None = Field(
        default=None,
        ge=1,
        description="With sums: cells of fewer patients than this are suppressed (>= min_cell).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> AggregateMode:
        if self.sums and self.sum_min_cell is None:
            raise ValueError("sums in aggregate mode need their own sum_min_cell")
        if self.sum_min_cell is not None and self.sum_min_cell < self.min_cell:
            raise ValueError(f"sum_min_cell {self.sum_min_cell} is below min_cell {self.min_cell}")
        return self


class ApprovalRules(_Strict):
    """Work that must wait for a decision of the site's staff before anything is computed."""

    new_projects: bool = Field(
        default=False,
        description="A project's first work at this site waits until staff approve the project.",
    )
    approved_projects: list[str] = Field(
        default=[],
        description=(
            "Projects staff have approved (with new_projects). Approving a project in the "
            "console or with `varde node approve --policy` adds it here: a new policy version."
        ),
    )
    epsilon_above: float | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description="A DP query asking for more epsilon than this waits for its own approval.",
    )
    training_jobs: bool = Field(
        default=False,
        description=(
            "Every training job waits until staff approve it (a re-submission of the same "
            "job by the same researcher needs no new approval)."
        ),
    )
    message: str = Field(
        default="",
        max_length=300,
        description="Shown to the researcher while work waits (e.g. who decides and how soon).",
    )


class QueryLimits(_Strict):
    """How fine a question this site answers, whatever the project (DataSHIELD-style filters).

    Why: a very fine survival grid or a table of thousands of cells spreads the
    same budget over many small counts; a site may decide that its registry is
    too small for that, independently of any epsilon.
    """

    min_survival_interval_months: int = Field(
        default=1,
        ge=1,
        le=60,
        description="Shortest survival interval (months) this site releases counts for.",
    )
    max_cells: int = Field(
        default=MAX_CELLS,
        ge=1,
        le=MAX_CELLS,
        description="Most numbers one query may release from this site.",
    )


class ConsoleRules(_Strict):
    """What the site console may change without anyone editing the policy file by hand."""

    max_epsilon_budget: float = Field(
        default=50.0,
        gt=0,
        le=MAX_AMOUNT,
        allow_inf_nan=False,
        description="The largest epsilon budget staff may set for a project in the console.",
    )
    max_rho_budget: float = Field(
        default=2.0,
        gt=0,
        le=MAX_AMOUNT,
        allow_inf_nan=False,
        description="The largest rho budget staff may set for a zcdp project in the console.",
    )

    def max_budget(self, like: Budget) -> Budget:
        """The largest budget the console may set, in ``like``'s measure."""
        return like.like(self.max_rho_budget if isinstance(like, ZCDP) else self.max_epsilon_budget)


class Policy(_Strict):
    """The whole policy of one site."""

    site: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{1,40}$")] = Field(
        description="This site's name, as enrolled at the gateway."
    )
    profile: Literal["production", "development"] = Field(
        default="production",
        description="'development' allows unsafe settings (tiny min_cell, large epsilon caps).",
    )
    privacy_unit: PrivacyUnit = Field(description="What one protected person is.")
    fields: list[str] = Field(
        description="Fields of the common schema (varde/schema.py) queries may read."
    )
    statistics: list[StatisticKind] = Field(description="Statistics this site computes.")
    projects: dict[str, ProjectPolicy] = Field(
        default={}, description="Projects this site serves, by name; any other is refused."
    )
    aggregate: AggregateMode = Field(
        default=AggregateMode(), description="Non-DP exact aggregates (off unless allowed)."
    )
    approvals: ApprovalRules = Field(
        default=ApprovalRules(), description="Work that waits for a staff decision."
    )
    limits: QueryLimits = Field(
        default=QueryLimits(), description="How fine a question this site answers."
    )
    console: ConsoleRules = Field(
        default=ConsoleRules(), description="What staff may change in the site console."
    )
    contact: str = Field(
        default="",
        max_length=200,
        description="Whom researchers ask about budgets and policy here (named in budget "
        "refusals), e.g. an e-mail address of the registry team.",
    )

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
        if self.aggregate.allowed and self.aggregate.cell_key_spread < 1:
            raise ValueError(
                "aggregate.cell_key_spread 0 publishes exact counts; "
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

    def authorize(
        self, query: Query, *, researcher: str, provided: StudyColumns | None = None
    ) -> ProjectPolicy:
        """Check ``query`` against this policy; raise :class:`PolicyViolation` saying why not.

        The public terms are checked by :func:`varde.terms.check_query`, the very
        check the gateway runs on this site's manifest; the node adds only what
        it alone knows here (which researchers a project admits). Budget left is
        not checked here (that is the ledger's atomic job), nor staff approvals
        (:mod:`nodes.approvals`).
        """
        check_query(self.terms(provided=provided), query)
        return self._admitted(query.project, researcher)

    def authorize_training(
        self, spec: TrainingSpec, *, researcher: str, provided: StudyColumns | None = None
    ) -> ProjectPolicy:
        """Check a training job like :meth:`authorize` checks a query (public terms, researcher)."""
        check_training(self.terms(provided=provided), spec)
        return self._admitted(spec.project, researcher)

    def _admitted(self, project: str, researcher: str) -> ProjectPolicy:
        proj = self.projects[project]  # check_* refused a project not served
        if proj.researchers is not None and researcher not in proj.researchers:
            raise PolicyViolation(
                f"researcher {researcher!r} is not allowed on project {project!r} at {self.site!r}"
            )
        return proj

    def terms(
        self, remaining: Mapping[str, Budget] | None = None, provided: StudyColumns | None = None
    ) -> Manifest:
        """The public terms of this policy (what :meth:`manifest` publishes).

        ``remaining`` is what each project has left in its own measure; without
        it the terms say nothing about what is left. ``provided`` is the kind of each
        study column the site's data hold (:meth:`nodes.data.RegistryData.study_kinds`):
        a declared study field is exposed only where a column of its name and kind is
        there. None (tools that read no data) exposes every declared field.
        """
        left = remaining or {}
        return Manifest(
            site=self.site,
            fields=list(self.fields),
            statistics=list(self.statistics),
            projects={
                name: ProjectTerms(
                    accounting=p.accounting,
                    budget=p.budget,
                    max_per_query=p.cap,
                    remaining=left.get(name),
                    training=list(p.training),
                    aggregate=p.aggregate_mode,
                    renews=renews_on(p.budget_period, utcnow()),
                    study_fields=exposed_study_fields(p.study_fields, provided),
                )
                for name, p in self.projects.items()
            },
            aggregate_mode=self.aggregate.allowed,
            aggregate_sums=self.aggregate.allowed and self.aggregate.sums,
            min_cell=self.aggregate.min_cell if self.aggregate.allowed else None,
            policy_version=self.version,
            contact=self.contact,
            limits=SiteLimits(
                min_survival_interval_months=self.limits.min_survival_interval_months,
                max_cells=self.limits.max_cells,
            ),
        )

    def manifest(
        self, remaining: Mapping[str, Budget], provided: StudyColumns | None = None
    ) -> Manifest:
        """The public summary sent to the gateway (no rows, no counts).

        ``remaining`` is what each project has left in its *own* measure, as
        :meth:`nodes.context.NodeContext.remaining` reports it.
        """
        return self.terms(remaining, provided)


def exposed_study_fields(
    declared: list[StudyField], provided: StudyColumns | None
) -> list[StudyField]:
    """The declared study fields whose column the data provide, of the declared kind."""
    if provided is None:
        return list(declared)
    return [f for f in declared if provided.get(f.name) == f.kind]
