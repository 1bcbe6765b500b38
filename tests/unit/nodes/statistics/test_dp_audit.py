"""Empirical DP audit: neighbouring registries, many releases at epsilon 1, a CP lower bound.

For every statistic (count with group_by, histogram, crosstab, sum, mean, funnel, quantile,
survival) and both measures (pure DP at epsilon 1; zCDP at the rho whose OpenDP
conversion is epsilon 1 at delta 1e-6), two registries ``D`` and ``D'`` differ in one
patient with ``k`` tumours (add/remove one patient, ``k`` the policy's
``max_tumours_per_patient``; :mod:`nodes.sensitivity`). The patient is a worst case: its
``k`` rows all fall in one cell and at the clamping bound, so it moves the released vector
by exactly the statistic's sensitivity (checked). Each side is released ``N`` times through
the node's own path (``nodes.statistics.exact`` -> ``plan`` -> ``Plan.release``, noise drawn
by OpenDP), the released numbers are read back from the cells (values, or ``parts`` where
a statistic carries its noisy counts there), and :mod:`tests.dp_audit` picks a threshold
test on a pilot half and bounds epsilon from below on the other half with one-sided
Clopper-Pearson bounds (:func:`tests.dp_audit.epsilon_lower_bound`).

What is asserted, and how often it fails by chance:

* ``eps_lb <= claimed epsilon`` (the plan's OpenDP cost; for zCDP its OpenDP conversion at
  ``DELTA``), with the CP bounds at one-sided ``1 - ASSERT_ALPHA`` (``1e-5``). A correct
  mechanism breaks this only if one of the four CP bounds of an audit (two rates, two
  directions) fails, so with probability at most ``4e-5`` per audit and ``6.4e-4`` for the
  16 audits of this file (union bound; the threshold is fixed on the pilot half, which is
  independent of the evaluation half). The 95% bound is what is *reported*; it is not
  asserted because the Laplace is exactly tight (a tail test's likelihood ratio is
  ``e^epsilon``), so a correct mechanism's 95% bound exceeds epsilon in about 1% of audits
  with one moved number and 2-3% with three (simulated discrete Laplace at epsilon 1,
  ``N = 5000``, this helper: 4 of 400 and 5 of 200 audits), i.e. in roughly one run in six
  of this file. The strict bound never exceeded 0.88 in those 600 simulated audits.
* the audit is not vacuous: under pure DP the 95% bound is above ``MIN_PURE_BOUND`` for
  every statistic (simulated: mean 0.92, sd 0.03 for one moved number; mean 0.81, sd 0.08
  for three, the funnel; 0.4 is more than 5 sd below both). Measured in two runs: 0.72-1.03.
* the audit has power: a Laplace at a tenth (and at half) of the right scale and a Gaussian
  at a tenth, built with OpenDP directly and released through the same statistic's cells,
  give a *strict* bound above epsilon 1 (simulated strict bounds: 5.3 and 1.7 for the
  Laplaces; a Gaussian at a tenth gives about 3).

zCDP's audit is weak by nature: epsilon 1 at delta 1e-6 is rho 0.024, a Gaussian with
``sensitivity / sd = 0.22``, whose best threshold test at these sample sizes shows a loss
of only about 0.2 (measured in two runs: 0.06-0.32 at 95%, 0-0.08 at the strict level), so no floor
is asserted for it; the (epsilon, delta) conversion of zCDP is loose for a single Gaussian.
It still catches gross under-noising (the Gaussian control).

OpenDP's noise is cryptographic and cannot be seeded; the registries are seeded.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import opendp.prelude as dp
import pandas as pd
import pytest

from nodes.cohort import evaluate
from nodes.data import RegistryData, prepare
from nodes.mechanisms import Mechanism, VectorPlan, invoke_vector
from nodes.policy import Policy
from nodes.statistics import Exact, exact, plan, statistic
from nodes.synth import generate_registry
from tests.dp_audit import Audit, audit
from varde.budget import ZCDP, Budget, PureDP, calibrate_rho, epsilon_for_rho
from varde.estimates import bin_part, survival_parts
from varde.query import Quantile, Query, Survival, parse_query
from varde.release import Cell

EPSILON = 1.0
DELTA = 1e-6
"""The delta at which a zCDP release's epsilon is audited (the project's training default)."""
RHO = calibrate_rho(EPSILON, DELTA)
"""The largest rho whose OpenDP conversion at ``DELTA`` is at most ``EPSILON`` (~0.0244)."""
N = 5000
"""Releases per side (half pick the test, half evaluate it). A release costs 0.2-0.4 ms of
CPU (survival ~1 ms, its curve and bands), so the file's audits take ~75 s on one core."""
ASSERT_ALPHA = 1e-5
"""One-sided CP level of the asserted bound (see the module docstring for why not 0.05)."""
MIN_PURE_BOUND = 0.4
"""Under pure DP at epsilon 1 the 95% bound must at least reach this (the audit has teeth)."""
BASE_ROWS = 300
SEED = 20_260_710

LUNG = {"op": "eq", "field": "cancer_type", "value": "lung"}


@dataclass(frozen=True)
class Case:
    """One audited statistic: its query and the extra patient's ``k`` tumours (worst case)."""

    statistic: dict[str, Any]
    patient: dict[str, Any]
    group_by: list[str] = field(default_factory=list)
    cohort: dict[str, Any] | None = None

    def query(self, budget: Budget) -> Query:
        if isinstance(budget, PureDP):
            privacy: dict[str, Any] = {"mode": "dp", "epsilon": budget.epsilon}
        else:
            privacy = {"mode": "zcdp", "rho": budget.rho}
        body: dict[str, Any] = {
            "project": "audit",
            "statistic": self.statistic,
            "group_by": self.group_by,
            "privacy": privacy,
        }
        if self.cohort is not None:
            body["cohort"] = self.cohort
        return parse_query(body)


CASES: dict[str, Case] = {
    "count": Case(
        {"kind": "count"}, {"cancer_type": "lung", "stage": "IV"}, ["stage"], cohort=LUNG
    ),
    "histogram": Case(
        {"kind": "histogram", "field": "age_at_diagnosis", "bins": [0, 40, 60, 80, 111]},
        {"age_at_diagnosis": 65},
    ),
    "crosstab": Case(
        {"kind": "crosstab", "fields": ["sex", "vital_status"]},
        {"sex": "male", "vital_status": "dead"},
    ),
    "sum": Case(  # clamped to the upper bound 100 = max(|L|, |U|): each row moves the sum 100
        {"kind": "sum", "field": "age_at_diagnosis", "lower": 0, "upper": 100},
        {"age_at_diagnosis": 104},
    ),
    "mean": Case(  # clamped to 90: centred value +h = 36 per row, and the count +1 per row
        {"kind": "mean", "field": "age_at_diagnosis", "lower": 18, "upper": 90},
        {"age_at_diagnosis": 95},
    ),
    "funnel": Case(  # the patient passes every step: it moves all three nested counts
        {
            "kind": "funnel",
            "steps": [
                {"label": "lung", "criterion": LUNG},
                {"label": "IV", "criterion": {"op": "eq", "field": "stage", "value": "IV"}},
                {
                    "label": "EGFR+",
                    "criterion": {"op": "eq", "field": "egfr", "value": "positive"},
                },
            ],
        },
        {"cancer_type": "lung", "stage": "IV", "egfr": "positive"},
    ),
    "quantile": Case(
        {
            "kind": "quantile",
            "field": "age_at_diagnosis",
            "alphas": [0.5],
            "candidates": [0, 20, 40, 60, 80, 100],
        },
        {"age_at_diagnosis": 70},
    ),
    "survival": Case(  # died in the first 6-month interval
        {"kind": "survival", "interval_months": 6, "horizon_months": 24},
        {"vital_status": "dead", "survival_days": 100},
    ),
}
BUDGETS: dict[str, Budget] = {"epsilon": PureDP(EPSILON), "rho": ZCDP(RHO)}


# --------------------------------------------------------------------- neighbouring registries


@pytest.fixture(scope="module")
def k(oslo_policy: Policy) -> int:
    """The node's per-patient bound: what one patient may contribute."""
    return oslo_policy.privacy_unit.max_tumours_per_patient


@pytest.fixture(scope="module")
def base() -> pd.DataFrame:
    """Registry ``D``: a small seeded synthetic registry."""
    return generate_registry("oslo", BASE_ROWS, seed=SEED)


def with_patient(frame: pd.DataFrame, k: int, values: dict[str, Any]) -> pd.DataFrame:
    """``D'``: ``frame`` plus one new patient with ``k`` tumours, each with ``values``."""
    template = frame.iloc[0].astype(object)
    rows = []
    for i in range(k):
        row = template.copy()
        row["patient_id"] = "oslo-PAUDIT"
        row["tumour_id"] = i + 1
        row["diagnosis_date"] = pd.Timestamp("2015-01-01") + pd.Timedelta(days=30 * i)
        for name, value in values.items():
            row[name] = value
        rows.append(row)
    assert "oslo-PAUDIT" not in set(frame["patient_id"])
    extra = pd.DataFrame(rows).reset_index(drop=True)
    return pd.concat([frame.astype(object), extra], ignore_index=True)


def neighbours(base: pd.DataFrame, k: int, case: Case) -> tuple[RegistryData, RegistryData]:
    """Prepared ``D`` and ``D'`` (contributions bounded by ``k`` as a node bounds them)."""
    d = prepare(base, site="oslo", max_rows_per_patient=k)
    d2 = prepare(with_patient(base, k, case.patient), site="oslo", max_rows_per_patient=k)
    assert d2.n_rows == d.n_rows + k  # the new patient's k tumours are all kept
    return d, d2


# ---------------------------------------------------- what is released, and its exact values


def released(query: Query, cells: list[Cell]) -> list[float]:
    """The noisy numbers of one release, in the order of :func:`exact_numbers`."""
    stat, kind = query.statistic, query.statistic.kind
    if kind == "mean":
        return [c.parts["centred_sum"] for c in cells] + [c.parts["count"] for c in cells]
    if isinstance(stat, Quantile):  # every alpha cell of a group carries its interval counts
        per_group, n_bins = len(stat.alphas), len(stat.candidates) - 1
        return [
            cells[g].parts[bin_part(i)]
            for g in range(0, len(cells), per_group)
            for i in range(n_bins)
        ]
    if isinstance(stat, Survival):  # each group's median cell carries its counts
        per_group, keys = len(stat.labels()), survival_parts(len(stat.months()))
        return [
            cells[g + per_group - 1].parts[key]
            for g in range(0, len(cells), per_group)
            for key in keys
        ]
    values = [c.value for c in cells]
    assert all(v is not None for v in values)
    return [float(v) for v in values if v is not None]


def exact_numbers(query: Query, ex: Exact) -> np.ndarray:
    """The noise-free values of what :func:`released` reads."""
    kind = query.statistic.kind
    if kind in ("sum", "mean"):
        assert ex.sums is not None
        parts = [ex.sums, ex.counts] if kind == "mean" else [ex.sums]
        return np.concatenate(parts).astype(np.float64)
    return ex.counts.astype(np.float64)


@dataclass(frozen=True)
class Side:
    """One registry's exact aggregates for a query, and a sampler of its releases."""

    ex: Exact
    reference: np.ndarray
    cost: Budget
    draw: Callable[[], list[Cell]]

    def sample(self, query: Query, n: int) -> np.ndarray:
        return np.array([released(query, self.draw()) for _ in range(n)], dtype=np.float64)


def side(data: RegistryData, query: Query, budget: Budget, k: int) -> Side:
    """The node's own release path on ``data``: exact aggregates, OpenDP plan, release."""
    ex = exact(data, evaluate(data, query.cohort), query)
    costed = plan(ex, query, budget, max_rows=k)
    return Side(ex, exact_numbers(query, ex), costed.cost, costed.release)


def claimed(cost: Budget) -> float:
    """The epsilon a release claims: pure DP's own, or zCDP's OpenDP conversion at DELTA."""
    return cost.epsilon if isinstance(cost, PureDP) else epsilon_for_rho(cost.rho, DELTA)


def assert_worst_case(query: Query, d: Side, d2: Side, k: int) -> None:
    """The extra patient moves every released vector by exactly the statistic's sensitivity."""
    stat, spec = statistic(query.statistic.kind), query.statistic
    sens = stat.sensitivity(spec, k)
    before, after = stat.vectors(d.ex, spec, k), stat.vectors(d2.ex, spec, k)
    assert len(before) == sens.parts
    for a, b in zip(before, after, strict=True):
        moved = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
        assert np.abs(moved).sum() == pytest.approx(sens.l1)
        assert np.linalg.norm(moved) == pytest.approx(sens.l2)


def run_audit(query: Query, d: Side, d2: Side, *, delta: float) -> Audit:
    started = time.perf_counter()
    on_d, on_d2 = d.sample(query, N), d2.sample(query, N)
    result = audit(
        on_d,
        on_d2,
        reference=d.reference,
        shift=d2.reference - d.reference,
        delta=delta,
        alpha=ASSERT_ALPHA,
    )
    print(f"\n{query.statistic.kind}: {result.summary()} ({time.perf_counter() - started:.1f} s)")
    return result


# ------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("name", sorted(CASES))
def test_released_numbers_line_up_with_the_exact_values(
    base: pd.DataFrame, k: int, name: str
) -> None:
    """At a large epsilon a release is near its exact values: the audit reads the right numbers.

    Within 10 noise sd per number: a Laplace exceeds that with probability ``e^-14``. The
    noise is an integer, so where 10 sd is below 3 the bound is 3: at epsilon 50 a count's sd is
    ~0.09, a draw of +-1 has probability ~1% (more than 10 sd, but no misread number), and one of
    3 or more ~1e-7.
    """
    case, budget = CASES[name], PureDP(50.0)
    d, d2 = neighbours(base, k, case)
    query = case.query(budget)
    sides = [side(data, query, budget, k) for data in (d, d2)]
    tolerance = max(3.0, 10 * max(plan(sides[0].ex, query, budget, max_rows=k).noise_std.values()))
    for s in sides:
        np.testing.assert_allclose(released(query, s.draw()), s.reference, atol=tolerance)
    assert np.count_nonzero(sides[1].reference - sides[0].reference) >= 1


@pytest.mark.slow
@pytest.mark.parametrize("measure", sorted(BUDGETS))
@pytest.mark.parametrize("name", sorted(CASES))
def test_audit_lower_bound_stays_below_the_claimed_epsilon(
    base: pd.DataFrame, k: int, name: str, measure: str
) -> None:
    case, budget = CASES[name], BUDGETS[measure]
    d_data, d2_data = neighbours(base, k, case)
    query = case.query(budget)
    d, d2 = side(d_data, query, budget, k), side(d2_data, query, budget, k)
    assert d.cost == d2.cost  # the cost depends on the query only
    assert_worst_case(query, d, d2, k)
    claim = claimed(d.cost)
    assert claim <= EPSILON
    delta = DELTA if measure == "rho" else 0.0
    result = run_audit(query, d, d2, delta=delta)
    assert result.strict <= claim, f"{name}/{measure}: {result.summary()} > claimed {claim}"
    if measure == "epsilon":  # zCDP's is too weak to assert a floor (module docstring)
        assert result.report > MIN_PURE_BOUND, f"{name}: vacuous audit, {result.summary()}"


def under_scaled(right: Side, query: Query, k: int, factor: float) -> Side:
    """``right`` with OpenDP noise at ``1 / factor`` of its scale (a broken mechanism)."""
    stat, spec = statistic(query.statistic.kind), query.statistic
    sens = stat.sensitivity(spec, k)
    gaussian = isinstance(right.cost, ZCDP)
    honest = plan(right.ex, query, right.cost, max_rows=k)
    scale = honest.noise_scales["count"] / factor
    metric = dp.l2_distance if gaussian else dp.l1_distance
    space = (dp.vector_domain(dp.atom_domain(T=int)), metric(T=int))
    build = dp.m.make_gaussian if gaussian else dp.m.make_laplace
    meas: Any = build(*space, scale=scale)
    loss = float(meas.map(int(sens.l1)))
    cost: Budget = ZCDP(loss) if gaussian else PureDP(loss)
    broken = VectorPlan(Mechanism(meas, True, sens.l1, scale, cost), 1, cost)
    assert claimed(cost) > factor * claimed(right.cost) * 0.9  # OpenDP itself says so

    def draw() -> list[Cell]:
        noisy = [invoke_vector(meas, v, integer=True) for v in stat.vectors(right.ex, spec, k)]
        return stat.cells(right.ex, spec, noisy, broken, k)

    return dataclasses.replace(right, cost=cost, draw=draw)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("measure", "factor"), [("epsilon", 10.0), ("epsilon", 2.0), ("rho", 10.0)]
)
def test_audit_catches_noise_that_is_too_small(
    base: pd.DataFrame, k: int, measure: str, factor: float
) -> None:
    """Negative control: the same audit of an under-scaled OpenDP mechanism exceeds epsilon 1."""
    case, budget = dataclasses.replace(CASES["count"], group_by=[]), BUDGETS[measure]
    d_data, d2_data = neighbours(base, k, case)
    query = case.query(budget)
    right, right2 = side(d_data, query, budget, k), side(d2_data, query, budget, k)
    claim = claimed(right.cost)
    d, d2 = under_scaled(right, query, k, factor), under_scaled(right2, query, k, factor)
    result = run_audit(query, d, d2, delta=DELTA if measure == "rho" else 0.0)
    assert result.strict > claim, f"{measure}/{factor}: no power, {result.summary()}"
