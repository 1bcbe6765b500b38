"""DP training maths at a site: accounting conversions, calibration, noise scale, clipping."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nodes.training.dp import clipped_step_vector, noisy_gradient_descent, plan_noise
from varde.budget import calibrate_rho, epsilon_for_rho, rho_for_epsilon
from varde.training import TrainingPrivacy, TrainingSpec, training_rho


def spec(**changes: object) -> TrainingSpec:
    base: dict[str, object] = {
        "project": "p",
        "features": ["sex", "age_at_diagnosis", "stage"],
        "rounds": 4,
        "local_steps": 5,
        "privacy": TrainingPrivacy(epsilon=2.0, delta=1e-6, clip=1.0),
    }
    return TrainingSpec.model_validate({**base, **changes})


@pytest.mark.parametrize("epsilon", [0.1, 1.0, 10.0, 50.0])
@pytest.mark.parametrize("delta", [1e-5, 1e-7])
def test_opendp_conversion_never_exceeds_the_bun_steinke_target(
    epsilon: float, delta: float
) -> None:
    rho = rho_for_epsilon(epsilon, delta)
    log_term = math.log(1 / delta)
    assert rho + 2 * math.sqrt(rho * log_term) == pytest.approx(epsilon)
    converted = epsilon_for_rho(rho, delta)
    assert converted <= epsilon
    best = calibrate_rho(epsilon, delta)
    assert best >= rho
    assert epsilon_for_rho(best, delta) == pytest.approx(epsilon, rel=1e-6)
    assert epsilon_for_rho(best, delta) <= epsilon


def test_epsilon_is_increasing_and_concave_in_rho_so_increments_telescope() -> None:
    rhos = np.linspace(0.0, 2.0, 9)
    eps = [epsilon_for_rho(float(r), 1e-6) for r in rhos]
    steps = np.diff(eps)
    assert (steps > 0).all()
    assert (np.diff(steps) < 1e-9).all()
    assert sum(steps) == pytest.approx(eps[-1])


def test_rho_must_be_sane() -> None:
    with pytest.raises(ValueError):
        epsilon_for_rho(-1.0, 1e-6)
    with pytest.raises(ValueError):
        rho_for_epsilon(0.0, 1e-6)


def test_plan_is_calibrated_with_opendp_map() -> None:
    s = spec()
    plan = plan_noise(s, max_rows_per_patient=3)
    assert plan.sensitivity == pytest.approx(3 * math.sqrt(2) * 1.0)
    # A tenth of the job's epsilon is kept for the final DP evaluation by default.
    rho_job = calibrate_rho(1.8, 1e-6)
    assert training_rho(s) == pytest.approx(rho_job)
    # OpenDP's map of one step, times the steps of a round, times the rounds: the job's rho.
    assert plan.rho_per_round * s.rounds == pytest.approx(rho_job, rel=1e-6)
    assert plan.scale == pytest.approx(plan.sensitivity / math.sqrt(2 * rho_job / 20))
    assert epsilon_for_rho(plan.rho_per_round * s.rounds, 1e-6) == pytest.approx(1.8, rel=1e-6)


def test_noise_has_the_calibrated_scale() -> None:
    """Statistical check of OpenDP's draws: empirical sd within 5% of the planned sd."""
    plan = plan_noise(spec(privacy=TrainingPrivacy(epsilon=5.0)), max_rows_per_patient=1)
    size = spec().n_coefficients() + 1
    zeros = [0.0] * size
    draws = np.array([plan.measurement(zeros) for _ in range(400)])
    assert draws.shape == (400, size)
    assert abs(draws.mean()) < 5 * plan.scale / math.sqrt(draws.size)
    assert draws.std() == pytest.approx(plan.scale, rel=0.05)


def test_each_row_gradient_is_clipped_and_count_is_scaled() -> None:
    x = np.array([[1.0, 100.0], [1.0, 0.0], [1.0, -100.0]])
    y = np.array([0.0, 1.0, 1.0])
    vec = clipped_step_vector(x, y, np.zeros(2), clip=0.5)
    assert vec[-1] == pytest.approx(0.5 * 3)
    # Row 1: grad 0.5*(1,100) clipped to norm 0.5; row 2: (-0.5, 0) norm 0.5 kept.
    row1 = 0.5 * np.array([1.0, 100.0])
    row1 *= 0.5 / np.linalg.norm(row1)
    row3 = -0.5 * np.array([1.0, -100.0])
    row3 *= 0.5 / np.linalg.norm(row3)
    assert vec[:-1] == pytest.approx(row1 + np.array([-0.5, 0.0]) + row3)


def test_noisy_descent_learns_a_clear_signal() -> None:
    rng = np.random.default_rng(0)  # data only; noise comes from OpenDP
    n = 20_000
    z = rng.normal(size=n)
    x = np.column_stack([np.ones(n), z])
    y = (rng.random(n) < 1 / (1 + np.exp(-(2 * z - 1)))).astype(float)
    plan = plan_noise(spec(features=["sex"], local_steps=50), max_rows_per_patient=1)
    w, count = noisy_gradient_descent(x, y, np.zeros(2), plan, learning_rate=2.0)
    assert count == pytest.approx(n, rel=0.05)
    assert w[1] > 1.0 and w[0] < -0.3
