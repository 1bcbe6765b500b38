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

What a job costs each site per round (the first round is the dearest; the
rounds sum to the job's epsilon):

>>> costs = round_costs(spec)
>>> costs[0] > costs[1], round(sum(costs), 6)
(True, 1.0)
"""

from __future__ import annotations

import math
from typing import Any, Literal

import opendp.prelude as dp
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from varde.schema import FIELDS_BY_NAME, FieldKind

OUTCOME_FIELDS: dict[str, tuple[str, ...]] = {
    "death_within_2y": ("vital_status", "survival_days"),
}
"""Fields each derived outcome reads at the node (checked against the site's policy)."""

OUTCOME_HORIZON_DAYS = 730
"""``death_within_2y``: died at most this many days after diagnosis."""

MAX_DELTA = 1e-5
"""Largest delta a job may ask for; sites hold tens of thousands of patients, so
``1e-5`` is already well below ``1 / n`` and keeps the (epsilon, delta)
guarantee meaningful."""

_FEATURE_KINDS = (FieldKind.CATEGORICAL, FieldKind.INTEGER)

dp.enable_features("contrib")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrainingPrivacy(_Strict):
    """What each site may spend on the whole job, and how hard updates are clipped.

    ``epsilon`` is per site for the whole job (all rounds): every site calibrates
    its own noise to it and charges its own ledger round by round.
    """

    epsilon: float = Field(gt=0, le=100, allow_inf_nan=False)
    delta: float = Field(default=1e-6, gt=0, le=MAX_DELTA, allow_inf_nan=False)
    clip: float = Field(
        default=1.0,
        gt=0,
        le=100,
        allow_inf_nan=False,
        description="L2 bound on each row's gradient (per-example clipping).",
    )


class TrainingSpec(_Strict):
    """A federated training job as the researcher submits it."""

    project: str = Field(min_length=1, max_length=80)
    model: Literal["logistic"] = "logistic"
    features: list[str] = Field(min_length=1, max_length=40)
    outcome: Literal["death_within_2y"] = "death_within_2y"
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
            spec = FIELDS_BY_NAME.get(name)
            if spec is None:
                raise ValueError(f"unknown field {name!r} (see varde/schema.py)")
            if spec.kind not in _FEATURE_KINDS:
                raise ValueError(
                    f"field {name!r} ({spec.kind.value}) cannot be a feature: "
                    "only categorical and integer fields can"
                )
            if any(name in fields for fields in OUTCOME_FIELDS.values()):
                raise ValueError(f"field {name!r} defines the outcome and cannot be a feature")
        return value

    def fields_read(self) -> set[str]:
        """Every schema field a site reads for this job (features and outcome)."""
        return set(self.features) | set(OUTCOME_FIELDS[self.outcome])

    def n_coefficients(self) -> int:
        """Length of the model vector (intercept included)."""
        return len(design_columns(self.features))


def design_columns(features: list[str]) -> list[str]:
    """Public names of the model's coefficients, in order: intercept, then per feature.

    A categorical feature gives one indicator per schema category (a missing
    value sets none); an integer feature gives one column scaled to ``[-1, 1]``
    over the schema's public bounds.
    """
    names = ["intercept"]
    for name in features:
        spec = FIELDS_BY_NAME[name]
        if spec.kind is FieldKind.CATEGORICAL:
            names.extend(f"{name}={category}" for category in spec.categories)
        else:
            names.append(name)
    return names


# Accounting: public maths (no rows), shared so the gateway can price a job exactly as
# the sites will (see nodes/training/dp.py for why rounds are charged this way).


def rho_for_epsilon(epsilon: float, delta: float) -> float:
    """The zCDP rho whose Bun-Steinke conversion at ``delta`` is exactly ``epsilon``."""
    if not (epsilon > 0 and 0 < delta < 1):
        raise ValueError("epsilon must be > 0 and delta in (0, 1)")
    log_term = math.log(1.0 / delta)
    return (math.sqrt(log_term + epsilon) - math.sqrt(log_term)) ** 2


def epsilon_for_rho(rho: float, delta: float) -> float:
    """OpenDP's epsilon at ``delta`` for a rho-zCDP release (0 for nothing released).

    Why a unit Gaussian: its privacy map is ``d_in**2 / 2``, so ``d_in =
    sqrt(2 rho)`` makes OpenDP convert exactly ``rho``.
    """
    if rho < 0 or not math.isfinite(rho):
        raise ValueError(f"rho must be finite and >= 0, got {rho!r}")
    if rho == 0:
        return 0.0
    unit = dp.m.make_gaussian(
        dp.atom_domain(T=float, nan=False), dp.absolute_distance(T=float), scale=1.0
    )
    approx: Any = dp.c.make_fix_delta(dp.c.make_zCDP_to_approxDP(unit), delta)
    epsilon, _ = approx.map(math.sqrt(2.0 * rho))
    return float(epsilon)


def calibrate_rho(epsilon: float, delta: float) -> float:
    """The largest rho (to 1e-9 relative) whose OpenDP epsilon at ``delta`` is <= ``epsilon``."""
    low = rho_for_epsilon(epsilon, delta)
    if epsilon_for_rho(low, delta) > epsilon:  # pragma: no cover - OpenDP is never looser
        raise AssertionError("OpenDP's conversion is looser than Bun-Steinke")
    high = 2.0 * low
    while epsilon_for_rho(high, delta) <= epsilon:
        low, high = high, 2.0 * high
    for _ in range(60):
        if high - low <= 1e-9 * low:
            break
        mid = (low + high) / 2.0
        if epsilon_for_rho(mid, delta) <= epsilon:
            low = mid
        else:
            high = mid
    return low


def round_costs(spec: TrainingSpec) -> list[float]:
    """The epsilon each round of ``spec`` charges at every site, first round first.

    Each round adds the same rho (``rho_job / rounds``, whatever a site's
    contribution bound: the noise scales with it), and a round pays the increase
    of the job's epsilon, so these sum to the job's epsilon.
    """
    rho_round = calibrate_rho(spec.privacy.epsilon, spec.privacy.delta) / spec.rounds
    delta = spec.privacy.delta
    cumulative = [epsilon_for_rho(rho_round * r, delta) for r in range(spec.rounds + 1)]
    return [after - before for before, after in zip(cumulative, cumulative[1:], strict=False)]


JobState = Literal["pending", "running", "finished", "failed"]


class SiteProgress(_Strict):
    """What one site has reported so far (all of it public: charges, not data)."""

    rounds_completed: int = 0
    epsilon_spent: float = 0.0
    refusal: str | None = None


class TrainingStatus(_Strict):
    """Progress of a job as ``GET /v1/trainings/{id}`` and the ServerApp report it."""

    id: str
    state: JobState
    round: int = 0
    rounds: int
    seconds_per_round: list[float] = []
    sites: dict[str, SiteProgress] = {}
    coefficients: dict[str, float] | None = None
    detail: str | None = None
