"""Staff approval of training jobs (``approvals.training_jobs``), at pre-flight and every round.

Real node state in a temporary directory: the approval book and audit trail in
``node.sqlite``, the ledger in ``ledger.sqlite``; staff decide with the same
``varde node approve/deny`` commands and console they use for queries.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from launcher.cli import app as varde_cli
from launcher.network import free_port
from nodes.approvals import AwaitingApproval, training_request_key
from nodes.console import ConsoleServer, add_user, create_console, users_path
from nodes.data import RegistryData, prepare
from nodes.ledger import Ledger
from nodes.policy import Policy
from nodes.store import NodeStore
from nodes.synth import generate_registry
from nodes.training.preflight import approval_gate, check_training_approval, preflight
from nodes.training.rounds import authorize_training, run_round
from tests.console_client import StaffClient
from varde.errors import PolicyViolation
from varde.training import TrainingPrivacy, TrainingSpec

FIELDS = ["sex", "age_at_diagnosis", "stage", "vital_status", "survival_days"]
runner = CliRunner()


def make_policy(*, approval: bool = True, message: str = "") -> Policy:
    return Policy.model_validate(
        {
            "site": "oslo",
            "profile": "development",
            "privacy_unit": {"max_tumours_per_patient": 2},
            "fields": FIELDS,
            "statistics": ["count"],
            "projects": {
                "p": {
                    "epsilon_budget": 20.0,
                    "max_epsilon_per_query": 10.0,
                    "training": ["logistic"],
                }
            },
            "approvals": {"training_jobs": approval, "message": message},
        }
    )


SPEC = TrainingSpec(
    project="p",
    features=["sex", "age_at_diagnosis", "stage"],
    rounds=3,
    local_steps=3,
    sites=["oslo", "bergen"],
    privacy=TrainingPrivacy(epsilon=3.0),
)


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def ledger(state: Path) -> Iterator[Ledger]:
    with Ledger.in_directory(state) as led:
        yield led


@pytest.fixture(scope="module")
def data() -> RegistryData:
    return prepare(generate_registry("oslo", 3_000, seed=4), site="oslo", max_rows_per_patient=2)


def fly(
    policy: Policy, ledger: Ledger, state: Path, *, job: str, spec: TrainingSpec = SPEC
) -> None:
    preflight(
        policy=policy, ledger=ledger, spec=spec, job_id=job, researcher="alice", state_dir=state
    )


def pending(state: Path) -> list[tuple[str, str, str]]:
    store = NodeStore.in_directory(state)
    try:
        return [(r.id, r.kind, r.status) for r in store.approvals.requests()]
    finally:
        store.close()


def test_pending_then_approved_then_the_same_job_passes(
    ledger: Ledger, store: NodeStore, state: Path
) -> None:
    policy = make_policy(message="Kari decides within a day.")
    with pytest.raises(AwaitingApproval) as first:
        fly(policy, ledger, state, job="job-1")
    ((request_id, kind, status),) = pending(state)
    assert (kind, status) == ("training", "pending")
    assert first.value.code == "awaiting_approval"
    assert f"awaiting approval at oslo (request {request_id})" in first.value.message
    assert (
        "logistic model of death_within_2y on sex, age_at_diagnosis, stage" in first.value.message
    )
    assert "3 rounds; epsilon 3" in first.value.message
    assert first.value.message.endswith("Kari decides within a day.")
    # The researcher re-submits (a new job id, other sites): the same request, not a new one.
    with pytest.raises(AwaitingApproval, match=request_id):
        fly(policy, ledger, state, job="job-2", spec=SPEC.model_copy(update={"sites": ["oslo"]}))
    assert len(pending(state)) == 1

    store = NodeStore.in_directory(state)
    try:
        req = store.approvals.get(request_id)
        assert req.epsilon == 3.0 and req.researcher == "alice" and req.project == "p"
        assert req.query_id == "training:job-1"
        assert "training job: logistic model" in req.why and "3 rounds" in req.why
        store.approvals.decide(request_id, approve=True, by="kari")
        kinds = [e.kind for e in store.events()]
        assert kinds.count("approval_requested") == 1 and kinds[-1] == "approval_granted"
    finally:
        store.close()
    fly(policy, ledger, state, job="job-3")  # approved: the pre-flight passes
    assert ledger.charges("p") == []  # and nothing was ever charged on the way


def test_denied_carries_the_staff_reason(ledger: Ledger, store: NodeStore, state: Path) -> None:
    policy = make_policy()
    with pytest.raises(AwaitingApproval):
        fly(policy, ledger, state, job="job-1")
    ((request_id, _, _),) = pending(state)
    result = runner.invoke(
        varde_cli,
        ["node", "deny", request_id, "--state-dir", str(state), "--reason", "no stage data use"],
    )
    assert result.exit_code == 0, result.output
    with pytest.raises(PolicyViolation) as err:
        fly(policy, ledger, state, job="job-2")
    assert err.value.message == f"staff at 'oslo' denied training request {request_id}: " + (
        "no stage data use"
    )
    # Staff change their mind with the same command they use for queries.
    result = runner.invoke(varde_cli, ["node", "approve", request_id, "--state-dir", str(state)])
    assert result.exit_code == 0, result.output
    fly(policy, ledger, state, job="job-3")
    listed = runner.invoke(varde_cli, ["node", "pending", "--all", "--state-dir", str(state)])
    assert f"{request_id}  approved  training" in listed.output
    assert "epsilon 3" in listed.output


def test_a_different_job_needs_its_own_approval(
    ledger: Ledger, store: NodeStore, state: Path
) -> None:
    policy = make_policy()
    for job, spec in [("a", SPEC), ("b", SPEC.model_copy(update={"rounds": 4}))]:
        with pytest.raises(AwaitingApproval):
            fly(policy, ledger, state, job=job, spec=spec)
    assert len(pending(state)) == 2
    assert training_request_key(SPEC, "alice") != training_request_key(SPEC, "bob")


def test_without_the_rule_no_request_is_made(ledger: Ledger, store: NodeStore, state: Path) -> None:
    fly(make_policy(approval=False), ledger, state, job="job-1")
    assert pending(state) == []


def test_policy_refusals_come_before_asking_staff(
    ledger: Ledger, store: NodeStore, state: Path
) -> None:
    """Staff are not asked to approve a job their own policy refuses anyway."""
    spec = SPEC.model_copy(update={"features": ["sex", "pdl1_tps"]})
    with pytest.raises(PolicyViolation, match="does not expose field\\(s\\) pdl1_tps"):
        fly(make_policy(), ledger, state, job="job-1", spec=spec)
    assert pending(state) == []


def test_every_round_refuses_an_unapproved_job(
    data: RegistryData, ledger: Ledger, store: NodeStore, state: Path
) -> None:
    """Sovereignty: a server that skips the pre-flight still meets the site's staff."""
    policy = make_policy()

    def play(approved: object) -> None:
        project = authorize_training(
            policy,
            SPEC,
            researcher="alice",
            approved=approved,  # type: ignore[arg-type]
        )
        assert project.training == ["logistic"]

    # A caller that brings no approval check is refused (the site fails closed) ...
    with pytest.raises(PolicyViolation, match="need the approval of its staff"):
        play(None)
    with pytest.raises(PolicyViolation, match="need the approval of its staff"):
        run_round(
            data=data,
            policy=policy,
            ledger=ledger,
            store=store,
            spec=SPEC,
            job_id="job-1",
            researcher="alice",
            weights=np.zeros(SPEC.n_coefficients()),
        )
    assert ledger.charges("p") == []
    # ... and the gate the ClientApp passes records the request and names it.
    gate = approval_gate(
        policy=policy, spec=SPEC, job_id="job-1", researcher="alice", state_dir=state
    )
    with pytest.raises(AwaitingApproval, match="awaiting approval at oslo"):
        play(gate)
    ((request_id, _, _),) = pending(state)
    store = NodeStore.in_directory(state)
    try:
        store.approvals.decide(request_id, approve=True, by="kari")
        check_training_approval(
            policy=policy, book=store.approvals, spec=SPEC, job_id="job-9", researcher="alice"
        )
    finally:
        store.close()
    play(gate)
    with pytest.raises(AwaitingApproval):  # run_round checks the gate before charging
        run_round(
            data=data,
            policy=policy,
            ledger=ledger,
            store=store,
            spec=SPEC,
            job_id="job-1",
            researcher="bob",
            weights=np.zeros(SPEC.n_coefficients()),
            approved=approval_gate(
                policy=policy, spec=SPEC, job_id="job-1", researcher="bob", state_dir=state
            ),
        )
    assert ledger.charges("p") == []
    # the approved job's round runs, and only then is it charged
    done = run_round(
        data=data,
        policy=policy,
        ledger=ledger,
        store=store,
        spec=SPEC,
        job_id="job-1",
        researcher="alice",
        weights=np.zeros(SPEC.n_coefficients()),
        approved=gate,
    )
    assert done.round == 1 and done.charged.amount > 0
    assert [c.query_id for c in ledger.charges("p")] == ["training:job-1:round:1"]
    with pytest.raises(AwaitingApproval):  # another researcher's identical job is not approved
        authorize_training(
            policy,
            SPEC,
            researcher="bob",
            approved=approval_gate(
                policy=policy, spec=SPEC, job_id="job-2", researcher="bob", state_dir=state
            ),
        )
    assert len(ledger.charges("p")) == 1


def test_the_console_shows_and_approves_training_requests(
    ledger: Ledger, store: NodeStore, state: Path, tmp_path: Path
) -> None:
    policy = make_policy()
    with pytest.raises(AwaitingApproval):
        fly(policy, ledger, state, job="job-1")
    ((request_id, _, _),) = pending(state)
    store = NodeStore.in_directory(state)
    add_user(users_path(state), "kari", "correct horse battery")
    app = create_console(
        site="oslo",
        store=store,
        ledger=ledger,
        policy=lambda: policy,
        users=users_path(state),
        connected=lambda: True,
    )
    server = ConsoleServer(app, port=free_port()).start()
    try:
        with StaffClient(server.url) as client:
            client.login("kari", "correct horse battery")
            page = client.get("/approvals").text
            assert request_id in page and "training" in page
            assert "logistic model of death_within_2y on sex, age_at_diagnosis, stage" in page
            assert f'id="approve-{request_id}"' in page
            assert client.act(f"/approvals/{request_id}/approve").status_code == 200
    finally:
        server.stop()
        store.close()
    fly(policy, ledger, state, job="job-2")


# --- the policy side: which models a project may train, and how a change reads -------------------


def test_training_models_are_validated_and_published(ledger: Ledger, store: NodeStore) -> None:
    base = make_policy(approval=False).model_dump()
    for bad, message in [
        (["forest"], "Input should be 'logistic' or 'cox'"),
        (["cox", "cox"], "must not repeat"),
    ]:
        body = {**base, "projects": {"p": {**base["projects"]["p"], "training": bad}}}
        with pytest.raises(ValueError, match=message):
            Policy.model_validate(body)
    body = {**base, "projects": {"p": {**base["projects"]["p"], "training": []}}}
    quiet = Policy.model_validate(body)
    assert quiet.manifest({}).projects["p"].training == []
    assert make_policy().manifest({}).projects["p"].training == ["logistic"]
    with pytest.raises(PolicyViolation) as err:
        authorize_training(quiet, SPEC, researcher="alice")
    assert err.value.message == (
        "site 'oslo' does not allow training 'logistic' models for project 'p' "
        "(allowed there: none)"
    )


def test_policy_diff_shows_training_changes(tmp_path: Path) -> None:
    import yaml

    from nodes.policy_diff import diff_policies

    old = make_policy(approval=False)
    body = old.model_dump()
    body["projects"]["p"]["training"] = ["cox"]
    body["projects"]["q"] = {
        "epsilon_budget": 1.0,
        "max_epsilon_per_query": 1.0,
        "training": ["logistic", "cox"],
    }
    body["approvals"]["training_jobs"] = True
    new = Policy.model_validate(body)
    changes = [str(c) for c in diff_policies(old, new)]
    assert "+ projects.q: project added: budget 1, max 1 per query, trains logistic, cox" in changes
    assert "+ projects.p.training: training models added: cox" in changes
    assert "- projects.p.training: training models removed: logistic" in changes
    assert "- approvals.training_jobs: training jobs wait for approval" in changes
    back = [str(c) for c in diff_policies(new, old)]
    assert "+ approvals.training_jobs: training jobs start without approval" in back
    for name, policy in (("old", old), ("new", new)):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(policy.model_dump()))
    res = runner.invoke(
        varde_cli, ["policy", "diff", str(tmp_path / "old.yaml"), str(tmp_path / "new.yaml")]
    )
    assert "projects.p.training: training models added: cox" in res.output
