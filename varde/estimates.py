"""Estimates from released numbers only: shared by a node (its own row) and the gateway (pooling).

Kept in the shared package because both sides must compute a mean from its
released parts the same way, and neither may import the other.
"""

from __future__ import annotations

import math

from varde.release import Cell

Z95 = 1.959963984540054
"""Two-sided 95% normal quantile."""


def mean_from_parts(
    *,
    centred_sum: float,
    count: float,
    sum_std: float,
    count_std: float,
    lower: float,
    upper: float,
) -> tuple[float | None, float | None, float | None, float | None]:
    """Mean ``c + S/N``, its delta-method sd and 95% interval, clamped to ``[lower, upper]``.

    ``S`` is a sum of values centred on ``c = (lower + upper) / 2``. Returns all
    None when ``N < 1``: with (almost) no rows the mean is not estimable, and
    saying so beats dividing by noise.

    >>> mean_from_parts(
    ...     centred_sum=20.0, count=10.0, sum_std=0.0, count_std=0.0, lower=0, upper=100
    ... )
    (52.0, 0.0, 52.0, 52.0)
    """
    if count < 1:
        return None, None, None, None
    ratio = centred_sum / count
    centre = (lower + upper) / 2.0
    mean = min(max(centre + ratio, lower), upper)
    std = math.sqrt(sum_std**2 + (ratio * count_std) ** 2) / count
    return mean, std, max(lower, mean - Z95 * std), min(upper, mean + Z95 * std)


def bin_part(i: int) -> str:
    """The ``parts`` key of a quantile's interval ``i`` (one spelling for node and gateway)."""
    return f"bin{i}"


def quantiles_from_counts(
    edges: list[float], counts: list[float], alphas: list[float], count_std: float
) -> list[tuple[float | None, float | None, float | None]]:
    """Quantiles ``(value, ci_low, ci_high)`` from DP counts over public intervals ``edges``.

    Post-processing only (no privacy cost): negative noisy counts are clipped to
    0, and OpenDP's ``make_quantiles_from_counts`` interpolates linearly within
    an interval. Counts from several sites are added *before* calling this, so
    a network quantile comes from the pooled CDF. The interval covers the DP
    noise: the cumulative count up to interval ``i`` carries ``i + 1``
    independent draws of sd ``count_std``, so the alpha-quantile moves by at
    most ``delta = Z95 * sd / N`` in CDF terms, and the interval is the
    quantile at ``alpha -/+ delta``. Sampling variability is not included (the
    registry is the population). All None when fewer than one row is left.

    >>> quantiles_from_counts([0.0, 10.0, 20.0], [5.0, 5.0], [0.5], count_std=0.0)
    [(10.0, 10.0, 10.0)]
    """
    import numpy as np
    import opendp.prelude as dp

    dp.enable_features("contrib")
    clipped = np.clip(np.asarray(counts, dtype=np.float64), 0.0, None)
    total = float(clipped.sum())
    if total < 1:
        return [(None, None, None)] * len(alphas)
    cdf = np.cumsum(clipped) / total
    fedges = [float(e) for e in edges]
    out: list[tuple[float | None, float | None, float | None]] = []
    for alpha in alphas:
        i = min(int(np.searchsorted(cdf, alpha)), len(clipped) - 1)
        delta = Z95 * count_std * math.sqrt(i + 1) / total
        wanted = sorted({max(alpha - delta, 1e-9), alpha, min(alpha + delta, 1 - 1e-9)})
        fn = dp.t.make_quantiles_from_counts(fedges, alphas=wanted, interpolation="linear")
        got = dict(zip(wanted, (float(v) for v in fn([float(c) for c in clipped])), strict=True))
        out.append((got[alpha], got[wanted[0]], got[wanted[-1]]))
    return out


def survival_parts(m: int) -> list[str]:
    """``parts`` keys of a survival release over ``m`` intervals (node and gateway agree)."""
    return [f"d{i}" for i in range(m)] + [f"c{i}" for i in range(m)] + ["beyond"]


Estimate = tuple[float | None, float | None, float | None]


def _crossing(months: list[int], curve: list[float], level: float = 0.5) -> float | None:
    """First time the step-interpolated curve (1 at month 0) falls to ``level``."""
    t0, s0 = 0.0, 1.0
    for t, s in zip(months, curve, strict=True):
        if s <= level:
            return t0 + (t - t0) * (s0 - level) / (s0 - s) if s0 > s else float(t)
        t0, s0 = float(t), s
    return None


def survival_from_counts(
    months: list[int],
    events: list[float],
    censored: list[float],
    beyond: float,
    count_std: float,
) -> tuple[list[Estimate], Estimate]:
    """Life-table Kaplan-Meier from (DP) counts per interval, with bands and the median.

    Post-processing only. Interval ``i`` ends at ``months[i]``; ``events[i]``
    deaths and ``censored[i]`` censorings happened in it, and ``beyond``
    patients were followed past the last month. At risk at the start of
    interval ``i`` is ``n_i = beyond + sum_{l >= i} (d_l + c_l)``; censorings
    count half (actuarial ``n_i' = n_i - c_i / 2``), which is what makes
    grouped data agree with Kaplan-Meier on exact times, and
    ``S_j = prod_{i <= j} (1 - d_i / n_i')``, clipped to ``[0, 1]``. Noisy
    counts are used as released, negative ones included: clipping each at 0
    would bias every number at risk upwards (and S with it).

    The 95% band is ``S exp(+-1.96 se)`` on the log scale, where ``se^2`` is
    Greenwood's sampling variance plus the DP noise propagated by the delta
    method: every released count carries independent noise of variance
    ``count_std^2``, and ``log S_j`` is (to first order) a linear combination
    of all of them, since each ``n_i'`` sums the counts of later intervals;
    the squared coefficients add up to the DP variance, correlations between
    intervals included. The median is where the curve first reaches 0.5 (linear between
    grid points); its interval is where the lower and upper bands do (None
    when a curve never gets there).

    >>> curve, median = survival_from_counts([1, 2], [5.0, 5.0], [0.0, 0.0], 10.0, 0.0)
    >>> [round(v[0], 4) for v in curve], median[0]
    ([0.75, 0.5], 2.0)
    """
    m = len(months)
    # Raw noisy counts, not clipped at 0: clipping each of the many small late-interval
    # counts would inflate every earlier number at risk (a bias that grows with the grid).
    d = [float(x) for x in events]
    c = [float(x) for x in censored]
    at_risk = float(beyond)
    n_prime = [0.0] * m
    for i in range(m - 1, -1, -1):
        at_risk += d[i] + c[i]
        n_prime[i] = at_risk - c[i] / 2.0
    var2 = count_std**2
    # d log S_j = sum_{i<=j} (-g_i dd_i + a_i dn'_i), and dn'_i = db + sum_{l>=i}(dd_l + dc_l)
    # - dc_i / 2: every noisy count's coefficient in log S_j, squared and summed, gives
    # the DP variance exactly (to first order), correlations across intervals included.
    surv, greenwood, prefix_a, inside = 1.0, 0.0, 0.0, 0.0
    curve: list[Estimate] = []
    values, lows, highs = [], [], []
    for i in range(m):
        n, di = n_prime[i], min(d[i], n_prime[i])
        a = g = 0.0
        if n >= 1 and n - di > 0:
            # a negative noisy death count raises S a little: unbiased, clipped on output
            surv *= 1.0 - di / n
            dpos = max(di, 0.0)
            greenwood += dpos / (n * (n - dpos))
            a, g = dpos / (n * (n - dpos)), 1.0 / (n - di)
        elif n >= 1:
            surv = 0.0
        prefix_a += a
        inside += (prefix_a - g) ** 2 + (prefix_a - a / 2.0) ** 2
        dp_var = var2 * (inside + (2 * (m - 1 - i) + 1) * prefix_a**2)
        se = math.sqrt(greenwood + dp_var)
        point = min(1.0, max(0.0, surv))
        lo = min(1.0, point * math.exp(-Z95 * se))
        hi = min(1.0, point * math.exp(Z95 * se))
        curve.append((point, lo, hi))
        values.append(point)
        lows.append(lo)
        highs.append(hi)
    median = (_crossing(months, values), _crossing(months, lows), _crossing(months, highs))
    return curve, median


def survival_cells(
    months: list[int], labels: list[list[str]], counts: list[float], keys: list[str], std: float
) -> list[Cell]:
    """One group's released cells: S at each grid point, then the median carrying the counts."""
    m = len(months)
    curve, (med, med_lo, med_hi) = survival_from_counts(
        months, counts[:m], counts[m : 2 * m], counts[2 * m], std
    )
    cells = [
        Cell(labels=lab, value=v, ci_low=lo, ci_high=hi)
        for lab, (v, lo, hi) in zip(labels[:m], curve, strict=True)
    ]
    cells.append(
        Cell(
            labels=labels[m],
            value=med,
            ci_low=med_lo,
            ci_high=med_hi,
            parts=dict(zip(keys, counts, strict=True)),
            part_std=dict.fromkeys(keys, std),
        )
    )
    return cells
