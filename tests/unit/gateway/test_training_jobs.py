"""Training jobs live in the gateway's database: a restart keeps every job, honestly judged.

Each persistence test runs on SQLite and on PostgreSQL (127.0.0.1:5432, skipped with
the reason when it is not there). "A restart" is a second TrainingService (and a
second FastAPI app) built on a new engine over the same database, as a restarted
gateway process would.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session, sessionmaker

from gateway.api.deps import ResearcherInfo, current_researcher
from gateway.core.db import TrainingJob, make_engine, make_sessionmaker
from gateway.training import routes
from gateway.training.serverapp import write_status
from gateway.training.service import RESTARTED, TrainingService, parse_flwr_ls
from tests.conftest import scratch_postgres
from tests.unit.gateway.test_training_gateway import JOB, Client, FakeSubmitter, manifest
from varde.budget import PureDP
from varde.errors import NotFound, VardeError
from varde.release import Manifest
from varde.training import SiteProgress, TrainingSpec, TrainingStatus

SITES = ("oslo", "bergen", "trondheim")


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty gateway database: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'gateway.sqlite'}"
        return
    with scratch_postgres("varde_trainings") as url:
        yield url


class Gateway:
    """Opens "gateway processes" (service + app) on one database and one state dir."""

    def __init__(self, url: str, workdir: Path) -> None:
        self.url = url
        self.workdir = workdir
        self.engines: list[object] = []
        self.manifests: dict[str, Manifest] = {s: manifest(s) for s in SITES}

    def sessions(self) -> sessionmaker[Session]:
        engine = make_engine(self.url)
        self.engines.append(engine)
        return make_sessionmaker(engine)

    def service(self, submitter: object | None = None, **kwargs: float) -> TrainingService:
        return TrainingService(
            submitter or FakeSubmitter(),  # type: ignore[arg-type]
            self.workdir,
            sessions=self.sessions(),
            **kwargs,
        )

    def app(self, service: TrainingService, researcher: str = "alice") -> Client:
        app = FastAPI()

        @app.exception_handler(VardeError)
        async def _err(_r: Request, err: VardeError) -> JSONResponse:
            return JSONResponse(status_code=err.status, content=err.as_dict())

        app.include_router(routes.router)
        app.state.varde_training = service
        app.dependency_overrides[routes.site_manifests] = lambda: self.manifests
        app.dependency_overrides[current_researcher] = lambda: ResearcherInfo(
            researcher, ["outcomes"]
        )
        return Client(app)

    def progress(self, job_id: str, status: TrainingStatus, *, age_s: float = 0.0) -> None:
        path = self.workdir / f"{job_id}.json"
        write_status(path, status)
        if age_s:
            then = time.time() - age_s
            os.utime(path, (then, then))

    def close(self) -> None:
        for engine in self.engines:
            engine.dispose()  # type: ignore[attr-defined]


@pytest.fixture
def gateway(db_url: str, tmp_path: Path) -> Iterator[Gateway]:
    gw = Gateway(db_url, tmp_path / "trainings")
    yield gw
    gw.close()


def running(job_id: str, rnd: int = 1) -> TrainingStatus:
    return TrainingStatus(
        id=job_id,
        state="running",
        round=rnd,
        rounds=4,
        seconds_per_round=[1.5] * rnd,
        sites={"oslo": SiteProgress(rounds_completed=rnd, spent=PureDP(0.4 * rnd))},
    )


class ProbingSubmitter(FakeSubmitter):
    """A submitter whose SuperLink can be asked about a run (as ``flwr ls`` would be)."""

    def __init__(self, answer: str | None) -> None:
        super().__init__()
        self.answer = answer
        self.asked: list[int] = []

    def run_state(self, run_id: int) -> str | None:
        self.asked.append(run_id)
        return self.answer


def test_jobs_survive_a_restart_and_are_listed_newest_first(gateway: Gateway) -> None:
    first = gateway.app(gateway.service())
    ids = []
    for rounds in (2, 3, 4):
        res = first.post("/v1/trainings", json={**JOB, "rounds": rounds})
        assert res.status_code == 202, res.text
        ids.append(res.json()["id"])
    finished = TrainingStatus(
        id=ids[0],
        state="finished",
        round=2,
        rounds=2,
        seconds_per_round=[1.0, 1.1],
        sites={"oslo": SiteProgress(rounds_completed=2, spent=PureDP(2.0))},
        coefficients={"intercept": -0.5, "age_at_diagnosis": 0.25},
    )
    gateway.progress(ids[0], finished)
    assert first.get(f"/v1/trainings/{ids[0]}").json()["state"] == "finished"

    # The restart: a new engine, service and app over the same database. The
    # progress file of the finished job is gone too: the row alone must answer.
    (gateway.workdir / f"{ids[0]}.json").unlink()
    second = gateway.app(gateway.service())
    res = second.get(f"/v1/trainings/{ids[0]}")
    assert res.status_code == 200
    assert TrainingStatus.model_validate(res.json()) == finished

    listing = second.get("/v1/trainings").json()
    assert [j["id"] for j in listing] == ids[::-1]
    newest = listing[0]
    assert newest["rounds"] == 4 and newest["project"] == "outcomes"
    assert newest["model"] == "logistic" and newest["epsilon"] == 2.0
    assert newest["sites"] == ["bergen", "oslo", "trondheim"] and newest["run_id"] == 42
    assert listing[-1]["state"] == "finished" and listing[-1]["round"] == 2
    assert second.get("/v1/trainings?limit=1").json()[0]["id"] == ids[2]
    assert second.get("/v1/trainings?limit=0").status_code == 422

    other = gateway.app(gateway.service(), researcher="mallory")
    assert other.get("/v1/trainings").json() == []
    assert other.get(f"/v1/trainings/{ids[0]}").status_code == 404


def test_the_row_holds_what_the_brief_asks(gateway: Gateway) -> None:
    service = gateway.service()
    status = service.start(
        TrainingSpec.model_validate(JOB), researcher="alice", manifests=gateway.manifests
    )
    gateway.progress(status.id, running(status.id, 2))
    service.status(status.id, researcher="alice")
    with gateway.sessions()() as s:
        row = s.get(TrainingJob, status.id)
        assert row is not None
        assert (row.researcher, row.project, row.state, row.run_id) == (
            "alice",
            "outcomes",
            "running",
            "42",
        )
        assert row.sites == ["bergen", "oslo", "trondheim"]
        assert TrainingSpec.model_validate(row.spec).sites == row.sites
        assert row.status is not None and row.status["round"] == 2
        assert row.updated_at >= row.created_at


def test_a_job_still_reporting_after_a_restart_is_left_running(gateway: Gateway) -> None:
    job = gateway.service().start(
        TrainingSpec.model_validate(JOB), researcher="alice", manifests=gateway.manifests
    )
    gateway.progress(job.id, running(job.id))
    after = gateway.service().status(job.id, researcher="alice")  # SuperLink cannot be asked
    assert after.state == "running" and after.detail is None
    # ... and it goes on to finish under the new gateway process.
    gateway.progress(job.id, running(job.id, 4).model_copy(update={"state": "finished"}))
    assert gateway.service().status(job.id, researcher="alice").state == "finished"


def test_a_silent_job_after_a_restart_is_failed_and_stays_failed(gateway: Gateway) -> None:
    job = gateway.service(round_timeout_s=5, connect_timeout_s=5).start(
        TrainingSpec.model_validate(JOB), researcher="alice", manifests=gateway.manifests
    )
    gateway.progress(job.id, running(job.id, 2), age_s=600)
    restarted = gateway.service(round_timeout_s=5, connect_timeout_s=5)
    status = restarted.status(job.id, researcher="alice")
    assert status.state == "failed"
    assert status.detail is not None and status.detail.startswith(RESTARTED)
    assert re.search(r"reported nothing for 60\d s \(last report: round 2 of 4\)", status.detail)
    assert status.sites["oslo"].spent == PureDP(0.8)  # what was spent stays
    # Final: a late write of the file does not bring the job back.
    gateway.progress(job.id, running(job.id, 3))
    assert gateway.service().status(job.id, researcher="alice") == status


@pytest.mark.parametrize(
    ("answer", "state", "detail"),
    [
        ("running", "running", None),
        ("pending", "running", None),
        ("finished:failed", "failed", f"{RESTARTED}; Flower reports the run finished:failed"),
        ("finished:stopped", "failed", f"{RESTARTED}; Flower reports the run finished:stopped"),
    ],
)
def test_after_a_restart_the_superlink_is_asked(
    gateway: Gateway, answer: str, state: str, detail: str | None
) -> None:
    job = gateway.service().start(
        TrainingSpec.model_validate(JOB), researcher="alice", manifests=gateway.manifests
    )
    gateway.progress(job.id, running(job.id), age_s=3600)  # silent, but the SuperLink decides
    probe = ProbingSubmitter(answer)
    status = gateway.service(probe).status(job.id, researcher="alice")
    assert probe.asked == [42]
    assert status.state == state
    if detail is None:
        assert status.detail is None
    else:
        assert status.detail is not None and status.detail.startswith(detail)


def test_own_jobs_are_trusted_until_their_serverapp_falls_silent(gateway: Gateway) -> None:
    probe = ProbingSubmitter("finished:failed")
    service = gateway.service(probe, round_timeout_s=5, connect_timeout_s=5)
    job = service.start(
        TrainingSpec.model_validate(JOB), researcher="alice", manifests=gateway.manifests
    )
    gateway.progress(job.id, running(job.id))
    assert service.status(job.id, researcher="alice").state == "running"
    assert probe.asked == []  # this process submitted it and it reports: no need to ask
    gateway.progress(job.id, running(job.id), age_s=120)
    status = service.status(job.id, researcher="alice")
    assert status.state == "failed"
    assert status.detail is not None
    assert status.detail.startswith("the job's ServerApp stopped reporting; Flower reports")


def test_a_failed_submission_is_stored_failed(gateway: Gateway) -> None:
    service = gateway.service(FakeSubmitter(fail=True))
    status = service.start(
        TrainingSpec.model_validate(JOB), researcher="alice", manifests=gateway.manifests
    )
    assert status.state == "failed"
    again = gateway.service().status(status.id, researcher="alice")
    assert again == status
    assert again.detail is not None and "connection refused" in again.detail
    with pytest.raises(NotFound):
        gateway.service().status(status.id, researcher="mallory")


def test_a_refused_job_is_not_stored(gateway: Gateway) -> None:
    gateway.manifests["oslo"] = manifest("oslo", training=())
    client = gateway.app(gateway.service())
    assert client.post("/v1/trainings", json=JOB).status_code == 403
    assert client.get("/v1/trainings").json() == []


def test_standalone_service_keeps_jobs_in_its_workdir(tmp_path: Path) -> None:
    manifests = {s: manifest(s) for s in SITES}
    first = TrainingService(FakeSubmitter(), tmp_path)
    job = first.start(TrainingSpec.model_validate(JOB), researcher="alice", manifests=manifests)
    first.close()
    second = TrainingService(FakeSubmitter(), tmp_path)
    try:
        assert [j.id for j in second.jobs(researcher="alice")] == [job.id]
    finally:
        second.close()


def test_parse_flwr_ls_matches_the_run() -> None:
    out = '{"success": true, "runs": [{"run-id": "18446744073709551615", "status": "running"}]}'
    assert parse_flwr_ls(out, 2**64 - 1) == "running"
    assert parse_flwr_ls(out, 1) is None
    assert parse_flwr_ls('{"success": false}', 1) is None


def test_the_gateway_stores_jobs_in_its_own_database(tmp_path: Path) -> None:
    from gateway.app import create_app
    from gateway.core.config import Settings

    app = create_app(Settings(state_dir=tmp_path, flower_superlink="127.0.0.1:9"))
    service = app.state.varde_training
    assert isinstance(service, TrainingService)
    service._submitter = FakeSubmitter()  # no SuperLink here: keep flwr out of a unit test
    job = service.start(
        TrainingSpec.model_validate(JOB),
        researcher="alice",
        manifests={s: manifest(s) for s in SITES},
    )
    with app.state.varde.sessions() as s:
        row = s.get(TrainingJob, job.id)
        assert row is not None and row.run_id == "42"
    assert not (tmp_path / "trainings" / "trainings.sqlite").exists()
    app.state.varde.engine.dispose()
