"""Training job specs: validated before anything starts, public model layout."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from varde.training import TrainingPrivacy, TrainingSpec, design_columns, round_costs

GOOD: dict[str, object] = {
    "project": "p",
    "features": ["age_at_diagnosis", "stage"],
    "rounds": 3,
    "privacy": {"epsilon": 1.0},
}


def test_defaults_and_reads() -> None:
    spec = TrainingSpec.model_validate(GOOD)
    assert spec.model == "logistic" and spec.outcome == "death_within_2y"
    assert spec.privacy == TrainingPrivacy(epsilon=1.0, delta=1e-6, clip=1.0)
    assert spec.fields_read() == {"age_at_diagnosis", "stage", "vital_status", "survival_days"}
    assert spec.n_coefficients() == 1 + 1 + 6


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"features": ["nope"]}, "unknown field 'nope'"),
        ({"features": ["patient_id"]}, "cannot be a feature"),
        ({"features": ["diagnosis_date"]}, "cannot be a feature"),
        ({"features": ["survival_days"]}, "defines the outcome"),
        ({"features": ["stage", "stage"]}, "must not repeat"),
        ({"features": []}, "at least 1"),
        ({"rounds": 0}, "greater than or equal to 1"),
        ({"privacy": {"epsilon": 0}}, "greater than 0"),
        ({"privacy": {"epsilon": 1, "delta": 0.01}}, "privacy.delta"),
        ({"privacy": {"epsilon": float("nan")}}, "finite"),
        ({"model": "svm"}, "'logistic' or 'cox'"),
        ({"model": "cox", "outcome": "death_within_2y"}, "needs outcome overall_survival"),
        ({"outcome": "overall_survival"}, "needs outcome death_within_2y"),
        ({"privacy": {"epsilon": 1, "evaluation_epsilon": 1}}, "smaller than epsilon"),
        ({"privacy": {"epsilon": 1, "evaluation_epsilon": -1}}, "greater than or equal to 0"),
        ({"holdout": 0}, "set holdout > 0"),
        ({"holdout": 0.9}, "less than or equal to 0.5"),
        ({"extra": 1}, "Extra inputs"),
    ],
)
def test_bad_specs_name_the_problem(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        TrainingSpec.model_validate({**GOOD, **change})


def test_design_is_public_and_stable() -> None:
    cols = design_columns(["stage", "sex"])
    assert cols == [
        "intercept",
        "stage=0",
        "stage=I",
        "stage=II",
        "stage=III",
        "stage=IV",
        "stage=unknown",
        "sex=female",
        "sex=male",
    ]


def test_cox_spec_defaults_its_outcome_and_has_no_intercept() -> None:
    spec = TrainingSpec.model_validate({**GOOD, "model": "cox"})
    assert spec.outcome == "overall_survival"
    assert spec.fields_read() == {"age_at_diagnosis", "stage", "vital_status", "survival_days"}
    assert spec.columns() == design_columns(["age_at_diagnosis", "stage"], "cox")
    assert "intercept" not in spec.columns() and spec.n_coefficients() == 1 + 6
    with pytest.raises(ValueError, match="unknown model"):
        design_columns(["stage"], "svm")


def test_the_evaluation_is_carved_out_of_the_job_epsilon() -> None:
    spec = TrainingSpec.model_validate(GOOD)
    assert spec.privacy.evaluation_budget() == pytest.approx(0.1)
    assert spec.privacy.training_epsilon() == pytest.approx(0.9)
    costs = round_costs(spec)
    assert len(costs) == spec.rounds + 1 and costs[-1] == pytest.approx(0.1)
    assert sum(costs) == pytest.approx(1.0, rel=1e-6)
    none = TrainingSpec.model_validate(
        {**GOOD, "holdout": 0, "privacy": {"epsilon": 1.0, "evaluation_epsilon": 0}}
    )
    assert len(round_costs(none)) == none.rounds
    assert sum(round_costs(none)) == pytest.approx(1.0, rel=1e-6)
