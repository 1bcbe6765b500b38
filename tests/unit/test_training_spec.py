"""Training job specs: validated before anything starts, public model layout."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from varde.training import TrainingPrivacy, TrainingSpec, design_columns

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
        ({"model": "cox"}, "logistic"),
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
