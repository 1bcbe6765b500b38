"""Consistency projections: constraints met, idempotent, nothing fine moved, closer to the truth.

Properties with hypothesis over arbitrary releases and weights; the error
reduction is also measured over simulated noisy releases (seeded numpy noise:
this tests post-processing of released numbers, not DP noise).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from varde.release import Cell
from varde_client.consistency import (
    consistent_cells,
    funnel,
    nonincreasing,
    nonnegative,
    simplex,
    survival,
)

Floats = NDArray[np.float64]

finite = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, allow_infinity=False)
positive = st.floats(min_value=0.05, max_value=50.0)


@st.composite
def release(draw: st.DrawFn, low: float = -1e4, high: float = 1e4) -> tuple[Floats, Floats]:
    """Values and noise sds of the same length (1 to 12 cells)."""
    n = draw(st.integers(1, 12))
    values = draw(st.lists(st.floats(low, high), min_size=n, max_size=n))
    stds = draw(st.lists(positive, min_size=n, max_size=n))
    return np.array(values), np.array(stds)


def wnorm(x: Floats, w: Floats) -> float:
    return float(np.sqrt(np.sum(w * x * x)))


TOL = 1e-7


def _nonincreasing_ok(x: Floats, lower: float, upper: float) -> bool:
    return bool(np.all(np.diff(x) <= TOL) and np.all(x >= lower - TOL) and np.all(x <= upper + TOL))


PROJECTIONS: list[tuple[str, Callable[[Floats, Floats], Floats], float, float]] = [
    ("funnel", funnel, 0.0, math.inf),
    ("survival", survival, 0.0, 1.0),
    ("nonincreasing", nonincreasing, -math.inf, math.inf),
]


@pytest.mark.parametrize(("name", "project", "lower", "upper"), PROJECTIONS)
@settings(max_examples=100, deadline=None)
@given(data=release())
def test_monotone_projection_meets_its_constraints_and_is_idempotent(
    name: str,
    project: Callable[[Floats, Floats], Floats],
    lower: float,
    upper: float,
    data: tuple[Floats, Floats],
) -> None:
    y, std = data
    if name == "survival":
        y = y / 1e4 + 0.5  # probabilities around [0, 1], some outside
    x = project(y, std)
    assert x.shape == y.shape
    assert _nonincreasing_ok(x, lower, upper), (y, x)
    np.testing.assert_allclose(project(x, std), x, rtol=0, atol=1e-9)


@pytest.mark.parametrize(("name", "project", "lower", "upper"), PROJECTIONS)
@settings(max_examples=100, deadline=None)
@given(data=release(0.0, 1.0))
def test_a_consistent_release_is_not_moved(
    name: str,
    project: Callable[[Floats, Floats], Floats],
    lower: float,
    upper: float,
    data: tuple[Floats, Floats],
) -> None:
    y = np.sort(data[0])[::-1]  # non-increasing, within [0, 1]
    assert np.array_equal(project(y, data[1]), y)


@pytest.mark.parametrize(("name", "project", "lower", "upper"), PROJECTIONS)
@settings(max_examples=150, deadline=None)
@given(data=release(), truth=st.lists(st.floats(0.0, 1.0), min_size=12, max_size=12))
def test_monotone_projection_is_never_farther_from_a_consistent_truth(
    name: str,
    project: Callable[[Floats, Floats], Floats],
    lower: float,
    upper: float,
    data: tuple[Floats, Floats],
    truth: list[float],
) -> None:
    """The projection onto a convex set holding the truth never moves away from it (weighted)."""
    y, std = data
    scale = 1.0 if name == "survival" else 1e4
    y = y / 1e4 * scale
    t = np.sort(np.array(truth[: y.size]) * scale)[::-1]
    w = 1.0 / std**2
    x = project(y, std)
    assert wnorm(x - t, w) <= wnorm(y - t, w) * (1 + 1e-12) + 1e-9


def test_weights_move_the_noisier_cell_more() -> None:
    x = funnel([100.0, 110.0], [1.0, 10.0])  # the second step is ten times noisier
    assert x[0] == x[1] and abs(x[0] - 100.0) < abs(x[1] - 110.0)
    assert x[0] == pytest.approx((100.0 + 110.0 / 100) / (1 + 1 / 100))
    # equal weights where a sd is missing or 0 (aggregate mode states 0)
    assert funnel([100.0, 110.0], [0.0, 10.0]).tolist() == [105.0, 105.0]


@settings(max_examples=100, deadline=None)
@given(data=release())
def test_nonnegative_clips_and_keeps_the_rest(data: tuple[Floats, Floats]) -> None:
    y = data[0]
    x = nonnegative(y)
    assert np.all(x >= 0) and np.array_equal(x[y >= 0], y[y >= 0])
    assert np.array_equal(nonnegative(x), x)


@settings(max_examples=150, deadline=None)
@given(data=release(), total=st.floats(0.0, 1e4))
def test_simplex_projection_is_the_weighted_least_squares_solution(
    data: tuple[Floats, Floats], total: float
) -> None:
    """KKT: x >= 0, sum x = T, (y - x) / var is one tau where x > 0 and y / var <= tau at 0."""
    y, std = data
    var = std**2
    x = simplex(y, total, std)
    assert np.all(x >= 0)
    assert x.sum() == pytest.approx(total, rel=1e-9, abs=1e-6)
    ratio = (y - x) / var
    pos = x > 1e-9 * max(1.0, total)
    if pos.any():
        tau = ratio[pos]
        assert np.ptp(tau) <= 1e-6 * max(1.0, float(np.abs(tau).max()))
        # a cell at 0 would have gone below it: y_i / var_i <= tau
        assert np.all(ratio[~pos] <= tau.max() + 1e-6 * max(1.0, float(np.abs(tau).max())))
    np.testing.assert_allclose(simplex(x, total, std), x, rtol=1e-9, atol=1e-6)


@settings(max_examples=100, deadline=None)
@given(data=release(0.0, 100.0))
def test_simplex_leaves_a_consistent_histogram_alone(data: tuple[Floats, Floats]) -> None:
    y, std = data
    assert np.array_equal(simplex(y, float(y.sum()), std), y)


def test_simplex_unweighted_matches_the_textbook_projection() -> None:
    # projection of (0.9, 0.6, -0.5) onto the probability simplex: subtract 0.25 from the top two
    np.testing.assert_allclose(simplex([0.9, 0.6, -0.5], 1.0), [0.65, 0.35, 0.0])
    np.testing.assert_allclose(simplex([0.5, 0.2, -0.1], 1.0), [1.9 / 3, 1 / 3, 0.1 / 3])
    assert simplex([3.0, 4.0], 0.0).tolist() == [0.0, 0.0]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: simplex([1.0, 2.0], -1.0), "non-negative"),
        (lambda: simplex([1.0, 2.0], math.nan), "finite"),
        (lambda: funnel([1.0, math.inf]), "finite"),
        (lambda: funnel([[1.0, 2.0]]), "1-d"),
        (lambda: funnel([1.0, 2.0], [1.0]), "2 standard deviations"),
        (lambda: nonincreasing([1.0], lower=1.0, upper=0.0), "above upper"),
    ],
)
def test_bad_input_is_refused_by_name(call: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


# ---------------------------------------------------------------- error reduction, simulated


def _mse(estimates: Floats, truth: Floats) -> float:
    return float(np.mean(np.sum((estimates - truth) ** 2, axis=1)))


@pytest.mark.parametrize(
    ("name", "truth", "scale", "project"),
    [
        # a trial funnel whose last steps are small: noise often makes a step rise or go below 0
        ("funnel", [120.0, 60.0, 58.0, 20.0, 3.0, 0.0], 4.0, funnel),
        # a survival curve with the released-curve noise of a small site
        ("survival", [0.95, 0.88, 0.80, 0.79, 0.70, 0.55, 0.54, 0.40], 0.05, survival),
        # a histogram of a rare category set: cells near 0
        ("histogram", [0.0, 2.0, 15.0, 1.0, 0.0, 40.0], 3.0, nonnegative),
    ],
)
def test_projection_reduces_squared_error_over_noisy_releases(
    name: str, truth: list[float], scale: float, project: Callable[..., Floats]
) -> None:
    rng = np.random.default_rng(20261203)
    t = np.array(truth)
    raw = t + rng.laplace(0.0, scale, size=(4000, t.size))
    fitted = np.array([project(r) for r in raw])
    before, after = _mse(raw, t), _mse(fitted, t)
    # never worse release by release (the projection's guarantee) ...
    per_release = np.sum((fitted - t) ** 2, axis=1) <= np.sum((raw - t) ** 2, axis=1) + 1e-9
    assert per_release.all()
    # ... and clearly better on average where the constraints bind this often
    assert after < 0.85 * before, (name, before, after)


def test_no_change_on_average_where_constraints_never_bind() -> None:
    rng = np.random.default_rng(7)
    t = np.array([1000.0, 800.0, 600.0])
    raw = t + rng.laplace(0.0, 1.0, size=(500, 3))
    fitted = np.array([funnel(r) for r in raw])
    assert np.array_equal(fitted, raw)


# ---------------------------------------------------------------- cells of one row


def cells(
    labels: list[list[str]], values: list[float | None], std: float | None = 2.0
) -> list[Cell]:
    return [
        Cell(labels=lab, value=v, std=std, status="ok" if v is not None else "suppressed")
        for lab, v in zip(labels, values, strict=True)
    ]


def test_funnel_cells_are_projected_per_group() -> None:
    labels = [[sex, step] for sex in ("female", "male") for step in ("a", "b", "c")]
    row = cells(labels, [50.0, 55.0, 10.0, 30.0, 20.0, -4.0])
    assert consistent_cells("funnel", row) == [52.5, 52.5, 10.0, 30.0, 20.0, 0.0]


def test_suppressed_cells_stay_none_and_the_rest_are_projected() -> None:
    row = cells([["a"], ["b"], ["c"]], [20.0, None, 25.0], std=0.0)
    assert consistent_cells("funnel", row) == [22.5, None, 22.5]
    assert consistent_cells("histogram", cells([["x"], ["y"]], [-3.0, None])) == [0.0, None]


def test_survival_curve_is_projected_and_its_median_left_alone() -> None:
    labels = [["1m"], ["2m"], ["3m"], ["median"]]
    row = cells(labels, [0.9, 0.95, 1.02, 2.5], std=None)
    assert consistent_cells("survival", row) == pytest.approx([2.87 / 3] * 3 + [2.5])


@pytest.mark.parametrize("kind", ["mean", "sum", "quantile"])
def test_other_statistics_are_left_as_released(kind: str) -> None:
    row = cells([["q0.25"], ["q0.5"]], [-5.0, -7.0])
    assert consistent_cells(kind, row) == [-5.0, -7.0]
