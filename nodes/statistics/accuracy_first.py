"""Accuracy-first questions: the least budget that meets a researcher's ``+-pm95`` at this site.

A researcher may ask ``{"mode": "dp", "accuracy": {"pm95": 10}}`` ("within 10 patients,
95% of the time") instead of naming an epsilon. Each site then finds the **least**
epsilon (or rho, in zCDP) whose release meets the target under its *own* mechanism:
its own per-patient bound ``k``, the statistic's sensitivity and OpenDP's accuracy
helpers. Sites with different ``k`` charge different amounts for the same question.

Why the budget never depends on the data: the half-width a target constrains is a
function of the budget and public facts only (``k``, declared clamping bounds, the
grid, a stated cohort size: :attr:`nodes.statistics.base.Statistic.target_half_width`),
computed here from the very plan the release would use (:func:`nodes.mechanisms.plan_vector`,
never a row). Choosing epsilon from the rows would itself leak.

How "least" is found: the half-width is non-increasing in the budget (a larger budget
is a smaller OpenDP scale, and OpenDP's accuracy helpers are monotone in the scale),
but the calibration nudges scales by ulps and a funnel composes parts, so rather than
invert a formula this bisects the budget itself, geometrically, evaluating the real
plan at each probe. The result meets the target and is within :data:`RELATIVE_TOLERANCE`
of the least budget that does; it is then rounded **up** to :data:`SIGNIFICANT_DIGITS`
significant figures (a plain number for the ledger and the researcher), so a budget
``1e-5`` smaller than the one charged does not meet the target, and one rounded down
never stands in for it. A budget the mechanism cannot represent (noise too wide for a
number) counts as not meeting any target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from pydantic import TypeAdapter

from nodes.mechanisms import plan_vector
from nodes.statistics.base import StatisticSpec
from nodes.statistics.registry import statistic
from nodes.statistics.units import rows_per_patient
from varde.budget import MAX_AMOUNT, ZCDP, Budget, Measure, PureDP
from varde.errors import InvalidQuery, PolicyViolation
from varde.query import AccuracyTarget, Query

RELATIVE_TOLERANCE = 1e-7
"""The bisection stops when its bracket is this narrow (relative): far below any rounding."""

SIGNIFICANT_DIGITS = 6
"""The found budget is rounded up to this many significant figures (at most 1e-5 above)."""

SMALLEST = 1e-9
"""Below this a budget is not searched (the ledger rounds charges to nano-units)."""

_SPEC: TypeAdapter[StatisticSpec] = TypeAdapter(StatisticSpec)


@dataclass(frozen=True)
class Found:
    """The least budget meeting a target here, and the half-width it gives (None: none does)."""

    budget: Budget | None
    half_width: float


def half_width(query: Query, budget: Budget, *, max_rows: int) -> float:
    """The half-width the accuracy target of ``query`` constrains, if released within ``budget``.

    ``inf`` when the budget is too small for the mechanism to release anything.
    """
    target = query.accuracy
    if target is None:
        raise ValueError("the query gives an epsilon or rho, not an accuracy target")
    return _half_width(query.statistic, target, budget, rows_per_patient(query, max_rows))


def _half_width(spec: StatisticSpec, target: AccuracyTarget, budget: Budget, k: int) -> float:
    stat = statistic(spec.kind)
    measure_half_width = stat.target_half_width
    if measure_half_width is None:  # the query model refuses such a target: a bug if reached
        raise TypeError(f"no accuracy target for a {spec.kind}")
    try:
        plan = plan_vector(stat.sensitivity(spec, k), budget)
        noise = stat.noise(plan, spec, k)
    except InvalidQuery:
        return math.inf
    return float(measure_half_width(noise, spec, target))


def _round_up(x: float, digits: int = SIGNIFICANT_DIGITS) -> float:
    """The smallest number of ``digits`` significant figures that is ``>= x``.

    >>> _round_up(0.123456789), _round_up(2.0), _round_up(1234567.1), _round_up(0.3)
    (0.123457, 2.0, 1234570.0, 0.3)
    """
    exponent = math.floor(math.log10(x)) - digits + 1
    mantissa = math.floor(x / 10.0**exponent)
    while float(f"{mantissa}e{exponent}") < x:
        mantissa += 1
    return float(f"{mantissa}e{exponent}")


def least_budget(query: Query, *, max_rows: int) -> Found:
    """The least budget (in the query mode's measure) whose release meets ``query.accuracy``.

    Searched up to :data:`varde.budget.MAX_AMOUNT` (what a ledger holds); ``Found.budget``
    is None if no budget up to there meets the target (a discrete Gaussian never gets
    below +-1; a budget so large that OpenDP's noise has no finite interval is no
    answer). The answer depends only on the statistic, the mode, the target and ``k``
    (never the cohort or the rows), and is cached by them.
    """
    target = query.accuracy
    if target is None:
        raise ValueError("the query gives an epsilon or rho, not an accuracy target")
    measure: Measure = "rho" if query.privacy.mode == "zcdp" else "epsilon"
    return _least(
        query.statistic.model_dump_json(), measure, target, rows_per_patient(query, max_rows)
    )


@lru_cache(maxsize=512)
def _least(spec_json: str, measure: Measure, target: AccuracyTarget, k: int) -> Found:
    spec: StatisticSpec = _SPEC.validate_json(spec_json)
    make = ZCDP if measure == "rho" else PureDP

    def meets(amount: float) -> bool:
        return _half_width(spec, target, make(amount), k) <= target.pm95

    high = 1.0
    while not meets(high):  # the answer is above 1: climb
        high *= 4.0
        if high > MAX_AMOUNT:  # nothing a ledger holds (or OpenDP releases) meets it
            return Found(None, _half_width(spec, target, make(MAX_AMOUNT), k))
    low = high / 4.0
    while low > SMALLEST and meets(low):  # the answer is below: descend
        high, low = low, low / 4.0
    if meets(low):  # even the smallest budget searched meets it (a ledger charges no less)
        high = low
    while high - low > RELATIVE_TOLERANCE * high:
        mid = math.sqrt(low * high)
        if meets(mid):
            high = mid
        else:
            low = mid
    rounded = _round_up(high)
    chosen = rounded if meets(rounded) else high
    return Found(make(chosen), _half_width(spec, target, make(chosen), k))


def describe(query: Query, found: Budget, *, max_rows: int) -> str:
    """One line for the researcher: what this site spends for the target, and why that much.

    >>> from varde.query import parse_query
    >>> q = parse_query({"project": "p", "statistic": {"kind": "count"},
    ...                  "privacy": {"mode": "dp", "accuracy": {"pm95": 10}}})
    >>> describe(q, least_budget(q, max_rows=3).budget, max_rows=3)
    'epsilon 0.942144: the least here for +-10 at 95% on each count (k = 3 tumours per patient)'
    """
    target = query.accuracy
    assert target is not None
    kind = query.statistic.kind
    what = {
        "sum": "each sum",
        "survival": f"S(t) for {target.cohort_size} patients per group",
    }.get(kind, "each count")
    return (
        f"{found.measure} {found.amount:.6g}: the least here for +-{target.pm95:g} at 95% on "
        f"{what} ({_unit(query, max_rows)})"
    )


def _unit(query: Query, max_rows: int) -> str:
    """What one patient adds here, in words: the bound ``k``, or one row counting patients."""
    if query.unit == "patients":
        return "counting patients: one row each"
    return f"k = {max_rows} tumours per patient"


def site_budget(query: Query, cap: Budget, *, max_rows: int, site: str) -> tuple[Budget, str]:
    """What this site spends for the query's target, and the line saying so.

    Raises:
        PolicyViolation: The least budget is above the project's per-query ``cap``
            (the message names both); nothing is charged.
        InvalidQuery: No budget this site can release meets the target.
    """
    target = query.accuracy
    if target is None:
        raise ValueError("the query gives an epsilon or rho, not an accuracy target")
    found = least_budget(query, max_rows=max_rows)
    measure = cap.measure
    if found.budget is None:
        raise InvalidQuery(
            f"no {measure} site {site!r} can release meets +-{target.pm95:g} at 95% for a "
            f"{query.statistic.kind} ({_unit(query, max_rows)}; the closest is "
            f"+-{found.half_width:.3g}); nothing was charged"
        )
    if found.budget.measure != measure:  # the terms check matched mode and accounting
        raise TypeError(f"cannot compare {found.budget} with the cap {cap}")
    if found.budget.amount > cap.amount:
        raise PolicyViolation(
            f"site {site!r} needs {measure} {found.budget.amount:.6g} for +-{target.pm95:g} at "
            f"95% ({_unit(query, max_rows)}), above the per-query cap "
            f"{cap.amount:g} of project {query.project!r}; nothing was charged"
        )
    return found.budget, describe(query, found.budget, max_rows=max_rows)
