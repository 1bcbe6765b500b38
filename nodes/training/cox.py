"""DP Cox proportional-hazards model at one site: stratified partial likelihood, OpenDP noise.

**Federated Cox, stratified by site.** The partial likelihood compares each
death with everyone still at risk at that time, and those risk sets span all
sites, so the pooled likelihood does not split into per-site sums. The
standard federated answer is the model *stratified by site*: each site has
its own baseline hazard and its own risk sets, the log partial likelihood is a
sum over sites, and the sum of the sites' gradients is the gradient of the
stratified likelihood. So each site runs the same noisy gradient steps as for
the logistic model (:mod:`nodes.training.dp`) on its own partial likelihood,
and FedAvg averages the resulting coefficients.

**Why the per-row clipping of the logistic model is not enough here.** One
patient enters the gradient twice: through their own event term
``delta_i (x_i - xbar(t_i))``, which clipping bounds, and through the risk-set
averages ``xbar(t_l)`` of *every* earlier death ``l``. Removing them moves
``xbar(t_l)`` by up to ``w_j ||x_j - xbar|| / (S_l - w_j)``, which is large
when the risk set is small (the last deaths) and adds up over all earlier
deaths: the sum is only bounded by ``exp(range of x.beta)`` times a harmonic
number of the site's size. Clipped per-row score contributions still depend on
the other rows the same way. A bound of that kind is valid but so loose that
the noise would swamp the model.

**What we do instead: blocks of patients, clipped per block.** Each site splits
its patients into ``B`` blocks by a public hash of the patient id (all of a
patient's rows land in the same block) and takes the risk sets *within* each
block, i.e. the Cox model stratified by (site, block). Each block's gradient
``g_b`` is clipped to L2 norm ``C_b = clip * sqrt(ROWS_PER_BLOCK)`` and one step
releases ``sum_b clip(g_b) + N(0, sigma^2 I)`` through OpenDP's Gaussian
measurement on an L2 vector domain. Sensitivity: adding or removing one
patient changes only the rows of their own block (the block is fixed by their
id and ``B``, not by other rows); the other blocks' risk sets, and so their
gradients, are unchanged, and the one affected block's clipped gradient moves
between two vectors of norm at most ``C_b``. Hence the **L2 sensitivity is
exactly ``2 C_b``**, whatever ``k`` (rows per patient), the data or the
coefficients (tested with hypothesis in tests/unit/nodes/training/test_cox.py).
Random strata lose the comparisons *between* blocks, which costs statistical
efficiency, not consistency: the stratified partial likelihood is a valid
estimating equation for the same coefficients under proportional hazards, and
at ``ROWS_PER_BLOCK = 64`` the estimates stay close to the site-stratified fit
(figures in the test). Clipping a block's score (a sum of roughly centred
terms near the optimum) barely moves the fixed point because its sign is
symmetric there.

``B`` must not depend on the exact data (a neighbour with one more patient
could switch ``B`` and reshuffle every block), so at the start of each round
the site releases its row count through OpenDP (Gaussian, sensitivity ``k``,
:data:`COUNT_RHO_SHARE` of the round's rho) and takes ``B`` as the power of two
nearest to ``noisy_rows / ROWS_PER_BLOCK``: post-processing of a DP release. The
same noisy count normalises the steps (``beta += lr * step / noisy_rows``) and
is the round's FedAvg weight. Accounting is the logistic model's: the round's
rho (count plus ``local_steps`` Gaussian steps, each by OpenDP's own map) is
``rho_training / rounds``, and the ledger is charged the epsilon increment
before any of this runs (:mod:`nodes.training.rounds`).

>>> x = np.array([[1.0], [0.0], [0.5], [0.2]])
>>> time = np.array([1.0, 2.0, 3.0, 4.0])
>>> event = np.array([1.0, 1.0, 0.0, 1.0])
>>> g = block_gradients(x, time, event, np.zeros(4, dtype=np.int64), np.zeros(1))
>>> round(float(g[0, 0]), 6)  # (1 - 1.7/4) + (0 - 0.7/3) + (0.2 - 0.2)
0.341667
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import opendp.prelude as dp
from numpy.typing import NDArray

from nodes.training.features import SurvivalDesign
from varde.training import TrainingSpec, training_rho

dp.enable_features("contrib")

Floats = NDArray[np.float64]
Ints = NDArray[np.int64]

ROWS_PER_BLOCK = 64
"""Target rows per block of patients (the within-block risk sets)."""

COUNT_RHO_SHARE = 0.05
"""Share of each round's rho spent on the noisy row count that sizes the blocks."""

MAX_BLOCKS = 2**24

_LP_FLOOR = 600.0
"""Linear predictors more than this below their block's largest are raised to it (no
underflow; computed per block so that blocks stay independent whatever the coefficients)."""


@dataclass(frozen=True)
class CoxNoisePlan:
    """How a site noises one round of a Cox job: two OpenDP measurements and their cost.

    Attributes:
        block_clip: L2 bound ``C_b`` of each block's gradient.
        sensitivity: L2 distance between neighbouring step vectors (``2 C_b``).
        scale: Standard deviation of the Gaussian noise on every coordinate of a step.
        count_scale: Standard deviation of the noise on the round's row count.
        rho_per_round: OpenDP's rho of the count plus the round's ``steps`` steps.
        steps: Noisy gradient steps per round.
        measurement: The Gaussian measurement each step applies (vector, L2).
        count_measurement: The Gaussian measurement of the row count.
        count_sensitivity: Rows one patient adds or removes (``k``).
    """

    block_clip: float
    sensitivity: float
    scale: float
    count_scale: float
    rho_per_round: float
    steps: int
    measurement: Any
    count_measurement: Any
    count_sensitivity: float


def plan_cox_noise(spec: TrainingSpec, *, max_rows_per_patient: int) -> CoxNoisePlan:
    """Calibrate both measurements so the job's training costs at most its training epsilon."""
    if max_rows_per_patient < 1:
        raise ValueError("a patient contributes at least one row")
    rho_round = training_rho(spec) / spec.rounds
    rho_count = COUNT_RHO_SHARE * rho_round
    rho_step = (rho_round - rho_count) / spec.local_steps
    block_clip = spec.privacy.clip * math.sqrt(ROWS_PER_BLOCK)
    sensitivity = 2.0 * block_clip
    scale = sensitivity / math.sqrt(2.0 * rho_step)
    space = (
        dp.vector_domain(dp.atom_domain(T=float, nan=False), size=spec.n_coefficients()),
        dp.l2_distance(T=float),
    )
    measurement: Any = dp.m.make_gaussian(*space, scale=scale)
    k = float(max_rows_per_patient)
    count_scale = k / math.sqrt(2.0 * rho_count)
    count_measurement: Any = dp.m.make_gaussian(
        dp.atom_domain(T=float, nan=False), dp.absolute_distance(T=float), scale=count_scale
    )
    rho = spec.local_steps * float(measurement.map(sensitivity)) + float(count_measurement.map(k))
    return CoxNoisePlan(
        block_clip=block_clip,
        sensitivity=sensitivity,
        scale=scale,
        count_scale=count_scale,
        rho_per_round=rho,
        steps=spec.local_steps,
        measurement=measurement,
        count_measurement=count_measurement,
        count_sensitivity=k,
    )


def block_count(noisy_rows: float) -> int:
    """Blocks for a site of about ``noisy_rows`` rows: a power of two near rows / ROWS_PER_BLOCK.

    >>> block_count(-3.0), block_count(64.0), block_count(6400.0), block_count(9000.0)
    (1, 1, 128, 128)
    """
    target = max(noisy_rows / ROWS_PER_BLOCK, 1.0)
    return int(min(2 ** round(math.log2(target)), MAX_BLOCKS))


def block_ids(patient_keys: NDArray[np.uint64], n_blocks: int) -> Ints:
    """Block of each row: its patient key's low 32 bits modulo ``n_blocks``."""
    low = np.asarray(patient_keys, dtype=np.uint64) & np.uint64(0xFFFFFFFF)
    return (low % np.uint64(n_blocks)).astype(np.int64)


@dataclass(frozen=True)
class _Sorted:
    """Rows sorted by (block, time descending), with what every step reuses."""

    x: Floats
    event: Floats
    segment: Ints  # index of each row's block among the non-empty blocks
    position: Ints  # each row's position within its block
    last: Ints  # position of the last row of its (block, time) group: its risk set's end
    starts: Ints  # first row of each non-empty block
    width: int  # rows in the largest block

    @property
    def n_segments(self) -> int:
        """Number of non-empty blocks."""
        return len(self.starts)


def _sort(x: Floats, time: Floats, event: Floats, blocks: Ints) -> _Sorted:
    n = len(time)
    order = np.lexsort((-np.asarray(time, dtype=np.float64), blocks))
    xs, ts, es, bs = x[order], time[order], event[order], blocks[order]
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return _Sorted(xs, es, empty, empty, empty, empty, 0)
    starts = np.concatenate([[0], np.flatnonzero(np.diff(bs) != 0) + 1])
    sizes = np.diff(np.concatenate([starts, [n]]))
    segment = np.repeat(np.arange(len(starts)), sizes)
    position = np.arange(n) - starts[segment]
    group_ends = np.concatenate([np.flatnonzero((np.diff(bs) != 0) | (np.diff(ts) != 0)), [n - 1]])
    group = np.repeat(np.arange(len(group_ends)), np.diff(np.concatenate([[-1], group_ends])))
    return _Sorted(
        x=xs,
        event=es,
        segment=segment.astype(np.int64),
        position=position.astype(np.int64),
        last=(group_ends[group] - starts[segment]).astype(np.int64),
        starts=starts.astype(np.int64),
        width=int(sizes.max()),
    )


def _block_gradients(rows: _Sorted, beta: Floats) -> Floats:
    """Every block's gradient, computed from its own rows only, in floating point too.

    Why the care: the sensitivity argument needs a block's gradient to be a
    function of that block's rows alone. So the linear predictor is a per-row
    sum, weights are normalised by the block's own maximum, and the risk-set
    sums are prefix sums of a (blocks x width) table, one table row per block,
    rather than differences of one running sum over all rows (which would mix
    other blocks' rounding in, and can cancel to zero).
    """
    d = rows.x.shape[1]
    if rows.n_segments == 0:
        return np.zeros((0, d))
    lp = (rows.x * beta[None, :]).sum(axis=1)
    top = np.maximum.reduceat(lp, rows.starts)[rows.segment]
    w = np.exp(np.maximum(lp - top, -_LP_FLOOR))
    table = np.zeros((rows.n_segments, rows.width))
    # Risk set of a row: its block's rows with time >= its time (ties included, Breslow).
    table[rows.segment, rows.position] = w
    s0 = np.cumsum(table, axis=1)[rows.segment, rows.last]
    s1 = np.empty_like(rows.x)
    for j in range(d):
        table[rows.segment, rows.position] = w * rows.x[:, j]
        s1[:, j] = np.cumsum(table, axis=1)[rows.segment, rows.last]
    terms = rows.event[:, None] * (rows.x - s1 / s0[:, None])
    grads = np.zeros((rows.n_segments, d))
    np.add.at(grads, rows.segment, terms)
    return grads


def block_gradients(x: Floats, time: Floats, event: Floats, blocks: Ints, beta: Floats) -> Floats:
    """Gradient of each non-empty block's log partial likelihood (rows: blocks in id order)."""
    return _block_gradients(_sort(x, time, event, blocks), np.asarray(beta, dtype=np.float64))


def clip_rows(grads: Floats, clip: float) -> Floats:
    """Scale every row of ``grads`` to L2 norm at most ``clip``."""
    norms = np.linalg.norm(grads, axis=1)
    factor = np.minimum(1.0, clip / np.maximum(norms, 1e-12))
    return np.asarray(grads * factor[:, None], dtype=np.float64)


def clipped_gradient_sum(
    x: Floats, time: Floats, event: Floats, blocks: Ints, beta: Floats, block_clip: float
) -> Floats:
    """Exact ``sum_b clip(g_b)``: what one noisy step releases, before its noise."""
    grads = block_gradients(x, time, event, blocks, beta)
    return np.asarray(clip_rows(grads, block_clip).sum(axis=0), dtype=np.float64)


def noisy_cox_descent(
    rows: SurvivalDesign, beta: Floats, plan: CoxNoisePlan, learning_rate: float
) -> tuple[Floats, float]:
    """Run the round: release the row count, pick the blocks, take the noisy steps.

    Returns the new coefficients and the noisy row count. Every noise value is
    drawn by an OpenDP measurement; numpy computes exact sums and
    post-processes released values.
    """
    b = np.array(beta, dtype=np.float64)
    if b.shape != (rows.x.shape[1],):
        raise ValueError(f"expected {rows.x.shape[1]} coefficients, got shape {b.shape}")
    noisy_rows = float(plan.count_measurement(float(rows.n_rows)))
    scale_by = max(noisy_rows, 1.0)
    blocks = block_ids(rows.patient_keys, block_count(noisy_rows))
    prepared = _sort(rows.x, rows.time, rows.event, blocks)
    for _ in range(plan.steps):
        exact = clip_rows(_block_gradients(prepared, b), plan.block_clip).sum(axis=0)
        if exact.shape != b.shape:  # no rows at all: the sum of nothing
            exact = np.zeros_like(b)
        released = np.asarray(plan.measurement(exact.tolist()), dtype=np.float64)
        b = b + learning_rate * released / scale_by
    return b, max(noisy_rows, 1.0)


def linear_predictor(x: Floats, beta: Floats) -> Floats:
    """``x . beta``: the log relative hazard of each row."""
    return np.asarray(x @ np.asarray(beta, dtype=np.float64), dtype=np.float64)
