"""The gateway's training API with a cohort, a named outcome and study fields.

The job names study fields like schema fields; the gateway completes it with the
declarations the sites publish, checks each site's terms (a site lacking a field is
named), and ships the completed job to the sites.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from gateway.api.deps import ResearcherInfo, current_researcher
from gateway.training import routes
from gateway.training.service import TrainingService
from tests.unit.gateway.test_training_gateway import FIELDS, Client, FakeSubmitter, manifest
from varde.errors import VardeError
from varde.release import Manifest
from varde.study_fields import StudyField
from varde.training import TrainingSpec

CRP = StudyField(name="crp", kind="bounded", lower=17.0, upper=44.0)
JOB = {
    "project": "outcomes",
    "features": ["age_at_diagnosis", "crp"],
    "cohort": {"op": "eq", "field": "stage", "value": "IV"},
    "outcome": {"kind": "binary", "field": "sex", "positive": "female"},
    "rounds": 2,
    "privacy": {"epsilon": 2.0},
}


def with_study(m: Manifest, fields: list[StudyField]) -> Manifest:
    terms = m.projects["outcomes"].model_copy(update={"study_fields": fields})
    return m.model_copy(update={"projects": {"outcomes": terms}})


def app_for(tmp_path: Path, manifests: dict[str, Manifest], submitter: FakeSubmitter) -> Client:
    app = FastAPI()

    @app.exception_handler(VardeError)
    async def _err(_r: Request, err: VardeError) -> JSONResponse:
        return JSONResponse(status_code=err.status, content=err.as_dict())

    app.include_router(routes.router)
    app.state.varde_training = TrainingService(submitter, tmp_path / "trainings")
    app.dependency_overrides[routes.site_manifests] = lambda: manifests
    app.dependency_overrides[current_researcher] = lambda: ResearcherInfo("alice", ["outcomes"])
    return Client(app)


def test_a_job_naming_a_study_field_is_completed_and_shipped(tmp_path: Path) -> None:
    submitter = FakeSubmitter()
    sites = {s: with_study(manifest(s), [CRP]) for s in ("oslo", "bergen")}
    res = app_for(tmp_path, sites, submitter).post("/v1/trainings", json=JOB)
    assert res.status_code == 202, res.text
    (call,) = submitter.calls
    sent = TrainingSpec.model_validate_json(str(call["job"]))
    assert sent.study_fields == [CRP] and sent.cohort is not None
    assert sent.columns() == ["intercept", "age_at_diagnosis", "crp"]


def test_a_site_without_the_study_field_is_named(tmp_path: Path) -> None:
    submitter = FakeSubmitter()
    sites = {"oslo": with_study(manifest("oslo"), [CRP]), "bergen": manifest("bergen")}
    res = app_for(tmp_path, sites, submitter).post("/v1/trainings", json=JOB)
    assert res.status_code == 403, res.text
    assert "site 'bergen' does not expose field(s) crp" in res.text
    assert submitter.calls == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"features": ["age_at_diagnosis", "ldh"]}, "unknown field 'ldh'"),
        ({"outcome": {"kind": "binary", "field": "sex", "positive": "x"}}, "not a category"),
        ({"cohort": {"op": "eq", "field": "stage", "value": "V"}}, "unknown category 'V'"),
    ],
)
def test_bad_jobs_are_422_before_any_site(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    submitter = FakeSubmitter()
    sites = {"oslo": with_study(manifest("oslo", fields=FIELDS), [CRP])}
    res = app_for(tmp_path, sites, submitter).post("/v1/trainings", json={**JOB, **change})
    assert res.status_code == 422 and message in res.text
    assert submitter.calls == []
