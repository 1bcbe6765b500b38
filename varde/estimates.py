"""Estimates from released numbers only: shared by a node (its own row) and the gateway (pooling).

Kept in the shared package because both sides must compute a mean from its
released parts the same way, and neither may import the other.
"""

from __future__ import annotations

import math

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
