"""Cross-field contradictions: each rule fires on the rows that break it and on no others."""

from __future__ import annotations

import pandas as pd
import pytest

from nodes.mapping.contradictions import RULES, check_contradictions
from nodes.mapping.transform import ProblemLog
from nodes.synth import generate_registry
from varde.schema import FIELDS

ALL = frozenset(f.name for f in FIELDS)


@pytest.fixture(scope="module")
def clean() -> pd.DataFrame:
    return generate_registry("bergen", 3000, seed=4)


def _run(frame: pd.DataFrame, available: frozenset[str] = ALL) -> ProblemLog:
    log = ProblemLog(rows_read=len(frame))
    check_contradictions(frame, available, log)
    return log


def test_synthetic_registries_have_no_hard_contradiction(clean: pd.DataFrame) -> None:
    log = _run(clean)
    assert log.hard == [] and log.rejected_rows == 0


def _set(frame: pd.DataFrame, rows: list[int], **values: object) -> pd.DataFrame:
    out = frame.copy()
    for name, value in values.items():
        column = out[name].copy()
        if isinstance(column.dtype, pd.CategoricalDtype):
            column = column.astype(object)
        column.iloc[rows] = value
        out[name] = column
    return out


@pytest.mark.parametrize(
    ("rule", "change"),
    [
        ("age_band_vs_age", {"age_band": "0-14", "age_at_diagnosis": 70}),
        ("birth_year_vs_age", {"birth_year": 1900}),
        ("diagnosis_year_vs_date", {"diagnosis_year": 1950}),
        ("survival_days_vs_dates", {"survival_days": 1}),
        ("last_contact_before_diagnosis", {"last_contact_date": pd.Timestamp("1990-01-01")}),
        ("behaviour_vs_morphology", {"morphology": "8500/2", "behaviour": "3"}),
        ("cancer_type_vs_topography", {"topography": "C61.9", "cancer_type": "breast"}),
        (
            "sex_specific_cancer",
            {"cancer_type": "prostate", "topography": "C61.9", "sex": "female"},
        ),
        ("stage_vs_m", {"stage": "I", "m_stage": "M1"}),
        ("untreated_with_treatment_delay", {"first_treatment": "none", "days_to_treatment": 30}),
        ("date_in_future", {"last_contact_date": pd.Timestamp("2200-01-01")}),
    ],
)
def test_each_rule_reports_exactly_the_rows_that_break_it(
    clean: pd.DataFrame, rule: str, change: dict[str, object]
) -> None:
    rows = [3, 17, 250]
    log = _run(_set(clean, rows, **change))
    found = {key[1]: p for key, p in log.problems.items()}
    assert rule in found, sorted(found)
    assert found[rule].count == len(rows)
    hard = next(r.hard for r in RULES if r.name == rule)
    assert found[rule].hard is hard
    if hard:  # a soft rule alone rejects nothing (moving a date may break a hard one too)
        assert log.rejected_rows >= len(rows)


def test_one_patient_with_two_sexes(clean: pd.DataFrame) -> None:
    patients = clean.patient_id.value_counts()
    twice = patients[patients > 1].index[0]
    rows = list(clean.index[clean.patient_id == twice])
    sex = "male" if clean.loc[rows[0], "sex"] == "female" else "female"
    found = _run(_set(clean, [rows[0]], sex=sex)).problems
    assert found[("patient_id", "patient_inconsistent")].count == len(rows)


def test_rules_over_fields_a_site_lacks_do_not_run(clean: pd.DataFrame) -> None:
    broken = _set(clean, [1], age_band="0-14", age_at_diagnosis=70)
    assert ("age_band", "age_band_vs_age") in _run(broken).problems
    assert ("age_band", "age_band_vs_age") not in _run(broken, ALL - {"age_band"}).problems
