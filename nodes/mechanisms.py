"""Noise, always from OpenDP: measurement constructors, their privacy maps, their samplers.

A release happens in two steps so the ledger can be charged *between* them:

1. :func:`plan_laplace` builds the OpenDP measurement for a vector of exact
   aggregates with a given L1 sensitivity and target epsilon, and asks OpenDP's
   own privacy map how much it costs (``measurement.map(d_in)``). Nothing random
   has happened yet.
2. The caller charges the ledger for ``plan.epsilon``; only then does
   :meth:`LaplacePlan.release` invoke the measurement, which draws the noise with
   OpenDP's CSPRNG. No value released by this project is ever noised by numpy.

Integer counts use OpenDP's discrete Laplace (``atom_domain(T=int)``), so a
released count is an integer and there is no floating-point attack surface;
real-valued sums use the continuous Laplace on ``atom_domain(T=float, nan=False)``.

The scale starts at ``sensitivity / epsilon``; if floating-point rounding makes
OpenDP's map report a loss a hair above the target, the scale is nudged up one
ulp at a time (bounded) so the charge never exceeds what the researcher asked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import opendp.prelude as dp

dp.enable_features("contrib")

ALPHA = 0.05
"""Intervals are 95%: the noise exceeds the half-width with probability ALPHA."""


def invoke_vector(measurement: Any, exact: np.ndarray, *, integer: bool) -> np.ndarray:
    """Run an OpenDP vector measurement on ``exact`` (ints or floats, as it was built for)."""
    if integer:
        values = [int(v) for v in np.asarray(exact, dtype=np.int64)]
        return np.asarray(measurement(values), dtype=np.int64)
    fvalues = [float(v) for v in np.asarray(exact, dtype=np.float64)]
    return np.asarray(measurement(fvalues), dtype=np.float64)


@dataclass(frozen=True)
class LaplacePlan:
    """A built, costed, not-yet-invoked OpenDP Laplace measurement over a vector."""

    measurement: Any
    integer: bool
    sensitivity: float
    scale: float
    epsilon: float

    @property
    def mechanism(self) -> str:
        """Human-readable mechanism name for the release."""
        return "opendp.discrete_laplace" if self.integer else "opendp.laplace"

    @property
    def std(self) -> float:
        """Standard deviation of one noise draw."""
        if self.integer:
            return discrete_laplace_std(self.scale)
        return math.sqrt(2.0) * self.scale

    @property
    def half_width(self) -> float:
        """95% accuracy: ``P(|noise| > half_width) = ALPHA`` (OpenDP's accuracy helpers)."""
        if self.integer:
            return float(dp.discrete_laplacian_scale_to_accuracy(self.scale, ALPHA))
        return float(dp.laplacian_scale_to_accuracy(self.scale, ALPHA))

    def release(self, exact: np.ndarray) -> np.ndarray:
        """Invoke the measurement: noisy values, drawn by OpenDP. Charge before calling."""
        return invoke_vector(self.measurement, exact, integer=self.integer)


def _build(integer: bool, scale: float) -> Any:
    if integer:
        return dp.m.make_laplace(
            dp.vector_domain(dp.atom_domain(T=int)), dp.l1_distance(T=int), scale=scale
        )
    return dp.m.make_laplace(
        dp.vector_domain(dp.atom_domain(T=float, nan=False)), dp.l1_distance(T=float), scale=scale
    )


def plan_laplace(*, sensitivity: float, epsilon: float, integer: bool) -> LaplacePlan:
    """Build the measurement whose privacy loss at ``d_in = sensitivity`` is at most ``epsilon``.

    Plans are immutable and their measurements reusable, so they are cached per
    ``(sensitivity, epsilon, integer)``: a repeated query shape costs no OpenDP
    construction (each invocation still draws fresh noise).

    >>> plan = plan_laplace(sensitivity=3, epsilon=0.5, integer=True)
    >>> plan.scale, plan.epsilon <= 0.5
    (6.0, True)
    """
    return _plan(float(sensitivity), float(epsilon), bool(integer))


@lru_cache(maxsize=256)
def _plan(sensitivity: float, epsilon: float, integer: bool) -> LaplacePlan:
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise ValueError(f"epsilon must be a positive finite number, got {epsilon!r}")
    if not (math.isfinite(sensitivity) and sensitivity > 0):
        raise ValueError(f"sensitivity must be a positive finite number, got {sensitivity!r}")
    d_in: int | float = int(sensitivity) if integer else float(sensitivity)
    if integer and d_in != sensitivity:
        raise ValueError("integer counts need an integer sensitivity")
    scale = float(sensitivity) / epsilon
    for _ in range(64):
        meas = _build(integer, scale)
        loss = float(meas.map(d_in))
        if loss <= epsilon:
            return LaplacePlan(meas, integer, float(sensitivity), scale, loss)
        scale = math.nextafter(scale, math.inf)
    raise ArithmeticError(
        f"could not calibrate a Laplace scale for epsilon={epsilon}"
    )  # pragma: no cover


def discrete_laplace_std(scale: float) -> float:
    """Standard deviation of OpenDP's discrete Laplace with ``scale`` t.

    Its pmf is proportional to ``exp(-|x|/t)``; with ``a = exp(-1/t)`` the
    variance is ``2a / (1 - a)^2``, which tends to ``2 t^2`` for large t.

    >>> round(discrete_laplace_std(10.0) / (math.sqrt(2) * 10.0), 3)
    1.0
    """
    a = math.exp(-1.0 / scale)
    return math.sqrt(2.0 * a) / (1.0 - a)


@dataclass(frozen=True)
class ComposedPlan:
    """``parts`` measurements composed by OpenDP; ``epsilon`` is the composition's map.

    Each part releases its own vector (one funnel step); all parts have the same
    scale, so ``std`` and ``half_width`` are those of one part. The parts are
    Laplace (pure DP: ``epsilon`` is an epsilon) or Gaussian (zCDP: ``epsilon``
    holds the composed rho); OpenDP's ``make_composition`` adds the losses in
    either measure.
    """

    composition: Any
    part: LaplacePlan | GaussianPlan
    parts: int
    epsilon: float

    @property
    def mechanism(self) -> str:
        """Human-readable mechanism name for the release."""
        return f"opendp.composition({self.parts} x {self.part.mechanism.removeprefix('opendp.')})"

    def release(self, vectors: list[np.ndarray]) -> list[np.ndarray]:
        """Invoke part ``i`` on ``vectors[i]`` (noise drawn by OpenDP). Charge before calling."""
        if len(vectors) != self.parts:
            raise ValueError(f"expected {self.parts} vectors, got {len(vectors)}")
        return [self.part.release(v) for v in vectors]


def plan_composed_laplace(
    *, sensitivity: float, epsilon: float, parts: int, integer: bool
) -> ComposedPlan:
    """Split ``epsilon`` evenly over ``parts`` Laplace releases, composed by OpenDP.

    Each part's input differs by at most ``sensitivity`` between neighbours
    (the caller's argument, :mod:`nodes.sensitivity`); OpenDP's
    ``make_composition`` maps that ``d_in`` to the total loss. If rounding makes
    the sum exceed ``epsilon``, the per-part target shrinks one ulp at a time.

    >>> plan = plan_composed_laplace(sensitivity=2, epsilon=1.0, parts=4, integer=True)
    >>> plan.part.scale, plan.epsilon <= 1.0
    (8.0, True)
    """
    if parts < 1:
        raise ValueError("a composition needs at least one part")
    target = float(epsilon) / parts
    for _ in range(64):
        part = plan_laplace(sensitivity=sensitivity, epsilon=target, integer=integer)
        composition: Any = dp.c.make_composition([part.measurement] * parts)
        d_in: int | float = int(sensitivity) if integer else float(sensitivity)
        loss = float(composition.map(d_in))
        if loss <= epsilon:
            return ComposedPlan(composition, part, parts, loss)
        target = math.nextafter(target, 0.0)
    raise ArithmeticError(
        f"could not split epsilon={epsilon} over {parts} parts"
    )  # pragma: no cover


@dataclass(frozen=True)
class GaussianPlan:
    """A built, costed OpenDP Gaussian measurement over a vector (zCDP).

    ``rho`` is OpenDP's privacy map at the L2 sensitivity (zero-concentrated
    divergence). Integer vectors (counts) use the discrete Gaussian, whose sd
    is at most its ``scale`` (equal to within 1e-6 for scale >= 1); real
    vectors (sums, normalised means) the continuous Gaussian, whose sd is its
    ``scale``.
    """

    measurement: Any
    integer: bool
    sensitivity: float
    scale: float
    rho: float

    @property
    def epsilon(self) -> float:
        """The loss in the plan's own measure (rho), named like :class:`LaplacePlan`'s."""
        return self.rho

    @property
    def mechanism(self) -> str:
        """Human-readable mechanism name for the release."""
        return "opendp.discrete_gaussian" if self.integer else "opendp.gaussian"

    @property
    def std(self) -> float:
        """Standard deviation of one noise draw (the scale; an upper bound when discrete)."""
        return self.scale

    @property
    def half_width(self) -> float:
        """95% accuracy from OpenDP's helpers: ``P(|noise| > half_width) <= ALPHA``."""
        if self.integer:
            return float(dp.discrete_gaussian_scale_to_accuracy(self.scale, ALPHA))
        return float(dp.gaussian_scale_to_accuracy(self.scale, ALPHA))

    def release(self, exact: np.ndarray) -> np.ndarray:
        """Invoke the measurement: noisy values, drawn by OpenDP. Charge before calling."""
        return invoke_vector(self.measurement, exact, integer=self.integer)


def _build_gaussian(integer: bool, scale: float) -> Any:
    if integer:
        return dp.m.make_gaussian(
            dp.vector_domain(dp.atom_domain(T=int)), dp.l2_distance(T=int), scale=scale
        )
    return dp.m.make_gaussian(
        dp.vector_domain(dp.atom_domain(T=float, nan=False)), dp.l2_distance(T=float), scale=scale
    )


def plan_gaussian(*, sensitivity: float, rho: float, integer: bool = True) -> GaussianPlan:
    """The Gaussian measurement whose zCDP loss at L2 ``sensitivity`` is at most ``rho``.

    The scale starts at ``sensitivity / sqrt(2 rho)`` (zCDP of the Gaussian:
    ``rho = Delta_2^2 / (2 sigma^2)``) and is nudged up one ulp at a time
    while OpenDP's map reports more than ``rho``. Cached like
    :func:`plan_laplace`.

    >>> plan = plan_gaussian(sensitivity=3, rho=0.5)
    >>> plan.scale, plan.rho <= 0.5, plan.mechanism
    (3.0, True, 'opendp.discrete_gaussian')
    >>> plan = plan_gaussian(sensitivity=2.0, rho=0.5, integer=False)
    >>> round(plan.scale, 9), plan.rho <= 0.5, plan.mechanism
    (2.0, True, 'opendp.gaussian')
    """
    return _plan_gaussian(float(sensitivity), float(rho), bool(integer))


@lru_cache(maxsize=256)
def _plan_gaussian(sensitivity: float, rho: float, integer: bool) -> GaussianPlan:
    if not (math.isfinite(rho) and rho > 0):
        raise ValueError(f"rho must be a positive finite number, got {rho!r}")
    if not (math.isfinite(sensitivity) and sensitivity > 0):
        raise ValueError(f"sensitivity must be a positive finite number, got {sensitivity!r}")
    d_in: int | float = int(sensitivity) if integer else float(sensitivity)
    if integer and d_in != sensitivity:
        raise ValueError("integer counts need an integer sensitivity")
    scale = sensitivity / math.sqrt(2.0 * rho)
    for _ in range(64):
        meas = _build_gaussian(integer, scale)
        loss = float(meas.map(d_in))
        if loss <= rho:
            return GaussianPlan(meas, integer, sensitivity, scale, loss)
        scale = math.nextafter(scale, math.inf)
    raise ArithmeticError(f"could not calibrate a Gaussian scale for rho={rho}")  # pragma: no cover


def plan_composed_gaussian(
    *, sensitivity: float, rho: float, parts: int, integer: bool = True
) -> ComposedPlan:
    """Split ``rho`` evenly over ``parts`` Gaussian releases, composed by OpenDP (zCDP).

    The zCDP analogue of :func:`plan_composed_laplace`: OpenDP's
    ``make_composition`` of zero-concentrated measurements maps ``d_in`` to
    the sum of the parts' rho, which is what the ledger is charged.

    >>> plan = plan_composed_gaussian(sensitivity=2, rho=1.0, parts=4)
    >>> round(plan.part.scale, 9), plan.epsilon <= 1.0, plan.mechanism
    (2.828427125, True, 'opendp.composition(4 x discrete_gaussian)')
    """
    if parts < 1:
        raise ValueError("a composition needs at least one part")
    target = float(rho) / parts
    d_in: int | float = int(sensitivity) if integer else float(sensitivity)
    for _ in range(64):
        part = plan_gaussian(sensitivity=sensitivity, rho=target, integer=integer)
        composition: Any = dp.c.make_composition([part.measurement] * parts)
        loss = float(composition.map(d_in))
        if loss <= rho:
            return ComposedPlan(composition, part, parts, loss)
        target = math.nextafter(target, 0.0)
    raise ArithmeticError(f"could not split rho={rho} over {parts} parts")  # pragma: no cover
