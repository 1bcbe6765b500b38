"""Survival draws: cancer-death hazard ratios, stage given survival, cancer and background death.

The constants they use (Weibull shape, hazard ratios, Gompertz parameters) are in
:mod:`nodes.synth.tables`.
"""

from __future__ import annotations

import numpy as np

from nodes.synth.codes import Bools, Floats, Ints
from nodes.synth.dates import _DAYS_PER_YEAR
from nodes.synth.profiles import SiteProfile
from nodes.synth.tables import (
    _AGE_HR_PER_YEAR,
    _CALENDAR_HR_PER_YEAR,
    _GOMPERTZ_B,
    _GOMPERTZ_H70,
    _MORPH_HR_ARRAY,
    _WEIBULL_SHAPE,
)


def _hazard_ratio(age: Floats, year: Ints, morph: Ints, profile: SiteProfile) -> Floats:
    """Cancer-death hazard relative to the five-year table (age 65, diagnosed 2010)."""
    log_hr = _AGE_HR_PER_YEAR * (age - 65.0) - _CALENDAR_HR_PER_YEAR * (year - 2010)
    return np.asarray(np.exp(log_hr) * _MORPH_HR_ARRAY[morph] * profile.survival_hr)


def _stage_given_survival(
    u: Floats, prior: Floats, h5: Floats, hr: Floats, alive_for: Floats
) -> Ints:
    """Draw stages from P(stage | type) reweighted by P(surviving ``alive_for`` days | stage).

    Why: a tumour followed by a later diagnosis belongs to someone who survived until then,
    so it is rarely stage IV lung; conditioning the stage (Bayes) rather than only the death
    time avoids immortal stage IV patients.

    Args:
        u: Uniform draws, one per row.
        prior: P(stage) per row, shape ``(rows, stages)``.
        h5: Five-year cumulative hazard per row and stage, same shape.
        hr: Hazard ratio per row.
        alive_for: Days the patient is known to survive, per row.
    """
    exposure = (alive_for / (5.0 * _DAYS_PER_YEAR)) ** _WEIBULL_SHAPE
    posterior = prior * np.exp(-(hr * exposure)[:, None] * h5)
    total = posterior.sum(axis=1, keepdims=True)
    posterior = np.where(total > 0, posterior / np.where(total > 0, total, 1.0), prior)
    passed = u[:, None] >= np.cumsum(posterior, axis=1)[:, :-1]
    return np.asarray(passed.sum(axis=1), dtype=np.int64)


def _cancer_death_days(
    rng: np.random.Generator, h5: Floats, hr: Floats, alive_for: Floats
) -> Floats:
    """Days from diagnosis to cancer death (Weibull; may lie far beyond follow-up).

    The five-year cumulative hazard ``h5`` (from the survival table) fixes the scale and
    ``hr`` moves it. The draw is conditional on surviving ``alive_for`` days (the patient
    is known to be alive at a later diagnosis).
    """
    already = (alive_for / (5.0 * _DAYS_PER_YEAR)) ** _WEIBULL_SHAPE
    exposure = already + rng.standard_exponential(h5.size) / (hr * h5)
    days = 5.0 * _DAYS_PER_YEAR * exposure ** (1.0 / _WEIBULL_SHAPE)
    return np.maximum(np.minimum(days, 60.0 * _DAYS_PER_YEAR), alive_for)


def _background_death_days(
    rng: np.random.Generator, age: Floats, male: Bools, alive_for: Floats
) -> Floats:
    """Days from ``age`` to a non-cancer death (Gompertz), given ``alive_for`` days survived."""
    later_age = age + alive_for / _DAYS_PER_YEAR
    h_now = _GOMPERTZ_H70[male.astype(np.int64)] * np.exp(_GOMPERTZ_B * (later_age - 70.0))
    e = rng.standard_exponential(age.size)
    days = alive_for + np.log1p(_GOMPERTZ_B * e / h_now) / _GOMPERTZ_B * _DAYS_PER_YEAR
    return np.asarray(days, dtype=np.float64)
