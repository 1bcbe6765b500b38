"""Evaluation metrics of a trained model, from DP counts only: public bins, pooling maths.

Why counts: every site releases one table of counts over **public** bins of
its held-out rows (through OpenDP, paid from its ledger, see
:mod:`nodes.training.evaluation`), and every metric here is post-processing of
those noisy tables. A held-out row falls in exactly one cell, so one patient
(at most ``k`` rows) moves a table by at most ``k`` in L1, whatever the model.

* **Logistic**: a histogram of the predicted probability over
  :data:`SCORE_BINS` equal bins of ``[0, 1]``, one per outcome class. The AUC is
  the Mann-Whitney statistic of the two histograms (pairs in the same bin count
  one half), and since 0.5 is a bin edge the confusion matrix at threshold 0.5
  is a sum of bins: one release gives both.
* **Cox**: counts by (censored/event, time bin, risk bin), with time bins on a
  public grid (:data:`TIME_EDGES_DAYS`) and risk bins splitting the linear
  predictor's public range (:func:`risk_bounds`, from the released
  coefficients and the schema's domain). Harrell's concordance is estimated on
  the pairs the bins can order: an event in an earlier time bin against any row
  in a later one (pairs in the same time bin are left out; pairs in the same
  risk bin count one half). The model is stratified by site, so the network
  concordance pools the sites' *within-site* pairs (sums of numerators and
  denominators), which is also what a central stratified model is judged on.

Noisy counts can be negative and are used **as released**, not clamped at 0:
the metrics are ratios of sums of products of counts from *different* cells
(independent noise), so numerator and denominator stay unbiased, whereas
clamping would add positive mass to every empty cell and pull AUC and
concordance towards 0.5. Only the final ratio is clamped to ``[0, 1]``.

>>> neg = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0]
>>> pos = [0] * 19 + [5]
>>> m = logistic_metrics(np.array([neg, pos]))
>>> m["auc"], m["accuracy"], m["sensitivity"], m["specificity"]
(1.0, 0.5, 1.0, 0.0)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from varde.schema import FieldKind
from varde.study_fields import StudyField
from varde.training import feature_spec

SCORE_BINS = 20
"""Equal-width bins of predicted probability (even, so 0.5 is an edge)."""

RISK_BINS = 20
"""Equal-width bins of a Cox model's linear predictor over its public range."""

TIME_EDGES_DAYS: tuple[int, ...] = tuple(round(365.25 * q / 4) for q in range(21)) + tuple(
    round(365.25 * year) for year in range(6, 11)
)
"""Left edges of the public time bins: quarters for five years, then years to ten, then
one open bin."""

Floats = NDArray[np.float64]


def score_bins(probability: Floats) -> NDArray[np.int64]:
    """Bin index of each predicted probability (``[i/B, (i+1)/B)``, the last bin closed)."""
    index = np.floor(np.asarray(probability, dtype=np.float64) * SCORE_BINS).astype(np.int64)
    return np.clip(index, 0, SCORE_BINS - 1)


def time_bins(days: Floats) -> NDArray[np.int64]:
    """Public time bin of each survival time in days."""
    edges = np.asarray(TIME_EDGES_DAYS, dtype=np.float64)
    index = np.searchsorted(edges, np.asarray(days, dtype=np.float64), side="right") - 1
    return np.clip(index, 0, len(edges) - 1).astype(np.int64)


def risk_bounds(
    coefficients: Sequence[float],
    features: list[str],
    study_fields: Sequence[StudyField] = (),
) -> tuple[float, float]:
    """The smallest and largest Cox linear predictor over the schema's whole domain.

    Public: it reads only the released coefficients and the schema (a categorical
    feature contributes one of its categories' coefficients, or 0 when missing;
    an integer feature contributes its coefficient times a value in ``[-1, 1]``).

    >>> risk_bounds([0.0, 0.5, 2.0], ["sex", "age_at_diagnosis"])
    (-2.0, 2.5)
    """
    beta = [float(b) for b in coefficients]
    low = high = 0.0
    at = 0
    for name in features:
        spec = feature_spec(name, study_fields)  # a study field's declared categories too
        if spec.kind is FieldKind.CATEGORICAL:
            block = [0.0, *beta[at : at + len(spec.categories)]]
            at += len(spec.categories)
            low, high = low + min(block), high + max(block)
        else:
            low, high = low - abs(beta[at]), high + abs(beta[at])
            at += 1
    if at != len(beta):
        raise ValueError(f"{len(beta)} coefficients do not fit features {features}")
    return low, high


def risk_bins(linear_predictor: Floats, bounds: tuple[float, float]) -> NDArray[np.int64]:
    """Risk bin of each linear predictor: :data:`RISK_BINS` equal bins of ``bounds``."""
    low, high = bounds
    width = (high - low) / RISK_BINS
    if not (math.isfinite(width) and width > 0):  # equal or subnormal bounds: one bin wide
        width = 1.0
    index = np.floor((np.asarray(linear_predictor, dtype=np.float64) - low) / width)
    return np.clip(index, 0, RISK_BINS - 1).astype(np.int64)


def logistic_table_shape() -> tuple[int, int]:
    """``(outcome class, score bin)``."""
    return (2, SCORE_BINS)


def cox_table_shape() -> tuple[int, int, int]:
    """``(censored/event, time bin, risk bin)``."""
    return (2, len(TIME_EDGES_DAYS), RISK_BINS)


def _table(table: NDArray[np.generic], shape: tuple[int, ...]) -> Floats:
    values = np.asarray(table, dtype=np.float64)
    if values.shape != shape:
        raise ValueError(f"expected a table of shape {shape}, got {values.shape}")
    return values


def _ratio(numerator: float, denominator: float, empty: float, *, clamp: bool = True) -> float:
    """``numerator / denominator`` clamped to ``[0, 1]``; ``empty`` when nothing to divide by.

    ``clamp=False`` keeps the raw ratio: the smooth function whose slope is the metric's
    error (:func:`metric_std_errors`).
    """
    if denominator <= 0 or not math.isfinite(numerator / denominator):
        return empty
    ratio = numerator / denominator
    return min(max(ratio, 0.0), 1.0) if clamp else ratio


def logistic_metrics(table: NDArray[np.generic], *, clamp: bool = True) -> dict[str, float]:
    """AUC and confusion-matrix metrics at 0.5 from a (noisy) ``(2, SCORE_BINS)`` table.

    Row 0 counts held-out survivors (label 0), row 1 deaths within two years.
    A metric whose denominator is empty (or noisy below 0) is reported as 0.5
    (AUC) or 0, never NaN. ``clamp=False`` gives the ratios and counts before they
    are clamped to their range (for the error, :func:`metric_std_errors`).
    """
    neg, pos = _table(table, logistic_table_shape())
    n_neg, n_pos = float(neg.sum()), float(pos.sum())
    below = np.cumsum(neg) - neg  # negatives in strictly lower bins
    concordant = float((pos * (below + 0.5 * neg)).sum())
    auc = _ratio(concordant, n_neg * n_pos, 0.5, clamp=clamp) if n_neg > 0 and n_pos > 0 else 0.5
    half = SCORE_BINS // 2
    tp, fn = float(pos[half:].sum()), float(pos[:half].sum())
    tn, fp = float(neg[:half].sum()), float(neg[half:].sum())
    total = tp + fn + tn + fp
    return {
        "auc": auc,
        "accuracy": _ratio(tp + tn, total, 0.0, clamp=clamp),
        "sensitivity": _ratio(tp, tp + fn, 0.0, clamp=clamp),
        "specificity": _ratio(tn, tn + fp, 0.0, clamp=clamp),
        "n": max(total, 0.0) if clamp else total,
        "positives": max(n_pos, 0.0) if clamp else n_pos,
    }


def concordance_parts(table: NDArray[np.generic]) -> tuple[float, float]:
    """``(concordant + ties / 2, comparable)`` pairs of a (noisy) Cox count table.

    A pair is comparable when one row had its event in an earlier time bin than
    the other's time bin; it is concordant when the earlier event has the higher
    risk bin (ties: one half).
    """
    counts = _table(table, cox_table_shape())
    events = counts[1]
    rows = counts.sum(axis=0)
    # later[a, s]: rows in time bins after a, with risk bin s.
    later = np.cumsum(rows[::-1], axis=0)[::-1]
    later = np.vstack([later[1:], np.zeros((1, later.shape[1]))])
    lower = np.cumsum(later, axis=1) - later  # rows with a strictly lower risk bin
    concordant = float((events * (lower + 0.5 * later)).sum())
    comparable = float((events * later.sum(axis=1, keepdims=True)).sum())
    return concordant, comparable


def cox_metrics(tables: Sequence[NDArray[np.generic]], *, clamp: bool = True) -> dict[str, float]:
    """Concordance pooled over sites' *within-site* pairs, with noisy row and event counts.

    ``clamp=False``: the values before they are clamped to their range (see
    :func:`logistic_metrics`).
    """
    concordant = comparable = n = events = 0.0
    for table in tables:
        c, p = concordance_parts(table)
        counts = _table(table, cox_table_shape())
        concordant, comparable = concordant + c, comparable + p
        n, events = n + float(counts.sum()), events + float(counts[1].sum())
    return {
        "concordance": _ratio(concordant, comparable, 0.5, clamp=clamp),
        "n": max(n, 0.0) if clamp else n,
        "events": max(events, 0.0) if clamp else events,
    }


def pooled_metrics(
    model: str, tables: Sequence[NDArray[np.generic]], *, clamp: bool = True
) -> dict[str, float]:
    """Network metrics from every site's table: summed histograms (logistic), pooled pairs (Cox).

    ``clamp=False``: the values before they are clamped to their range (for the error).
    """
    if model == "cox":
        return cox_metrics(tables, clamp=clamp)
    total = np.zeros(logistic_table_shape())
    for table in tables:
        total = total + _table(table, logistic_table_shape())
    return logistic_metrics(total, clamp=clamp)


def count_noise_variance(mechanism: str, scale: float) -> float:
    """Variance of the noise on one released count, from the site's mechanism and scale.

    OpenDP's discrete Laplace with scale ``t`` (pmf proportional to
    ``exp(-|x|/t)``) has variance ``2a / (1 - a)^2`` with ``a = exp(-1/t)``; the
    continuous Laplace ``2 t^2``; a Gaussian ``t^2``.

    >>> round(count_noise_variance("opendp.discrete_laplace", 10.0), 1)
    199.8
    >>> count_noise_variance("opendp.laplace", 10.0), count_noise_variance("opendp.gaussian", 3.0)
    (200.0, 9.0)
    """
    if not (math.isfinite(scale) and scale >= 0):
        raise ValueError(f"noise scale must be finite and >= 0, got {scale!r}")
    if scale == 0:
        return 0.0
    if "gaussian" in mechanism:
        return scale * scale
    if "discrete_laplace" in mechanism:
        a = math.exp(-1.0 / scale)
        return 2.0 * a / (1.0 - a) ** 2
    return 2.0 * scale * scale


def metric_std_errors(
    model: str, tables: Sequence[NDArray[np.generic]], variances: Sequence[float]
) -> dict[str, float]:
    """Standard error of each pooled metric that comes from the DP noise (delta method).

    Why: a researcher must be able to tell "AUC 0.93" from "AUC 0.93 +- 0.2"
    (small held-out sets at a small evaluation epsilon are that noisy). Each
    metric is a smooth function of the released counts, whose noise is
    independent across cells with the variance the site's mechanism states
    (``variances``, one per table); so ``se^2 = sum over cells of (df/dcell)^2
    var(cell)``, with the derivatives taken by central differences on the
    released tables (pure post-processing: no data, no new noise). Sampling
    error of the held-out patients themselves is not included.

    The derivatives are those of the metrics *before* the clamp to ``[0, 1]``
    (``clamp=False``), so a clamped metric still gets its error. Why: the
    reported value is the clamp of a noisy ratio, and the noise that pushed an
    AUC of 0.95 to a raw 1.02 (reported 1.0) is as large as anywhere else; the
    clamped function is flat there, so its central difference was 0 and the
    metric looked exact exactly when the noise was largest. The unclamped
    (delta-method) error is the sd of the raw ratio, which is what the interval
    ``value +- 1.96 se`` (clamped to ``[0, 1]`` by the reader) needs; a one-sided
    error would be smaller on the clamped side only because nothing is reported
    beyond it, not because the noise is.

    >>> neg = np.array([0] * 5 + [40] * 5 + [10] * 5 + [0] * 5)
    >>> pos = np.array([0] * 10 + [10] * 5 + [40] * 5)
    >>> se = metric_std_errors("logistic", [np.array([neg, pos])], [0.0])
    >>> se["auc"]
    0.0
    >>> round(metric_std_errors("logistic", [np.array([neg, pos])], [2.0])["auc"], 3)
    0.017
    >>> pos[0] = -1  # a noisy -1 below 0.5: raw sensitivity 250 / 249, reported 1.0
    >>> clamped = np.array([neg, pos])
    >>> pooled_metrics("logistic", [clamped])["sensitivity"]
    1.0
    >>> round(metric_std_errors("logistic", [clamped], [2.0])["sensitivity"], 3)
    0.018
    """
    if len(tables) != len(variances):
        raise ValueError("one noise variance per table")
    base = [np.asarray(t, dtype=np.float64) for t in tables]
    keys = list(pooled_metrics(model, base, clamp=False))
    total = dict.fromkeys(keys, 0.0)
    step = 0.5  # counts are integers: half a count is a small change
    for which, (table, variance) in enumerate(zip(base, variances, strict=True)):
        if variance <= 0:
            continue
        for cell in np.ndindex(table.shape):
            up = [t.copy() if i == which else t for i, t in enumerate(base)]
            down = [t.copy() if i == which else t for i, t in enumerate(base)]
            up[which][cell] += step
            down[which][cell] -= step
            high = pooled_metrics(model, up, clamp=False)
            low = pooled_metrics(model, down, clamp=False)
            for key in keys:
                slope = (high[key] - low[key]) / (2 * step)
                total[key] += slope * slope * variance
    return {key: math.sqrt(value) for key, value in total.items()}


def table_shape(model: str) -> tuple[int, ...]:
    """Shape of the count table one site releases for ``model``."""
    return cox_table_shape() if model == "cox" else logistic_table_shape()
