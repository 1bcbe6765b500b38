"""Wire types of federated training jobs, shared by the gateway and the nodes.

Why here: the gateway validates a researcher's job and ships it to every site
inside Flower messages; each node parses the *same* model and re-checks it
against its own policy. Neither side may import the other, so the spec and the
public design of the model (which coefficient means what) live in this small
shared module. Nothing here touches a row.

The model layout is public by construction: every feature is encoded from the
common schema's *public* domain (categories, integer bounds), never from data,
so all sites produce the same columns in the same order and the gateway can
name every released coefficient.

>>> spec = TrainingSpec(
...     project="p",
...     features=["sex", "age_at_diagnosis"],
...     rounds=2,
...     privacy=TrainingPrivacy(epsilon=1.0),
... )
>>> design_columns(spec.features)
['intercept', 'sex=female', 'sex=male', 'age_at_diagnosis']
>>> sorted(spec.fields_read())
['age_at_diagnosis', 'sex', 'survival_days', 'vital_status']

What a job costs each site per round (the first round is the dearest), then
for the final DP evaluation on the site's held-out patients (by default a tenth
of the job's epsilon); together they sum to the job's epsilon:

>>> costs = round_costs(spec)
>>> costs[0] > costs[1], round(costs[-1], 6), round(sum(costs), 6)
(True, 0.1, 1.0)

A job may instead state its budget as a zCDP ``rho``; each site charges in
the measure its own project accounts in (:func:`round_costs`), so the gateway
prices it per site exactly as the site will charge.

A Cox model of overall survival has no intercept (the baseline hazard absorbs it):

>>> cox = spec.model_copy(update={"model": "cox", "outcome": "overall_survival"})
>>> design_columns(cox.features, cox.model)
['sex=female', 'sex=male', 'age_at_diagnosis']
>>> TrainingSpec.model_validate({**spec.model_dump(), "model": "cox", "outcome": None}).outcome
'overall_survival'
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    field_validator,
    model_validator,
)

from varde.budget import (
    ZCDP,
    Budget,
    Measure,
    PureDP,
    calibrate_rho,
    epsilon_for_rho,
    rho_for_pure_epsilon,
)
from varde.outcomes import (
    BUILT_IN,
    MODEL_OUTCOMES,
    Outcome,
    describe_outcome,
    outcome_fields,
    outcome_kind,
)
from varde.query import Predicate, predicate_fields
from varde.schema import FIELDS_BY_NAME, FieldKind, FieldSpec
from varde.study_fields import StudyField, lookup, validate_declaring

OUTCOME_FIELDS = BUILT_IN
"""Fields each built-in outcome reads at the node (:mod:`varde.outcomes`).

``overall_survival`` is the pair (time = ``survival_days``, event = ``vital_status``
is ``dead``): death from any cause, censored at last contact."""

EVALUATION_SHARE = 0.1
"""Default share of a job's epsilon spent on the final DP evaluation."""

HOLDOUT_FRACTION = 0.2
"""Default share of each site's patients held out of training for evaluation."""

OUTCOME_HORIZON_DAYS = 730
"""``death_within_2y``: died at most this many days after diagnosis."""

MAX_DELTA = 1e-5
"""Largest delta a job may ask for; sites hold tens of thousands of patients, so
``1e-5`` is already well below ``1 / n`` and keeps the (epsilon, delta)
guarantee meaningful."""

MAX_RHO = 50.0
"""Largest rho a job may ask for (about epsilon 100 at delta ``1e-6``, the epsilon cap)."""

_FEATURE_KINDS = (FieldKind.CATEGORICAL, FieldKind.INTEGER)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class TrainingPrivacy(_Strict):
    """What each site may spend on the whole job, and how hard updates are clipped.

    Exactly one of ``epsilon`` or ``rho`` (zCDP) is given, per site for the
    whole job (all rounds and the final DP evaluation): every site calibrates
    its own noise to it and charges its own ledger round by round, then once
    for the evaluation, in the measure *its* project accounts in (see
    :func:`round_costs`). The evaluation is carved out first
    (``evaluation_epsilon``, default :data:`EVALUATION_SHARE` of ``epsilon``; or
    ``evaluation_rho``, default that share of ``rho``), the rounds get the rest
    (:func:`training_rho`).

    Why a rho job: the rounds are Gaussian, whose natural guarantee is zCDP;
    a researcher (or a site accounting in zCDP) can state the job's cost as rho
    directly, with no (epsilon, delta) conversion. ``delta`` then only matters
    where a site's project accounts in epsilon: there the job's rho is converted
    at that delta.

    >>> TrainingPrivacy(rho=0.5).evaluation_rho_budget()
    0.05
    >>> TrainingPrivacy(rho=0.5).evaluation_budget() == math.sqrt(2 * 0.05)
    True
    >>> from pydantic import ValidationError
    >>> try:
    ...     TrainingPrivacy(rho=0.5, epsilon=1.0)
    ... except ValidationError as err:
    ...     print(err.errors()[0]["msg"])
    Value error, give exactly one of privacy.epsilon or privacy.rho (zCDP), not both
    """

    epsilon: float | None = Field(
        default=None,
        gt=0,
        le=100,
        allow_inf_nan=False,
        description="Epsilon per site for the whole job (give this or rho).",
    )
    rho: float | None = Field(
        default=None,
        gt=0,
        le=MAX_RHO,
        allow_inf_nan=False,
        description="zCDP rho per site for the whole job (give this or epsilon).",
    )
    delta: float = Field(default=1e-6, gt=0, le=MAX_DELTA, allow_inf_nan=False)
    clip: float = Field(
        default=1.0,
        gt=0,
        le=100,
        allow_inf_nan=False,
        description=(
            "L2 bound on each row's gradient (logistic); a Cox model clips each "
            "block of patients' gradient to clip * sqrt(rows per block) (nodes/training/cox.py)."
        ),
    )
    evaluation_epsilon: float | None = Field(
        default=None,
        ge=0,
        allow_inf_nan=False,
        description=(
            "Part of epsilon spent at the end on DP metrics over each site's held-out "
            f"patients; default {EVALUATION_SHARE:g} x epsilon, 0 for no evaluation."
        ),
    )
    evaluation_rho: float | None = Field(
        default=None,
        ge=0,
        allow_inf_nan=False,
        description=(
            "With rho: part of rho spent at the end on DP metrics (pure-epsilon counts at "
            f"epsilon sqrt(2 x evaluation_rho)); default {EVALUATION_SHARE:g} x rho, 0 for none."
        ),
    )

    @model_validator(mode="after")
    def _evaluation_within_budget(self) -> TrainingPrivacy:
        if (self.epsilon is None) == (self.rho is None):
            raise ValueError(
                "give exactly one of privacy.epsilon or privacy.rho (zCDP), "
                + ("not both" if self.epsilon is not None else "none was given")
            )
        if self.epsilon is not None:
            if self.evaluation_rho is not None:
                raise ValueError(
                    "evaluation_rho goes with rho; with epsilon give evaluation_epsilon"
                )
            if self.evaluation_epsilon is not None and self.evaluation_epsilon >= self.epsilon:
                raise ValueError("evaluation_epsilon must be smaller than epsilon")
        if self.rho is not None:
            if self.evaluation_epsilon is not None:
                raise ValueError(
                    "evaluation_epsilon goes with epsilon; with rho give evaluation_rho"
                )
            if self.evaluation_rho is not None and self.evaluation_rho >= self.rho:
                raise ValueError("evaluation_rho must be smaller than rho")
        return self

    @property
    def measure(self) -> Literal["epsilon", "rho"]:
        """What the researcher stated the job's budget in."""
        return "epsilon" if self.epsilon is not None else "rho"

    @property
    def budget(self) -> Budget:
        """The job's whole budget per site, typed, as the researcher gave it."""
        return PureDP(self.epsilon) if self.epsilon is not None else ZCDP(self.rho or 0.0)

    def budget_text(self) -> str:
        """``"epsilon 2"`` or ``"rho 0.5"``: the job's budget as the researcher gave it."""
        return f"{self.budget.measure} {self.budget.amount:g}"

    def evaluation_rho_budget(self) -> float:
        """Rho set aside for the final evaluation (0: none).

        For an epsilon job: its evaluation epsilon squared over two, what pure
        epsilon-DP implies in zCDP (sites charge OpenDP's conversion,
        :func:`rho_for_pure_epsilon`).
        """
        if self.rho is None:
            return self.evaluation_budget() ** 2 / 2.0
        if self.evaluation_rho is None:
            return EVALUATION_SHARE * self.rho
        return self.evaluation_rho

    def evaluation_budget(self) -> float:
        """Epsilon of the final evaluation's pure-DP counts (0: none).

        For a rho job it is ``sqrt(2 evaluation_rho)``: an epsilon-DP release is
        ``epsilon**2 / 2``-zCDP, so counts at that epsilon cost at most the rho
        set aside (the site charges OpenDP's own conversion of the measurement
        it builds, :func:`pure_release_rho`).
        """
        if self.epsilon is None:
            return math.sqrt(2.0 * self.evaluation_rho_budget())
        if self.evaluation_epsilon is None:
            return EVALUATION_SHARE * self.epsilon
        return self.evaluation_epsilon

    def training_epsilon(self) -> float:
        """Epsilon left for the training rounds of an epsilon job.

        Raises:
            ValueError: For a rho job (its rounds are :func:`training_rho`).
        """
        if self.epsilon is None:
            raise ValueError("a rho job's rounds are priced in rho (training_rho)")
        return self.epsilon - self.evaluation_budget()


class TrainingSpec(_Strict):
    """A federated training job as the researcher submits it.

    ``cohort`` (the query language's criteria, :mod:`varde.query`) selects the rows a site
    trains and evaluates on; ``outcome`` is a built-in one or a named binary or
    time-to-event outcome (:mod:`varde.outcomes`). Features, cohort and outcome may name
    the project's study fields, whose declarations the job then carries
    (``study_fields``, completed by the gateway like a query's): a categorical one is
    encoded over its declared categories, a bounded one scaled over its declared bounds.
    """

    project: str = Field(min_length=1, max_length=80)
    model: Literal["logistic", "cox"] = "logistic"
    features: list[str] = Field(min_length=1, max_length=40)
    outcome: Outcome = Field(
        default="death_within_2y",
        description=(
            "logistic: death_within_2y or {kind: binary, field, positive}; cox: "
            "overall_survival or {kind: time_to_event, time, event, event_value} "
            "(absent: the model's built-in one)."
        ),
    )
    cohort: Predicate | None = Field(
        default=None,
        description="The rows to train and evaluate on, in the query language (absent: all).",
    )
    study_fields: list[StudyField] = Field(
        default=[],
        max_length=50,
        exclude_if=lambda fields: not fields,
        description="Declarations of the study fields the job names (filled in by the gateway).",
    )
    holdout: float = Field(
        default=HOLDOUT_FRACTION,
        ge=0,
        le=0.5,
        allow_inf_nan=False,
        description=(
            "Share of each site's patients (a public hash of the patient id) kept out of "
            "training and used only for the final DP evaluation."
        ),
    )
    rounds: int = Field(ge=1, le=100)
    local_steps: int = Field(
        default=10, ge=1, le=100, description="Noisy full-batch gradient steps per round."
    )
    learning_rate: float = Field(default=1.0, gt=0, le=10, allow_inf_nan=False)
    sites: list[str] | None = Field(
        default=None, min_length=1, description="Sites to train at; all connected if absent."
    )
    min_sites: int = Field(
        default=1,
        ge=1,
        le=100,
        description="The job fails when fewer sites than this still take part in a round.",
    )
    privacy: TrainingPrivacy
    secure_aggregation: Literal["auto", "on", "off"] = Field(
        default="auto",
        description=(
            "Flower SecAgg+ so the server sees only the sum of the sites' updates: "
            "'auto' uses it when at least 3 sites take part, 'on' requires it (the job "
            "fails with fewer than 3 sites), 'off' sends each site's noisy model in the clear."
        ),
    )

    @model_validator(mode="wrap")
    @classmethod
    def _study_fields_in_scope(
        cls, data: Any, handler: ModelWrapValidatorHandler[TrainingSpec]
    ) -> TrainingSpec:
        """Validate the job knowing the study fields it declares (or the gateway completes)."""
        return validate_declaring(data, handler)

    @model_validator(mode="before")
    @classmethod
    def _default_outcome(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("outcome") is None:
            model = data.get("model", "logistic")
            if model in MODEL_OUTCOMES:
                data = {**data, "outcome": MODEL_OUTCOMES[model][0]}
        return data

    @model_validator(mode="after")
    def _outcome_fits_model(self) -> TrainingSpec:
        if outcome_kind(self.outcome) not in MODEL_OUTCOMES[self.model]:
            built_in, named = MODEL_OUTCOMES[self.model]
            raise ValueError(
                f"a {self.model} model needs outcome {built_in} or a {named!r} outcome, "
                f"not {describe_outcome(self.outcome)!r}"
            )
        clash = set(self.features) & set(outcome_fields(self.outcome))
        if clash:
            shown = ", ".join(repr(name) for name in sorted(clash))
            raise ValueError(f"field {shown} defines the outcome and cannot be a feature")
        names = [f.name for f in self.study_fields]
        if len(set(names)) != len(names):
            raise ValueError(f"study fields must not repeat: {names}")
        if self.privacy.evaluation_budget() > 0 and self.holdout == 0:
            raise ValueError("an evaluation needs held-out patients: set holdout > 0")
        return self

    @model_validator(mode="after")
    def _enough_sites(self) -> TrainingSpec:
        if self.sites is not None and self.min_sites > len(self.sites):
            raise ValueError(f"min_sites {self.min_sites} exceeds the {len(self.sites)} site(s)")
        return self

    @field_validator("features")
    @classmethod
    def _known_features(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("features must not repeat")
        for name in value:
            spec = lookup(name)  # a schema field, or a study field the job declares
            if spec is None:
                raise ValueError(f"unknown field {name!r} (see varde/schema.py)")
            if spec.kind not in _FEATURE_KINDS:
                raise ValueError(
                    f"field {name!r} ({spec.kind.value}) cannot be a feature: "
                    "only categorical and integer fields can"
                )
        return value

    def fields_read(self) -> set[str]:
        """Every field a site reads for this job (features, outcome, cohort)."""
        return (
            set(self.features) | set(outcome_fields(self.outcome)) | predicate_fields(self.cohort)
        )

    def n_coefficients(self) -> int:
        """Length of the model vector (intercept included for logistic, none for Cox)."""
        return len(self.columns())

    def columns(self) -> list[str]:
        """Public names of the model's coefficients (:func:`design_columns`)."""
        return design_columns(self.features, self.model, self.study_fields)


def feature_spec(name: str, study_fields: Sequence[StudyField] = ()) -> FieldSpec:
    """A feature's public spec: the schema's, or that of a study field in ``study_fields``."""
    spec = FIELDS_BY_NAME.get(name)
    if spec is not None:
        return spec
    for f in study_fields:
        if f.name == name:
            return f.spec()
    raise KeyError(f"unknown feature {name!r}: neither a schema field nor a declared study field")


def design_columns(
    features: list[str], model: str = "logistic", study_fields: Sequence[StudyField] = ()
) -> list[str]:
    """Public names of the model's coefficients, in order: intercept, then per feature.

    A categorical feature gives one indicator per public category (the schema's, or a
    study field's declared ones; a missing value sets none); a numeric feature gives
    one column scaled to ``[-1, 1]`` over its public bounds (the schema's, or a bounded
    study field's declared ones).

    A ``"cox"`` model has **no intercept column**: the partial likelihood
    cancels any constant (the baseline hazard, one per site, absorbs it). For
    the same reason each categorical feature's coefficients are identified only
    up to a common constant: read them as contrasts between categories
    (e.g. ``stage=IV`` minus ``stage=I`` is a log hazard ratio).
    """
    if model not in MODEL_OUTCOMES:
        raise ValueError(f"unknown model {model!r}")
    names = [] if model == "cox" else ["intercept"]
    for name in features:
        spec = feature_spec(name, study_fields)
        if spec.kind is FieldKind.CATEGORICAL:
            names.extend(f"{name}={category}" for category in spec.categories)
        else:
            names.append(name)
    return names


# Pricing: public maths (no rows), shared so the gateway can price a job exactly as the
# sites will (see nodes/training/dp.py for why rounds are charged this way); the measure
# conversions are OpenDP's maps in varde/budget.py.


def training_rho(spec: TrainingSpec) -> float:
    """The zCDP rho of all the job's training rounds at one site.

    A rho job: its rho less the evaluation's. An epsilon job: the largest rho
    whose OpenDP conversion at the job's delta stays within the rounds' epsilon
    (:func:`calibrate_rho`).
    """
    privacy = spec.privacy
    if privacy.rho is not None:
        return privacy.rho - privacy.evaluation_rho_budget()
    return calibrate_rho(privacy.training_epsilon(), privacy.delta)


def round_costs(spec: TrainingSpec, measure: Literal["epsilon", "rho"] = "epsilon") -> list[float]:
    """What ``spec`` charges at every site whose project accounts in ``measure``.

    Rounds first, then the final evaluation as an extra last entry, when the job
    has one. Each round adds the same rho (``rho_training / rounds``, whatever a
    site's contribution bound: the noise scales with it).

    ``measure="epsilon"`` (a site with ``accounting: epsilon``): a round pays the
    increase of the training's epsilon at the job's delta, so the rounds sum to
    ``eps(training_rho)`` (for an epsilon job, at most
    :meth:`TrainingPrivacy.training_epsilon`); the evaluation (pure epsilon-DP
    counts, basic composition) pays :meth:`TrainingPrivacy.evaluation_budget`.
    For an epsilon job all entries sum to its epsilon.

    ``measure="rho"`` (``accounting: zcdp``): a round pays its rho, the evaluation
    OpenDP's zCDP conversion of its pure-DP counts; for a rho job all entries sum
    to its rho. An epsilon job costs its rounds' calibrated rho plus
    ``evaluation_epsilon**2 / 2``: no (epsilon, delta) conversion is involved,
    because the rounds' Gaussian noise *is* rho-zCDP by construction.

    >>> job = TrainingSpec(project="p", features=["sex"], rounds=4,
    ...                    privacy=TrainingPrivacy(rho=0.2))
    >>> costs = round_costs(job, "rho")
    >>> [round(c, 9) for c in costs], round(sum(costs), 9)
    ([0.045, 0.045, 0.045, 0.045, 0.02], 0.2)
    >>> round(sum(round_costs(job)[:-1]), 9) == round(epsilon_for_rho(0.18, 1e-6), 9)
    True
    """
    rho_round = training_rho(spec) / spec.rounds
    evaluation = spec.privacy.evaluation_budget()
    if measure == "rho":
        costs = [rho_round] * spec.rounds
        return costs + [rho_for_pure_epsilon(evaluation)] if evaluation > 0 else costs
    delta = spec.privacy.delta
    cumulative = [epsilon_for_rho(rho_round * r, delta) for r in range(spec.rounds + 1)]
    costs = [after - before for before, after in zip(cumulative, cumulative[1:], strict=False)]
    return costs + [evaluation] if evaluation > 0 else costs


JobState = Literal["pending", "running", "finished", "failed"]


class SiteProgress(_Strict):
    """What one site has reported so far (all of it public: charges, not data)."""

    rounds_completed: int = 0
    spent: Budget | None = None
    """What the site's rounds charged, in its project's measure (None before round 1)."""
    refusal: str | None = None

    @property
    def measure(self) -> Measure | None:
        """The measure the site charged in: its project's accounting (None: nothing yet)."""
        return self.spent.measure if self.spent is not None else None


class EvaluationMetrics(_Strict):
    """DP metrics of the final model on held-out patients (all post-processing of DP counts).

    ``values``: logistic ``auc``, ``accuracy``, ``sensitivity``, ``specificity`` (at
    threshold 0.5) and ``n`` (noisy held-out rows); Cox ``concordance``, ``n`` and
    ``events``. ``charged``: what each contributing site paid for it, in its
    project's measure (one entry for a site's own metrics).
    """

    values: dict[str, float]
    charged: dict[str, Budget] = {}
    sites: list[str] = []
    std_errors: dict[str, float] = {}
    """Per metric, the standard error the DP noise adds (delta method over the released
    counts, :func:`varde.training_metrics.metric_std_errors`); 95% is about +-1.96 of it."""


class TrainingMetrics(_Strict):
    """Evaluation of the final model: per site, pooled over the network, and refusals."""

    network: EvaluationMetrics | None = None
    sites: dict[str, EvaluationMetrics] = {}
    refusals: dict[str, str] = {}


class TrainingStatus(_Strict):
    """Progress of a job as ``GET /v1/trainings/{id}`` and the ServerApp report it."""

    id: str
    state: JobState
    round: int = 0
    rounds: int
    seconds_per_round: list[float] = []
    sites: dict[str, SiteProgress] = {}
    coefficients: dict[str, float] | None = None
    metrics: TrainingMetrics | None = None
    detail: str | None = None
    secure_aggregation: bool | None = None
    guarantee: str | None = None
    """The privacy guarantee of the released coefficients, per site (:func:`privacy_guarantee`)."""
    """Whether rounds ran under SecAgg+ (``None`` until the job decided, before round 1)."""


def privacy_guarantee(spec: TrainingSpec, sites: Mapping[str, SiteProgress]) -> str:
    """What the released coefficients guarantee each site's patients, in words.

    Why this is the guarantee: the coefficients are post-processing of every
    round's noisy update, so a site's guarantee is the *cumulative* loss its
    ledger was charged for the rounds it took part in: ``(epsilon_spent,
    delta)``-DP where the project accounts in epsilon (OpenDP's conversion of
    the rounds' composed rho), ``rho_spent``-zCDP where it accounts in rho.

    >>> spec = TrainingSpec(project="p", features=["sex"], rounds=2,
    ...                     privacy=TrainingPrivacy(epsilon=1.0, delta=1e-6))
    >>> text = privacy_guarantee(spec, {
    ...     "oslo": SiteProgress(rounds_completed=2, spent=PureDP(0.9)),
    ...     "bergen": SiteProgress(rounds_completed=2, spent=ZCDP(0.02))})
    >>> text.split(", for")[0]
    'bergen: 0.02-zCDP; oslo: (0.9, 1e-06)-DP'
    >>> "after 2 round(s)" in text
    True
    """
    parts = []
    rounds = 0
    for name, site in sorted(sites.items()):
        if site.rounds_completed == 0 or site.spent is None:
            continue
        rounds = max(rounds, site.rounds_completed)
        if isinstance(site.spent, ZCDP):
            parts.append(f"{name}: {site.spent.rho:.4g}-zCDP")
        else:
            parts.append(f"{name}: ({site.spent.epsilon:.4g}, {spec.privacy.delta:g})-DP")
    if not parts:
        return "nothing released yet"
    return (
        "; ".join(parts)
        + ", for each patient of that site (all of a patient's rows), after "
        + f"{rounds} round(s); noise drawn by OpenDP at each site and paid from its ledger "
        + "before release"
    )
