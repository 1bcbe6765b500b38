"""Estimates from released numbers only: shared by a node (its own row) and the gateway (pooling).

Kept in the shared package because both sides must compute a mean from its
released parts the same way, and neither may import the other.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

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

Floats = NDArray[np.float64]

BOOTSTRAP_DRAWS = 2000
"""Simulated noise vectors per band: 1000 and their mirror images (antithetic pairs).

With 2000 draws the 2.5% quantile rests on 50 of them; its Monte Carlo error moves a
band's coverage by about 0.004, small against the 0.05 it is meant to leave out."""

BOOTSTRAP_SEED = 20_250_610
"""Fixed seed of the simulated noise: the band is a deterministic function of the released
counts (a node, the gateway and a cached repeat get the same band from the same numbers)."""

_TAILS = (0.025, 0.975)


@lru_cache(maxsize=8)
def _standard_draws(width: int) -> Floats:
    """``BOOTSTRAP_DRAWS`` fixed standard-normal vectors of length ``width`` (read-only).

    Common random numbers for the parametric bootstrap, not privacy noise: they are
    never added to anything released, only used to evaluate how the estimator moves
    under noise of the size a release states.
    """
    half = np.random.default_rng(BOOTSTRAP_SEED).standard_normal((BOOTSTRAP_DRAWS // 2, width))
    draws = np.vstack([half, -half])
    draws.setflags(write=False)
    return draws


def _life_table(counts: Floats, m: int) -> tuple[Floats, Floats, Floats, NDArray[np.bool_]]:
    """``S``, ``n'``, deaths and "usable" per interval, for each row ``[d.., c.., beyond]``.

    One vectorised estimator for the point estimate and every bootstrap replicate, so the
    band is the spread of exactly the number that is reported. Negative noisy counts are
    used as released (see :func:`survival_from_counts`); a death count above the number
    at risk ends the curve (factor 0); an interval with fewer than one at risk is skipped.
    """
    d, c, beyond = counts[:, :m], counts[:, m : 2 * m], counts[:, 2 * m]
    at_risk = beyond[:, None] + np.cumsum((d + c)[:, ::-1], axis=1)[:, ::-1]
    n = at_risk - c / 2.0
    deaths = np.minimum(d, n)
    usable = n >= 1
    alive = usable & (n - deaths > 0)
    factor = np.where(alive, 1.0 - deaths / np.where(alive, n, 1.0), np.where(usable, 0.0, 1.0))
    surv = np.clip(np.cumprod(factor, axis=1), 0.0, 1.0)
    return np.asarray(surv, dtype=np.float64), n, deaths, alive


def _greenwood(n: Floats, deaths: Floats, alive: NDArray[np.bool_]) -> Floats:
    """Greenwood's ``sum_{i <= j} d_i / (n_i' (n_i' - d_i))`` over the intervals that count.

    A negative noisy death count counts as 0 here: a variance has no negative terms.
    """
    dpos = np.maximum(deaths, 0.0)
    terms = np.where(alive, dpos / np.where(alive, n * (n - dpos), 1.0), 0.0)
    return np.asarray(np.cumsum(terms), dtype=np.float64)


def _dp_quantiles(counts: Floats, m: int, count_std: float) -> tuple[Floats, Floats]:
    """2.5% and 97.5% points of ``S_j`` when every released count moves by ``N(0, count_std^2)``."""
    replicates = _life_table(counts[None, :] + count_std * _standard_draws(counts.size), m)[0]
    low, high = np.quantile(replicates, _TAILS, axis=0)
    return low, high


def _combine(surv: float, dp_low: float, dp_high: float, greenwood: float) -> tuple[float, float]:
    """The band from the DP interval and Greenwood's variance, combined on the log scale.

    Half-widths of independent errors add in quadrature, each side on its own (the MOVER
    rule of Zou and Donner), so the skew the bootstrap found is kept. On the log scale the
    sampling part is Greenwood's usual ``exp(+-1.96 se)`` band; at ``S = 0`` there is no
    sampling spread left and the band is the DP interval. Exponents are capped at 0 before
    ``exp``, so no noise, however large, overflows.
    """
    if surv <= 0.0:
        return 0.0, min(1.0, max(dp_high, 0.0))
    log_s = math.log(surv)
    sampling = (Z95 * math.sqrt(greenwood)) ** 2
    low = 0.0
    if dp_low > 0.0:
        low = math.exp(log_s - math.sqrt(math.log(surv / min(dp_low, surv)) ** 2 + sampling))
    up = math.log(max(dp_high, surv) / surv)
    high = math.exp(min(0.0, log_s + math.sqrt(up * up + sampling)))
    return min(low, surv), max(high, surv)


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

    **The DP part of the band is a parametric bootstrap of the released counts**, not
    the delta method. Every released count carries independent noise of known sd
    ``count_std`` (the release states it, per part); the band's DP interval is the
    2.5-97.5% range of ``S_j`` recomputed, by the same estimator, on
    :data:`BOOTSTRAP_DRAWS` copies of the released counts each moved by
    ``N(0, count_std^2)``. Why not the delta method on ``log S_j`` (what this function
    did before): its variance is right to first order, but a small site is exactly
    where first order fails. With ~100 patients and noise sd ~4 per count, the noisy
    deaths of a late interval often exceed its noisy number at risk, so the estimate
    is 0 and ``log S`` has no derivative (the band collapsed to ``[0, 0]`` whatever
    the truth); the factors ``1 - d/n`` are far from linear when ``n`` is a handful;
    and the derivatives were taken at the noisy point (a noisy death count of 0 hides
    the noise of ``n``). Over 400 OpenDP releases of a ~100-patient stage IV lung
    cohort the delta-method band covered the noise-free curve at 65-85% of points; the
    bootstrap covers 96-98%
    (``tests/unit/nodes/statistics/test_survival_coverage.py``). The bootstrap
    needs no algebra for the correlations either: each ``n_i'`` is a sum of released
    counts, and moving the counts themselves moves every ``n_i'`` together, as the
    noise does. The noise is simulated as Gaussian with the stated sd: exact for zCDP,
    and for the Laplace the at-risk numbers are sums of many draws (close to normal;
    the coverage test runs both). The draws are fixed (:data:`BOOTSTRAP_SEED`), so the
    band is a deterministic function of the released numbers; they are never added to
    anything released and cost no privacy.

    Sampling variance is Greenwood's, ``sum d / (n' (n' - d))`` on the log scale,
    combined with the DP interval side by side (:func:`_combine`). The band is clamped
    to ``[0, 1]`` and always holds the point estimate. The median is where the curve
    first reaches 0.5 (linear between grid points); its interval is where the lower and
    upper bands do (None when a curve never gets there).

    >>> curve, median = survival_from_counts([1, 2], [5.0, 5.0], [0.0, 0.0], 10.0, 0.0)
    >>> [round(v[0], 4) for v in curve], median[0]
    ([0.75, 0.5], 2.0)
    """
    m = len(months)
    counts = np.array([*events, *censored, beyond], dtype=np.float64)
    if counts.size != 2 * m + 1:
        raise ValueError(
            f"expected {m} events and {m} censorings, got {len(events)}, {len(censored)}"
        )
    table = _life_table(counts[None, :], m)
    surv, greenwood = table[0][0], _greenwood(table[1][0], table[2][0], table[3][0])
    if count_std > 0:
        dp_low, dp_high = _dp_quantiles(counts, m, float(count_std))
    else:
        dp_low, dp_high = surv, surv
    values: list[float] = [float(v) for v in surv]
    lows: list[float] = []
    highs: list[float] = []
    for j, point in enumerate(values):
        lo, hi = _combine(point, float(dp_low[j]), float(dp_high[j]), float(greenwood[j]))
        lows.append(lo)
        highs.append(hi)
    curve: list[Estimate] = list(zip(values, lows, highs, strict=True))
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
