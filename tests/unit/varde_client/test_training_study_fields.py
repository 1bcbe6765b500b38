"""The SDK's training jobs name study fields: their declarations come from the gateway's schema."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from varde_client.training import training_spec

CRP = {"name": "crp", "kind": "bounded", "lower": 17.0, "upper": 44.0}
JOB: dict[str, Any] = {
    "project": "p",
    "features": ["sex", "crp"],
    "cohort": {"op": ">=", "field": "crp", "value": 20},
    "outcome": {"kind": "binary", "field": "clinical_trial", "positive": "yes"},
    "rounds": 2,
    "epsilon": 1.0,
}


def test_declarations_are_fetched_only_for_study_fields() -> None:
    asked: list[int] = []

    def declared() -> dict[str, dict[str, Any]]:
        asked.append(1)
        return {"crp": CRP}

    job = training_spec(None, JOB, declared)
    assert [f.name for f in job.study_fields] == ["crp"] and asked == [1]
    assert job.columns() == ["intercept", "sex=female", "sex=male", "crp"]
    plain = training_spec(None, {**JOB, "features": ["sex"], "cohort": None}, declared)
    assert plain.study_fields == [] and asked == [1]  # no study field: no request


def test_a_study_field_nobody_declares_is_an_unknown_field() -> None:
    with pytest.raises(pydantic.ValidationError, match="unknown field 'crp'"):
        training_spec(None, JOB, dict)
