"""Training jobs with a cohort and a named outcome: validated like a query, wherever parsed."""

from __future__ import annotations

import contextvars
from typing import Any

import pydantic
import pytest

from varde.budget import PureDP
from varde.errors import FieldNotAvailable, PolicyViolation
from varde.outcomes import BinaryOutcome, TimeToEvent
from varde.release import Manifest, ProjectTerms
from varde.study_fields import StudyField, merge_declarations, resolve_with
from varde.terms import check_training
from varde.training import TrainingSpec, design_columns

ARM = {"name": "trial_arm", "kind": "categorical", "categories": ["A", "B"]}
CRP = {"name": "crp", "kind": "bounded", "lower": 17.0, "upper": 44.0}
PFS = {"name": "pfs_months", "kind": "bounded", "lower": 0.0, "upper": 120.0}
PROGRESSED = {"name": "progressed", "kind": "categorical", "categories": ["yes", "no"]}
BASE: dict[str, Any] = {
    "project": "p",
    "features": ["sex", "age_at_diagnosis"],
    "rounds": 2,
    "privacy": {"epsilon": 1.0},
}
TRIAL = {"kind": "binary", "field": "clinical_trial", "positive": "yes"}
LUNG = {"op": "eq", "field": "cancer_type", "value": "lung"}


def spec(**parts: Any) -> TrainingSpec:
    return TrainingSpec.model_validate({**BASE, **parts})


def test_old_jobs_keep_their_outcome() -> None:
    assert spec().outcome == "death_within_2y" and spec().cohort is None
    assert spec(model="cox").outcome == "overall_survival"
    dumped = spec().model_dump(mode="json")
    assert "study_fields" not in dumped


def test_a_logistic_job_with_a_cohort_and_a_binary_outcome() -> None:
    job = spec(cohort=LUNG, outcome=TRIAL)
    assert isinstance(job.outcome, BinaryOutcome)
    assert job.fields_read() == {"sex", "age_at_diagnosis", "clinical_trial", "cancer_type"}
    assert TrainingSpec.model_validate_json(job.model_dump_json()) == job


def test_a_cox_job_with_study_fields_in_features_cohort_and_outcome() -> None:
    job = spec(
        model="cox",
        features=["stage", "trial_arm", "crp"],
        cohort={"op": "between", "field": "crp", "low": 18, "high": 40},
        outcome={
            "kind": "time_to_event",
            "time": "pfs_months",
            "event": "progressed",
            "event_value": "yes",
        },
        study_fields=[ARM, CRP, PFS, PROGRESSED],
    )
    assert isinstance(job.outcome, TimeToEvent)
    assert job.columns()[-3:] == ["trial_arm=A", "trial_arm=B", "crp"]
    assert job.fields_read() == {"stage", "trial_arm", "crp", "pfs_months", "progressed"}
    assert TrainingSpec.model_validate_json(job.model_dump_json()) == job  # self-contained
    assert design_columns(["crp"], "cox", job.study_fields) == ["crp"]


@pytest.mark.parametrize(
    ("parts", "message"),
    [
        ({"outcome": {**TRIAL, "positive": "maybe"}}, "not a category of 'clinical_trial'"),
        ({"outcome": {**TRIAL, "field": "age_at_diagnosis"}}, "must be a categorical field"),
        ({"outcome": {**TRIAL, "field": "shoe"}}, "unknown field 'shoe'"),
        ({"model": "cox", "outcome": TRIAL}, "cox model needs outcome overall_survival"),
        (
            {
                "outcome": {
                    "kind": "time_to_event",
                    "time": "survival_days",
                    "event": "vital_status",
                    "event_value": "dead",
                }
            },
            "logistic model needs",
        ),
        (
            {
                "model": "cox",
                "outcome": {
                    "kind": "time_to_event",
                    "time": "sex",
                    "event": "vital_status",
                    "event_value": "dead",
                },
            },
            "must be a numeric field",
        ),
        ({"features": ["sex", "clinical_trial"], "outcome": TRIAL}, "defines the outcome"),
        ({"cohort": {"op": "eq", "field": "stage", "value": "V"}}, "unknown category 'V'"),
        ({"cohort": {"op": "eq", "field": "trial_arm", "value": "A"}}, "unknown field 'trial_arm'"),
        ({"features": ["sex", "crp"]}, "unknown field 'crp'"),
        ({"features": ["crp"], "study_fields": [CRP, CRP]}, "must not repeat"),
        ({"outcome": {"kind": "binary", "field": "clinical_trial"}}, "positive"),
    ],
)
def test_bad_outcomes_and_cohorts_name_the_problem(parts: dict[str, Any], message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=message):
        spec(**parts)


def _terms(study: list[dict[str, Any]], fields: list[str]) -> Manifest:
    return Manifest(
        site="bergen",
        fields=fields,
        statistics=["count"],
        projects={
            "p": ProjectTerms(
                accounting="epsilon",
                budget=PureDP(10),
                max_per_query=PureDP(5),
                training=["logistic", "cox"],
                study_fields=[StudyField.model_validate(f) for f in study],
            )
        },
    )


def test_a_site_checks_the_jobs_fields_its_cohort_and_outcome_included() -> None:
    schema = ["sex", "age_at_diagnosis", "clinical_trial", "cancer_type"]
    job = spec(cohort=LUNG, outcome=TRIAL, features=["sex", "crp"], study_fields=[CRP])
    check_training(_terms([CRP], schema), job)  # everything exposed: fine
    with pytest.raises(FieldNotAvailable, match="crp"):
        check_training(_terms([], schema), job)
    with pytest.raises(FieldNotAvailable, match="cancer_type"):
        check_training(_terms([CRP], schema[:-1]), job)
    with pytest.raises(PolicyViolation, match="declares study field 'crp' differently"):
        check_training(_terms([{**CRP, "upper": 45.0}], schema), job)


def test_the_gateway_completes_a_job_with_the_sites_declarations() -> None:
    published = {"oslo": [StudyField.model_validate(f) for f in (ARM, CRP)]}

    def run() -> TrainingSpec:
        resolve_with(lambda p, names: merge_declarations(p, names, published))
        return spec(
            features=["sex", "crp"], cohort={"op": "eq", "field": "trial_arm", "value": "B"}
        )

    job = contextvars.copy_context().run(run)
    assert sorted(f.name for f in job.study_fields) == ["crp", "trial_arm"]
