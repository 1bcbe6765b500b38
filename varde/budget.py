"""Typed privacy budgets: ``PureDP(epsilon)`` and ``ZCDP(rho)``, and OpenDP's maps between them.

Why types and not floats: a project accounts in exactly one measure at a site
(``accounting: epsilon`` or ``zcdp`` in its policy), and an epsilon added to a
rho, or a rho shown in an "epsilon" column, is a silent privacy bug. Every
amount that crosses a module boundary (a plan's cost, a ledger charge, a
release's ``charged``, a manifest's budget, a preview's ``planned``, a training
round's cost) is one of these two frozen, validated values, so mixing measures
is a ``TypeError`` and the measure travels with the number::

    >>> PureDP(0.25) + PureDP(0.5)
    PureDP(epsilon=0.75)
    >>> PureDP(0.25) + ZCDP(0.1)
    Traceback (most recent call last):
    ...
    TypeError: cannot combine epsilon 0.25 with rho 0.1
    >>> str(ZCDP(0.05)), ZCDP(0.05).measure
    ('rho 0.05', 'rho')

On the wire a budget is ``{"epsilon": x}`` or ``{"rho": x}``; a number given as a
string or a boolean, a negative, NaN or infinite amount is refused (no coercion)::

    >>> from pydantic import TypeAdapter, ValidationError
    >>> TypeAdapter(Budget).validate_python({"rho": 0.5})
    ZCDP(rho=0.5)
    >>> try:
    ...     PureDP(True)
    ... except ValidationError as err:
    ...     print(err.errors()[0]["msg"])
    Input should be a valid number

The conversions below are OpenDP's own privacy maps (never a formula written
here): a rho-zCDP release is ``(epsilon_for_rho(rho, delta), delta)``-DP, and an
epsilon-DP release is ``rho_for_pure_epsilon(epsilon)``-zCDP.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, ClassVar, Literal, Self

import opendp.prelude as dp
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

dp.enable_features("contrib")

Measure = Literal["epsilon", "rho"]
"""The ledger measure of a budget: pure-DP epsilon, or zCDP rho."""

MAX_AMOUNT = 1e9
"""The largest budget or charge a ledger holds (nano-units in a 64-bit integer, with room
to add): policies may not set more, so no permitted query can ask for more."""

Amount = Annotated[float, Field(ge=0, allow_inf_nan=False, strict=True)]

_CONFIG = ConfigDict(extra="forbid")


class _Budget:
    """What both measures can do; an operation across measures is a ``TypeError``."""

    measure: ClassVar[Measure]

    @property
    def amount(self) -> float:
        """The number, in :attr:`measure`."""
        raise NotImplementedError  # pragma: no cover - each measure defines it

    def like(self, amount: float) -> Self:
        """The same measure with another amount (validated: finite, >= 0)."""
        return type(self)(amount)  # type: ignore[call-arg]

    def _same(self, other: object) -> _Budget:
        if not isinstance(other, _Budget) or other.measure != self.measure:
            raise TypeError(f"cannot combine {self} with {other}")
        return other

    def __add__(self, other: Self) -> Self:
        return self.like(self.amount + self._same(other).amount)

    def minus(self, other: Self) -> Self:
        """``self - other``, never below zero (what is left of a budget after spending)."""
        return self.like(max(0.0, self.amount - self._same(other).amount))

    def __lt__(self, other: Self) -> bool:
        return self.amount < self._same(other).amount

    def __le__(self, other: Self) -> bool:
        return self.amount <= self._same(other).amount

    def __gt__(self, other: Self) -> bool:
        return self.amount > self._same(other).amount

    def __ge__(self, other: Self) -> bool:
        return self.amount >= self._same(other).amount

    def __bool__(self) -> bool:
        return self.amount > 0

    def __str__(self) -> str:
        return f"{self.measure} {self.amount:.6g}"


@dataclass(frozen=True, config=_CONFIG)
class PureDP(_Budget):
    """Pure epsilon-DP: Laplace releases, composed by adding epsilons."""

    epsilon: Amount
    measure: ClassVar[Measure] = "epsilon"

    @property
    def amount(self) -> float:
        """The epsilon."""
        return self.epsilon


@dataclass(frozen=True, config=_CONFIG)
class ZCDP(_Budget):
    """Zero-concentrated DP: Gaussian releases, composed by adding rhos."""

    rho: Amount
    measure: ClassVar[Measure] = "rho"

    @property
    def amount(self) -> float:
        """The rho."""
        return self.rho


Budget = PureDP | ZCDP
"""A privacy amount in one measure (what a plan costs, a ledger holds, a release charged)."""


def budget(measure: Measure, amount: float) -> Budget:
    """The budget of ``amount`` in ``measure`` (e.g. from a ledger row).

    >>> budget("rho", 0.2), budget("epsilon", 1)
    (ZCDP(rho=0.2), PureDP(epsilon=1.0))
    """
    return ZCDP(amount) if measure == "rho" else PureDP(amount)


def measure_of(accounting: str) -> Measure:
    """The ledger measure of a project's ``accounting`` (``epsilon`` or ``zcdp``)."""
    if accounting not in ("epsilon", "zcdp"):
        raise ValueError(f"unknown accounting {accounting!r}: epsilon or zcdp")
    return "rho" if accounting == "zcdp" else "epsilon"


# --- OpenDP's maps between the measures (public maths, no rows) -------------------------------


def rho_for_epsilon(epsilon: float, delta: float) -> float:
    """The zCDP rho whose Bun-Steinke conversion at ``delta`` is exactly ``epsilon``."""
    if not (epsilon > 0 and 0 < delta < 1):
        raise ValueError("epsilon must be > 0 and delta in (0, 1)")
    log_term = math.log(1.0 / delta)
    return (math.sqrt(log_term + epsilon) - math.sqrt(log_term)) ** 2


def epsilon_for_rho(rho: float, delta: float) -> float:
    """OpenDP's epsilon at ``delta`` for a rho-zCDP release (0 for nothing released).

    Why a unit Gaussian: its privacy map is ``d_in**2 / 2``, so ``d_in =
    sqrt(2 rho)`` makes OpenDP convert exactly ``rho``.
    """
    if rho < 0 or not math.isfinite(rho):
        raise ValueError(f"rho must be finite and >= 0, got {rho!r}")
    if rho == 0:
        return 0.0
    unit = dp.m.make_gaussian(
        dp.atom_domain(T=float, nan=False), dp.absolute_distance(T=float), scale=1.0
    )
    approx: Any = dp.c.make_fix_delta(dp.c.make_zCDP_to_approxDP(unit), delta)
    epsilon, _ = approx.map(math.sqrt(2.0 * rho))
    return float(epsilon)


def calibrate_rho(epsilon: float, delta: float) -> float:
    """The largest rho (to 1e-9 relative) whose OpenDP epsilon at ``delta`` is <= ``epsilon``."""
    low = rho_for_epsilon(epsilon, delta)
    if epsilon_for_rho(low, delta) > epsilon:  # pragma: no cover - OpenDP is never looser
        raise AssertionError("OpenDP's conversion is looser than Bun-Steinke")
    high = 2.0 * low
    while epsilon_for_rho(high, delta) <= epsilon:
        low, high = high, 2.0 * high
    for _ in range(60):
        if high - low <= 1e-9 * low:
            break
        mid = (low + high) / 2.0
        if epsilon_for_rho(mid, delta) <= epsilon:
            low = mid
        else:
            high = mid
    return low


def rho_for_pure_epsilon(epsilon: float) -> float:
    """OpenDP's zCDP rho of an ``epsilon``-DP release (``make_pureDP_to_zCDP``; 0 for none).

    Why a unit Laplace: its privacy map is ``d_in``, so ``d_in = epsilon`` makes
    OpenDP convert exactly ``epsilon`` (it gives ``epsilon**2 / 2``). A site
    converts the measurement it actually builds (:func:`pure_release_rho`).

    >>> rho_for_pure_epsilon(0.2)
    0.020000000000000004
    """
    if epsilon < 0 or not math.isfinite(epsilon):
        raise ValueError(f"epsilon must be finite and >= 0, got {epsilon!r}")
    if epsilon == 0:
        return 0.0
    unit = dp.m.make_laplace(
        dp.atom_domain(T=float, nan=False), dp.absolute_distance(T=float), scale=1.0
    )
    return pure_release_rho(unit, epsilon)


def pure_release_rho(measurement: Any, d_in: float) -> float:
    """The rho OpenDP's ``make_pureDP_to_zCDP`` gives a pure-DP ``measurement`` at ``d_in``."""
    converted: Any = dp.c.make_pureDP_to_zCDP(measurement)
    return float(converted.map(d_in))
