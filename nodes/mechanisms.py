"""Noise, always from OpenDP: one vector-release constructor for pure DP and zCDP.

A release happens in two steps so the ledger can be charged *between* them:

1. :func:`plan_vector` builds the OpenDP measurement for the vector(s) of exact
   aggregates a statistic releases, from their :class:`Sensitivity` and the
   query's typed budget, and asks OpenDP's own privacy map what it costs
   (``measurement.map(d_in)``). Nothing random has happened yet.
2. The caller charges the ledger for ``plan.cost``; only then does
   :meth:`VectorPlan.release` invoke the measurement, which draws the noise with
   OpenDP's CSPRNG. No value released by this project is ever noised by numpy.

The budget's type picks the mechanism: :class:`~varde.budget.PureDP` is the
Laplace at the L1 sensitivity, :class:`~varde.budget.ZCDP` the Gaussian at the
L2 sensitivity. Integer vectors (counts) use OpenDP's discrete mechanisms
(``atom_domain(T=int)``), so a released count is an integer and there is no
floating-point attack surface; real-valued vectors (sums, normalised means) the
continuous ones on ``atom_domain(T=float, nan=False)``. A statistic that
releases several nested vectors (a funnel's steps) asks for ``parts``: each
part is its own measurement and OpenDP's ``make_composition`` adds their losses.

The scale starts at the textbook value (``sensitivity / epsilon``, or
``sensitivity / sqrt(2 rho)``); if floating-point rounding makes OpenDP's map
report a loss a hair above the target, the scale is nudged up one ulp at a
time (bounded) so the charge never exceeds what the researcher asked. A budget
the mechanism cannot represent (a scale, standard deviation or 95% half-width
that is not a positive finite number) is refused with :class:`InvalidQuery`,
before anything is charged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import opendp.prelude as dp

from varde.budget import ZCDP, Budget, PureDP
from varde.errors import InvalidQuery

dp.enable_features("contrib")

ALPHA = 0.05
"""Intervals are 95%: the noise exceeds the half-width with probability ALPHA."""

LATTICE_SCALE = 1e3
"""Above this scale the discrete Gaussian's accuracy is taken from the continuous one."""

MAX_HALF_WIDTH = float(2**53)
"""Real-valued noise wider than this would exceed the precision of the numbers it hides (a
float holds every integer up to 2**53 exactly): a budget that small releases nothing but
noise, and the post-processing of such numbers (squares of their sd) could overflow."""

MAX_INTEGER_HALF_WIDTH = float(2**31 // 32)
"""OpenDP adds integer noise in 32-bit integers (``atom_domain(T=int)``) and saturates at
+-2**31 (measured: scale 1e15 returns -2147483648): an integer release keeps its 95% noise
32 times inside that range, where the chance of reaching it is below 1e-25."""


@dataclass(frozen=True)
class Sensitivity:
    """How far one patient moves what a statistic releases (:mod:`nodes.sensitivity`).

    ``l1`` is used by the Laplace (pure DP), ``l2`` by the Gaussian (zCDP);
    ``integer`` vectors get the discrete mechanisms; ``parts`` nested vectors
    each move by this much and are composed.
    """

    l1: float
    l2: float
    integer: bool
    parts: int = 1


def invoke_vector(measurement: Any, exact: np.ndarray, *, integer: bool) -> np.ndarray:
    """Run an OpenDP vector measurement on ``exact`` (ints or floats, as it was built for)."""
    if integer:
        values = [int(v) for v in np.asarray(exact, dtype=np.int64)]
        return np.asarray(measurement(values), dtype=np.int64)
    fvalues = [float(v) for v in np.asarray(exact, dtype=np.float64)]
    return np.asarray(measurement(fvalues), dtype=np.float64)


@dataclass(frozen=True)
class Mechanism:
    """One built, costed, not-yet-invoked OpenDP measurement over a vector.

    ``cost`` is OpenDP's map at the sensitivity: a :class:`PureDP` for the
    Laplace, a :class:`ZCDP` for the Gaussian.
    """

    measurement: Any
    integer: bool
    sensitivity: float
    scale: float
    cost: Budget

    @property
    def gaussian(self) -> bool:
        """True for the zCDP Gaussian, False for the pure-DP Laplace."""
        return isinstance(self.cost, ZCDP)

    @property
    def mechanism(self) -> str:
        """Human-readable mechanism name for the release."""
        family = "gaussian" if self.gaussian else "laplace"
        return f"opendp.{'discrete_' if self.integer else ''}{family}"

    @property
    def std(self) -> float:
        """Standard deviation of one noise draw (for the discrete Gaussian: an upper bound)."""
        if self.gaussian:
            return self.scale
        if self.integer:
            return discrete_laplace_std(self.scale)
        return math.sqrt(2.0) * self.scale

    @property
    def half_width(self) -> float:
        """95% accuracy from OpenDP's helpers: ``P(|noise| > half_width) <= ALPHA``.

        OpenDP's discrete-Gaussian helper sums the pmf term by term, so its time grows
        with the scale (0.6 s at scale 1e6, minutes at 1e8): a tiny rho would hold a
        worker for ever. Above :data:`LATTICE_SCALE` the lattice no longer matters and
        the continuous Gaussian's half-width, rounded up and widened by one step, is a
        conservative bound (at scale 1e4 OpenDP gives 19601, this gives 19601).
        """
        if self.gaussian and self.integer and self.scale > LATTICE_SCALE:
            return math.ceil(float(dp.gaussian_scale_to_accuracy(self.scale, ALPHA))) + 1.0
        if self.gaussian:
            helper = dp.discrete_gaussian_scale_to_accuracy if self.integer else None
            helper = helper or dp.gaussian_scale_to_accuracy
        else:
            helper = dp.discrete_laplacian_scale_to_accuracy if self.integer else None
            helper = helper or dp.laplacian_scale_to_accuracy
        return float(helper(self.scale, ALPHA))

    def release(self, exact: np.ndarray) -> np.ndarray:
        """Invoke the measurement: noisy values, drawn by OpenDP. Charge before calling."""
        return invoke_vector(self.measurement, exact, integer=self.integer)


def _space(integer: bool, gaussian: bool) -> tuple[Any, Any]:
    atom = dp.atom_domain(T=int) if integer else dp.atom_domain(T=float, nan=False)
    metric = dp.l2_distance if gaussian else dp.l1_distance
    return dp.vector_domain(atom), metric(T=int if integer else float)


def _checked_scale(sensitivity: float, target: float, what: str, integer: bool) -> float:
    """The starting scale, or :class:`InvalidQuery` when the target cannot be represented."""
    if not (math.isfinite(target) and target > 0):
        raise InvalidQuery(f"{what} {target!r} is not a positive finite number")
    if not (math.isfinite(sensitivity) and sensitivity > 0):
        raise ValueError(f"sensitivity must be a positive finite number, got {sensitivity!r}")
    if integer and int(sensitivity) != sensitivity:
        raise ValueError("integer counts need an integer sensitivity")
    scale = sensitivity / target if what == "epsilon" else sensitivity / math.sqrt(2.0 * target)
    if not (math.isfinite(scale) and scale > 0):
        raise InvalidQuery(
            f"{what} {target:g} cannot be released: the noise scale it needs "
            f"({sensitivity:g} / {what}) is not a positive finite number"
        )
    return scale


@lru_cache(maxsize=256)
def _calibrate(sensitivity: float, target: float, integer: bool, gaussian: bool) -> Mechanism:
    what = "rho" if gaussian else "epsilon"
    scale = _checked_scale(sensitivity, target, what, integer)
    d_in: int | float = int(sensitivity) if integer else float(sensitivity)
    build = dp.m.make_gaussian if gaussian else dp.m.make_laplace
    for _ in range(64):
        try:
            meas: Any = build(*_space(integer, gaussian), scale=scale)
            loss = float(meas.map(d_in))
        except dp.OpenDPException as err:
            raise InvalidQuery(f"{what} {target:g} cannot be released by OpenDP: {err}") from err
        if loss <= target:
            cost: Budget = ZCDP(loss) if gaussian else PureDP(loss)
            return _representable(Mechanism(meas, integer, float(sensitivity), scale, cost), what)
        scale = math.nextafter(scale, math.inf)
    raise ArithmeticError(f"could not calibrate a scale for {what}={target}")  # pragma: no cover


def _representable(mech: Mechanism, what: str) -> Mechanism:
    """``mech`` if its noise can be described by finite numbers; :class:`InvalidQuery` if not."""
    try:
        figures = (mech.scale, mech.std, mech.half_width)
    except (ArithmeticError, ValueError, dp.OpenDPException) as err:
        raise InvalidQuery(
            f"{what} {mech.cost.amount:g} cannot be released: its noise has no finite "
            f"95% interval ({err})"
        ) from err
    if not all(math.isfinite(x) for x in figures) or mech.std < 0:
        raise InvalidQuery(
            f"{what} {mech.cost.amount:g} cannot be released: its noise (scale "
            f"{mech.scale:g}) has no finite standard deviation or 95% interval"
        )
    if mech.half_width > (MAX_INTEGER_HALF_WIDTH if mech.integer else MAX_HALF_WIDTH):
        raise InvalidQuery(
            f"{what} {mech.cost.amount:g} is too small to release anything: its noise "
            f"(95% within +-{mech.half_width:.3g}) exceeds what a number can hold exactly"
        )
    return mech


def plan_laplace(*, sensitivity: float, epsilon: float, integer: bool) -> Mechanism:
    """The Laplace measurement whose pure-DP loss at L1 ``sensitivity`` is at most ``epsilon``.

    Plans are immutable and their measurements reusable, so they are cached:
    a repeated query shape costs no OpenDP construction (each invocation still
    draws fresh noise).

    >>> plan = plan_laplace(sensitivity=3, epsilon=0.5, integer=True)
    >>> plan.scale, plan.cost.epsilon <= 0.5, plan.mechanism
    (6.0, True, 'opendp.discrete_laplace')
    """
    return _calibrate(float(sensitivity), float(epsilon), bool(integer), False)


def plan_gaussian(*, sensitivity: float, rho: float, integer: bool = True) -> Mechanism:
    """The Gaussian measurement whose zCDP loss at L2 ``sensitivity`` is at most ``rho``.

    The scale starts at ``sensitivity / sqrt(2 rho)`` (zCDP of the Gaussian:
    ``rho = Delta_2^2 / (2 sigma^2)``).

    >>> plan = plan_gaussian(sensitivity=3, rho=0.5)
    >>> plan.scale, plan.cost.rho <= 0.5, plan.mechanism
    (3.0, True, 'opendp.discrete_gaussian')
    >>> plan = plan_gaussian(sensitivity=2.0, rho=0.5, integer=False)
    >>> round(plan.scale, 9), plan.mechanism
    (2.0, 'opendp.gaussian')
    """
    return _calibrate(float(sensitivity), float(rho), bool(integer), True)


def discrete_laplace_std(scale: float) -> float:
    """Standard deviation of OpenDP's discrete Laplace with ``scale`` t.

    Its pmf is proportional to ``exp(-|x|/t)``; with ``a = exp(-1/t)`` the
    variance is ``2a / (1 - a)^2``, which tends to ``2 t^2`` for large t.
    ``1 - a`` is computed as ``-expm1(-1/t)`` so a huge scale does not divide by 0.

    >>> round(discrete_laplace_std(10.0) / (math.sqrt(2) * 10.0), 3)
    1.0
    """
    a = math.exp(-1.0 / scale)
    return math.sqrt(2.0 * a) / -math.expm1(-1.0 / scale)


@dataclass(frozen=True)
class VectorPlan:
    """``parts`` vectors released by one measurement each, composed by OpenDP to ``cost``.

    All parts have the same mechanism and scale, so ``std`` and ``half_width``
    are those of one released number. With ``parts == 1`` there is no
    composition: ``cost`` is the part's own map.
    """

    part: Mechanism
    parts: int
    cost: Budget

    @property
    def mechanism(self) -> str:
        """Human-readable mechanism name for the release."""
        if self.parts == 1:
            return self.part.mechanism
        return f"opendp.composition({self.parts} x {self.part.mechanism.removeprefix('opendp.')})"

    @property
    def scale(self) -> float:
        """The noise scale of every released number."""
        return self.part.scale

    @property
    def std(self) -> float:
        """Standard deviation of the noise on every released number."""
        return self.part.std

    @property
    def half_width(self) -> float:
        """95% half-width of the noise on every released number."""
        return self.part.half_width

    def release(self, vectors: list[np.ndarray]) -> list[np.ndarray]:
        """Invoke part ``i`` on ``vectors[i]`` (noise drawn by OpenDP). Charge before calling."""
        if len(vectors) != self.parts:
            raise ValueError(f"expected {self.parts} vectors, got {len(vectors)}")
        return [self.part.release(v) for v in vectors]


def plan_vector(sensitivity: Sensitivity, budget: Budget) -> VectorPlan:
    """The one release constructor: Laplace at L1 for :class:`PureDP`, Gaussian at L2 for ZCDP.

    ``budget`` is split evenly over ``sensitivity.parts`` measurements composed
    by OpenDP's ``make_composition``; if rounding makes the composition's map
    exceed ``budget``, the per-part target shrinks one ulp at a time.

    >>> plan = plan_vector(Sensitivity(l1=2, l2=2, integer=True, parts=4), PureDP(1.0))
    >>> plan.scale, plan.cost.epsilon <= 1.0, plan.mechanism
    (8.0, True, 'opendp.composition(4 x discrete_laplace)')
    >>> plan = plan_vector(Sensitivity(l1=2, l2=2, integer=True, parts=4), ZCDP(1.0))
    >>> round(plan.scale, 9), plan.cost.rho <= 1.0
    (2.828427125, True)
    """
    parts = sensitivity.parts
    if parts < 1:
        raise ValueError("a release needs at least one part")
    gaussian = isinstance(budget, ZCDP)
    sens = sensitivity.l2 if gaussian else sensitivity.l1
    target = budget.amount / parts
    if not target > 0:
        raise InvalidQuery(
            f"{budget} cannot be split over {parts} parts: each part's share is not a "
            "positive number"
        )
    d_in: int | float = int(sens) if sensitivity.integer else float(sens)
    for _ in range(64):
        part = _calibrate(float(sens), target, sensitivity.integer, gaussian)
        if parts == 1:
            return VectorPlan(part, 1, part.cost)
        composition: Any = dp.c.make_composition([part.measurement] * parts)
        loss = float(composition.map(d_in))
        if loss <= budget.amount:
            return VectorPlan(part, parts, budget.like(loss))
        target = math.nextafter(target, 0.0)
    raise ArithmeticError(f"could not split {budget} over {parts} parts")  # pragma: no cover
