"""``varde train`` and ``VardeClient.train`` against a real gateway API over HTTP.

The gateway's training routes run under uvicorn on 127.0.0.1 with a fake
submitter whose "ServerApp" (a thread) writes the progress file round by round,
exactly as :func:`gateway.training.serverapp.run_job` does.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from rich.console import Console
from typer.testing import CliRunner

from gateway.api.deps import ResearcherInfo, current_researcher
from gateway.training import routes
from gateway.training.serverapp import write_status
from gateway.training.service import TrainingService
from launcher.cli import app as varde_cli
from launcher.network import free_port
from tests.unit.gateway.test_training_gateway import manifest
from varde.budget import PureDP
from varde.errors import VardeError
from varde.training import (
    EvaluationMetrics,
    SiteProgress,
    TrainingMetrics,
    TrainingSpec,
    TrainingStatus,
    design_columns,
)
from varde_client import TrainingProgress, TrainingTimeout, VardeClient

FEATURES = ["age_at_diagnosis", "stage"]
COLUMNS = design_columns(FEATURES)
runner = CliRunner()
METRICS = TrainingMetrics(
    network=EvaluationMetrics(
        values={"auc": 0.7125, "accuracy": 0.66, "n": 812.0},
        charged={"bergen": PureDP(0.2), "oslo": PureDP(0.2)},
        sites=["bergen", "oslo"],
    ),
    sites={
        "oslo": EvaluationMetrics(
            values={"auc": 0.73, "accuracy": 0.67, "n": 420.0}, charged={"oslo": PureDP(0.2)}
        )
    },
    refusals={"bergen": "budget_exhausted: nothing left to evaluate with"},
)


def coefficients(rnd: int) -> dict[str, float]:
    return {name: round(0.125 * (i + 1) * rnd, 6) for i, name in enumerate(COLUMNS)}


@dataclass
class ScriptedFlower:
    """A submitter whose ServerApp writes rounds every ``pace_s``; may fail after a round."""

    pace_s: float = 0.1
    fail_after: int | None = None
    stall: bool = False
    threads: list[threading.Thread] = field(default_factory=list)

    def submit(self, app_dir: Path, run_config: Mapping[str, object], timeout_s: float = 60) -> int:
        spec = TrainingSpec.model_validate_json(str(run_config["job"]))
        thread = threading.Thread(
            target=self._run,
            args=(spec, str(run_config["job-id"]), Path(str(run_config["progress-file"]))),
            daemon=True,
        )
        thread.start()
        self.threads.append(thread)
        return 7

    def _run(self, spec: TrainingSpec, job_id: str, path: Path) -> None:
        status = TrainingStatus(id=job_id, state="running", rounds=spec.rounds)
        time.sleep(self.pace_s)
        write_status(path, status)
        if self.stall:
            return
        for rnd in range(1, spec.rounds + 1):
            time.sleep(self.pace_s)
            if self.fail_after is not None and rnd > self.fail_after:
                refused = dict(status.sites)
                refused["bergen"] = refused["bergen"].model_copy(
                    update={"refusal": "budget_exhausted: bergen has epsilon 0.1 left"}
                )
                write_status(
                    path,
                    status.model_copy(
                        update={
                            "state": "failed",
                            "sites": refused,
                            "detail": f"round {rnd}: 0 site(s) answered, 1 needed",
                        }
                    ),
                )
                return
            spent = spec.privacy.epsilon * rnd / spec.rounds
            status = status.model_copy(
                update={
                    "round": rnd,
                    "seconds_per_round": [*status.seconds_per_round, 1.5],
                    "sites": {
                        s: SiteProgress(rounds_completed=rnd, spent=PureDP(spent))
                        for s in ("bergen", "oslo")
                    },
                    "coefficients": coefficients(rnd),
                }
            )
            write_status(path, status)
        write_status(path, status.model_copy(update={"state": "finished", "metrics": METRICS}))


@dataclass
class Served:
    url: str
    flower: ScriptedFlower


@pytest.fixture
def flower() -> ScriptedFlower:
    return ScriptedFlower()


@pytest.fixture
def gateway(tmp_path: Path, flower: ScriptedFlower) -> Iterator[Served]:
    app = FastAPI()

    @app.exception_handler(VardeError)
    async def _err(_r: Request, err: VardeError) -> JSONResponse:
        return JSONResponse(status_code=err.status, content=err.as_dict())

    app.include_router(routes.router)
    service = TrainingService(flower, tmp_path / "trainings")
    app.state.varde_training = service
    app.dependency_overrides[routes.site_manifests] = lambda: {
        s: manifest(s) for s in ("bergen", "oslo")
    }
    app.dependency_overrides[current_researcher] = lambda: ResearcherInfo("alice", ["outcomes"])
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", ws="none")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "gateway did not start"
        time.sleep(0.02)
    yield Served(f"http://127.0.0.1:{port}", flower)
    server.should_exit = True
    thread.join(timeout=10)
    for t in flower.threads:
        t.join(timeout=10)
    service.close()


class RecordingBar(TrainingProgress):
    def __init__(self) -> None:
        self.buffer = io.StringIO()
        super().__init__(Console(file=self.buffer, width=160))
        self.seen: list[tuple[str, int]] = []

    def update(self, status: TrainingStatus) -> None:
        self.seen.append((status.state, status.round))
        super().update(status)


def cli(served: Served, *args: str) -> object:
    return runner.invoke(
        varde_cli,
        ["train", "--gateway", served.url, "--token", "t", "--project", "outcomes"]
        + ["--features", ",".join(FEATURES), "--poll", "0.02", *args],
    )


def test_sdk_train_waits_with_a_bar_and_returns_pandas(gateway: Served) -> None:
    bar = RecordingBar()
    with VardeClient(gateway.url, "t") as client:
        result = client.train(
            project="outcomes", features=FEATURES, rounds=4, epsilon=2.0, progress=bar, poll_s=0.02
        )
        listed = client.trainings()
    assert result.ok and result.state == "finished"
    assert (bar.completed, bar.total) == (4, 4)
    rounds_seen = [r for _, r in bar.seen]
    assert rounds_seen == sorted(rounds_seen) and rounds_seen[-1] == 4
    assert len(set(rounds_seen)) >= 3  # the bar moved through the job, not just to its end
    drawn = bar.buffer.getvalue()
    assert "4/4" in drawn and "1.5 s/round" in drawn and "eps bergen 2, oslo 2" in drawn
    assert isinstance(result.coefficients, pd.Series)
    pd.testing.assert_series_equal(
        result.coefficients, pd.Series(coefficients(4), name="coefficient", dtype=float)
    )
    assert list(result.coefficients.index) == COLUMNS
    assert result.sites.loc["oslo", "spent"] == pytest.approx(2.0)
    assert result.sites.loc["oslo", "measure"] == "epsilon"
    assert result.summary["seconds_per_round"] == pytest.approx(1.5)
    assert result.summary["rounds_completed"] == 4
    metrics = result.metrics
    assert list(metrics.index) == ["network", "oslo", "bergen"]
    assert metrics.loc["network", "auc"] == 0.7125 and metrics.loc["oslo", "n"] == 420
    assert metrics.loc["network", "epsilon"] == pytest.approx(0.2)
    assert metrics.loc["bergen", "refusal"].startswith("budget_exhausted")
    assert list(listed["id"]) == [result.id] and listed.loc[0, "state"] == "finished"


def test_sdk_without_waiting_and_its_bounded_wait(gateway: Served, flower: ScriptedFlower) -> None:
    flower.stall = True  # the ServerApp starts, then never reports a round
    with VardeClient(gateway.url, "t") as client:
        job = client.train(
            {"project": "outcomes", "features": FEATURES, "rounds": 2, "privacy": {"epsilon": 1}},
            wait=False,
        )
        assert job.state == "pending" and job.coefficients.empty
        started = time.monotonic()
        with pytest.raises(TrainingTimeout) as err:
            client.wait_training(job.id, progress=False, poll_s=0.05, timeout_s=0.5)
        assert time.monotonic() - started < 5
    assert err.value.status.id == job.id
    assert "still running (round 0 of 2)" in str(err.value)


def test_cli_train_wait_draws_the_bar_then_prints_tables(gateway: Served) -> None:
    result = cli(gateway, "--rounds", "3", "--epsilon", "1.5", "--wait")
    assert result.exit_code == 0, result.output
    assert "3/3" in result.stderr and "eps bergen 1.5, oslo 1.5" in result.stderr
    out = result.stdout
    for name, value in coefficients(3).items():
        line = next(line for line in out.splitlines() if f" {name} " in line)
        assert f"{value:.4f}" in line
    assert "seconds_per_round" in out and "1.5" in out
    network = next(line for line in out.splitlines() if " network " in line)
    assert ["0.7125", "0.66", "812", "0.2"] == [c for c in network.split() if c[0].isdigit()]
    assert "bergen did not evaluate: budget_exhausted: nothing left to evaluate with" in out
    assert out.startswith("training job ") and "finished, round 3 of 3" in out
    oslo = next(line for line in out.splitlines() if " oslo " in line)
    assert oslo.split() == ["│", "oslo", "│", "3", "│", "1.5", "│"]


def test_cli_train_failure_exits_non_zero_with_the_reason(
    gateway: Served, flower: ScriptedFlower
) -> None:
    flower.fail_after = 2
    result = cli(gateway, "--rounds", "4", "--epsilon", "2", "--wait")
    assert result.exit_code == 1
    assert "2/4" in result.stderr
    assert "failed: round 3: 0 site(s) answered, 1 needed" in result.stderr
    assert "bergen stopped: budget_exhausted: bergen has epsilon 0.1 left" in result.stdout
    assert "Coefficients after round 2" in result.stdout


def test_cli_train_without_wait_prints_the_job(gateway: Served) -> None:
    result = cli(gateway, "--rounds", "2", "--epsilon", "1")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("training job ") and "pending" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rounds", "2", "--epsilon", "-1"], "privacy.epsilon: Input should be greater than 0"),
        (["--rounds", "2", "--epsilon", "1", "--model", "forest"], "model: Input should be"),
        (["--rounds", "2", "--epsilon", "1", "--sites", "tromso"], "'tromso' is not connected"),
        (
            ["--rounds", "2", "--epsilon", "1", "--secure-aggregation", "always"],
            "secure_aggregation: Input should be 'auto', 'on' or 'off'",
        ),
        (
            ["--rounds", "2", "--epsilon", "1", "--evaluation-epsilon", "1"],
            "evaluation_epsilon must be smaller than epsilon",
        ),
    ],
)
def test_cli_train_bad_input_is_refused_before_anything_runs(
    gateway: Served, flower: ScriptedFlower, args: list[str], message: str
) -> None:
    result = cli(gateway, *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert flower.threads == []


def test_cli_lists_jobs(gateway: Served) -> None:
    assert cli(gateway, "--rounds", "2", "--epsilon", "1").exit_code == 0
    result = runner.invoke(varde_cli, ["trainings", "--gateway", gateway.url, "--token", "t"])
    assert result.exit_code == 0, result.output
    assert "outcomes" in result.stdout and "logistic" in result.stdout
