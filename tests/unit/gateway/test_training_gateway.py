"""The gateway's training API: validation against every site's manifest before anything starts."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from gateway.api.deps import ResearcherInfo, current_researcher
from gateway.training import routes
from gateway.training.serverapp import write_status
from gateway.training.service import TrainingService
from gateway.training.validation import check_job
from varde.budget import PureDP
from varde.errors import BudgetExhausted, NodeUnavailable, PolicyViolation, VardeError
from varde.release import Manifest, ProjectTerms
from varde.training import SiteProgress, TrainingSpec, TrainingStatus, round_costs

FIELDS = ["sex", "age_at_diagnosis", "stage", "vital_status", "survival_days"]
JOB = {
    "project": "outcomes",
    "features": ["age_at_diagnosis", "stage"],
    "rounds": 4,
    "privacy": {"epsilon": 2.0},
}


def manifest(
    site: str,
    *,
    fields: list[str] = FIELDS,
    left: float = 10.0,
    cap: float = 2.0,
    training: tuple[str, ...] = ("logistic", "cox"),
):
    return Manifest(
        site=site,
        fields=fields,
        statistics=["count"],
        projects={
            "outcomes": ProjectTerms(
                accounting="epsilon",
                budget=PureDP(10.0),
                max_per_query=PureDP(cap),
                remaining=PureDP(left),
                training=list(training),
            )
        },
    )


class Client:
    """Synchronous calls into the ASGI app (starlette's Client warns under httpx 0.x)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def _call(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                return await c.request(method, url, **kwargs)

        return asyncio.run(go())

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self._call("GET", url, **kwargs)

    def post(self, url: str, json: object) -> httpx.Response:
        return self._call("POST", url, json=json)


class FakeSubmitter:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[dict[str, object]] = []
        self.fail = fail

    def submit(self, app_dir: Path, run_config: Mapping[str, object], timeout_s: float = 60) -> int:
        if self.fail:
            raise RuntimeError("flwr run failed (1): connection refused")
        assert (app_dir / "pyproject.toml").exists()
        self.calls.append(dict(run_config))
        return 42


@pytest.fixture
def manifests() -> dict[str, Manifest]:
    return {s: manifest(s) for s in ("oslo", "bergen", "trondheim")}


@pytest.fixture
def submitter() -> FakeSubmitter:
    return FakeSubmitter()


@pytest.fixture
def client(tmp_path: Path, manifests: dict[str, Manifest], submitter: FakeSubmitter) -> Client:
    app = FastAPI()

    @app.exception_handler(VardeError)
    async def _err(_r: Request, err: VardeError) -> JSONResponse:
        return JSONResponse(status_code=err.status, content=err.as_dict())

    app.include_router(routes.router)
    app.state.varde_training = TrainingService(submitter, tmp_path / "trainings")
    app.dependency_overrides[routes.site_manifests] = lambda: manifests
    app.dependency_overrides[current_researcher] = lambda: ResearcherInfo("alice", ["outcomes"])
    return Client(app)


def test_round_costs_sum_to_the_job_epsilon() -> None:
    spec = TrainingSpec.model_validate(JOB)
    costs = round_costs(spec)
    evaluation = spec.privacy.evaluation_budget()
    assert len(costs) == 4 + (evaluation > 0)  # the rounds, then the final evaluation
    assert sum(costs) == pytest.approx(2.0, rel=1e-6)
    assert costs[:4] == sorted(costs[:4], reverse=True)


def test_check_job_names_every_refusing_site(manifests: dict[str, Manifest]) -> None:
    spec = TrainingSpec.model_validate(JOB)
    assert check_job(spec, manifests) == ["bergen", "oslo", "trondheim"]
    manifests["trondheim"] = manifest("trondheim", fields=["age_at_diagnosis", "stage"])
    manifests["bergen"] = manifest("bergen", left=1.0)
    with pytest.raises(PolicyViolation) as err:
        check_job(spec, manifests)
    assert "project 'outcomes' has 1 epsilon left at 'bergen'; the job needs 2" in err.value.message
    assert (
        "site 'trondheim' does not expose field(s) survival_days, vital_status" in err.value.message
    )
    with pytest.raises(BudgetExhausted):
        check_job(spec.model_copy(update={"sites": ["bergen"]}), manifests)
    with pytest.raises(PolicyViolation, match="above the per-query cap"):
        check_job(spec.model_copy(update={"rounds": 1}), {"oslo": manifest("oslo", cap=1.5)})
    eval_heavy = spec.model_copy(
        update={
            "rounds": 10,
            "privacy": spec.privacy.model_copy(update={"evaluation_epsilon": 1.0}),
        }
    )
    with pytest.raises(PolicyViolation, match="the final evaluation costs epsilon 1, above the"):
        check_job(eval_heavy, {"oslo": manifest("oslo", cap=0.5)})
    with pytest.raises(NodeUnavailable, match="'tromso' is not connected"):
        check_job(spec.model_copy(update={"sites": ["tromso"]}), manifests)
    with pytest.raises(NodeUnavailable):
        check_job(spec, {})


def test_post_starts_a_validated_job_and_get_reports_progress(
    client: Client, submitter: FakeSubmitter
) -> None:
    res = client.post("/v1/trainings", json=JOB)
    assert res.status_code == 202, res.text
    body = res.json()
    assert body["state"] == "pending" and body["rounds"] == 4
    (call,) = submitter.calls
    sent = TrainingSpec.model_validate_json(str(call["job"]))
    assert sent.sites == ["bergen", "oslo", "trondheim"]
    assert call["job-id"] == body["id"] and call["researcher"] == "alice"
    assert call["expected-sites"] == 3 and call["min-sites"] == 1

    write_status(
        Path(str(call["progress-file"])),
        TrainingStatus(
            id=body["id"],
            state="running",
            round=2,
            rounds=4,
            sites={"oslo": SiteProgress(rounds_completed=2, spent=PureDP(1.3))},
        ),
    )
    res = client.get(f"/v1/trainings/{body['id']}")
    assert res.status_code == 200
    assert res.json()["round"] == 2
    assert res.json()["sites"]["oslo"]["spent"] == {"epsilon": 1.3}


def test_a_site_that_does_not_allow_the_model_refuses_the_job(
    client: Client, submitter: FakeSubmitter, manifests: dict[str, Manifest]
) -> None:
    manifests["bergen"] = manifest("bergen", training=("cox",))
    manifests["oslo"] = manifest("oslo", training=())
    res = client.post("/v1/trainings", json=JOB)
    assert res.status_code == 403
    detail = res.json()["detail"]
    assert (
        "site 'bergen' does not allow training 'logistic' models for project 'outcomes' "
        "(allowed there: cox)" in detail
    )
    assert "site 'oslo' does not allow training 'logistic'" in detail
    assert "(allowed there: none)" in detail
    assert "trondheim" not in detail
    assert submitter.calls == []
    # Leaving the refusing sites out is a job the others take.
    res = client.post("/v1/trainings", json={**JOB, "sites": ["trondheim"]})
    assert res.status_code == 202, res.text


def test_refused_job_starts_nothing(
    client: Client, submitter: FakeSubmitter, manifests: dict[str, Manifest]
) -> None:
    manifests["trondheim"] = manifest("trondheim", fields=["age_at_diagnosis", "stage"])
    res = client.post("/v1/trainings", json=JOB)
    assert res.status_code == 403
    assert res.json()["error"] == "policy_violation"
    assert "trondheim" in res.json()["detail"]
    assert submitter.calls == []


@pytest.mark.parametrize(
    ("change", "status"),
    [({"project": "other"}, 403), ({"features": ["patient_id"]}, 422), ({"rounds": 0}, 422)],
)
def test_bad_requests(client: Client, change: dict[str, object], status: int) -> None:
    assert client.post("/v1/trainings", json={**JOB, **change}).status_code == status


def test_unknown_job_is_404(client: Client) -> None:
    assert client.get("/v1/trainings/nope").status_code == 404


def test_submission_failure_is_a_failed_job(tmp_path: Path, manifests: dict[str, Manifest]) -> None:
    service = TrainingService(FakeSubmitter(fail=True), tmp_path)
    status = service.start(
        TrainingSpec.model_validate(JOB), researcher="alice", manifests=manifests
    )
    assert status.state == "failed"
    assert status.detail is not None and "connection refused" in status.detail
    assert service.status(status.id, researcher="alice") == status
    with pytest.raises(VardeError):
        service.status(status.id, researcher="mallory")


def test_gateway_without_training_says_so() -> None:
    app = FastAPI()

    @app.exception_handler(VardeError)
    async def _err(_r: Request, err: VardeError) -> JSONResponse:
        return JSONResponse(status_code=err.status, content=err.as_dict())

    app.include_router(routes.router)
    app.dependency_overrides[current_researcher] = lambda: ResearcherInfo("alice", ["outcomes"])
    res = Client(app).get("/v1/trainings/x")
    assert res.status_code == 503
    assert "not configured" in res.json()["detail"]
