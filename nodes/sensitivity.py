"""Sensitivity of every released statistic, derived in one reviewed place.

Privacy unit: **one patient**, under add/remove-one-patient neighbouring
(unbounded DP). A patient may have several tumours (rows); when a node loads its
data it keeps at most ``k = policy.privacy_unit.max_tumours_per_patient`` rows
per patient (:func:`nodes.data.bound_contributions`), so adding or removing one
patient changes at most ``k`` rows. Everything below follows from that bound.

Cells. Every statistic is released as a vector over public cells (group_by
keys x histogram bins or crosstab categories; one cell without them). Each row
falls into at most one cell, so a patient touches at most ``k`` cells with at
most one row each in total ``k``.

* **Counts** (count, histogram, crosstab, any group_by): one row changes one
  cell by 1, so the L1 distance between neighbouring count vectors is at most
  ``k``. Released with OpenDP's vector (discrete) Laplace at ``scale = k / eps``.
* **Counts under zCDP** (Gaussian, L2 distance): the ``k`` rows of one
  patient change at most ``k`` cells by 1 each (L2 ``sqrt(k)``) or one cell by
  up to ``k`` (L2 ``k``); the worst case is ``k``, which is the L2
  sensitivity used.
* **Sum** of a field clamped to ``[L, U]``: one row changes one cell's sum by at
  most ``max(|L|, |U|)`` (adding a row adds its value; under add/remove the
  value is not offset by anything), so L1 <= ``k * max(|L|, |U|)``.
* **Mean** of a field clamped to ``[L, U]``: released as a pair of vectors,
  the *centred* sum ``S = sum(x - c)`` with ``c = (L + U) / 2`` and the count
  ``N``; the mean is ``c + S / N``. One row moves ``S`` by at most
  ``h = (U - L) / 2`` and ``N`` by 1. Dividing ``S`` by ``k*h`` and ``N`` by
  ``k`` gives a normalised vector whose L1 sensitivity is at most 2 (``<= 1``
  from each half), released with one vector Laplace: equivalent to giving each
  half ``eps / 2``, but accounted by OpenDP as a single measurement. Centring
  halves the noise on the sum against the naive ``max(|L|,|U|)`` bound when
  ``L`` and ``U`` have the same sign and are far from 0 (e.g. ages 18-90).
* **Quantile** over public candidate edges: each non-missing value is clamped
  to ``[edge_0, edge_n]`` and counted in exactly one interval, so the released
  vector is a count vector over disjoint cells: L1 sensitivity ``k``, as for
  counts. Quantiles are then post-processing of the noisy counts (free), which
  is what lets the gateway pool sites through their summed CDF.
* **Survival** on a public grid of ``m`` intervals: each row with a known
  follow-up time lands in exactly one of ``2m + 1`` cells per group (died in
  interval ``i``, censored in interval ``i``, or followed beyond the horizon),
  so the released vector is again counts over disjoint cells: L1 sensitivity
  ``k``. The curve, its bands and the median are post-processing.
* **Funnel** (attrition after criteria ``1..m``, any group_by): step ``j``
  releases the count vector of rows meeting criteria ``1..j``. The steps are
  *nested*, not disjoint, so one row can appear in every step: the vector of
  one step has L1 sensitivity ``k`` (the counts argument above), but the
  concatenation of all ``m`` steps has ``m k``. Each step is therefore its own
  discrete-Laplace measurement at ``d_in = k``, and the ``m`` measurements are
  composed with OpenDP's ``make_composition``, whose privacy map is the sum of
  the steps' losses (basic sequential composition; pure DP). Spending
  ``eps / m`` per step is the same noise as one vector Laplace at sensitivity
  ``m k``, but the split is OpenDP's accounting, not ours.

**Counting patients** (a query's ``unit: patients``): before any of the above,
the node keeps one row per patient, the first that meets the criteria of the
released number (:mod:`nodes.statistics.units`; per step for a funnel). Adding
or removing a patient then adds or removes at most one row, so every bound
here holds with ``k = 1``, whatever the policy's bound: a patient count has L1
and L2 sensitivity 1. :func:`nodes.statistics.plan` asks for the sensitivity
at :func:`nodes.statistics.units.rows_per_patient` rows.

zCDP (Gaussian family) needs **L2** sensitivities; each statistic is the same
vector as above, so only the norm changes. If one patient's ``k`` rows fall
``a_1, ..., a_r`` to cells (``sum a_j <= k``), a vector whose per-row change is
at most ``b`` moves by at most ``b sqrt(sum a_j^2) <= b k`` (the worst case
puts every row in one cell; spread over ``k`` cells it is ``b sqrt(k)``).
Hence:

* **Counts, quantile intervals, survival counts, one funnel step**: L2 ``k``
  (``b = 1``), released with OpenDP's discrete Gaussian.
* **Sum** of values clamped to ``[L, U]``: L2 ``k * max(|L|, |U|)`` (``b`` is
  the largest absolute value), released with OpenDP's continuous Gaussian.
* **Mean**, normalised ``[S/(k h), N/k]``: each half moves by at most
  ``sqrt(sum a_j^2) / k <= 1`` (``b = h`` divided by ``k h``; ``b = 1``
  divided by ``k``), so the whole vector by at most ``sqrt(1 + 1) = sqrt(2)``
  (its L1 bound was 2). One Gaussian over the normalised vector: the sum and
  the count get noise sd ``sigma k h`` and ``sigma k``.
* **Funnel**: each step at L2 ``k``, one discrete Gaussian per step, composed
  by OpenDP's ``make_composition`` (zCDP composes additively: the rho of the
  steps adds up, and OpenDP's map says so).

Each statistic asks for its :class:`~nodes.mechanisms.Sensitivity` (L1 and L2
together) here, and :func:`nodes.mechanisms.plan_vector` uses the norm its
budget's mechanism needs:

>>> count_sensitivity(3)
3
>>> sum_sensitivity(lower=-10.0, upper=4.0, max_rows=2)
20.0
>>> mean_half_width(lower=18.0, upper=90.0)
36.0
>>> counts(3)
Sensitivity(l1=3, l2=3, integer=True, parts=1)
>>> sums(lower=-10.0, upper=4.0, max_rows=2)
Sensitivity(l1=20.0, l2=20.0, integer=False, parts=1)
>>> round(normalised_mean().l2 ** 2, 12), normalised_mean().l1
(2.0, 2.0)
>>> funnel_steps(2, steps=4)
Sensitivity(l1=2, l2=2, integer=True, parts=4)
"""

from __future__ import annotations

import math

from nodes.mechanisms import Sensitivity

MEAN_NORMALISED_SENSITIVITY = 2.0
"""L1 sensitivity of the normalised ``[S/(k h), N/k]`` vector used for means."""

MEAN_NORMALISED_L2_SENSITIVITY = math.sqrt(2.0)
"""L2 sensitivity of the same normalised vector (zCDP): ``sqrt(1^2 + 1^2)``."""


def count_sensitivity(max_rows: int) -> int:
    """L1 sensitivity of a vector of counts over disjoint cells."""
    if max_rows < 1:
        raise ValueError("a patient contributes at least one row")
    return max_rows


def sum_sensitivity(*, lower: float, upper: float, max_rows: int) -> float:
    """L1 sensitivity of a vector of sums of values clamped to ``[lower, upper]``."""
    if not lower < upper:
        raise ValueError("lower must be < upper")
    return float(count_sensitivity(max_rows)) * max(abs(lower), abs(upper))


def mean_centre(*, lower: float, upper: float) -> float:
    """Centre ``c`` subtracted before summing, so the sum's sensitivity is ``h`` per row."""
    return (lower + upper) / 2.0


def mean_half_width(*, lower: float, upper: float) -> float:
    """``h = (upper - lower) / 2``: the most one clamped, centred value can move the sum."""
    if not lower < upper:
        raise ValueError("lower must be < upper")
    return (upper - lower) / 2.0


def counts(max_rows: int) -> Sensitivity:
    """Counts over disjoint cells (counts, quantile intervals, survival counts): L1 = L2 = k."""
    k = count_sensitivity(max_rows)
    return Sensitivity(l1=k, l2=k, integer=True)


def funnel_steps(max_rows: int, *, steps: int) -> Sensitivity:
    """``steps`` nested count vectors, each at L1 = L2 = ``k``; OpenDP composes them."""
    k = count_sensitivity(max_rows)
    return Sensitivity(l1=k, l2=k, integer=True, parts=steps)


def sums(*, lower: float, upper: float, max_rows: int) -> Sensitivity:
    """Sums of values clamped to ``[lower, upper]``: L1 = L2 = ``k max(|L|, |U|)``.

    The L2 bound equals the L1 one, because the worst case is one cell taking all ``k`` rows.
    """
    bound = sum_sensitivity(lower=lower, upper=upper, max_rows=max_rows)
    return Sensitivity(l1=bound, l2=bound, integer=False)


def normalised_mean() -> Sensitivity:
    """The normalised ``[S/(k h), N/k]`` vector of a mean: L1 2, L2 ``sqrt 2``."""
    return Sensitivity(
        l1=MEAN_NORMALISED_SENSITIVITY, l2=MEAN_NORMALISED_L2_SENSITIVITY, integer=False
    )
