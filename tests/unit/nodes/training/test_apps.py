"""ServerApp and ClientApp together in one process, through a fake Flower Grid.

The real deployment engine (SuperLink, SuperNodes) is exercised in
tests/integration/test_training_flower.py; this checks the message contract
quickly: the pre-flight stops a job that a required site refuses before anything
is charged, refusals mid-job reach the job status with their reason, the job fails
cleanly when too few sites are left, and every site's ledger matches what it reports.
SecAgg+ rounds are tested in tests/unit/nodes/training/test_secagg.py (same fake Grid).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
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
from varde.budget import PureDP
from varde.training import TrainingPrivacy, TrainingSpec, TrainingStatus

FIELDS = ["sex", "age_at_diagnosis", "stage", "first_treatment", "vital_status", "survival_days"]


@pytest.fixture(autouse=True)
def task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Flower stamps messages with the run and node of the current process; fake both."""
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


@dataclass
class Delivery:
    """One ``send_and_receive``: what the ServerApp sent and what reached it back."""

    sent: list[Message]
    replies: list[Message]


@dataclass
class FakeGrid:
    """Delivers each message to the ClientApp of its node, in this process.

    Contents are deep-copied both ways, as the network would: Flower's SecAgg+
    workflow shares one content object between messages and the client mod
    edits what it receives. A node in ``dead`` never answers (like a killed
    SuperNode whose messages time out); ``on_send`` sees every batch first.
    """

    contexts: dict[int, Context]
    dead: set[int] = field(default_factory=set)
    on_send: Callable[[list[Message]], None] | None = None
    deliveries: list[Delivery] = field(default_factory=list)
    sent: int = 0

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        batch = list(messages)
        if self.on_send is not None:
            self.on_send(batch)
        replies = []
        for msg in batch:
            self.sent += 1
            msg.metadata.__dict__["_message_id"] = f"m{self.sent}"
            node = msg.metadata.dst_node_id
            if node in self.dead:
                continue
            delivered = Message(
                content=copy.deepcopy(msg.content),
                dst_node_id=node,
                message_type=msg.metadata.message_type,
            )
            delivered.metadata.__dict__["_message_id"] = msg.metadata.message_id
            reply = client_app(delivered, self.contexts[node])
            if reply.has_content():
                reply.content = copy.deepcopy(reply.content)
            replies.append(reply)
        self.deliveries.append(Delivery(batch, replies))
        return replies


def make_site(
    root: Path, site: str, *, fields: list[str], budget: float, rows: int = 4_000
) -> dict[str, str]:
    d = root / site
    d.mkdir(parents=True)
    generate_registry(site, rows, seed=5).to_parquet(d / "registry.parquet")
    policy = {
        "site": site,
        "profile": "development",
        "privacy_unit": {"max_tumours_per_patient": 2},
        "fields": fields,
        "statistics": ["count"],
        "projects": {
            "p": {
                "epsilon_budget": budget,
                "max_epsilon_per_query": budget,
                "training": ["logistic", "cox"],
            }
        },
    }
    (d / "policy.yaml").write_text(yaml.safe_dump(policy))
    return {
        "site": site,
        "policy": str(d / "policy.yaml"),
        "data": str(d / "registry.parquet"),
        "state-dir": str(d / "state"),
    }


def make_grid(sites: dict[str, dict[str, str]]) -> FakeGrid:
    return FakeGrid(
        {
            100 + i: Context(
                run_id=1, node_id=100 + i, node_config=cfg, state=RecordDict(), run_config={}
            )
            for i, cfg in enumerate(sites.values())
        }
    )


def run(
    tmp_path: Path,
    sites: dict[str, dict[str, str]],
    spec: TrainingSpec,
    min_sites: int,
    grid: FakeGrid | None = None,
    job_id: str = "job-7",
) -> TrainingStatus:
    grid = grid or make_grid(sites)
    progress = tmp_path / "progress.json"
    status = run_job(
        grid,  # type: ignore[arg-type]
        {
            "job": spec.model_dump_json(),
            "job-id": job_id,
            "researcher": "alice",
            "progress-file": str(progress),
            "min-sites": min_sites,
            "connect-timeout": 1,
        },
    )
    assert TrainingStatus.model_validate_json(progress.read_text()) == status
    return status


def before_train_batch(number: int, action: Callable[[], None]) -> Callable[[list[Message]], None]:
    """An ``on_send`` hook: run ``action`` just before the ``number``-th batch of TRAIN messages."""
    seen = 0

    def hook(batch: list[Message]) -> None:
        nonlocal seen
        if batch and batch[0].metadata.message_type == MessageType.TRAIN:
            seen += 1
            if seen == number:
                action()

    return hook


def spend(state_dir: str, amount: float, budget: float) -> None:
    """A query paying at the site while the job runs (the ledger is shared)."""
    with Ledger.in_directory(Path(state_dir)) as ledger:
        ledger.charge(project="p", cost=PureDP(amount), total=PureDP(budget), query_id="query-1")


def assert_ledgers_match(sites: dict[str, dict[str, str]], status: TrainingStatus) -> None:
    """Each site's training charges are exactly the rounds (and epsilon) the job reports."""
    for name, cfg in sites.items():
        with Ledger.in_directory(Path(cfg["state-dir"])) as ledger:
            charges = [c for c in ledger.charges("p") if c.query_id.startswith("training:")]
            progress = status.sites.get(name)
            assert len(charges) == (progress.rounds_completed if progress else 0), name
            if charges:
                assert progress is not None
                assert json.loads(charges[-1].note)["job"] == "job-7"
                assert sum(c.amount for c in charges) == pytest.approx(
                    progress.spent.amount, abs=1e-8
                )


SPEC = TrainingSpec(
    project="p",
    features=["sex", "age_at_diagnosis", "stage"],
    rounds=3,
    local_steps=5,
    privacy=TrainingPrivacy(epsilon=3.0),
)


def test_preflight_refusal_stops_the_job_before_anything_is_charged(tmp_path: Path) -> None:
    sites = {
        "oslo": make_site(tmp_path, "oslo", fields=FIELDS, budget=10.0),
        "bergen": make_site(tmp_path, "bergen", fields=FIELDS, budget=2.2),  # job costs 3
        "trondheim": make_site(
            tmp_path, "trondheim", fields=[f for f in FIELDS if f != "stage"], budget=10.0
        ),
    }
    grid = make_grid(sites)
    status = run(tmp_path, sites, SPEC, min_sites=1, grid=grid)
    assert status.state == "failed"
    assert status.round == 0 and status.coefficients is None
    assert status.detail is not None and status.detail.startswith("pre-flight refused")
    assert "nothing was charged" in status.detail
    oslo, bergen, trondheim = (status.sites[s] for s in ("oslo", "bergen", "trondheim"))
    assert oslo.refusal is None and oslo.rounds_completed == 0
    assert trondheim.refusal == (
        "field_not_available: site 'trondheim' does not expose field(s) stage"
    )
    assert bergen.refusal is not None and bergen.refusal.startswith("budget_exhausted:")
    assert "cannot pay for the job" in bergen.refusal
    # Only QUERY messages were ever sent, and no ledger holds a charge.
    assert [m.metadata.message_type for d in grid.deliveries for m in d.sent] == [
        MessageType.QUERY
    ] * 3
    for cfg in sites.values():
        with Ledger.in_directory(Path(cfg["state-dir"])) as ledger:
            assert ledger.charges() == []
            assert ledger.spent("p") == 0.0


def test_budget_spent_mid_job_is_reported_and_the_rest_train(tmp_path: Path) -> None:
    sites = {
        "oslo": make_site(tmp_path, "oslo", fields=FIELDS, budget=10.0),
        "bergen": make_site(tmp_path, "bergen", fields=FIELDS, budget=3.5),
    }
    grid = make_grid(sites)
    # After round 1 paid, a query takes most of what is left at Bergen.
    grid.on_send = before_train_batch(2, lambda: spend(sites["bergen"]["state-dir"], 1.5, 3.5))
    status = run(tmp_path, sites, SPEC, min_sites=1, grid=grid)
    assert status.state == "finished", status.detail
    assert status.secure_aggregation is False  # two sites: a sum would hide nothing
    assert status.round == 3
    assert status.coefficients is not None and len(status.coefficients) == SPEC.n_coefficients()
    oslo, bergen = status.sites["oslo"], status.sites["bergen"]
    assert oslo.rounds_completed == 3 and oslo.refusal is None
    assert oslo.spent.amount == pytest.approx(SPEC.privacy.training_epsilon(), rel=1e-6)
    assert bergen.rounds_completed == 1
    assert bergen.refusal is not None and bergen.refusal.startswith("budget_exhausted:")
    assert_ledgers_match(sites, status)
    # the released coefficients state each site's guarantee: what its ledger paid
    assert status.guarantee is not None
    assert f"bergen: ({bergen.spent.amount:.4g}, 1e-06)-DP" in status.guarantee
    assert f"oslo: ({oslo.spent.amount:.4g}, 1e-06)-DP" in status.guarantee
    # The final DP evaluation ran at the sites still in, each paying its own share.
    metrics = status.metrics
    assert metrics is not None and metrics.network is not None
    assert set(metrics.sites) == {"oslo"} and metrics.network.sites == ["oslo"]
    assert metrics.sites["oslo"].charged["oslo"].amount == pytest.approx(
        SPEC.privacy.evaluation_budget()
    )
    assert 0 <= metrics.network.values["auc"] <= 1
    # the metrics come with the error the DP noise adds (one site: network = site)
    assert set(metrics.network.std_errors) == set(metrics.network.values)
    # (n is a plain sum of noisy counts; a ratio clamped at 0 or 1 may show no slope)
    assert metrics.network.std_errors["n"] > 0 and 0 <= metrics.network.std_errors["auc"] < 1
    assert metrics.network.std_errors == pytest.approx(metrics.sites["oslo"].std_errors)
    with Ledger.in_directory(Path(sites["oslo"]["state-dir"])) as ledger:
        assert ledger.spent("p") == pytest.approx(SPEC.privacy.epsilon, rel=1e-6)


def test_job_fails_cleanly_when_too_few_sites_are_left(tmp_path: Path) -> None:
    sites = {
        "oslo": make_site(tmp_path, "oslo", fields=FIELDS, budget=10.0),
        "bergen": make_site(tmp_path, "bergen", fields=FIELDS, budget=3.5),
    }
    grid = make_grid(sites)
    grid.on_send = before_train_batch(2, lambda: spend(sites["bergen"]["state-dir"], 1.5, 3.5))
    status = run(tmp_path, sites, SPEC, min_sites=2, grid=grid)
    assert status.state == "failed"
    assert status.detail is not None and "2 needed" in status.detail
    assert status.round == 1
    assert status.sites["bergen"].refusal is not None
    assert_ledgers_match(sites, status)


def test_job_fails_when_sites_do_not_connect(tmp_path: Path) -> None:
    sites = {"oslo": make_site(tmp_path, "oslo", fields=FIELDS, budget=10.0)}
    status = run(tmp_path, sites, SPEC, min_sites=2)
    assert status.state == "failed"
    assert status.detail == "only 1 of 2 site(s) connected"


def test_secure_aggregation_switch(tmp_path: Path) -> None:
    sites = {
        name: make_site(tmp_path, name, fields=FIELDS, budget=10.0)
        for name in ("oslo", "bergen", "trondheim")
    }
    one_round = SPEC.model_copy(update={"rounds": 1})
    off = run(tmp_path, sites, one_round.model_copy(update={"secure_aggregation": "off"}), 1)
    assert off.state == "finished" and off.secure_aggregation is False
    two = {k: sites[k] for k in ("oslo", "bergen")}
    forced = one_round.model_copy(update={"secure_aggregation": "on", "sites": list(two)})
    status = run(tmp_path, sites, forced, 1, job_id="job-8")
    assert status.state == "failed" and status.secure_aggregation is True
    assert status.detail == "secure aggregation needs at least 3 sites, 2 passed the pre-flight"
    assert status.sites["trondheim"].refusal == (
        "policy_violation: site 'trondheim' is not among the job's sites"
    )
    for cfg in two.values():  # only the 'off' job paid: its round and its evaluation
        with Ledger.in_directory(Path(cfg["state-dir"])) as ledger:
            assert [c.query_id for c in ledger.charges("p")] == [
                "training:job-7:round:1",
                "evaluation:job-7",
            ]


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

    ctx = Context(
        run_id=1, node_id=100, node_config=sites["oslo"], state=RecordDict(), run_config={}
    )
    garbage = ConfigRecord(
        {"job": '{"project": "p", "rounds": 999}', "job-id": "x", "researcher": "a"}
    )
    for kind, content in [
        (MessageType.TRAIN, {"arrays": ArrayRecord([np.zeros(3)]), "config": garbage}),
        (MessageType.QUERY, {"config": garbage}),
    ]:
        msg = Message(content=RecordDict(content), dst_node_id=100, message_type=kind)
        msg.metadata.__dict__["_message_id"] = "garbage"
        reply = client_app(msg, ctx)
        assert reply.has_error()
        body = json.loads(reply.error.reason or "")
        assert body["site"] == "oslo" and body["error"] == "invalid_query"
