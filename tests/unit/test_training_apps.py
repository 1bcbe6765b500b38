"""ServerApp and ClientApp together in one process, through a fake Flower Grid.

The real deployment engine (SuperLink, SuperNodes) is exercised in
tests/integration/test_training_flower.py; this checks the message contract
quickly: site refusals reach the job status with their reason, the job fails
cleanly when too few sites are left, and every site's ledger matches what it reports.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest
import yaml
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from gateway.training.serverapp import run_job
from nodes.ledger import Ledger
from nodes.synth import generate_registry
from nodes.training.clientapp import app as client_app
from varde.training import TrainingPrivacy, TrainingSpec, TrainingStatus

FIELDS = ["sex", "age_at_diagnosis", "stage", "first_treatment", "vital_status", "survival_days"]


@pytest.fixture(autouse=True)
def task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Flower stamps messages with the run and node of the current process; fake both."""
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


class FakeGrid:
    """Delivers each message straight to the ClientApp of its node, in this process."""

    def __init__(self, contexts: dict[int, Context]) -> None:
        self.contexts = contexts
        self.sent = 0

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float) -> Iterable[Message]:
        replies = []
        for msg in messages:
            self.sent += 1
            msg.metadata.__dict__["_message_id"] = f"m{self.sent}"
            replies.append(client_app(msg, self.contexts[msg.metadata.dst_node_id]))
        return replies


def make_site(root: Path, site: str, *, fields: list[str], budget: float) -> dict[str, str]:
    d = root / site
    d.mkdir(parents=True)
    generate_registry(site, 4_000, seed=5).to_parquet(d / "registry.parquet")
    policy = {
        "site": site,
        "profile": "development",
        "privacy_unit": {"max_tumours_per_patient": 2},
        "fields": fields,
        "statistics": ["count"],
        "projects": {"p": {"epsilon_budget": budget, "max_epsilon_per_query": budget}},
    }
    (d / "policy.yaml").write_text(yaml.safe_dump(policy))
    return {
        "site": site,
        "policy": str(d / "policy.yaml"),
        "data": str(d / "registry.parquet"),
        "state-dir": str(d / "state"),
    }


def run(tmp_path: Path, sites: dict[str, dict[str, str]], spec: TrainingSpec, min_sites: int):
    contexts = {
        100 + i: Context(
            run_id=1, node_id=100 + i, node_config=cfg, state=RecordDict(), run_config={}
        )
        for i, cfg in enumerate(sites.values())
    }
    progress = tmp_path / "progress.json"
    status = run_job(
        FakeGrid(contexts),  # type: ignore[arg-type]
        {
            "job": spec.model_dump_json(),
            "job-id": "job-7",
            "researcher": "alice",
            "progress-file": str(progress),
            "min-sites": min_sites,
            "connect-timeout": 1,
        },
    )
    assert TrainingStatus.model_validate_json(progress.read_text()) == status
    return status


SPEC = TrainingSpec(
    project="p",
    features=["sex", "age_at_diagnosis", "stage"],
    rounds=3,
    local_steps=5,
    privacy=TrainingPrivacy(epsilon=3.0),
)


def test_refusing_sites_are_reported_and_the_rest_train(tmp_path: Path) -> None:
    sites = {
        "oslo": make_site(tmp_path, "oslo", fields=FIELDS, budget=10.0),
        "bergen": make_site(tmp_path, "bergen", fields=FIELDS, budget=2.2),  # runs out mid-job
        "trondheim": make_site(
            tmp_path, "trondheim", fields=[f for f in FIELDS if f != "stage"], budget=10.0
        ),
    }
    status = run(tmp_path, sites, SPEC, min_sites=1)
    assert status.state == "finished", status.detail
    assert status.round == 3
    assert status.coefficients is not None and len(status.coefficients) == SPEC.n_coefficients()
    oslo, bergen, trondheim = (status.sites[s] for s in ("oslo", "bergen", "trondheim"))
    assert oslo.rounds_completed == 3 and oslo.refusal is None
    assert oslo.epsilon_spent == pytest.approx(3.0, rel=1e-6)
    assert 1 <= bergen.rounds_completed < 3
    assert bergen.refusal is not None and bergen.refusal.startswith("budget_exhausted:")
    assert trondheim.rounds_completed == 0
    assert trondheim.refusal == "policy_violation: site 'trondheim' does not expose field(s) stage"
    for name, cfg in sites.items():
        with Ledger.in_directory(Path(cfg["state-dir"])) as ledger:
            charges = ledger.charges("p")
            assert len(charges) == status.sites[name].rounds_completed
            if charges:
                note = json.loads(charges[-1].note)
                assert note["job"] == "job-7"
                assert ledger.spent("p") == pytest.approx(
                    status.sites[name].epsilon_spent, abs=1e-8
                )


def test_job_fails_cleanly_when_too_few_sites_are_left(tmp_path: Path) -> None:
    sites = {
        "oslo": make_site(tmp_path, "oslo", fields=FIELDS, budget=10.0),
        "bergen": make_site(tmp_path, "bergen", fields=FIELDS, budget=2.2),
    }
    status = run(tmp_path, sites, SPEC, min_sites=2)
    assert status.state == "failed"
    assert status.detail is not None and "2 needed" in status.detail
    assert status.sites["bergen"].refusal is not None


def test_job_fails_when_sites_do_not_connect(tmp_path: Path) -> None:
    sites = {"oslo": make_site(tmp_path, "oslo", fields=FIELDS, budget=10.0)}
    status = run(tmp_path, sites, SPEC, min_sites=2)
    assert status.state == "failed"
    assert status.detail == "only 1 of 2 site(s) connected"


def test_site_outside_the_job_and_garbage_jobs_are_refused(tmp_path: Path) -> None:
    sites = {
        "oslo": make_site(tmp_path, "oslo", fields=FIELDS, budget=10.0),
        "bergen": make_site(tmp_path, "bergen", fields=FIELDS, budget=10.0),
    }
    status = run(tmp_path, sites, SPEC.model_copy(update={"sites": ["oslo"]}), min_sites=1)
    assert status.state == "finished"
    assert status.sites["bergen"].refusal == (
        "policy_violation: site 'bergen' is not among the job's sites"
    )
    with Ledger.in_directory(Path(sites["bergen"]["state-dir"])) as ledger:
        assert ledger.charges() == []

    msg = Message(
        content=RecordDict(
            {
                "arrays": ArrayRecord([np.zeros(3)]),
                "config": ConfigRecord(
                    {"job": '{"project": "p", "rounds": 999}', "job-id": "x", "researcher": "a"}
                ),
            }
        ),
        dst_node_id=100,
        message_type=MessageType.TRAIN,
    )
    msg.metadata.__dict__["_message_id"] = "garbage"
    ctx = Context(
        run_id=1, node_id=100, node_config=sites["oslo"], state=RecordDict(), run_config={}
    )
    reply = client_app(msg, ctx)
    assert reply.has_error()
    body = json.loads(reply.error.reason or "")
    assert body["site"] == "oslo" and body["error"] == "invalid_query"
