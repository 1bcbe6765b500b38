"""The generator: draws a site's registry, patient first, over whole numpy arrays.

:func:`generate_registry` and the helpers that draw its rows (tumour counts, diagnosis
dates, biomarkers, first treatment) and build the schema frame; the package docstring
(:mod:`nodes.synth`) describes the order of the draws.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import pyarrow as pa
from numpy.typing import NDArray

from nodes.registry_io import PATIENT_ID_DTYPE, conform_registry
from nodes.synth.biomarkers import _MARKERS, DRIVER_MARKERS
from nodes.synth.codes import (
    _MORPH,
    _N,
    _N_MORPH,
    _N_STAGES,
    _N_TYPES,
    _STAGE,
    _TREAT,
    _TYPE,
    Bools,
    Floats,
    Ints,
    _categories,
)
from nodes.synth.dates import (
    _AS_OF_DAY,
    _DAYS_PER_YEAR,
    _END_DAY,
    _LAST_YEAR,
    _MAX_LAG_DAYS,
    _START_DAY,
    _completed_years,
    _ymd,
)
from nodes.synth.profiles import SiteProfile, _site_entropy, profile_for
from nodes.synth.survival import (
    _background_death_days,
    _cancer_death_days,
    _hazard_ratio,
    _stage_given_survival,
)
from nodes.synth.tables import (
    _ADULT_AGE,
    _AGE_MEAN,
    _AGE_SD,
    _CHILD,
    _CHILD_GROUP_OF_TYPE,
    _GRADE,
    _H5,
    _HIST_MORPH,
    _HIST_PROBS,
    _HIST_TOPO,
    _IN_SITU_MORPH,
    _M_CODE_BY_GROUP,
    _MALE,
    _N_PROBS,
    _STAGED,
    _T_PROBS,
    INCIDENCE_GROWTH,
    TUMOURS_PER_PATIENT,
)
from nodes.synth.treatment import (
    _TREATMENT,
    _TREATMENT_EXTRA,
    _WAIT_MEAN,
    _WAIT_SHAPE,
    IMMUNOTHERAPY_FROM,
)
from varde.schema import AGE_BAND_EDGES, COLUMN_ORDER, COUNTRIES, REGIONS


def _draw(u: Floats, group: Ints, probs: Floats) -> Ints:
    """Draw one category per row from the row of ``probs`` picked by ``group``.

    One ``searchsorted`` over the concatenated, offset cumulative tables replaces a loop
    over groups: row ``g`` of the table is shifted to ``[g, g + 1]`` and ``g + u`` lands
    inside it. Zero-probability categories are never drawn.

    Args:
        u: Uniform draws in ``[0, 1)``, one per row.
        group: Row of ``probs`` to use, one per row.
        probs: ``(groups, categories)`` table whose rows sum to 1.

    Returns:
        Category index per row.
    """
    n_groups, width = probs.shape
    cum = np.cumsum(probs, axis=1)
    cum /= cum[:, -1:]
    flat = (cum + np.arange(n_groups)[:, None]).ravel()
    picked = np.searchsorted(flat, group + u, side="right") - group * width
    return np.asarray(np.minimum(picked, width - 1), dtype=np.int64)


def _beta_params(mean: Floats, sd: Floats, low: float, high: float) -> tuple[Floats, Floats]:
    """Beta shape parameters with the given mean and sd on ``[low, high]``."""
    mu = np.clip((mean - low) / (high - low), 0.05, 0.95)
    var = np.minimum((sd / (high - low)) ** 2, 0.9 * mu * (1 - mu))
    k = mu * (1 - mu) / var - 1
    return mu * k, (1 - mu) * k


def _tumour_counts(rng: np.random.Generator, n_tumours: int) -> Ints:
    """Tumours per patient (1-3), summing exactly to ``n_tumours``."""
    probs = np.array(TUMOURS_PER_PATIENT)
    mean = float(probs @ np.arange(1, len(probs) + 1))
    counts = np.empty(0, dtype=np.int64)
    while counts.sum() < n_tumours:  # one extra round at most, in practice
        batch = int(n_tumours / mean * 1.02) + 16
        more = rng.choice(np.arange(1, len(probs) + 1), size=batch, p=probs)
        counts = np.concatenate([counts, more.astype(np.int64)])
    total = np.cumsum(counts)
    n_patients = int(np.searchsorted(total, n_tumours)) + 1
    counts = counts[:n_patients].copy()
    counts[-1] -= int(total[n_patients - 1]) - n_tumours
    return counts


def _diagnosis_days(rng: np.random.Generator, size: int) -> Ints:
    """Diagnosis days with incidence rising linearly over the window.

    Inverse CDF of the density ``1 + g t`` on ``t`` in ``[0, 1)``.
    """
    span = _END_DAY - _START_DAY + 1
    g = INCIDENCE_GROWTH * span / _DAYS_PER_YEAR
    u = rng.random(size)
    t = (np.sqrt(1.0 + 2.0 * g * u * (1.0 + g / 2.0)) - 1.0) / g
    return _START_DAY + np.minimum((t * span).astype(np.int64), span - 1)


def _biomarkers(
    rng: np.random.Generator,
    type_code: Ints,
    morph: Ints,
    stage: Ints,
    year: Ints,
    profile: SiteProfile,
) -> dict[str, Ints]:
    """Category codes of every biomarker field; ``not_tested`` where not eligible/tested.

    One uniform per tumour decides testing for all markers (panels test together), one
    decides which driver (if any) is present, so drivers are mutually exclusive and each
    marker's positive share among the tested equals its table value.
    """
    key = type_code * _N_MORPH + morph
    u_test, u_driver = rng.random(type_code.size), rng.random(type_code.size)
    early = (stage == _STAGE["I"]) | (stage == _STAGE["II"]) | (stage == _STAGE["unknown"])
    codes: dict[str, Ints] = {}
    for name, table in _MARKERS.items():
        since = table.since[key]
        span = np.maximum(_LAST_YEAR - since, 1)
        ramp = np.clip((year - since) / span, 0.0, 1.0)
        rate = table.start[key] + (table.end[key] - table.start[key]) * ramp
        rate = np.where(year >= since, rate, 0.0) * np.where(early, table.early[key], 1.0)
        rate = np.minimum(rate * profile.testing_multiplier, 0.99)
        tested = table.eligible[key] & (stage != _STAGE["0"]) & (u_test < rate)
        if name in DRIVER_MARKERS:
            positive = (u_driver >= table.driver_low[key]) & (u_driver < table.driver_high[key])
            result = np.where(positive, 0, 1).astype(np.int64)
        else:
            result = _draw(rng.random(type_code.size), key, table.outcome)
        codes[name] = np.where(tested, result, table.outcome.shape[1])
    return codes


def _first_treatment(
    rng: np.random.Generator,
    type_code: Ints,
    stage: Ints,
    morph: Ints,
    year: Ints,
    markers: Mapping[str, Ints],
) -> Ints:
    """First treatment: a type x stage table, then biomarker- and era-driven overrides."""
    group = type_code * _N_STAGES + stage
    for i, (code, _) in enumerate(_TREATMENT_EXTRA):
        group = np.where(morph == _MORPH[code], _N_TYPES * _N_STAGES + i, group)
    treat = _draw(rng.random(type_code.size), group, _TREATMENT)
    u = rng.random(type_code.size)
    pos = {name: markers[name] == 0 for name in DRIVER_MARKERS + ("her2", "msi")}
    is_type = {t: type_code == _TYPE[t] for t in ("lung", "melanoma", "breast", "colorectal")}
    stage_iv, stage_iii = stage == _STAGE["IV"], stage == _STAGE["III"]
    driver = pos["egfr"] | pos["alk"] | pos["ros1"]
    targeted, immuno = _TREAT["targeted"], _TREAT["immunotherapy"]
    pdl1 = markers["pdl1_tps"]
    overrides: list[tuple[Bools, float, int]] = [
        # (which tumours, probability, treatment)
        (is_type["lung"] & stage_iv & ~driver & (pdl1 == 2) & (year >= 2017), 0.70, immuno),
        (is_type["lung"] & stage_iv & ~driver & (pdl1 == 1) & (year >= 2019), 0.35, immuno),
        (is_type["lung"] & stage_iv & pos["kras_g12c"] & (year >= 2022), 0.25, targeted),
        (is_type["lung"] & stage_iv & driver, 0.85, targeted),
        (is_type["lung"] & stage_iii & driver, 0.40, targeted),
        (is_type["melanoma"] & (stage_iii | stage_iv) & pos["braf_v600e"], 0.45, targeted),
        (is_type["breast"] & (stage >= _STAGE["II"]) & (stage <= _STAGE["IV"]) & pos["her2"],
         0.50, targeted),
        (is_type["colorectal"] & stage_iv & pos["msi"] & (year >= 2020), 0.50, immuno),
    ]  # fmt: skip
    for mask, probability, treatment in overrides:
        treat = np.where(mask & (u < probability), treatment, treat)
    # Before checkpoint inhibitors, the same patients got chemotherapy.
    early_era = (treat == immuno) & (year < IMMUNOTHERAPY_FROM)
    return np.where(early_era, _TREAT["chemotherapy"], treat)


def _categorical(name: str, codes: NDArray[np.integer]) -> pd.Categorical:
    """A ``pd.Categorical`` over the schema's full category list from integer codes."""
    dtype = pd.CategoricalDtype(list(_categories(name)), ordered=False)
    return pd.Categorical.from_codes(codes.astype(np.int16), dtype=dtype, validate=False)


def _dates(days: Ints) -> NDArray[np.datetime64]:
    return days.astype("datetime64[D]").astype("datetime64[ns]")


def _patient_ids(site: str, numbers: Ints) -> pd.api.extensions.ExtensionArray:
    """``f"{site}-P{n:07d}"`` for every number, built in Arrow without a Python loop."""
    import pyarrow.compute as pc

    digits = pc.utf8_lpad(pc.cast(pa.array(numbers), pa.string()), width=7, padding="0")
    ids = pc.binary_join_element_wise(f"{site}-P", digits, "")
    return pd.array(ids, dtype=PATIENT_ID_DTYPE)


def generate_registry(
    site: str, n_tumours: int, seed: int = 0, profile: SiteProfile | None = None
) -> pd.DataFrame:
    """Generate a synthetic registry for one site: ``n_tumours`` rows in the common schema.

    Why seeded by (seed, SHA-256 of site): the same call always gives the same frame, and
    two sites with the same seed still get different (independent) patients.

    Args:
        site: Site name; picks the :class:`SiteProfile` (see :func:`profile_for`) and
            prefixes every ``patient_id``.
        n_tumours: Number of rows (tumours); patients number about ``n_tumours / 1.1``.
        seed: Non-negative seed.
        profile: Overrides the site's profile (e.g. for experiments).

    Returns:
        A frame with exactly ``schema.COLUMN_ORDER`` columns, schema dtypes (see
        :func:`conform_registry`) and rows sorted by diagnosis date (``tumour_id`` 1..n).

    Raises:
        ValueError: If ``site`` is empty or ``n_tumours`` or ``seed`` is negative.
    """
    if not site:
        raise ValueError("site name must not be empty")
    if n_tumours < 0 or seed < 0:
        raise ValueError("n_tumours and seed must be non-negative")
    profile = profile if profile is not None else profile_for(site)
    if n_tumours == 0:
        return conform_registry(pd.DataFrame({name: [] for name in COLUMN_ORDER}))
    rng = np.random.default_rng([seed, *_site_entropy(site, "data")])

    # 1. Patients, their index tumour, sex, age, dates.
    counts = _tumour_counts(rng, n_tumours)
    n_patients = counts.size
    starts = np.cumsum(counts) - counts
    patient = np.repeat(np.arange(n_patients), counts)
    is_index = np.zeros(n_tumours, dtype=np.bool_)
    is_index[starts] = True
    shares = profile.type_shares()
    first_type = _draw(rng.random(n_patients), np.zeros(n_patients, dtype=np.int64), shares[None])
    male_p = rng.random(n_patients) < _MALE[first_type]
    child = (rng.random(n_patients) < _CHILD[first_type]) & (counts == 1)
    a, b = _beta_params(_AGE_MEAN + profile.age_shift, _AGE_SD, *_ADULT_AGE)
    low, high = _ADULT_AGE
    index_age = np.where(
        child,
        15.0 * rng.beta(1.2, 1.6, size=n_patients),
        low + (high - low) * rng.beta(a[first_type], b[first_type]),
    )
    # Every tumour's date follows the incidence curve; a patient's earliest is the index.
    planned = _diagnosis_days(rng, n_tumours)
    planned = planned[np.argsort(patient * (1 << 16) + (planned - _START_DAY))]
    index_day = planned[starts]
    birth_p = index_day - np.round(index_age * _DAYS_PER_YEAR).astype(np.int64)
    birth = birth_p[patient]
    diag_day = np.minimum(planned, birth + 110 * 365)  # keep age <= 110
    year = _ymd(diag_day)[0]
    alive_for = (np.maximum.reduceat(diag_day, starts)[patient] - diag_day).astype(np.float64)

    # 2. Types of further tumours, given the patient's sex.
    male = male_p[patient]
    type_code = np.empty(n_tumours, dtype=np.int64)
    type_code[starts] = first_type
    by_sex = np.stack([shares * (1.0 - _MALE), shares * _MALE])
    by_sex /= by_sex.sum(axis=1, keepdims=True)
    extra = ~is_index
    type_code[extra] = _draw(rng.random(int(extra.sum())), male[extra].astype(np.int64), by_sex)

    # 3. Histology, stage, TNM, grade.
    hist_group = type_code.copy()
    child_rows = starts[child]
    hist_group[child_rows] = _CHILD_GROUP_OF_TYPE[type_code[child_rows]]
    combo = _draw(rng.random(n_tumours), hist_group, _HIST_PROBS)
    topo, morph = _HIST_TOPO[hist_group, combo], _HIST_MORPH[hist_group, combo]
    hr = _hazard_ratio((diag_day - birth) / _DAYS_PER_YEAR, year, morph, profile)
    stage_mix = profile.stage_mix()
    stage = _draw(rng.random(n_tumours), type_code, stage_mix)
    known = np.flatnonzero(alive_for > 0)  # tumours followed by a later diagnosis
    stage[known] = _stage_given_survival(
        rng.random(known.size),
        stage_mix[type_code[known]],
        _H5[type_code[known]],
        hr[known],
        alive_for[known],
    )
    stage = np.where(_IN_SITU_MORPH[morph], _STAGE["0"], stage)
    tnm_group = np.where(_STAGED[type_code], stage, _N_STAGES)
    n_stage = _draw(rng.random(n_tumours), tnm_group, _N_PROBS)
    t_stage = _draw(rng.random(n_tumours), tnm_group * len(_N) + n_stage, _T_PROBS)
    m_stage = _M_CODE_BY_GROUP[tnm_group]
    grade_group = type_code.copy()
    grade_group[morph == _MORPH["8041/3"]] = _N_TYPES
    grade_group[morph == _MORPH["9440/3"]] = _N_TYPES + 1
    grade = _draw(rng.random(n_tumours), grade_group, _GRADE)

    # 4. Survival. A patient dies once, at the earliest cancer or background death; every
    # death is drawn conditional on being alive at the patient's last diagnosis.
    cancer_death = _cancer_death_days(rng, _H5[type_code, stage], hr, alive_for)
    background = _background_death_days(rng, index_age, male_p, alive_for[starts])
    death_row = diag_day + cancer_death
    death_row[starts] = np.minimum(death_row[starts], index_day + background)
    death_p = np.floor(np.minimum.reduceat(death_row, starts)).astype(np.int64)
    lag = np.minimum(rng.exponential(profile.follow_up_lag_days, n_patients), _MAX_LAG_DAYS)
    censor_p = _AS_OF_DAY - lag.astype(np.int64)
    dead_p = death_p <= censor_p
    last_contact = np.where(dead_p, death_p, censor_p)[patient]
    survival_days = last_contact - diag_day

    # 5. Derived fields, biomarkers, treatment, trials.
    age = _completed_years(birth, diag_day)
    markers = _biomarkers(rng, type_code, morph, stage, year, profile)
    treat = _first_treatment(rng, type_code, stage, morph, year, markers)
    wait_mean = _WAIT_MEAN[treat] * profile.treatment_delay
    wait = np.floor(rng.gamma(_WAIT_SHAPE, 1.0, n_tumours) * wait_mean / _WAIT_SHAPE)
    wait = wait.astype(np.int64)
    untreated = (treat == _TREAT["none"]) | (wait > survival_days)  # died or lost first
    treat = np.where(untreated, _TREAT["none"], treat)
    trial_weight = (
        np.array([0.2, 0.7, 1.0, 1.3, 1.6, 0.8])[stage]
        * np.where(age >= 80, 0.3, 1.0)
        * np.where(untreated, 0.2, 1.0)
    )
    trial_p = np.minimum(profile.trial_rate * trial_weight / trial_weight.mean(), 0.9)
    trial = (rng.random(n_tumours) >= trial_p).astype(np.int64)  # 0 = "yes"
    region_probs = np.array(profile.region_weights or (1.0,) * len(profile.regions))
    region_pick = _draw(
        rng.random(n_patients),
        np.zeros(n_patients, dtype=np.int64),
        (region_probs / region_probs.sum())[None],
    )
    region = np.array([REGIONS.index(r) for r in profile.regions])[region_pick][patient]
    patient_number = rng.permutation(n_patients).astype(np.int64) + 1

    order = np.argsort(diag_day, kind="stable")
    columns: dict[str, object] = {
        "patient_id": _patient_ids(site, patient_number[patient][order]),
        "tumour_id": np.arange(1, n_tumours + 1, dtype=np.int64),
        "sex": _categorical("sex", male.astype(np.int64)[order]),
        "birth_year": _ymd(birth)[0].astype(np.int32)[order],
        "age_at_diagnosis": age.astype(np.int32)[order],
        "age_band": _categorical(
            "age_band", np.searchsorted(AGE_BAND_EDGES, age[order], side="right") - 1
        ),
        "diagnosis_date": _dates(diag_day[order]),
        "diagnosis_year": year.astype(np.int32)[order],
        "topography": _categorical("topography", topo[order]),
        "cancer_type": _categorical("cancer_type", type_code[order]),
        "morphology": _categorical("morphology", morph[order]),
        "behaviour": _categorical("behaviour", _IN_SITU_MORPH[morph].astype(np.int64)[order] ^ 1),
        "stage": _categorical("stage", stage[order]),
        "t_stage": _categorical("t_stage", t_stage[order]),
        "n_stage": _categorical("n_stage", n_stage[order]),
        "m_stage": _categorical("m_stage", m_stage[order]),
        "grade": _categorical("grade", grade[order]),
        **{name: _categorical(name, codes[order]) for name, codes in markers.items()},
        "first_treatment": _categorical("first_treatment", treat[order]),
        "days_to_treatment": pd.arrays.IntegerArray(wait.astype(np.int32)[order], untreated[order]),
        "clinical_trial": _categorical("clinical_trial", trial[order]),
        "vital_status": _categorical("vital_status", dead_p[patient].astype(np.int64)[order]),
        "last_contact_date": _dates(last_contact[order]),
        "survival_days": survival_days.astype(np.int32)[order],
        "country": _categorical("country", np.full(n_tumours, COUNTRIES.index(profile.country))),
        "region": _categorical("region", region[order]),
    }
    return pd.DataFrame({name: columns[name] for name in COLUMN_ORDER})
