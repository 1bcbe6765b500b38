"""Bounded sums and means (each with group_by), released through OpenDP Laplace or Gaussian.

Values are clamped to the researcher's declared ``[lower, upper]`` *before*
summing (the bounds are public; the data never chooses them). Missing values
are left out of both the sum and the count. A mean is released as its noisy
centred sum and noisy count (``parts``) plus their ratio, so the gateway pools
sites by dividing pooled sums by pooled counts, never by averaging site means.

Pure DP uses the Laplace mechanism at the L1 sensitivity, zCDP the Gaussian at
the L2 sensitivity (:mod:`nodes.sensitivity`); the vector released and the
cells built from it are the same for both.
"""

from __future__ import annotations

import numpy as np

from nodes.data import RegistryData
from nodes.mechanisms import GaussianPlan, LaplacePlan, plan_gaussian, plan_laplace
from nodes.sensitivity import (
    MEAN_NORMALISED_L2_SENSITIVITY,
    MEAN_NORMALISED_SENSITIVITY,
    mean_centre,
    mean_half_width,
    sum_l2_sensitivity,
    sum_sensitivity,
)
from nodes.statistics.base import Exact, Plan, cell_index, cell_labels
from varde.estimates import mean_from_parts
from varde.query import Mean, Query, Sum
from varde.release import Cell


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


def plan_sum(ex: Exact, stat: Sum, *, epsilon: float, max_rows: int) -> Plan:
    """Laplace release of the clamped-sum vector (L1 sensitivity ``k max(|L|, |U|)``)."""
    sens = sum_sensitivity(lower=stat.lower, upper=stat.upper, max_rows=max_rows)
    return _sum_plan(ex, plan_laplace(sensitivity=sens, epsilon=epsilon, integer=False))


def plan_sum_zcdp(ex: Exact, stat: Sum, *, rho: float, max_rows: int) -> Plan:
    """Gaussian release of the clamped-sum vector (L2 sensitivity ``k max(|L|, |U|)``)."""
    sens = sum_l2_sensitivity(lower=stat.lower, upper=stat.upper, max_rows=max_rows)
    return _sum_plan(ex, plan_gaussian(sensitivity=sens, rho=rho, integer=False))


def _sum_plan(ex: Exact, plan: LaplacePlan | GaussianPlan) -> Plan:
    assert ex.sums is not None
    hw, std = plan.half_width, plan.std

    def release() -> list[Cell]:
        noisy = plan.release(ex.sums)  # type: ignore[arg-type]
        return [
            Cell(labels=lab, value=float(v), ci_low=float(v) - hw, ci_high=float(v) + hw, std=std)
            for lab, v in zip(ex.labels, noisy, strict=True)
        ]

    return Plan(
        plan.epsilon,
        plan.mechanism,
        {"sum": plan.scale},
        release,
        noise_std={"sum": std},
        accuracy={"sum": hw},
    )


def plan_mean(ex: Exact, stat: Mean, *, epsilon: float, max_rows: int) -> Plan:
    """One vector Laplace over the normalised ``[S/(k h), N/k]`` (L1 sensitivity 2)."""
    plan = plan_laplace(sensitivity=MEAN_NORMALISED_SENSITIVITY, epsilon=epsilon, integer=False)
    return _mean_plan(ex, stat, plan, max_rows)


def plan_mean_zcdp(ex: Exact, stat: Mean, *, rho: float, max_rows: int) -> Plan:
    """One vector Gaussian over the normalised ``[S/(k h), N/k]`` (L2 sensitivity sqrt 2)."""
    plan = plan_gaussian(sensitivity=MEAN_NORMALISED_L2_SENSITIVITY, rho=rho, integer=False)
    return _mean_plan(ex, stat, plan, max_rows)


def _mean_plan(ex: Exact, stat: Mean, plan: LaplacePlan | GaussianPlan, max_rows: int) -> Plan:
    """Cells of a mean from one noisy normalised vector (either mechanism)."""
    assert ex.sums is not None
    h = mean_half_width(lower=stat.lower, upper=stat.upper)
    k = float(max_rows)
    n = len(ex.labels)
    sum_scale, count_scale = plan.scale * k * h, plan.scale * k
    sum_std, count_std = plan.std * k * h, plan.std * k

    def release() -> list[Cell]:
        normalised = np.concatenate([ex.sums / (k * h), ex.counts / k])  # type: ignore[operator]
        noisy = plan.release(normalised)
        sums, counts = noisy[:n] * k * h, noisy[n:] * k
        cells = []
        for lab, s, c in zip(ex.labels, sums, counts, strict=True):
            mean, std, lo, hi = mean_from_parts(
                centred_sum=float(s),
                count=float(c),
                sum_std=sum_std,
                count_std=count_std,
                lower=stat.lower,
                upper=stat.upper,
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

    return Plan(
        plan.epsilon,
        plan.mechanism,
        {"sum": sum_scale, "count": count_scale},
        release,
        noise_std={"sum": sum_std, "count": count_std},
        accuracy={"sum": plan.half_width * k * h, "count": plan.half_width * k},
    )
