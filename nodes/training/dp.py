"""DP logistic regression at one site: clipped per-row gradients, OpenDP Gaussian noise.

Privacy unit: one **patient** (add/remove), who has at most ``k`` rows
(``policy.privacy_unit.max_tumours_per_patient``, enforced when the registry is
loaded), exactly as for queries (:mod:`nodes.sensitivity`).

Why noisy full-batch gradients (DP-SGD without sampling) and not "clip the
site's update and add noise" (DP-FedAvg): clipping a whole local update bounds
the influence of the *site*, so noise calibrated to it hides the site, not a
patient, and at one site it drowns the signal. Clipping each row's gradient
bounds each patient's influence on a gradient *sum*, which is the quantity the
hospital must protect, and the noise then shrinks relative to the signal as
the registry grows. No subsampling is used because its amplification is
only valid with secret Poisson sampling, which adds a second code path to get
wrong for a small gain on a few local steps.

What one local step releases (inside the site; only the final model of the
round leaves it, which is post-processing):
``v = sum_i [clip_C(g_i), C] + N(0, sigma^2 I)``: the sum of row gradients
clipped to L2 norm ``C`` and the row count scaled by ``C``, one vector through
OpenDP's ``make_gaussian`` on an L2 vector domain. One row moves ``v`` by at
most ``||[clip_C(g), C]||_2 <= sqrt(2) C``, one patient by at most
``k sqrt(2) C`` (triangle inequality): that is the L2 sensitivity passed to
OpenDP's privacy map. The gradient mean is ``v[:-1] / max(v[-1] / C, 1)``.

Why Gaussian noise under zero-concentrated DP (rho): steps and rounds compose
by adding rho, which is tight for the Gaussian mechanism; Laplace noise over
``d`` coordinates would need the L1 sensitivity (up to ``sqrt(d)`` larger) and
compose loosely over the many steps training needs.

Which account pays: training must pay from the *same* account as the
project's queries, or a project could spend its query budget and its training
budget twice over. A project with ``accounting: zcdp`` states its budget in
rho, and a round then simply charges its rho (exact for the Gaussian, no
conversion, whether the researcher stated the job in epsilon or rho). A
project with ``accounting: epsilon`` (the default) states it in epsilon, so
there each round charges the *increment* of the job's (epsilon, delta)
guarantee, ``eps(rho_after) - eps(rho_before)``, where ``eps`` is OpenDP's own
zCDP-to-approximate-DP conversion (``make_zCDP_to_approxDP`` then
``make_fix_delta``) at the job's delta. The increments telescope: after ``r``
rounds the job has paid exactly ``eps(rho_r)``, which is its true guarantee,
rather than the much larger sum of per-round epsilons. The cumulative rho is
read back from the site's own ledger (:mod:`nodes.training.rounds`), never
taken from the server. Delta is fixed per job (at most
:data:`varde.training.MAX_DELTA`); the ledger keeps no delta account yet, so
deltas of several jobs add up by basic composition.

Calibration: a job stated in rho trains at its rho less the evaluation's
(:func:`varde.training.training_rho`). For a job stated in epsilon, the
training rho is the largest for which OpenDP's
conversion stays within the researcher's epsilon less the part kept for the
final DP evaluation (:meth:`varde.training.TrainingPrivacy.training_epsilon`;
:func:`calibrate_rho`: bisection starting from the closed-form Bun-Steinke
inverse, which OpenDP's tighter conversion always beats), so a full job never
charges more than the epsilon asked for and wastes little of it.

>>> from varde.budget import calibrate_rho, epsilon_for_rho, rho_for_epsilon
>>> rho = rho_for_epsilon(1.0, 1e-6)
>>> round(rho, 6)
0.017469
>>> epsilon_for_rho(rho, 1e-6) <= 1.0
True
>>> best = calibrate_rho(1.0, 1e-6)
>>> best > rho and 0.999 < epsilon_for_rho(best, 1e-6) <= 1.0
True
>>> epsilon_for_rho(0.0, 1e-6)
0.0
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import opendp.prelude as dp
from numpy.typing import NDArray

from varde.training import TrainingSpec, training_rho

__all__ = [
    "NoisePlan",
    "clipped_step_vector",
    "noisy_gradient_descent",
    "plan_noise",
    "sigmoid",
]

dp.enable_features("contrib")

Floats = NDArray[np.float64]


@dataclass(frozen=True)
class NoisePlan:
    """How a site noises one round of a job: the OpenDP measurement and its cost.

    Attributes:
        sensitivity: L2 distance between neighbouring step vectors (one patient).
        scale: Standard deviation of the Gaussian noise on every coordinate.
        rho_per_round: OpenDP's rho for the round's ``steps`` composed releases.
        steps: Noisy gradient steps per round.
        clip: Per-row gradient L2 bound ``C``.
        measurement: The OpenDP Gaussian measurement each step applies.
    """

    sensitivity: float
    scale: float
    rho_per_round: float
    steps: int
    clip: float
    measurement: Any


def plan_noise(spec: TrainingSpec, *, max_rows_per_patient: int) -> NoisePlan:
    """Calibrate the Gaussian noise so the whole job costs at most its epsilon (or rho).

    The site computes this itself from the job and its *own* contribution bound;
    nothing about the noise is taken from the server.
    """
    if max_rows_per_patient < 1:
        raise ValueError("a patient contributes at least one row")
    clip = spec.privacy.clip
    sensitivity = max_rows_per_patient * math.sqrt(2.0) * clip
    total_steps = spec.rounds * spec.local_steps
    rho_step = training_rho(spec) / total_steps
    scale = sensitivity / math.sqrt(2.0 * rho_step)
    size = spec.n_coefficients() + 1
    space = (
        dp.vector_domain(dp.atom_domain(T=float, nan=False), size=size),
        dp.l2_distance(T=float),
    )
    measurement: Any = dp.m.make_gaussian(*space, scale=scale)
    rho_round = spec.local_steps * float(measurement.map(sensitivity))
    return NoisePlan(
        sensitivity=sensitivity,
        scale=scale,
        rho_per_round=rho_round,
        steps=spec.local_steps,
        clip=clip,
        measurement=measurement,
    )


def sigmoid(z: Floats) -> Floats:
    """The logistic function, without overflow for large ``|z|``."""
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * z)), dtype=np.float64)


def clipped_step_vector(x: Floats, y: Floats, weights: Floats, clip: float) -> Floats:
    """Exact ``sum_i [clip_C(g_i), C]`` for the logistic loss at ``weights``."""
    residual = sigmoid(x @ weights) - y
    grads = residual[:, None] * x
    norms = np.linalg.norm(grads, axis=1)
    factor = np.minimum(1.0, clip / np.maximum(norms, 1e-12))
    total = (grads * factor[:, None]).sum(axis=0)
    return np.append(total, clip * x.shape[0])


def noisy_gradient_descent(
    x: Floats, y: Floats, weights: Floats, plan: NoisePlan, learning_rate: float
) -> tuple[Floats, float]:
    """Run the round's noisy steps; return the new weights and the last noisy row count.

    Every noise value is drawn by the OpenDP measurement; numpy only computes
    the exact sums and post-processes released vectors.
    """
    w = np.array(weights, dtype=np.float64)
    if w.shape != (x.shape[1],):
        raise ValueError(f"expected {x.shape[1]} weights, got shape {w.shape}")
    count = 1.0
    for _ in range(plan.steps):
        exact = clipped_step_vector(x, y, w, plan.clip)
        released = np.asarray(plan.measurement(exact.tolist()), dtype=np.float64)
        count = max(released[-1] / plan.clip, 1.0)
        w = w - learning_rate * released[:-1] / count
    return w, count
