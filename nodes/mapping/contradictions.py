"""Cross-field checks a registrar would make, over a frame in the common schema.

Why two weights: a *hard* contradiction makes a statistic wrong whatever the
question (a survival time that disagrees with its own dates, an age band that
is not the age's band), so the node refuses to start on it; a *soft* one is
implausible but can be true or a local coding habit (a cancer type grouped
differently from its topography, a prostate tumour in a female patient), so
the node starts and says so. Every rule reads only fields the site has.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from nodes.mapping.derive import SEX_SPECIFIC, TEXT, age_band_of, behaviour_of, cancer_type_of
from nodes.mapping.transform import ProblemLog

Mask = Callable[[pd.DataFrame], np.ndarray]


def _text(frame: pd.DataFrame, name: str) -> pd.Series:
    """A column as Arrow text; a categorical one by its codes (no per-row conversion)."""
    col = frame[name]
    if isinstance(col.dtype, pd.CategoricalDtype):
        names = pd.array([str(c) for c in col.cat.categories], dtype=TEXT)
        return pd.Series(names.take(col.cat.codes.to_numpy(), allow_fill=True), index=col.index)
    return col.astype(TEXT)


def _num(frame: pd.DataFrame, name: str) -> np.ndarray:
    return np.asarray(
        pd.to_numeric(frame[name]).astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan)
    )


def _days(frame: pd.DataFrame, a: str, b: str) -> np.ndarray:
    delta = (frame[b] - frame[a]).dt.days
    return np.asarray(delta.astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan))


def _differs(a: pd.Series, b: pd.Series) -> np.ndarray:
    both = a.notna() & b.notna()
    return np.asarray((both & (a != b)).fillna(False).to_numpy(dtype=bool), dtype=bool)


@dataclass(frozen=True)
class Rule:
    """One cross-field rule: the fields it reads, whether it is hard, and its test."""

    name: str
    fields: tuple[str, ...]
    hard: bool
    detail: str
    test: Mask


def _band(f: pd.DataFrame) -> np.ndarray:
    return _differs(_text(f, "age_band"), age_band_of(f["age_at_diagnosis"]))


def _birth(f: pd.DataFrame) -> np.ndarray:
    gap = _num(f, "diagnosis_year") - _num(f, "birth_year") - _num(f, "age_at_diagnosis")
    return np.asarray(~np.isnan(gap) & ((gap < 0) | (gap > 1)), dtype=bool)


def _year(f: pd.DataFrame) -> np.ndarray:
    return _differs(
        pd.Series(_num(f, "diagnosis_year")),
        pd.Series(f["diagnosis_date"].dt.year.astype(float).to_numpy()),
    )


def _survival(f: pd.DataFrame) -> np.ndarray:
    gap = np.abs(_num(f, "survival_days") - _days(f, "diagnosis_date", "last_contact_date"))
    return np.asarray(~np.isnan(gap) & (gap > 1), dtype=bool)


def _before(f: pd.DataFrame) -> np.ndarray:
    days = _days(f, "diagnosis_date", "last_contact_date")
    return np.asarray(~np.isnan(days) & (days < 0), dtype=bool)


def _behaviour(f: pd.DataFrame) -> np.ndarray:
    return _differs(_text(f, "behaviour"), behaviour_of(_text(f, "morphology")))


def _type(f: pd.DataFrame) -> np.ndarray:
    return _differs(_text(f, "cancer_type"), cancer_type_of(_text(f, "topography")))


def _sex(f: pd.DataFrame) -> np.ndarray:
    expected = _text(f, "cancer_type").map(SEX_SPECIFIC)
    return _differs(_text(f, "sex"), expected.astype(TEXT))


def _untreated(f: pd.DataFrame) -> np.ndarray:
    none = (_text(f, "first_treatment") == "none").fillna(False).to_numpy(dtype=bool)
    return np.asarray(none & ~np.isnan(_num(f, "days_to_treatment")), dtype=bool)


def _after_contact(f: pd.DataFrame) -> np.ndarray:
    gap = _num(f, "days_to_treatment") - _num(f, "survival_days")
    return np.asarray(~np.isnan(gap) & (gap > 0), dtype=bool)


def _stage_m(f: pd.DataFrame) -> np.ndarray:
    stage, m = _text(f, "stage"), _text(f, "m_stage")
    bad = ((stage == "IV") & (m == "M0")) | ((m == "M1") & stage.isin(["0", "I", "II", "III"]))
    return np.asarray(bad.fillna(False).to_numpy(dtype=bool))


def _future(f: pd.DataFrame) -> np.ndarray:
    today = pd.Timestamp(dt.date.today())
    late = (f["diagnosis_date"] > today) | (f["last_contact_date"] > today)
    return np.asarray(late.fillna(False).to_numpy(dtype=bool))


def _patient(f: pd.DataFrame) -> np.ndarray:
    keys = pd.factorize(f["patient_id"])[0]
    out = np.zeros(len(f), dtype=bool)
    for name in ("sex", "birth_year"):
        codes = pd.factorize(f[name], use_na_sentinel=True)[0]
        pairs = pd.DataFrame({"p": keys, "v": np.where(codes < 0, np.nan, codes)})
        per = pairs.groupby("p")["v"].transform("nunique").to_numpy()
        out |= per > 1
    return out


RULES: tuple[Rule, ...] = (
    Rule(
        "age_band_vs_age",
        ("age_band", "age_at_diagnosis"),
        True,
        "age_band is not the band of age_at_diagnosis",
        _band,
    ),
    Rule(
        "birth_year_vs_age",
        ("birth_year", "age_at_diagnosis", "diagnosis_year"),
        True,
        "diagnosis year - birth year is not age or age + 1",
        _birth,
    ),
    Rule(
        "diagnosis_year_vs_date",
        ("diagnosis_year", "diagnosis_date"),
        True,
        "diagnosis_year is not the year of diagnosis_date",
        _year,
    ),
    Rule(
        "survival_days_vs_dates",
        ("survival_days", "diagnosis_date", "last_contact_date"),
        True,
        "survival_days differs from last contact - diagnosis by more than a day",
        _survival,
    ),
    Rule(
        "last_contact_before_diagnosis",
        ("last_contact_date", "diagnosis_date"),
        True,
        "last contact is before the diagnosis",
        _before,
    ),
    Rule(
        "behaviour_vs_morphology",
        ("behaviour", "morphology"),
        True,
        "behaviour is not the morphology's /digit",
        _behaviour,
    ),
    Rule(
        "patient_inconsistent",
        ("patient_id", "sex", "birth_year"),
        True,
        "one patient's tumours disagree on sex or birth year",
        _patient,
    ),
    Rule(
        "cancer_type_vs_topography",
        ("cancer_type", "topography"),
        False,
        "cancer_type is not the group of the topography (docs/MAPPING.md)",
        _type,
    ),
    Rule(
        "sex_specific_cancer",
        ("sex", "cancer_type"),
        False,
        "a sex-specific cancer in the other sex",
        _sex,
    ),
    Rule(
        "untreated_with_treatment_delay",
        ("first_treatment", "days_to_treatment"),
        False,
        "first_treatment is none but days_to_treatment is set",
        _untreated,
    ),
    Rule(
        "treatment_after_last_contact",
        ("days_to_treatment", "survival_days"),
        False,
        "treatment starts after the last contact",
        _after_contact,
    ),
    Rule(
        "stage_vs_m",
        ("stage", "m_stage"),
        False,
        "stage IV with M0, or M1 with a stage below IV",
        _stage_m,
    ),
    Rule(
        "date_in_future",
        ("diagnosis_date", "last_contact_date"),
        False,
        "a date after today",
        _future,
    ),
)


def check_contradictions(frame: pd.DataFrame, available: frozenset[str], log: ProblemLog) -> None:
    """Run every rule whose fields the site has; each hit goes into ``log``."""
    log.begin_chunk(len(frame), offset=0)  # the whole frame, in source order
    log.rows_read -= len(frame)  # the rows were counted when read
    for rule in RULES:
        if not set(rule.fields) <= available:
            continue
        mask = rule.test(frame)
        if mask.any():  # examples come from the rows found only
            shown = frame[rule.fields[0]]
            log.add(rule.fields[0], None, rule.name, rule.detail, mask, shown, hard=rule.hard)
    log.end_chunk()
