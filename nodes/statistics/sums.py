"""Bounded sums and means (each with group_by), released through OpenDP Laplace or Gaussian.

Values are clamped to the researcher's declared ``[lower, upper]`` *before*
summing (the bounds are public; the data never chooses them). Missing values
are left out of both the sum and the count. A mean is released as its noisy
centred sum and noisy count (``parts``) plus their ratio, so the gateway pools
sites by dividing pooled sums by pooled counts, never by averaging site means.

Pure DP uses the Laplace mechanism at the L1 sensitivity, zCDP the Gaussian at
the L2 sensitivity (:mod:`nodes.sensitivity`); the vector released and the
cells built from it are the same for both (:func:`nodes.mechanisms.plan_vector`).
"""

from __future__ import annotations

import numpy as np

from nodes import sensitivity
from nodes.data import RegistryData
from nodes.mechanisms import Sensitivity, VectorPlan
from nodes.sensitivity import mean_centre, mean_half_width
from nodes.statistics.base import (
    Exact,
    Noise,
    Statistic,
    StatisticSpec,
    cell_index,
    cell_labels,
    members_by_cell,
)
from nodes.statistics.counts import count_cells
from varde.estimates import mean_from_parts
from varde.query import Mean, Query, Sum
from varde.release import Cell


def value_members(data: RegistryData, rows: np.ndarray, query: Query) -> list[np.ndarray]:
    """The distinct patients behind each cell of a sum or mean (rows with a value)."""
    stat = query.statistic
    assert isinstance(stat, Sum | Mean)
    idx, n_cells = cell_index(data, rows, query)
    idx = np.where(np.isnan(data.column(stat.field)[rows]), -1, idx)
    return members_by_cell(idx, data.patients[rows], n_cells)


def exact_sums(data: RegistryData, rows: np.ndarray, query: Query) -> Exact:
    """Per-cell count of non-missing values and sum of clamped (for a mean, centred) values."""
    stat = query.statistic
    assert isinstance(stat, Sum | Mean)
    values = data.column(stat.field)[rows]
    idx, n_cells = cell_index(data, rows, query)
    keep = (idx >= 0) & ~np.isnan(values)
    clamped = np.clip(values[keep], stat.lower, stat.upper)
    if isinstance(stat, Mean):
        clamped = clamped - mean_centre(lower=stat.lower, upper=stat.upper)
    counts = np.bincount(idx[keep], minlength=n_cells).astype(np.int64)
    sums = np.bincount(idx[keep], weights=clamped, minlength=n_cells).astype(np.float64)
    return Exact(labels=cell_labels(query), counts=counts, sums=sums)


def _sum_spec(stat: StatisticSpec) -> Sum:
    assert isinstance(stat, Sum)
    return stat


def _mean_spec(stat: StatisticSpec) -> Mean:
    assert isinstance(stat, Mean)
    return stat


def _sum_sensitivity(stat: StatisticSpec, k: int) -> Sensitivity:
    spec = _sum_spec(stat)
    return sensitivity.sums(lower=spec.lower, upper=spec.upper, max_rows=k)


def _sums(ex: Exact) -> np.ndarray:
    assert ex.sums is not None
    return ex.sums


def _sum_noise(plan: VectorPlan, _s: StatisticSpec, _k: int) -> Noise:
    return Noise({"sum": plan.scale}, {"sum": plan.std}, {"sum": plan.half_width})


SUM = Statistic(
    kinds=("sum",),
    exact=exact_sums,
    sensitivity=_sum_sensitivity,
    vectors=lambda ex, _s, _k: [_sums(ex)],
    cells=lambda ex, _s, noisy, plan, _k: count_cells(ex.labels, noisy[0], plan),
    noise=_sum_noise,
    target_half_width=lambda noise, _s, _t: noise.accuracy["sum"],
    exact_value=lambda ex, _s, i: (float(_sums(ex)[i]), {}),
    members=value_members,
)
"""Bounded sum: one vector of clamped sums (L1 = L2 = ``k max(|L|, |U|)``)."""


def _scales(stat: StatisticSpec, k: int) -> tuple[float, float]:
    """``(k h, k)``: what the normalised sum and count are multiplied back by."""
    spec = _mean_spec(stat)
    return float(k) * mean_half_width(lower=spec.lower, upper=spec.upper), float(k)


def _mean_vectors(ex: Exact, stat: StatisticSpec, k: int) -> list[np.ndarray]:
    """One normalised vector ``[S/(k h), N/k]`` (L1 sensitivity 2, L2 sqrt 2)."""
    sum_factor, count_factor = _scales(stat, k)
    return [np.concatenate([_sums(ex) / sum_factor, ex.counts / count_factor])]


def _mean_noise(plan: VectorPlan, stat: StatisticSpec, k: int) -> Noise:
    sum_factor, count_factor = _scales(stat, k)
    return Noise(
        {"sum": plan.scale * sum_factor, "count": plan.scale * count_factor},
        {"sum": plan.std * sum_factor, "count": plan.std * count_factor},
        {"sum": plan.half_width * sum_factor, "count": plan.half_width * count_factor},
    )


def _mean_cells(
    ex: Exact, stat: StatisticSpec, noisy: list[np.ndarray], plan: VectorPlan, k: int
) -> list[Cell]:
    """Cells of a mean from one noisy normalised vector (either mechanism)."""
    spec = _mean_spec(stat)
    sum_factor, count_factor = _scales(stat, k)
    sum_std, count_std = plan.std * sum_factor, plan.std * count_factor
    n = len(ex.labels)
    sums, counts = noisy[0][:n] * sum_factor, noisy[0][n:] * count_factor
    cells = []
    for lab, s, c in zip(ex.labels, sums, counts, strict=True):
        mean, std, lo, hi = mean_from_parts(
            centred_sum=float(s),
            count=float(c),
            sum_std=sum_std,
            count_std=count_std,
            lower=spec.lower,
            upper=spec.upper,
        )
        cells.append(
            Cell(
                labels=lab,
                value=mean,
                ci_low=lo,
                ci_high=hi,
                std=std,
                parts={"centred_sum": float(s), "count": float(c)},
                part_std={"centred_sum": sum_std, "count": count_std},
            )
        )
    return cells


def _mean_exact_value(ex: Exact, stat: StatisticSpec, i: int) -> tuple[float, dict[str, float]]:
    spec = _mean_spec(stat)
    total, n = float(_sums(ex)[i]), float(ex.counts[i])
    value = mean_centre(lower=spec.lower, upper=spec.upper) + total / n
    return value, {"centred_sum": total, "count": n}


MEAN = Statistic(
    kinds=("mean",),
    exact=exact_sums,
    sensitivity=lambda _s, _k: sensitivity.normalised_mean(),
    vectors=_mean_vectors,
    cells=_mean_cells,
    noise=_mean_noise,
    exact_value=_mean_exact_value,
    members=value_members,
)
"""Bounded mean, released as its noisy centred sum and count (``parts``) and their ratio."""
